"""Tests of device_agent/queues.py (SeqlockBlob, MessageQueue) on a plain bytearray.

SeqlockBlob: the documented layout, versioning (changes on every write, even when
stable), MessageTooLarge with nothing written, a blob left odd by a dead writer
(reads raise LayoutError, the next write recovers), a corrupt length, a write landing
during a read's copy. MessageQueue: the documented layout, order, empty get → None,
QueueFull and MessageTooLarge with nothing written, wrap-around many times, separate
producer/consumer instances, and a Hypothesis test against a collections.deque model.
"""

import struct
from collections import deque
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent import queues
from device_agent.errors import LayoutError, MessageTooLarge, QueueFull
from device_agent.queues import MessageQueue, SeqlockBlob, blob_bytes, queue_bytes
from fence_hook import FenceHook

U64 = struct.Struct("=Q")


# SeqlockBlob.read fences (1) after loading an even seq, (2) after copying the data, before
# re-reading seq (FenceHook's ``at``).


# -- SeqlockBlob ----------------------------------------------------------------------------

def make_blob(capacity=32, base=8):
    buf = bytearray(base + blob_bytes(capacity))
    return buf, SeqlockBlob(buf, base, capacity)


def test_blob_bytes_rounds_capacity_up_to_eight():
    assert blob_bytes(1) == 16 + 8
    assert blob_bytes(8) == 16 + 8
    assert blob_bytes(9) == 16 + 16


def test_fresh_blob_reads_empty_at_version_zero():
    _, blob = make_blob()
    assert blob.version == 0
    assert blob.read() == (0, b"")


def test_blob_write_lands_where_the_docstring_says():
    buf, blob = make_blob(capacity=32, base=8)
    version = blob.write(b"hello")
    seq, length = struct.unpack_from("=QQ", buf, 8)
    assert (seq, length) == (version, 5)
    assert bytes(buf[24:29]) == b"hello"
    assert buf[:8] == bytes(8)  # nothing before base


def test_blob_read_returns_the_latest_write():
    buf, writer = make_blob()
    reader = SeqlockBlob(buf, 8, 32)
    v1 = writer.write(b"a longer first value")
    assert reader.read() == (v1, b"a longer first value")
    v2 = writer.write(b"short")
    assert reader.read() == (v2, b"short")  # no tail of the longer value


def test_blob_version_changes_on_every_write_and_is_even_when_stable():
    _, blob = make_blob()
    versions = [blob.version]
    for _ in range(5):
        v = blob.write(b"same bytes every time")
        assert v == blob.version
        versions.append(v)
    assert all(v % 2 == 0 for v in versions)
    assert all(b > a for a, b in zip(versions, versions[1:]))


def test_blob_exactly_capacity_fits():
    _, blob = make_blob(capacity=13)
    v = blob.write(b"x" * 13)
    assert blob.read() == (v, b"x" * 13)


def test_blob_too_large_raises_and_writes_nothing():
    buf, blob = make_blob(capacity=16)
    v = blob.write(b"kept")
    before = bytes(buf)
    with pytest.raises(MessageTooLarge, match="17 bytes do not fit in 16 bytes"):
        blob.write(b"y" * 17)
    assert bytes(buf) == before
    assert blob.read() == (v, b"kept")


def test_blob_left_odd_by_a_dead_writer_raises_then_recovers():
    buf, blob = make_blob()
    blob.write(b"before the crash")
    U64.pack_into(buf, 8, 7)  # the writer died between its two seq bumps
    reader = SeqlockBlob(buf, 8, 32)
    assert reader.version == 7
    with pytest.raises(LayoutError, match="mid-write"):
        reader.read(patience=0.05)
    v = SeqlockBlob(buf, 8, 32).write(b"after restart")  # a new writer
    assert v % 2 == 0 and v > 7
    assert reader.read() == (v, b"after restart")


