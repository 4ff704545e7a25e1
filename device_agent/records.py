"""RecordRing: a single-writer, many-reader ring of fixed-size records with a per-slot seqlock.

Sans-I/O: operates on any writable buffer (tests use a ``bytearray``; the device uses
``SharedMemory.buf``). Imports only numpy and the standard library.

The writer never waits: when the ring is full it overwrites the oldest record. A reader
keeps its own cursor (the sequence number of the next record it wants) and learns
exactly how many records it missed. A reader never returns a torn record.

Body layout, at ``base`` (normally 64, right after the segment header):

    offset  size  type  field
    0       8     u64   write_count   records committed so far (monotonic, never wraps)
    8       8     u64   capacity      number of slots
    16      8     u64   record_size   payload bytes per record
    24      8     u64   slot_size     8 + record_size rounded up to 8
    32      32          reserved
    64      capacity × slot_size      slots; record n lives in slot n % capacity

    slot:   0  8  u64  stamp    0 never written; 2n+1 while record n is being written;
                                2n+2 once record n is complete; HOLE | 2n+2 (HOLE = 2**63)
                                when the writer skipped n (skip_to: an edge's copy only)
            8  record_size      payload

Writer, record n:  stamp := 2n+1; fence; payload; fence; stamp := 2n+2; fence;
                   write_count := n+1.
Reader, records [start, W):  W := write_count; fence; s1 := stamps; payload copy;
                   fence; s2 := stamps. Record n is valid iff s1 == s2 == 2n+2. (Reading
                   W first guarantees every slot below W was complete once; the second
                   stamp check catches an overwrite that began during the copy.) Any other stamp means the slot was being
                   written, or already holds record n + k·capacity: record n is gone.
                   A hole (s1 == s2 == HOLE | 2n+2) is missed too, but what precedes it is
                   kept: the read stops there, and the next one counts the holes.

Why a reader cannot see a stamp before its payload: see fence.py and docs/shm-layout.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ChannelError
from .fence import fence, needs_fence

BODY_HEADER = 64
HOLE = np.uint64(1 << 63)   # stamp flag: a number the writer skipped (skip_to), never written
_WRITE_COUNT, _CAPACITY, _RECORD_SIZE, _SLOT_SIZE = 0, 1, 2, 3  # u64 word index in the body
_FEW = 16   # reads of at most this many records (no wrap) check their stamps as a list


def slot_size_for(record_size: int) -> int:
    return 8 + (record_size + 7) // 8 * 8


def ring_bytes(capacity: int, record_size: int) -> int:
    """Bytes of body a ring of ``capacity`` records of ``record_size`` bytes needs."""
    return BODY_HEADER + capacity * slot_size_for(record_size)


@dataclass(frozen=True)
class RingRead:
    """What one read returned.

    ``records`` holds the payloads (dtype ``V<record_size>``), oldest first, for the
    consecutive sequence numbers ``first .. first + len(records) - 1``. ``missed`` counts
    the records between the reader's cursor and ``first`` that are gone. The next read
    should start at ``next_cursor``.
    """

    records: np.ndarray
    first: int
    missed: int
    next_cursor: int


class RecordRing:
    """One ring inside a buffer. ``RecordRing.format`` creates it; the constructor attaches."""

    def __init__(self, buf: memoryview | bytearray, base: int) -> None:
        mv = memoryview(buf).cast("B")
        if base % 8:
            raise ValueError(f"'base' must be a multiple of 8, got {base}")
        if base + BODY_HEADER > len(mv):
            raise ChannelError(f"no record ring at offset {base}: the buffer has only {len(mv)} bytes")
        self._words = mv[: len(mv) // 8 * 8].cast("Q")
        b = base // 8
        self._wc = b + _WRITE_COUNT
        self.capacity = self._words[b + _CAPACITY]
        self.record_size = self._words[b + _RECORD_SIZE]
        self.slot_size = self._words[b + _SLOT_SIZE]
        if self.capacity <= 0 or self.slot_size != slot_size_for(self.record_size):
            raise ChannelError(f"no record ring at offset {base} (capacity {self.capacity})")
        slots_off = base + BODY_HEADER
        end = slots_off + self.capacity * self.slot_size
        if end > len(mv):
            raise ChannelError(f"record ring needs {end} bytes, buffer has {len(mv)}")
        slot_dtype = np.dtype(
            {
                "names": ["stamp", "payload"],
                "formats": ["=u8", np.dtype((np.void, self.record_size))],
                "offsets": [0, 8],
                "itemsize": self.slot_size,
            }
        )
        slots = np.ndarray((self.capacity,), dtype=slot_dtype, buffer=mv, offset=slots_off)
        self._stamps = slots["stamp"]
        self._payloads = slots["payload"]
        self._stamp0 = slots_off // 8
        self._slot_words = self.slot_size // 8
        self._payload0 = slots_off + 8
        self._count = self._words[self._wc]  # the writer's own copy of write_count
        self._writing = -1

    @classmethod
    def format(cls, buf: memoryview | bytearray, base: int, capacity: int, record_size: int) -> "RecordRing":
        """Write an empty ring into ``buf`` at ``base`` and return it."""
        if not isinstance(capacity, int) or capacity <= 0:
            raise ChannelError(f"'capacity' must be a positive integer, got {capacity!r}")
        if not isinstance(record_size, int) or record_size <= 0:
            raise ChannelError(f"'record_size' must be a positive integer, got {record_size!r}")
        need = base + ring_bytes(capacity, record_size)
        if need > len(buf):
            raise ChannelError(f"record ring needs {need} bytes, buffer has {len(buf)}")
        mv = memoryview(buf).cast("B")
        mv[base:need] = bytes(need - base)
        words = mv[: len(mv) // 8 * 8].cast("Q")
        b = base // 8
        words[b + _CAPACITY] = capacity
        words[b + _RECORD_SIZE] = record_size
        words[b + _SLOT_SIZE] = slot_size_for(record_size)
        words.release()
        return cls(buf, base)

    # -- writer (exactly one) ---------------------------------------------------------

    @property
    def write_count(self) -> int:
        """Records committed so far, as the shared memory says."""
        return self._words[self._wc]

    def write(self, payload: bytes | bytearray | memoryview, mv: memoryview) -> None:
        """Append one record. ``mv`` is the byte view of the ring's buffer (fast path)."""
        if len(payload) != self.record_size:
            raise ChannelError(f"record is {len(payload)} bytes, ring holds {self.record_size}-byte records")
        n = self._count
        slot = n % self.capacity
        stamp_index = self._stamp0 + slot * self._slot_words
        words = self._words
        words[stamp_index] = 2 * n + 1
        if needs_fence:
            fence()
        start = self._payload0 + slot * self.slot_size
        mv[start : start + len(payload)] = payload
        if needs_fence:
            fence()
        words[stamp_index] = 2 * n + 2
        self._count = n + 1
        if needs_fence:
            fence()
        words[self._wc] = n + 1

    def begin_write(self) -> int:
        """Claim the next slot and return the byte offset where its payload goes.

        You must call end_write() after writing the payload.
        """
        n = self._count
        slot = n % self.capacity
        self._writing = self._stamp0 + slot * self._slot_words
        self._words[self._writing] = 2 * n + 1
        if needs_fence:
            fence()
        return self._payload0 + slot * self.slot_size

    def end_write(self) -> None:
        """Publish the record whose payload was written after begin_write()."""
        if needs_fence:
            fence()
        n = self._count
        self._words[self._writing] = 2 * n + 2
        self._count = n + 1
        if needs_fence:
            fence()
        self._words[self._wc] = n + 1

    def skip_to(self, n: int) -> None:
        """Number the next record ``n`` (only forward). The numbers skipped are holes: their
        slots get the stamp ``HOLE | 2m+2``, and a reader counts them as missed, exactly, and
        still returns the records before them (a read stops at a hole; the next one starts
        after it). For a ring that mirrors another one and keeps its sequence numbers across a
        gap (an edge bridge, bridge/fleet/mirror.py); a device never skips."""
        k = n - self._count
        if k <= 0:
            return
        m0 = max(self._count, n - self.capacity)   # only the newest ``capacity`` holes have a slot
        stamps = (2 * np.arange(m0, n, dtype=np.uint64) + 2) | HOLE
        for dst, src, m in _split(m0 % self.capacity, n - m0, self.capacity):
            self._stamps[dst : dst + m] = stamps[src : src + m]
        self._count = n
        fence()
        self._words[self._wc] = n

    def write_many(self, payloads: np.ndarray) -> None:
        """Append many records at once. ``payloads`` is 1-D with itemsize == record_size.

        A batch larger than the ring keeps only its newest ``capacity`` records; readers
        count the rest as missed.
        """
        k = len(payloads)
        if k == 0:
            return
        if payloads.dtype.itemsize != self.record_size:
            raise ChannelError(
                f"records are {payloads.dtype.itemsize} bytes, ring holds {self.record_size}-byte records"
            )
        payloads = payloads.view(self._payloads.dtype)
        total = k
        n0 = self._count
        if k > self.capacity:
            payloads = payloads[k - self.capacity :]
            n0 += k - self.capacity
            k = self.capacity
        stamps = 2 * np.arange(n0, n0 + k, dtype=np.uint64)
        parts = _split(n0 % self.capacity, k, self.capacity)
        for dst, src, m in parts:
            self._stamps[dst : dst + m] = stamps[src : src + m] + 1
        fence()
        for dst, src, m in parts:
            self._payloads[dst : dst + m] = payloads[src : src + m]
        fence()
        for dst, src, m in parts:
            self._stamps[dst : dst + m] = stamps[src : src + m] + 2
        self._count += total
        fence()
        self._words[self._wc] = self._count

    # -- readers (any number) ---------------------------------------------------------

    def read(self, cursor: int, max_records: int | None = None) -> RingRead:
        """Copy out every complete record from ``cursor`` on (at most the newest ``max_records``)."""
        if cursor < 0:
            raise ValueError(f"'cursor' must be >= 0, got {cursor!r}")
        if max_records is not None and max_records < 1:
            raise ValueError(f"'max_records' must be a positive integer or None, got {max_records!r}")
        written = self._words[self._wc]
        fence()
        if cursor > written:  # the writer restarted behind us: start over from what it has
            cursor = max(0, written - self.capacity)
        start = max(cursor, written - self.capacity)
        if max_records is not None:
            start = max(start, written - max_records)
        k = written - start
        if k <= 0:
            return RingRead(self._payloads[:0].copy(), written, 0, written)
        slot = start % self.capacity
        if k <= _FEW and slot + k <= self.capacity:
            # the common read of a reader in step: a few records, no wrap, every stamp as
            # expected (checked as Python ints, fewer numpy calls); anything else: as below
            at, step = self._stamp0 + slot * self._slot_words, self._slot_words
            stamps = self._words[at : at + k * step : step]
            expected = list(range(2 * start + 2, 2 * written + 2, 2))
            if stamps.tolist() == expected:
                records = self._payloads[slot : slot + k].copy()
                fence()
                if stamps.tolist() == expected:
                    return RingRead(records, start, start - cursor, written)
        parts = _split(slot, k, self.capacity)
        before = _gather(self._stamps, parts)
        records = _gather(self._payloads, parts)
        fence()
        after = _gather(self._stamps, parts)
        expected = 2 * np.arange(start, written, dtype=np.uint64) + 2
        wrong = (before != expected) | (after != expected)
        if not wrong.any():
            return RingRead(records, start, start - cursor, written)
        hole = (before == (expected | HOLE)) & (after == before)
        bad = np.flatnonzero(wrong & ~hole)
        if len(bad):  # overwritten while we copied: keep what follows the last bad one
            cut = int(bad[-1]) + 1
            records, hole = records[cut:], hole[cut:]
            start += cut
        lead = int(np.argmin(hole)) if not hole.all() else len(hole)   # holes first: missed
        records, hole = records[lead:], hole[lead:]
        start += lead
        end = int(np.argmax(hole)) if hole.any() else len(hole)        # stop at the next hole
        return RingRead(records[:end], start, start - cursor, start + end if end < len(hole) else written)


def _split(first_slot: int, count: int, capacity: int) -> list[tuple[int, int, int]]:
    """(slot, offset in batch, length) runs covering ``count`` slots from ``first_slot``, wrapping."""
    head = min(count, capacity - first_slot)
    parts = [(first_slot, 0, head)]
    if count > head:
        parts.append((0, head, count - head))
    return parts


def _gather(column: np.ndarray, parts: list[tuple[int, int, int]]) -> np.ndarray:
    if len(parts) == 1:
        slot, _, m = parts[0]
        return column[slot : slot + m].copy()
    return np.concatenate([column[slot : slot + m] for slot, _, m in parts])
