"""Seqlocked blobs and lossless message queues inside a buffer (the control segment).

Sans-I/O: operates on any writable buffer. Standard library only.

SeqlockBlob — one writer, many readers; the latest bytes win (manifest, state, clients):

    offset  size  type  field
    0       8     u64   seq      even: stable; odd: being written. Bumped twice per write
    8       8     u64   length   bytes of data
    16      capacity    data

    Writer: seq += 1 (odd); fence; length, data; fence; seq += 1 (even).
    Reader: s1 := seq (retry while odd); fence; copy; fence; valid iff seq == s1.

MessageQueue — one writer, one reader, lossless and ordered (commands, replies). The
writer refuses (QueueFull) rather than overwrite; the reader never blocks the writer:

    offset  size  type  field
    0       8     u64   head        messages taken; written only by the reader
    8       8     u64   tail        messages put;   written only by the writer
    16      8     u64   slot_count
    24      8     u64   slot_size   bytes per slot, including its 8-byte length
    32      32          reserved
    64      slot_count × slot_size  slots: [u64 length][data]; message i in slot i % slot_count

    Writer: if tail - head >= slot_count: full. Else write slot; fence; tail += 1.
    Reader: if head == tail: empty. Else fence; copy slot; fence; head += 1.
"""

from __future__ import annotations

import struct
import time

from .errors import LayoutError, MessageTooLarge, QueueFull
from .fence import fence

BLOB_HEADER = 16
QUEUE_HEADER = 64
_U64 = struct.Struct("=Q")


def blob_bytes(capacity: int) -> int:
    return BLOB_HEADER + (capacity + 7) // 8 * 8


def queue_bytes(slot_count: int, slot_size: int) -> int:
    return QUEUE_HEADER + slot_count * slot_size


def _words(buf: memoryview | bytearray) -> tuple[memoryview, memoryview]:
    mv = memoryview(buf).cast("B")
    return mv, mv[: len(mv) // 8 * 8].cast("Q")


class SeqlockBlob:
    """Latest-wins bytes with a version number (``seq``)."""

    def __init__(self, buf: memoryview | bytearray, base: int, capacity: int) -> None:
        if base % 8:
            raise ValueError(f"'base' must be a multiple of 8, got {base}")
        self._mv, self._words = _words(buf)
        self._seq = base // 8
        self._len_off = base + 8
        self._data = base + BLOB_HEADER
        self.capacity = capacity
        if self._data + capacity > len(self._mv):
            raise LayoutError("blob runs past the end of the buffer")

    @property
    def version(self) -> int:
        """Changes on every write; even when stable. Cheap: poll it to see if data changed."""
        return self._words[self._seq]

    def write(self, data: bytes) -> int:
        if len(data) > self.capacity:
            raise MessageTooLarge(f"{len(data)} bytes do not fit in {self.capacity} bytes")
        seq = self._words[self._seq] | 1  # a writer that died mid-write left it odd
        self._words[self._seq] = seq
        fence()
        _U64.pack_into(self._mv, self._len_off, len(data))
        self._mv[self._data : self._data + len(data)] = data
        fence()
        self._words[self._seq] = seq + 1
        return seq + 1

    def read(self, patience: float = 1.0) -> tuple[int, bytes]:
        """Return (version, data). Retries while a write is under way; a writer can be
        descheduled mid-write for milliseconds, so spin briefly, then sleep between tries.
        Raises LayoutError if the blob stays mid-write for ``patience`` seconds (its writer
        died mid-write)."""
        deadline = None
        spins = 0
        while True:
            s1 = self._words[self._seq]
            if s1 & 1:
                spins += 1
                if spins > 100:
                    now = time.monotonic()
                    deadline = deadline or now + patience
                    if now > deadline:
                        raise LayoutError("blob stays mid-write: its writer died while writing it")
                    time.sleep(0.0005)
                continue
            fence()
            (n,) = _U64.unpack_from(self._mv, self._len_off)
            data = bytes(self._mv[self._data : self._data + min(n, self.capacity)])
            fence()
            if self._words[self._seq] == s1:
                if n > self.capacity:
                    raise LayoutError(f"blob says it holds {n} bytes, more than its {self.capacity}: corrupt")
                return s1, data


class MessageQueue:
    """A bounded single-producer single-consumer queue of byte messages."""

    def __init__(self, buf: memoryview | bytearray, base: int) -> None:
        self._mv, self._words = _words(buf)
        b = base // 8
        self._head, self._tail = b, b + 1
        self.slot_count = self._words[b + 2]
        self.slot_size = self._words[b + 3]
        self._slots = base + QUEUE_HEADER
        if self.slot_count <= 0 or self.slot_size <= 8:
            raise LayoutError(f"no message queue at offset {base}")
        if self._slots + self.slot_count * self.slot_size > len(self._mv):
            raise LayoutError("message queue runs past the end of the buffer")

    @classmethod
    def format(cls, buf: memoryview | bytearray, base: int, slot_count: int, slot_size: int) -> "MessageQueue":
        if base % 8 or slot_size % 8:
            raise ValueError("'base' and 'slot_size' must be multiples of 8")
        mv, words = _words(buf)
        mv[base : base + QUEUE_HEADER] = bytes(QUEUE_HEADER)
        words[base // 8 + 2] = slot_count
        words[base // 8 + 3] = slot_size
        return cls(buf, base)

    @property
    def max_message(self) -> int:
        return self.slot_size - 8

    def pending(self) -> int:
        return self._words[self._tail] - self._words[self._head]

    def put(self, message: bytes) -> None:
        """Append one message. Raises MessageTooLarge or QueueFull; never blocks."""
        if len(message) > self.max_message:
            raise MessageTooLarge(f"message is {len(message)} bytes, the limit is {self.max_message}")
        tail = self._words[self._tail]
        if tail - self._words[self._head] >= self.slot_count:
            raise QueueFull(f"queue is full ({self.slot_count} messages waiting)")
        off = self._slots + (tail % self.slot_count) * self.slot_size
        _U64.pack_into(self._mv, off, len(message))
        self._mv[off + 8 : off + 8 + len(message)] = message
        fence()
        self._words[self._tail] = tail + 1

    def get(self) -> bytes | None:
        """Take the oldest message, or return None if there is none."""
        head = self._words[self._head]
        if head == self._words[self._tail]:
            return None
        fence()
        off = self._slots + (head % self.slot_count) * self.slot_size
        (n,) = _U64.unpack_from(self._mv, off)
        message = bytes(self._mv[off + 8 : off + 8 + min(n, self.max_message)])
        fence()
        self._words[self._head] = head + 1
        return message
