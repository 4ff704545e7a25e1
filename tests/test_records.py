"""Tests of device_agent/records.py (RecordRing) on a plain bytearray.

Covers format/attach, write, begin_write/end_write, write_many (wrap-around, batches
larger than the ring), read with cursor/max_records, exact ``missed`` accounting, a
reader whose cursor is ahead of a restarted writer, argument errors, the byte layout
documented in the module docstring, and torn/overwritten slots: set by hand between
operations, and injected in the middle of a read through the reader's fence. A
Hypothesis test interleaves single writes, batched writes and reads from several
independent readers and checks every record each reader gets against a model.
"""

import struct
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent import records
from device_agent.errors import ChannelError
from device_agent.records import RecordRing, ring_bytes, slot_size_for
from fence_hook import FenceHook

BASE = 64  # the ring body normally follows the 64-byte segment header
U64 = struct.Struct("=Q")  # the docstring: u64 fields in native byte order


# -- helpers ------------------------------------------------------------------------------

def make_ring(capacity, record_size, base=BASE):
    buf = bytearray(base + ring_bytes(capacity, record_size))
    ring = RecordRing.format(buf, base, capacity, record_size)
    return buf, ring


def payload(seq, record_size):
    """A record that encodes its own sequence number, so a reader can check it."""
    if record_size < 8:
        return bytes((seq * 37 + i) & 0xFF for i in range(record_size))
    return U64.pack(seq) + bytes((seq * 31 + i + 1) & 0xFF for i in range(record_size - 8))


def expected_bytes(first, count, record_size):
    return b"".join(payload(s, record_size) for s in range(first, first + count))


def doc_slot_size(record_size):
    # "slot_size: 8 + record_size rounded up to 8"
    return 8 + -(-record_size // 8) * 8


def stamp_offset(base, record_size, slot):
    # "64  capacity × slot_size  slots"; "slot: 0 8 u64 stamp; 8 record_size payload"
    return base + 64 + slot * doc_slot_size(record_size)


def get_stamp(buf, base, record_size, slot):
    return U64.unpack_from(buf, stamp_offset(base, record_size, slot))[0]


def set_stamp(buf, base, record_size, slot, value):
    U64.pack_into(buf, stamp_offset(base, record_size, slot), value)


def scribble_payload(buf, base, record_size, slot, byte=0xEE):
    off = stamp_offset(base, record_size, slot) + 8
    buf[off : off + record_size] = bytes([byte]) * record_size


def write_seqs(ring, buf, seqs):
    mv = memoryview(buf)
    for s in seqs:
        ring.write(payload(s, ring.record_size), mv)


def batch(first, count, record_size):
    raw = expected_bytes(first, count, record_size)
    return np.frombuffer(raw, dtype=np.dtype((np.void, record_size))).copy()


# RecordRing.read fences (1) after loading write_count and (2) after copying the payloads,
# before re-reading the stamps ("payload copy; fence; s2 := stamp"), so a FenceHook with
# ``at=2`` acts exactly between the copy and the re-check.


# -- format, attach and layout --------------------------------------------------------------

def test_format_writes_the_documented_body_header():
    buf = bytearray(b"\xaa" * (BASE + ring_bytes(5, 12)))
    ring = RecordRing.format(buf, BASE, 5, 12)
    assert ring.capacity == 5 and ring.record_size == 12
    assert ring.slot_size == doc_slot_size(12) == slot_size_for(12) == 24
    write_count, capacity, record_size, slot_size = struct.unpack_from("=4Q", buf, BASE)
    assert (write_count, capacity, record_size, slot_size) == (0, 5, 12, 24)
    assert buf[BASE + 32 : BASE + 64] == bytes(32)  # reserved
    assert all(get_stamp(buf, BASE, 12, s) == 0 for s in range(5))  # "0 never written"
    assert buf[:BASE] == b"\xaa" * BASE  # the segment header is not touched
    assert ring.write_count == 0


def test_ring_bytes_matches_the_documented_layout():
    for capacity, record_size in [(1, 1), (3, 8), (7, 13), (100, 64)]:
        assert ring_bytes(capacity, record_size) == 64 + capacity * doc_slot_size(record_size)


def test_writes_land_where_the_docstring_says():
    buf, ring = make_ring(4, 12)
    write_seqs(ring, buf, range(6))  # records 4 and 5 wrap into slots 0 and 1
    assert U64.unpack_from(buf, BASE)[0] == 6  # write_count
    for n in (2, 3, 4, 5):
        slot = n % 4
        assert get_stamp(buf, BASE, 12, slot) == 2 * n + 2
        off = stamp_offset(BASE, 12, slot) + 8
        assert bytes(buf[off : off + 12]) == payload(n, 12)


def test_begin_write_marks_the_slot_odd_and_returns_the_payload_offset():
    buf, ring = make_ring(3, 16)
    write_seqs(ring, buf, range(4))
    off = ring.begin_write()  # record 4 goes to slot 1
    assert off == stamp_offset(BASE, 16, 1) + 8
    assert get_stamp(buf, BASE, 16, 1) == 2 * 4 + 1
    assert ring.write_count == 4  # not published yet
    buf[off : off + 16] = payload(4, 16)
    ring.end_write()
    assert get_stamp(buf, BASE, 16, 1) == 2 * 4 + 2
    assert ring.write_count == 5
    got = ring.read(4)
    assert got.records.tobytes() == payload(4, 16)


def test_a_second_instance_attaches_to_the_same_ring():
    buf, writer = make_ring(8, 8)
    write_seqs(writer, buf, range(5))
    reader = RecordRing(buf, BASE)
    assert (reader.capacity, reader.record_size, reader.write_count) == (8, 8, 5)
    got = reader.read(0)
    assert got.records.tobytes() == expected_bytes(0, 5, 8)


def test_a_reattached_writer_continues_the_sequence():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(3))
    again = RecordRing(buf, BASE)
    write_seqs(again, buf, [3, 4])
    got = again.read(0)
    assert (got.first, got.missed, got.next_cursor) == (1, 1, 5)
    assert got.records.tobytes() == expected_bytes(1, 4, 8)