def test_blob_with_a_corrupt_length_raises():
    buf, blob = make_blob(capacity=16)
    blob.write(b"ok")
    U64.pack_into(buf, 16, 10_000)  # length field
    with pytest.raises(LayoutError):
        blob.read(patience=0.05)


def test_blob_write_during_the_copy_makes_the_reader_retry():
    buf, writer = make_blob()
    writer.write(b"old value")
    hook = FenceHook(2, lambda: writer.write(b"new value!"))
    with mock.patch.object(queues, "fence", hook):
        version, data = SeqlockBlob(buf, 8, 32).read()
    assert hook.fired
    assert (version, data) == (writer.version, b"new value!")


def test_adjacent_blobs_do_not_overlap():
    cap = 20
    buf = bytearray(2 * blob_bytes(cap))
    a = SeqlockBlob(buf, 0, cap)
    b = SeqlockBlob(buf, blob_bytes(cap), cap)
    vb = b.write(b"b" * cap)
    va = a.write(b"a" * cap)
    assert a.read() == (va, b"a" * cap)
    assert b.read() == (vb, b"b" * cap)


def test_blob_base_must_be_a_multiple_of_eight():
    with pytest.raises(ValueError, match=r"'base' must be a multiple of 8, got 4"):
        SeqlockBlob(bytearray(128), 4, 16)


def test_blob_past_the_end_of_the_buffer():
    with pytest.raises(LayoutError, match="past the end"):
        SeqlockBlob(bytearray(32), 8, 16)


# -- MessageQueue ---------------------------------------------------------------------------

def make_queue(slot_count=4, slot_size=32, base=64):
    buf = bytearray(base + queue_bytes(slot_count, slot_size))
    return buf, MessageQueue.format(buf, base, slot_count, slot_size)


def test_format_writes_the_documented_header():
    buf = bytearray(b"\xaa" * (64 + queue_bytes(3, 24)))
    q = MessageQueue.format(buf, 64, 3, 24)
    assert struct.unpack_from("=4Q", buf, 64) == (0, 0, 3, 24)
    assert buf[64 + 32 : 64 + 64] == bytes(32)
    assert buf[:64] == b"\xaa" * 64
    assert (q.slot_count, q.slot_size, q.max_message) == (3, 24, 16)
    assert q.pending() == 0


def test_messages_land_where_the_docstring_says():
    buf, q = make_queue(slot_count=3, slot_size=24, base=64)
    for i in range(5):  # messages 3 and 4 wrap into slots 0 and 1
        q.put(bytes([65 + i]) * (i + 1))
        if i < 2:
            assert q.get() == bytes([65 + i]) * (i + 1)
    head, tail = struct.unpack_from("=QQ", buf, 64)
    assert (head, tail) == (2, 5)
    for i in (2, 3, 4):
        off = 64 + 64 + (i % 3) * 24
        assert U64.unpack_from(buf, off)[0] == i + 1
        assert bytes(buf[off + 8 : off + 8 + i + 1]) == bytes([65 + i]) * (i + 1)


def test_order_is_kept():
    _, q = make_queue(slot_count=8)
    msgs = [b"one", b"two", b"", b"four", b"\x00\xff" * 12]
    for m in msgs:
        q.put(m)
    assert q.pending() == len(msgs)
    assert [q.get() for _ in msgs] == msgs
    assert q.get() is None
    assert q.pending() == 0


def test_empty_get_returns_none_and_changes_nothing():
    buf, q = make_queue()
    before = bytes(buf)
    assert q.get() is None
    assert q.get() is None
    assert bytes(buf) == before


def test_full_queue_raises_queue_full_and_writes_nothing():
    buf, q = make_queue(slot_count=3)
    for m in (b"a", b"b", b"c"):
        q.put(m)
    before = bytes(buf)
    with pytest.raises(QueueFull, match=r"3 messages waiting"):
        q.put(b"d")
    assert bytes(buf) == before
    assert q.pending() == 3
    assert q.get() == b"a"
    q.put(b"d")  # room again
    assert [q.get(), q.get(), q.get(), q.get()] == [b"b", b"c", b"d", None]


