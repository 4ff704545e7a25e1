"""Tests of device_agent/frames.py (FrameSlots) on a plain bytearray.

Covers the byte layout documented in the module docstring, the minimum of three slots,
argument errors, a writer that never waits, read_latest returning the newest complete
frame, ``after`` semantics, frames with fewer rows than declared, and torn reads: a
stamp left odd by hand, and a writer that changes or laps the slot while the reader is
copying (injected through the reader's fence) — a torn frame is never returned.
"""

import struct
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent import frames
from device_agent.errors import ChannelError
from device_agent.frames import FrameSlots, slot_size_for, slots_bytes
from fence_hook import FenceHook

BASE = 64
U64 = struct.Struct("=Q")


# -- helpers ------------------------------------------------------------------------------

def make_slots(nslots, frame_nbytes, base=BASE):
    buf = bytearray(base + slots_bytes(nslots, frame_nbytes))
    return buf, FrameSlots.format(buf, base, nslots, frame_nbytes)


def frame_bytes(seq, nbytes):
    """Frame content that encodes its sequence number (8-byte prefix, then a pattern)."""
    head = U64.pack(seq)[:nbytes]
    return head + bytes((seq * 29 + i + 1) & 0xFF for i in range(nbytes - len(head)))


def doc_slot_size(frame_nbytes):
    # "slot_size: 64 + frame_nbytes rounded up to 64"
    return 64 + -(-frame_nbytes // 64) * 64


def slot_offset(base, frame_nbytes, slot):
    return base + 64 + slot * doc_slot_size(frame_nbytes)


def slot_meta(buf, base, frame_nbytes, slot):
    """(stamp, t, nbytes, rows) read at the documented offsets."""
    return struct.unpack_from("=QdQQ", buf, slot_offset(base, frame_nbytes, slot))


def set_stamp(buf, base, frame_nbytes, slot, value):
    U64.pack_into(buf, slot_offset(base, frame_nbytes, slot), value)


def scribble(buf, base, frame_nbytes, slot, byte=0xEE):
    off = slot_offset(base, frame_nbytes, slot) + 64
    buf[off : off + frame_nbytes] = bytes([byte]) * frame_nbytes


# FrameSlots.read_latest fences (1) after loading ``latest``, (2) after checking the first
# stamp, (3) after copying the data, before re-reading the stamp (FenceHook's ``at``).


# -- format, attach and layout --------------------------------------------------------------

def test_format_writes_the_documented_body_header():
    buf = bytearray(b"\xaa" * (BASE + slots_bytes(3, 100)))
    slots = FrameSlots.format(buf, BASE, 3, 100)
    assert (slots.nslots, slots.frame_nbytes) == (3, 100)
    assert slots.slot_size == doc_slot_size(100) == slot_size_for(100) == 192
    assert struct.unpack_from("=4Q", buf, BASE) == (0, 3, 100, 192)
    assert buf[BASE + 32 : BASE + 64] == bytes(32)
    for slot in range(3):
        off = slot_offset(BASE, 100, slot)
        assert buf[off : off + 64] == bytes(64)
    assert buf[:BASE] == b"\xaa" * BASE
    assert slots.latest == 0


def test_frames_land_where_the_docstring_says():
    buf, slots = make_slots(3, 100)
    for k in range(1, 6):
        assert slots.write(frame_bytes(k, 100 - k), t=k + 0.25, rows=k) == k
    assert U64.unpack_from(buf, BASE)[0] == 5  # latest
    for k in (3, 4, 5):  # frame k lives in slot k % nslots
        slot = k % 3
        assert slot_meta(buf, BASE, 100, slot) == (2 * k + 2, k + 0.25, 100 - k, k)
        off = slot_offset(BASE, 100, slot) + 64
        assert off % 64 == 0  # "64-byte aligned"
        assert bytes(buf[off : off + 100 - k]) == frame_bytes(k, 100 - k)
        assert slots.data_offset(slot) == off


def test_begin_write_marks_the_slot_odd_until_end_write():
    buf, slots = make_slots(4, 64)
    slots.write(frame_bytes(1, 64), t=1.0)
    slot = slots.begin_write()
    assert slot == 2 % 4
    assert slot_meta(buf, BASE, 64, slot)[0] == 2 * 2 + 1
    assert slots.latest == 1
    off = slots.data_offset(slot)
    buf[off : off + 64] = frame_bytes(2, 64)
    slots.end_write(2.0, 64, 8)
    assert slot_meta(buf, BASE, 64, slot) == (2 * 2 + 2, 2.0, 64, 8)
    assert slots.latest == 2


def test_a_second_instance_attaches_and_a_reattached_writer_continues():
    buf, writer = make_slots(3, 32)
    writer.write(frame_bytes(1, 32), t=1.0)
    writer.write(frame_bytes(2, 32), t=2.0)
    again = FrameSlots(buf, BASE)
    assert (again.nslots, again.frame_nbytes, again.latest) == (3, 32, 2)
    assert again.write(frame_bytes(3, 32), t=3.0) == 3
    got = FrameSlots(buf, BASE).read_latest()
    assert (got.seq, got.t) == (3, 3.0)
    assert got.data.tobytes() == frame_bytes(3, 32)


# -- argument errors ------------------------------------------------------------------------

@pytest.mark.parametrize("nslots", [0, 1, 2, 3.0, "4"])
def test_at_least_three_slots_are_enforced(nslots):
    with pytest.raises(ChannelError, match=r"'slots' must be an integer >= 3") as exc:
        FrameSlots.format(bytearray(8192), BASE, nslots, 64)
    assert repr(nslots) in str(exc.value)


def test_three_slots_is_enough():
    _, slots = make_slots(3, 8)
    assert slots.nslots == 3


def test_attach_refuses_fewer_than_three_slots():
    buf, _ = make_slots(3, 64)
    U64.pack_into(buf, BASE + 8, 2)  # nslots := 2 behind the library's back
    with pytest.raises(ChannelError, match="no frame slots at offset 64"):
        FrameSlots(buf, BASE)


@pytest.mark.parametrize("frame_nbytes", [0, -64, 64.0])
def test_format_rejects_a_bad_frame_size(frame_nbytes):
    with pytest.raises(ChannelError, match=r"'frame_nbytes' must be a positive integer") as exc:
        FrameSlots.format(bytearray(8192), BASE, 3, frame_nbytes)
    assert repr(frame_nbytes) in str(exc.value)


def test_format_rejects_a_buffer_that_is_too_small():
    need = BASE + slots_bytes(3, 64)
    buf = bytearray(need - 1)
    with pytest.raises(ChannelError, match=rf"need {need} bytes, buffer has {need - 1}"):
        FrameSlots.format(buf, BASE, 3, 64)
    assert buf == bytearray(need - 1)


def test_base_must_be_a_multiple_of_64():
    with pytest.raises(ValueError, match=r"'base' must be a multiple of 64, got 32"):
        FrameSlots(bytearray(8192), 32)


def test_attach_to_memory_without_frame_slots():
    with pytest.raises(ChannelError, match="no frame slots at offset 64"):
        FrameSlots(bytearray(8192), BASE)


def test_attach_to_truncated_frame_slots():
    buf, _ = make_slots(3, 64)
    with pytest.raises(ChannelError, match="run past the end of the buffer"):
        FrameSlots(buf[:-1], BASE)


def test_write_rejects_a_frame_larger_than_the_slots():
    buf, slots = make_slots(3, 64)
    slots.write(frame_bytes(1, 64), t=1.0)
    before = bytes(buf)
    with pytest.raises(ChannelError, match="frame is 65 bytes, slots hold 64"):
        slots.write(bytes(65), t=2.0)
    assert bytes(buf) == before
    assert slots.read_latest().seq == 1


# -- write and read_latest ------------------------------------------------------------------

def test_nothing_written_reads_none():
    _, slots = make_slots(3, 64)
    assert slots.read_latest() is None


def test_read_latest_returns_the_newest_complete_frame():
    buf, slots = make_slots(3, 48)
    for k in range(1, 8):
        slots.write(frame_bytes(k, 48), t=100.0 + k, rows=6)
    got = FrameSlots(buf, BASE).read_latest()
    assert (got.seq, got.t, got.rows) == (7, 107.0, 6)
    assert got.data.dtype == np.uint8
    assert got.data.tobytes() == frame_bytes(7, 48)


def test_read_latest_returns_a_private_copy():
    buf, slots = make_slots(3, 16)
    slots.write(frame_bytes(1, 16), t=1.0)
    got = slots.read_latest()
    for k in range(2, 8):  # overwrite every slot, several times
        slots.write(frame_bytes(k, 16), t=k)
    assert got.data.tobytes() == frame_bytes(1, 16)


def test_read_latest_into_a_reused_buffer():
    buf, slots = make_slots(3, 48)
    out = np.zeros(64, np.uint8)  # larger than a frame: only the frame's bytes are used
    slots.write(frame_bytes(1, 48), t=1.0, rows=6)
    first = slots.read_latest(out=out)
    assert first.data.tobytes() == frame_bytes(1, 48)
    assert np.shares_memory(first.data, out)
    slots.write(frame_bytes(2, 48)[:32], t=2.0, rows=4)  # a shorter frame
    second = slots.read_latest(after=first.seq, out=out)
    assert (second.seq, second.rows) == (2, 4)
    assert second.data.tobytes() == frame_bytes(2, 48)[:32]


def test_after_semantics():
    _, slots = make_slots(3, 16)
    for k in range(1, 6):
        slots.write(frame_bytes(k, 16), t=float(k))
    assert slots.read_latest(after=0).seq == 5
    assert slots.read_latest(after=4).seq == 5
    assert slots.read_latest(after=5) is None  # nothing newer than what I have
    assert slots.read_latest(after=99) is None
    slots.write(frame_bytes(6, 16), t=6.0)
    assert slots.read_latest(after=5).seq == 6


def test_a_poll_with_nothing_new_writes_nothing():
    # an idle reader polls flat out; a store per poll would keep pulling the header's
    # cache line (latest, latest_slot, pins) away from the writer's core
    buf, slots = make_slots(3, 16)
    slots.write(frame_bytes(1, 16), t=1.0)
    for i in range(3):  # as if other readers held every pin
        U64.pack_into(buf, BASE + 40 + 8 * i, 100 + i)
    before = bytes(buf)
    reader = FrameSlots(buf, BASE)
    assert reader.read_latest(after=1) is None
    assert bytes(buf) == before


def test_fewer_rows_than_declared():
    # Declared: 4 rows of 16 bytes. A frame with 2 rows carries 32 bytes, no stale tail.
    _, slots = make_slots(3, 64)
    for k in range(1, 4):
        slots.write(frame_bytes(k, 64), t=float(k), rows=4)
    arr = np.arange(8, dtype="<u4").reshape(2, 4)
    assert slots.write(arr, t=4.0, rows=2) == 4  # lands on slot 1, which held frame 1
    got = slots.read_latest()
    assert (got.seq, got.rows) == (4, 2)
    assert len(got.data) == 32
    assert got.data.tobytes() == arr.tobytes()


def test_empty_frame():
    _, slots = make_slots(3, 64)
    slots.write(frame_bytes(1, 64), t=1.0, rows=4)
    slots.write(b"", t=2.0, rows=0)
    got = slots.read_latest()
    assert (got.seq, got.rows, len(got.data)) == (2, 0, 0)


def test_ndarray_frames_are_stored_in_c_order():
    _, slots = make_slots(3, 48)
    arr = np.arange(12, dtype="=f4").reshape(3, 4).T  # a Fortran-order view
    slots.write(arr, t=1.0, rows=4)
    got = slots.read_latest()
    assert got.data.tobytes() == np.ascontiguousarray(arr).tobytes()
    back = got.data.view("=f4").reshape(4, 3)
    assert np.array_equal(back, arr)


def test_writer_never_waits():
    # Many laps, no reader ever; a frame left mid-write by begin_write does not stop
    # readers from getting the previous complete frame.
    buf, slots = make_slots(3, 16)
    for k in range(1, 31):
        assert slots.write(frame_bytes(k, 16), t=float(k)) == k
    assert slots.latest == 30
    slot = slots.begin_write()
    scribble(buf, BASE, 16, slot)
    got = FrameSlots(buf, BASE).read_latest()
    assert got.seq == 30 and got.data.tobytes() == frame_bytes(30, 16)
    slots.end_write(31.0, 16, 0)
    assert slots.write(frame_bytes(32, 16), t=32.0) == 32


# -- torn reads -----------------------------------------------------------------------------

def test_stamp_left_odd_is_never_returned():
    buf, slots = make_slots(3, 32)
    for k in range(1, 5):
        slots.write(frame_bytes(k, 32), t=float(k))
    set_stamp(buf, BASE, 32, 4 % 3, 2 * 4 + 1)  # frame 4's slot: "being written"
    scribble(buf, BASE, 32, 4 % 3)
    assert FrameSlots(buf, BASE).read_latest(attempts=5) is None
    slots.write(frame_bytes(5, 32), t=5.0)  # the writer moves on
    got = FrameSlots(buf, BASE).read_latest()
    assert got.seq == 5 and got.data.tobytes() == frame_bytes(5, 32)


def test_corrupt_nbytes_is_never_returned():
    buf, slots = make_slots(3, 32)
    slots.write(frame_bytes(1, 32), t=1.0)
    struct.pack_into("=Q", buf, slot_offset(BASE, 32, 1) + 16, 10**6)
    assert FrameSlots(buf, BASE).read_latest(attempts=3) is None


def test_stamp_changed_during_the_copy_is_never_returned():
    buf, slots = make_slots(3, 32)
    for k in range(1, 5):
        slots.write(frame_bytes(k, 32), t=float(k))
    # What the reader observes: stamp 2k+2, data that is garbage, then an odd stamp.
    scribble(buf, BASE, 32, 4 % 3)
    hook = FenceHook(3, lambda: set_stamp(buf, BASE, 32, 4 % 3, 2 * 7 + 1))
    with mock.patch.object(frames, "fence", hook):
        got = FrameSlots(buf, BASE).read_latest(attempts=5)
    assert hook.fired
    assert got is None


def test_a_writer_lapping_during_the_copy_skips_the_pinned_slot():
    buf, slots = make_slots(3, 32)
    for k in range(1, 5):
        slots.write(frame_bytes(k, 32), t=float(k))

    def lap():  # frames 5, 6, 7 while the reader copies frame 4: round robin would reuse its slot
        for k in range(5, 8):
            slots.write(frame_bytes(k, 32), t=float(k))

    reader = FrameSlots(buf, BASE)
    hook = FenceHook(3, lap)  # fences: after latest, after the pin, after the first stamp check
    with mock.patch.object(frames, "fence", hook):
        got = reader.read_latest()
    assert hook.fired
    assert (got.seq, got.t) == (4, 4.0)            # the copy was never overwritten
    assert got.data.tobytes() == frame_bytes(4, 32)
    assert slots.latest == 7                       # the writer did not wait
    assert reader.read_latest(after=4).seq == 7    # and the next read gets the newest
    assert [U64.unpack_from(buf, BASE + 40 + 8 * i)[0] for i in range(3)] == [0, 0, 0]  # pins released


def test_without_pins_frame_k_goes_to_slot_k_mod_nslots():
    buf, slots = make_slots(4, 16)
    for k in range(1, 10):
        slots.write(frame_bytes(k, 16), t=float(k))
        assert U64.unpack_from(buf, BASE + 32)[0] == k % 4  # latest_slot


def test_reader_lapped_before_the_first_stamp_retries():
    buf, slots = make_slots(3, 32)
    for k in range(1, 5):
        slots.write(frame_bytes(k, 32), t=float(k))

    def lap():
        for k in range(5, 9):
            slots.write(frame_bytes(k, 32), t=float(k))

    hook = FenceHook(1, lap)
    with mock.patch.object(frames, "fence", hook):
        got = FrameSlots(buf, BASE).read_latest()
    assert hook.fired
    assert got.seq == 8 and got.data.tobytes() == frame_bytes(8, 32)


def test_one_new_frame_during_the_copy_does_not_disturb_the_reader():
    buf, slots = make_slots(3, 32)
    for k in range(1, 5):
        slots.write(frame_bytes(k, 32), t=float(k))
    hook = FenceHook(3, lambda: slots.write(frame_bytes(5, 32), t=5.0))
    with mock.patch.object(frames, "fence", hook):
        got = FrameSlots(buf, BASE).read_latest()
    assert hook.fired
    assert got.seq == 4 and got.data.tobytes() == frame_bytes(4, 32)


# -- property -------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    nslots=st.integers(3, 5),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 40)),
            st.tuples(st.just("read"), st.integers(0, 12)),
        ),
        max_size=30,
    ),
)
def test_reads_always_match_the_last_frame_written(nslots, ops):
    buf, writer = make_slots(nslots, 40)
    reader = FrameSlots(buf, BASE)
    written = []  # sizes of frames 1, 2, ...
    for kind, n in ops:
        if kind == "write":
            k = len(written) + 1
            assert writer.write(frame_bytes(k, n), t=k / 8, rows=n // 8) == k
            written.append(n)
        else:
            got = reader.read_latest(after=n)
            latest = len(written)
            if latest == 0 or latest <= n:
                assert got is None
            else:
                size = written[-1]
                assert (got.seq, got.t, got.rows) == (latest, latest / 8, size // 8)
                assert got.data.tobytes() == frame_bytes(latest, size)


# -- read_frame: a frame older than the newest, while a slot still holds it ------------------
# read_frame fences (1) after the pin, (2) after re-checking the stamp, (3) after the copy.

def test_read_frame_returns_each_frame_the_slots_still_hold():
    buf, slots = make_slots(4, 32)
    for k in range(1, 10):
        slots.write(frame_bytes(k, 32), t=float(k), rows=2)
    reader = FrameSlots(buf, BASE)
    for k in (6, 7, 8, 9):             # 4 slots: frames 6-9
        got = reader.read_frame(k)
        assert (got.seq, got.t, got.rows) == (k, float(k), 2)
        assert got.data.tobytes() == frame_bytes(k, 32)
    assert reader.read_frame(5) is None          # overwritten
    assert reader.read_frame(10) is None         # not published yet
    assert reader.read_frame(0) is None
    assert [U64.unpack_from(buf, BASE + 40 + 8 * i)[0] for i in range(3)] == [0, 0, 0]  # pins released


def test_read_frame_holds_the_newest_and_the_one_before_it_during_a_write():
    buf, slots = make_slots(3, 16)
    for k in range(1, 10):
        slots.write(frame_bytes(k, 16), t=float(k))
    slots.begin_write()                          # frame 10 under way in a third slot
    reader = FrameSlots(buf, BASE)
    assert reader.read_frame(9).data.tobytes() == frame_bytes(9, 16)
    assert reader.read_frame(8).data.tobytes() == frame_bytes(8, 16)
    assert reader.read_frame(7) is None


def test_read_frame_into_a_reused_buffer():
    _, slots = make_slots(3, 48)
    out = np.zeros(64, np.uint8)
    slots.write(frame_bytes(1, 48)[:32], t=1.0, rows=4)
    slots.write(frame_bytes(2, 48), t=2.0, rows=6)
    got = slots.read_frame(1, out=out)
    assert np.shares_memory(got.data, out) and got.data.tobytes() == frame_bytes(1, 48)[:32]


@pytest.mark.parametrize("at", [1, 3])
def test_read_frame_never_returns_a_slot_the_writer_took(at):
    # at 1: the writer claimed the slot just before it saw the pin (stamp odd on the re-check);
    # at 3: the stamp changed during the copy. Either way: None, never the torn bytes.
    buf, slots = make_slots(3, 32)
    for k in range(1, 5):
        slots.write(frame_bytes(k, 32), t=float(k))
    slot_of_3 = 3 % 3
    hook = FenceHook(at, lambda: (set_stamp(buf, BASE, 32, slot_of_3, 2 * 6 + 1), scribble(buf, BASE, 32, slot_of_3)))
    with mock.patch.object(frames, "fence", hook):
        got = FrameSlots(buf, BASE).read_frame(3)
    assert hook.fired
    assert got is None