def test_writer_never_touches_bytes_outside_the_ring():
    record_size, capacity = 13, 3
    size = BASE + ring_bytes(capacity, record_size)
    buf = bytearray(b"\x5a" * (size + 32))
    ring = RecordRing.format(buf, BASE, capacity, record_size)
    write_seqs(ring, buf, range(7))
    ring.write_many(batch(7, 5, record_size))
    ring.write_many(batch(12, 2, record_size))
    assert buf[:BASE] == b"\x5a" * BASE
    assert buf[size:] == b"\x5a" * 32
    got = ring.read(0)
    assert got.records.tobytes() == expected_bytes(11, 3, record_size)


def test_record_sizes_below_eight_bytes():
    buf, ring = make_ring(3, 3)
    assert ring.slot_size == 16
    write_seqs(ring, buf, range(5))
    got = ring.read(0)
    assert (got.first, got.missed) == (2, 2)
    assert got.records.dtype == np.dtype("V3")
    assert got.records.tobytes() == expected_bytes(2, 3, 3)


# -- argument errors ------------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [0, -1, 2.5, "4", None])
def test_format_rejects_a_bad_capacity(capacity):
    with pytest.raises(ChannelError, match=r"'capacity' must be a positive integer") as exc:
        RecordRing.format(bytearray(4096), BASE, capacity, 8)
    assert repr(capacity) in str(exc.value)


@pytest.mark.parametrize("record_size", [0, -8, 8.0])
def test_format_rejects_a_bad_record_size(record_size):
    with pytest.raises(ChannelError, match=r"'record_size' must be a positive integer") as exc:
        RecordRing.format(bytearray(4096), BASE, 4, record_size)
    assert repr(record_size) in str(exc.value)


def test_format_rejects_a_buffer_that_is_too_small():
    need = BASE + ring_bytes(4, 8)
    buf = bytearray(need - 1)
    with pytest.raises(ChannelError, match=rf"needs {need} bytes, buffer has {need - 1}"):
        RecordRing.format(buf, BASE, 4, 8)
    assert buf == bytearray(need - 1)  # nothing written


def test_base_must_be_a_multiple_of_eight():
    with pytest.raises(ValueError, match=r"'base' must be a multiple of 8, got 12"):
        RecordRing(bytearray(4096), 12)


def test_attach_to_memory_without_a_ring():
    with pytest.raises(ChannelError, match=r"no record ring at offset 64"):
        RecordRing(bytearray(4096), BASE)


def test_attach_to_a_truncated_ring():
    buf, _ = make_ring(8, 8)
    with pytest.raises(ChannelError, match=r"record ring needs \d+ bytes, buffer has"):
        RecordRing(buf[: len(buf) - 8], BASE)