def test_too_large_raises_and_writes_nothing():
    buf, q = make_queue(slot_size=32)
    q.put(b"x" * 24)  # exactly max_message fits
    before = bytes(buf)
    with pytest.raises(MessageTooLarge, match=r"message is 25 bytes, the limit is 24"):
        q.put(b"y" * 25)
    assert bytes(buf) == before
    assert q.get() == b"x" * 24
    assert q.get() is None


def test_wrap_around_many_times():
    _, q = make_queue(slot_count=3, slot_size=24)  # messages up to 12 of 16 bytes
    expect = deque()
    n = 0
    for round_ in range(400):
        for _ in range(1 + round_ % 3):  # 1, 2 or 3 puts, then drain
            m = n.to_bytes(4, "little") * (n % 3 + 1)
            q.put(m)
            expect.append(m)
            n += 1
        while expect:
            assert q.get() == expect.popleft()
        assert q.get() is None
    assert n > 100 * 3  # the counters went around the 3 slots hundreds of times


def test_producer_and_consumer_are_separate_instances():
    buf, producer = make_queue(slot_count=2)
    consumer = MessageQueue(buf, 64)
    producer.put(b"ping")
    producer.put(b"pong")
    with pytest.raises(QueueFull):
        producer.put(b"more")
    assert consumer.pending() == 2
    assert consumer.get() == b"ping"
    producer.put(b"more")
    assert [consumer.get(), consumer.get(), consumer.get()] == [b"pong", b"more", None]


def test_corrupt_length_never_reads_past_the_slot():
    buf, q = make_queue(slot_count=2, slot_size=16)
    q.put(b"abc")
    q.put(b"next")
    U64.pack_into(buf, 64 + 64, 10**6)  # slot 0's length
    m = q.get()
    assert len(m) <= q.max_message
    assert q.get() == b"next"


@pytest.mark.parametrize("base, slot_size", [(4, 32), (64, 20)])
def test_format_requires_multiples_of_eight(base, slot_size):
    with pytest.raises(ValueError, match=r"'base' and 'slot_size' must be multiples of 8"):
        MessageQueue.format(bytearray(1024), base, 4, slot_size)


def test_attach_to_memory_without_a_queue():
    with pytest.raises(LayoutError, match="no message queue at offset 64"):
        MessageQueue(bytearray(1024), 64)


def test_attach_to_a_truncated_queue():
    buf, _ = make_queue(slot_count=4, slot_size=32)
    with pytest.raises(LayoutError, match="past the end"):
        MessageQueue(buf[:-8], 64)


# -- property: a deque model ----------------------------------------------------------------

@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    slot_count=st.integers(1, 5),
    slot_size=st.sampled_from([16, 24, 40]),
    ops=st.lists(
        st.one_of(st.binary(max_size=44), st.none()),  # bytes: put; None: get
        max_size=80,
    ),
)
def test_random_puts_and_gets_match_a_deque(slot_count, slot_size, ops):
    buf, producer = make_queue(slot_count, slot_size)
    consumer = MessageQueue(buf, 64)
    model = deque()
    for op in ops:
        if op is None:
            expected = model.popleft() if model else None
            assert consumer.get() == expected
        elif len(op) > slot_size - 8:
            before = bytes(buf)
            with pytest.raises(MessageTooLarge):
                producer.put(op)
            assert bytes(buf) == before
        elif len(model) == slot_count:
            before = bytes(buf)
            with pytest.raises(QueueFull):
                producer.put(op)
            assert bytes(buf) == before
        else:
            producer.put(op)
            model.append(op)
        assert producer.pending() == consumer.pending() == len(model)
    while model:
        assert consumer.get() == model.popleft()
    assert consumer.get() is None