def test_attach_to_a_buffer_smaller_than_the_ring_header():
    # Too short even for the body header: must be a ChannelError, not an IndexError.
    with pytest.raises(ChannelError):
        RecordRing(bytearray(BASE + 16), BASE)


def test_write_many_rejects_the_wrong_record_size():
    buf, ring = make_ring(4, 8)
    with pytest.raises(ChannelError, match=r"records are 4 bytes, ring holds 8-byte records"):
        ring.write_many(np.zeros(3, dtype="V4"))
    assert ring.write_count == 0


@pytest.mark.parametrize("size", [7, 9, 16])
def test_write_rejects_a_payload_of_the_wrong_size(size):
    # A long payload would run into the next slot's stamp (destroying a record that is
    # still in the ring); a short one would leave the previous lap's bytes behind.
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(5))  # next record goes to slot 1, slot 2 holds record 2
    before = bytes(buf)
    with pytest.raises(ChannelError):
        ring.write(b"\xff" * size, memoryview(buf))
    assert bytes(buf) == before
    got = ring.read(0)
    assert (got.first, got.missed) == (1, 1)
    assert got.records.tobytes() == expected_bytes(1, 4, 8)


def test_read_rejects_a_negative_cursor():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(3))
    with pytest.raises(ValueError, match="cursor"):
        ring.read(-1)


@pytest.mark.parametrize("max_records", [0, -1])
def test_read_with_a_non_positive_max_records_loses_nothing_silently(max_records):
    buf, ring = make_ring(8, 8)
    write_seqs(ring, buf, range(3))
    try:
        got = ring.read(0, max_records)
    except ValueError as exc:
        assert "max_records" in str(exc)
    else:
        # It moved the cursor to next_cursor, so every record it skipped is missed.
        assert got.next_cursor == 3
        assert got.missed + len(got.records) == 3


# -- write, write_many and read ------------------------------------------------------------

def test_empty_ring_reads_nothing():
    _, ring = make_ring(4, 8)
    got = ring.read(0)
    assert len(got.records) == 0 and got.records.dtype == np.dtype("V8")
    assert (got.first, got.missed, got.next_cursor) == (0, 0, 0)


def test_read_everything_then_nothing_new():
    buf, ring = make_ring(8, 12)
    write_seqs(ring, buf, range(5))
    got = ring.read(0)
    assert (got.first, got.missed, got.next_cursor) == (0, 0, 5)
    assert got.records.tobytes() == expected_bytes(0, 5, 12)
    again = ring.read(got.next_cursor)
    assert len(again.records) == 0
    assert (again.first, again.missed, again.next_cursor) == (5, 0, 5)


def test_read_from_the_middle():
    buf, ring = make_ring(8, 8)
    write_seqs(ring, buf, range(6))
    got = ring.read(4)
    assert (got.first, got.missed, got.next_cursor) == (4, 0, 6)
    assert got.records.tobytes() == expected_bytes(4, 2, 8)


def test_overwritten_records_are_counted_as_missed():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(11))
    got = ring.read(2)
    assert (got.first, got.missed, got.next_cursor) == (7, 5, 11)
    assert got.records.tobytes() == expected_bytes(7, 4, 8)


def test_max_records_keeps_the_newest_and_counts_the_rest_missed():
    buf, ring = make_ring(8, 8)
    write_seqs(ring, buf, range(7))
    got = ring.read(1, max_records=2)
    assert (got.first, got.missed, got.next_cursor) == (5, 4, 7)
    assert got.records.tobytes() == expected_bytes(5, 2, 8)
    got = ring.read(6, max_records=5)  # fewer available than allowed
    assert (got.first, got.missed, got.next_cursor) == (6, 0, 7)


def test_read_returns_a_private_copy():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(2))
    got = ring.read(0)
    write_seqs(ring, buf, range(2, 8))  # overwrite every slot
    assert got.records.tobytes() == expected_bytes(0, 2, 8)


def test_write_many_within_capacity_wraps_around():
    buf, ring = make_ring(5, 12)
    write_seqs(ring, buf, range(3))
    ring.write_many(batch(3, 4, 12))  # slots 3, 4, 0, 1
    assert ring.write_count == 7
    got = ring.read(0)
    assert (got.first, got.missed, got.next_cursor) == (2, 2, 7)
    assert got.records.tobytes() == expected_bytes(2, 5, 12)
    for n in range(2, 7):
        assert get_stamp(buf, BASE, 12, n % 5) == 2 * n + 2


def test_write_many_exactly_capacity():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(2))
    ring.write_many(batch(2, 4, 8))
    got = ring.read(0)
    assert (got.first, got.missed, got.next_cursor) == (2, 2, 6)
    assert got.records.tobytes() == expected_bytes(2, 4, 8)


@pytest.mark.parametrize("already", [0, 3])
def test_write_many_larger_than_capacity_keeps_the_newest(already):
    buf, ring = make_ring(4, 16)
    write_seqs(ring, buf, range(already))
    ring.write_many(batch(already, 10, 16))
    end = already + 10
    assert ring.write_count == end
    got = ring.read(0)
    assert (got.first, got.missed, got.next_cursor) == (end - 4, end - 4, end)
    assert got.records.tobytes() == expected_bytes(end - 4, 4, 16)
    for n in range(end - 4, end):
        assert get_stamp(buf, BASE, 16, n % 4) == 2 * n + 2
    write_seqs(ring, buf, [end])  # single writes continue the numbering
    assert ring.read(end).records.tobytes() == payload(end, 16)


def test_write_many_of_nothing_changes_nothing():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(2))
    before = bytes(buf)
    ring.write_many(np.zeros(0, dtype="V8"))
    assert bytes(buf) == before


def test_write_many_accepts_structured_and_strided_arrays():
    dt = np.dtype([("seq", "=u8"), ("x", "=f4"), ("y", "=u4")])
    buf, ring = make_ring(8, dt.itemsize)
    rows = np.zeros(6, dtype=dt)
    rows["seq"] = np.arange(6)
    rows["x"] = np.arange(6) * 0.5
    ring.write_many(rows[::2])  # a non-contiguous view: seq 0, 2, 4
    got = ring.read(0)
    back = got.records.view(dt)
    assert back["seq"].tolist() == [0, 2, 4]
    assert back["x"].tolist() == [0.0, 1.0, 2.0]


# -- a reader ahead of the writer (the writer restarted) ----------------------------------

def test_cursor_beyond_a_restarted_writer_starts_over():
    buf, ring = make_ring(8, 8)
    write_seqs(ring, buf, range(20))
    reader = RecordRing(buf, BASE)
    cursor = reader.read(0).next_cursor
    assert cursor == 20
    fresh = RecordRing.format(buf, BASE, 8, 8)  # the device restarted
    write_seqs(fresh, buf, range(3))
    got = reader.read(cursor)
    assert (got.first, got.missed, got.next_cursor) == (0, 0, 3)
    assert got.records.tobytes() == expected_bytes(0, 3, 8)


def test_cursor_beyond_a_restarted_writer_that_already_wrapped():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(50))
    fresh = RecordRing.format(buf, BASE, 4, 8)
    write_seqs(fresh, buf, range(6))
    got = RecordRing(buf, BASE).read(50)
    assert (got.first, got.next_cursor) == (2, 6)
    assert got.records.tobytes() == expected_bytes(2, 4, 8)
    assert got.missed >= 0


# -- torn and overwritten slots -----------------------------------------------------------

def test_slot_being_written_is_dropped_and_counted_missed():
    buf, ring = make_ring(4, 16)
    write_seqs(ring, buf, range(8))  # ring holds 4..7
    # The writer has begun record 8 in slot 0 (which holds record 4) and died there.
    set_stamp(buf, BASE, 16, 0, 2 * 8 + 1)
    scribble_payload(buf, BASE, 16, 0)
    got = RecordRing(buf, BASE).read(4)
    assert (got.first, got.missed, got.next_cursor) == (5, 1, 8)
    assert got.records.tobytes() == expected_bytes(5, 3, 16)


def test_slot_holding_a_newer_record_is_dropped_and_counted_missed():
    buf, ring = make_ring(4, 16)
    write_seqs(ring, buf, range(8))
    # Slots 0 and 1 already hold records 8 and 9 but write_count still says 8
    # (a write_many seen half way).
    for n in (8, 9):
        set_stamp(buf, BASE, 16, n % 4, 2 * n + 2)
        scribble_payload(buf, BASE, 16, n % 4)
    got = RecordRing(buf, BASE).read(3)
    assert (got.first, got.missed, got.next_cursor) == (6, 3, 8)
    assert got.records.tobytes() == expected_bytes(6, 2, 16)


def test_bad_slot_in_the_middle_drops_it_and_everything_older():
    # Records must come back consecutive, so nothing before a bad slot is returned.
    buf, ring = make_ring(8, 8)
    write_seqs(ring, buf, range(6))
    set_stamp(buf, BASE, 8, 3, 2 * 3 + 1)
    got = RecordRing(buf, BASE).read(1)
    assert (got.first, got.missed, got.next_cursor) == (4, 3, 6)
    assert got.records.tobytes() == expected_bytes(4, 2, 8)


def test_every_slot_bad_returns_nothing_and_counts_all_missed():
    buf, ring = make_ring(3, 8)
    write_seqs(ring, buf, range(3))
    for slot in range(3):
        set_stamp(buf, BASE, 8, slot, 2 * (slot + 3) + 1)
        scribble_payload(buf, BASE, 8, slot)
    got = RecordRing(buf, BASE).read(0)
    assert len(got.records) == 0
    assert (got.first, got.missed, got.next_cursor) == (3, 3, 3)


def test_begin_write_in_progress_hides_the_overwritten_record():
    buf, ring = make_ring(4, 8)
    write_seqs(ring, buf, range(4))
    off = ring.begin_write()  # record 4 over record 0
    buf[off : off + 4] = b"\xee" * 4  # half the payload written
    got = RecordRing(buf, BASE).read(0)
    assert (got.first, got.missed, got.next_cursor) == (1, 1, 4)
    assert got.records.tobytes() == expected_bytes(1, 3, 8)
    buf[off : off + 8] = payload(4, 8)
    ring.end_write()
    got = RecordRing(buf, BASE).read(got.next_cursor)
    assert (got.first, got.missed, got.next_cursor) == (4, 0, 5)
    assert got.records.tobytes() == payload(4, 8)


def test_torn_copy_is_never_returned():
    """The reader copies garbage, then sees the stamp change: it must drop the record."""
    buf, ring = make_ring(4, 16)
    write_seqs(ring, buf, range(6))  # ring holds 2..5; record 2 is in slot 2
    # What the reader will observe: stamp valid, then garbage bytes, then an odd stamp
    # (the writer started record 6 in slot 2 during the copy).
    scribble_payload(buf, BASE, 16, 2)
    hook = FenceHook(2, lambda: set_stamp(buf, BASE, 16, 2, 2 * 6 + 1))
    with mock.patch.object(records, "fence", hook):
        got = RecordRing(buf, BASE).read(2)
    assert hook.fired
    assert (got.first, got.missed, got.next_cursor) == (3, 1, 6)
    assert got.records.tobytes() == expected_bytes(3, 3, 16)
    assert b"\xee" * 8 not in got.records.tobytes()


def test_records_overwritten_during_the_copy_are_dropped():
    buf, ring = make_ring(5, 8)
    write_seqs(ring, buf, range(7))  # ring holds 2..6
    hook = FenceHook(2, lambda: ring.write_many(batch(7, 3, 8)))  # replaces 2, 3, 4
    with mock.patch.object(records, "fence", hook):
        got = RecordRing(buf, BASE).read(0)
    assert hook.fired
    assert (got.first, got.missed, got.next_cursor) == (5, 5, 7)
    assert got.records.tobytes() == expected_bytes(5, 2, 8)
    got = RecordRing(buf, BASE).read(got.next_cursor)
    assert (got.first, got.missed, got.next_cursor) == (7, 0, 10)
    assert got.records.tobytes() == expected_bytes(7, 3, 8)


def test_one_record_reads_drop_a_slot_being_written_and_a_torn_copy():
    """A reader in step reads one record at a time (the few-records path): the same checks."""
    buf, ring = make_ring(4, 16)
    write_seqs(ring, buf, range(6))
    got = RecordRing(buf, BASE).read(5)
    assert (got.first, got.missed, got.next_cursor) == (5, 0, 6) and got.records.tobytes() == payload(5, 16)
    set_stamp(buf, BASE, 16, 5 % 4, 2 * 9 + 1)           # record 9 begun over record 5: dropped
    got = RecordRing(buf, BASE).read(5)
    assert (got.first, got.missed, got.next_cursor, len(got.records)) == (6, 1, 6, 0)
    write_seqs(ring, buf, range(6, 7))                  # record 6 in slot 2
    scribble_payload(buf, BASE, 16, 2)
    hook = FenceHook(2, lambda: set_stamp(buf, BASE, 16, 2, 2 * 10 + 1))   # overwritten during the copy
    with mock.patch.object(records, "fence", hook):
        got = RecordRing(buf, BASE).read(6)
    assert hook.fired and len(got.records) == 0 and (got.first, got.missed, got.next_cursor) == (7, 1, 7)


def test_few_record_reads_drop_a_bad_slot_and_a_torn_copy():
    """A reader a few records behind, without a wrap (its own shorter path): the same checks."""
    buf, ring = make_ring(8, 16)
    write_seqs(ring, buf, range(6))
    got = RecordRing(buf, BASE).read(3)
    assert (got.first, got.missed, got.next_cursor) == (3, 0, 6) and got.records.tobytes() == expected_bytes(3, 3, 16)
    set_stamp(buf, BASE, 16, 4, 2 * 4 + 1)               # record 4 being rewritten: it and 3 are dropped
    got = RecordRing(buf, BASE).read(3)
    assert (got.first, got.missed, got.next_cursor) == (5, 2, 6) and got.records.tobytes() == payload(5, 16)
    set_stamp(buf, BASE, 16, 4, 2 * 4 + 2)
    scribble_payload(buf, BASE, 16, 3)
    hook = FenceHook(2, lambda: set_stamp(buf, BASE, 16, 3, 2 * 11 + 1))  # record 11 begun over 3 during the copy
    with mock.patch.object(records, "fence", hook):
        got = RecordRing(buf, BASE).read(3)
    assert hook.fired and (got.first, got.missed, got.next_cursor) == (4, 1, 6)
    assert got.records.tobytes() == expected_bytes(4, 2, 16)


# -- property: any interleaving, several readers -----------------------------------------

N_READERS = 3

_ops = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 4)),
    st.tuples(st.just("begin_end"), st.integers(1, 3)),
    st.tuples(st.just("many"), st.integers(0, 20)),
    st.tuples(
        st.just("read"),
        st.integers(0, N_READERS - 1),
        st.one_of(st.none(), st.integers(1, 10)),
    ),
    st.tuples(
        st.just("race"),  # the writer publishes while the reader is between copy and re-check
        st.integers(0, N_READERS - 1),
        st.integers(1, 12),
        st.sampled_from(["write", "many"]),
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    capacity=st.integers(1, 8),
    record_size=st.sampled_from([8, 12, 16, 21]),
    ops=st.lists(_ops, max_size=40),
)
def test_any_interleaving_gives_every_reader_an_exact_account(capacity, record_size, ops):
    buf, writer = make_ring(capacity, record_size)
    mv = memoryview(buf)
    readers = [RecordRing(buf, BASE) for _ in range(N_READERS)]
    cursors = [0] * N_READERS
    last_seen = [-1] * N_READERS
    published = 0

    def publish(how, count):
        nonlocal published
        if how == "many":
            writer.write_many(batch(published, count, record_size))
        elif how == "write":
            write_seqs(writer, buf, range(published, published + count))
        else:
            for seq in range(published, published + count):
                off = writer.begin_write()
                mv[off : off + record_size] = payload(seq, record_size)
                writer.end_write()
        published += count

    def check(r, got, cursor, written, expected_first):
        assert got.next_cursor == written
        assert got.first == expected_first
        assert got.first == cursor + got.missed
        assert got.missed + len(got.records) == written - cursor
        assert got.records.dtype.itemsize == record_size
        assert got.records.tobytes() == expected_bytes(got.first, len(got.records), record_size)
        if len(got.records):  # strictly increasing across reads
            assert got.first > last_seen[r]
            last_seen[r] = got.first + len(got.records) - 1
        cursors[r] = got.next_cursor

    for op in ops:
        kind = op[0]
        if kind in ("write", "begin_end", "many"):
            publish(kind, op[1])
        elif kind == "read":
            _, r, max_records = op
            cursor, written = cursors[r], published
            start = max(cursor, written - capacity)
            if max_records is not None:
                start = max(start, written - max_records)
            got = readers[r].read(cursor, max_records)
            check(r, got, cursor, written, start)
        else:
            _, r, count, how = op
            cursor, written = cursors[r], published
            start = max(cursor, written - capacity)
            hook = FenceHook(2, lambda: publish(how, count))
            with mock.patch.object(records, "fence", hook):
                got = readers[r].read(cursor)
            if hook.fired:
                # The slots of records written - capacity .. + count - 1 were reused.
                expected_first = min(written, max(start, written - capacity + count))
            else:  # nothing to copy: the read returned before its second fence
                assert start == written
                publish(how, count)
                expected_first = start
            check(r, got, cursor, written, expected_first)
    assert writer.write_count == published
