"""FrameSlots: the latest N-D array (image, point cloud) in several slots, seqlocked.

Sans-I/O: operates on any writable buffer. Imports only numpy and the standard library.

The writer never waits: frame k goes to slot k % nslots (at least 3), skipping the slot
holding the newest frame and any slot a reader has pinned. A reader pins the slot it is
copying, so even a writer publishing flat out does not overwrite it mid-copy. Pins are
advisory — correctness rests on the seqlock stamps alone: a reader whose slot was
overwritten anyway (a pin not yet visible, or more readers than pins) notices and retries.

Body layout, at ``base`` (normally 64, right after the segment header):

    offset  size  type  field
    0       8     u64   latest        sequence number of the newest complete frame (0: none)
    8       8     u64   nslots
    16      8     u64   frame_nbytes  bytes of the largest frame (declared shape × itemsize)
    24      8     u64   slot_size     64 + frame_nbytes rounded up to 64
    32      8     u64   latest_slot   the slot holding frame ``latest``
    40      3 × 8 u64   pins          pin i: 1 + the slot a reader is copying, 0 = none
    64      nslots × slot_size        slots; frame k (k ≥ 1) goes to slot k % nslots unless
                                      that slot is pinned or holds the newest frame

    slot:   0   8   u64  stamp   2k+1 while frame k is being written; 2k+2 once complete
            8   8   f64  t       device time of the frame
            16  8   u64  nbytes  bytes valid in this frame (a frame may have fewer rows)
            24  8   u64  rows    length of the first dimension in this frame
            32  32       reserved
            64  frame_nbytes     data, C order; 64-byte aligned

Writer, frame k: choose slot; stamp := 2k+1; fence; data, t, nbytes, rows; fence;
                 stamp := 2k+2; fence; latest_slot := slot; fence; latest := k.
Reader:          k := latest; fence; s := latest_slot; pin := s+1; fence;
                 s1 := stamp(s); require s1 == 2k+2; fence; copy; fence; s2 := stamp(s);
                 valid iff s2 == s1, else retry with the new latest; pin := 0.
                 (latest and latest_slot from different frames fail the stamp check.)
Reader of frame j (read_frame, a frame older than the newest): find the slot whose stamp
                 is 2j+2; pin it; fence; require its stamp still 2j+2; copy; fence; valid
                 iff the stamp is still 2j+2. The newest frame and, outside pins, the
                 nslots-2 before it are held: a reader polling less often than every frame
                 still gets each one.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from .errors import ChannelError
from .fence import fence

BODY_HEADER = 64
SLOT_HEADER = 64
MIN_SLOTS = 3
_LATEST, _NSLOTS, _FRAME_NBYTES, _SLOT_SIZE, _LATEST_SLOT, _PINS = 0, 1, 2, 3, 4, 5
PIN_WORDS = 3
_SLOT_META = struct.Struct("=dQQ")  # t, nbytes, rows at slot offset 8


def slot_size_for(frame_nbytes: int) -> int:
    return SLOT_HEADER + (frame_nbytes + 63) // 64 * 64


def slots_bytes(nslots: int, frame_nbytes: int) -> int:
    return BODY_HEADER + nslots * slot_size_for(frame_nbytes)


@dataclass(frozen=True)
class FrameRead:
    seq: int
    t: float
    rows: int
    data: np.ndarray  # uint8, a private copy of the frame's bytes


class FrameSlots:
    """One set of frame slots inside a buffer. ``format`` creates; the constructor attaches."""

    def __init__(self, buf: memoryview | bytearray, base: int) -> None:
        if base % 64:
            raise ValueError(f"'base' must be a multiple of 64, got {base}")
        self._mv = memoryview(buf).cast("B")
        self._words = self._mv[: len(self._mv) // 8 * 8].cast("Q")
        self._bytes = np.frombuffer(self._mv, dtype=np.uint8)
        b = base // 8
        self._latest = b + _LATEST
        self._latest_slot = b + _LATEST_SLOT
        self._pins = b + _PINS
        self._my_pin = self._pins + (os.getpid() + id(self) // 64) % PIN_WORDS
        self.nslots = self._words[b + _NSLOTS]
        self.frame_nbytes = self._words[b + _FRAME_NBYTES]
        self.slot_size = self._words[b + _SLOT_SIZE]
        if self.nslots < MIN_SLOTS or self.slot_size != slot_size_for(self.frame_nbytes):
            raise ChannelError(f"no frame slots at offset {base}")
        self._slots0 = base + BODY_HEADER
        if self._slots0 + self.nslots * self.slot_size > len(self._mv):
            raise ChannelError("frame slots run past the end of the buffer")
        self._count = self._words[self._latest]
        self._last_slot = self._words[self._latest_slot] if self._count else -1
        self._writing = -1
        self._slot = -1

    @classmethod
    def format(cls, buf: memoryview | bytearray, base: int, nslots: int, frame_nbytes: int) -> "FrameSlots":
        if not isinstance(nslots, int) or nslots < MIN_SLOTS:
            raise ChannelError(f"'slots' must be an integer >= {MIN_SLOTS}, got {nslots!r}")
        if not isinstance(frame_nbytes, int) or frame_nbytes <= 0:
            raise ChannelError(f"'frame_nbytes' must be a positive integer, got {frame_nbytes!r}")
        need = base + slots_bytes(nslots, frame_nbytes)
        if need > len(buf):
            raise ChannelError(f"frame slots need {need} bytes, buffer has {len(buf)}")
        mv = memoryview(buf).cast("B")
        mv[base : base + BODY_HEADER] = bytes(BODY_HEADER)
        for i in range(nslots):  # stamps and metadata only; data is written before it is read
            off = base + BODY_HEADER + i * slot_size_for(frame_nbytes)
            mv[off : off + SLOT_HEADER] = bytes(SLOT_HEADER)
        words = mv[: len(mv) // 8 * 8].cast("Q")
        b = base // 8
        words[b + _NSLOTS] = nslots
        words[b + _FRAME_NBYTES] = frame_nbytes
        words[b + _SLOT_SIZE] = slot_size_for(frame_nbytes)
        words.release()
        return cls(buf, base)

    def data_offset(self, slot: int) -> int:
        """Byte offset of slot ``slot``'s data (for building per-slot array views)."""
        return self._slots0 + slot * self.slot_size + SLOT_HEADER

    # -- writer (exactly one) ---------------------------------------------------------

    @property
    def latest(self) -> int:
        return self._words[self._latest]

    def skip_to(self, k: int) -> None:
        """Number the next frame ``k + 1`` (only forward), for slots that mirror another
        device's frames and keep its frame numbers (bridge/fleet/mirror.py)."""
        self._count = max(self._count, k)

    def begin_write(self) -> int:
        """Claim the next slot; return its index. Write the data, then call end_write()."""
        k = self._count + 1
        words = self._words
        pinned = {words[self._pins + i] - 1 for i in range(PIN_WORDS)}
        slot = k % self.nslots
        for _ in range(self.nslots):  # skip the newest frame's slot and pinned ones
            if slot != self._last_slot and slot not in pinned:
                break
            slot = (slot + 1) % self.nslots
        else:  # more pins than spare slots: never wait, overwrite an older one
            slot = (self._last_slot + 1) % self.nslots
        self._slot = slot
        self._writing = (self._slots0 + slot * self.slot_size) // 8
        self._words[self._writing] = 2 * k + 1
        fence()
        return slot

    def end_write(self, t: float, nbytes: int, rows: int) -> None:
        k = self._count + 1
        _SLOT_META.pack_into(self._mv, self._writing * 8 + 8, t, nbytes, rows)
        fence()
        self._words[self._writing] = 2 * k + 2
        self._count = k
        fence()
        self._words[self._latest_slot] = self._slot
        fence()
        self._words[self._latest] = k
        self._last_slot = self._slot

    def write(self, data: bytes | memoryview | np.ndarray, t: float, rows: int = 0) -> int:
        """Copy ``data`` (bytes-like) into the next slot and publish it; return its sequence."""
        src = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
        if len(src) > self.frame_nbytes:
            raise ChannelError(f"frame is {len(src)} bytes, slots hold {self.frame_nbytes}")
        slot = self.begin_write()
        off = self.data_offset(slot)
        self._bytes[off : off + len(src)] = src
        self.end_write(t, len(src), rows)
        return self._count

    # -- readers (any number) ---------------------------------------------------------

    def read_latest(self, after: int = 0, attempts: int = 100, out: np.ndarray | None = None) -> FrameRead | None:
        """Copy out the newest complete frame if its sequence is greater than ``after``.

        ``out``: a uint8 buffer of at least ``frame_nbytes`` to copy into (reusing one
        saves the page faults of fresh memory on every read); the returned ``data`` is then
        a view of it. Returns None if there is nothing newer, or if the writer lapped every
        slot during each of ``attempts`` copies (only when it publishes faster than a copy takes).
        """
        words = self._words
        k = words[self._latest]
        if k == 0 or k <= after:
            return None  # nothing new: no pin written, so an idle poll leaves the writer's line alone
        try:
            return self._read_pinned(after, attempts, out)
        finally:
            words[self._my_pin] = 0

    def read_frame(self, seq: int, out: np.ndarray | None = None) -> FrameRead | None:
        """Copy out frame ``seq`` if a slot still holds it complete, else None (not published
        yet, or overwritten since). ``out`` as in read_latest."""
        words = self._words
        if seq <= 0 or seq > words[self._latest]:
            return None
        want = 2 * seq + 2
        for slot in range(self.nslots):
            slot_off = self._slots0 + slot * self.slot_size
            if words[slot_off // 8] != want:
                continue
            try:
                words[self._my_pin] = slot + 1
                fence()
                if words[slot_off // 8] != want:
                    return None   # the writer took the slot before it saw the pin
                fence()
                t, nbytes, rows = _SLOT_META.unpack_from(self._mv, slot_off + 8)
                if nbytes > self.frame_nbytes:
                    return None
                src = self._bytes[slot_off + SLOT_HEADER : slot_off + SLOT_HEADER + nbytes]
                data = src.copy() if out is None else out[:nbytes]
                if out is not None:
                    data[...] = src
                fence()
                return FrameRead(seq, t, rows, data) if words[slot_off // 8] == want else None
            finally:
                words[self._my_pin] = 0
        return None

    def _read_pinned(self, after: int, attempts: int, out: np.ndarray | None) -> FrameRead | None:
        words = self._words
        for _ in range(attempts):
            k = words[self._latest]
            fence()
            if k == 0 or k <= after:
                return None
            slot = words[self._latest_slot]
            if slot >= self.nslots:
                continue
            words[self._my_pin] = slot + 1
            fence()
            slot_off = self._slots0 + slot * self.slot_size
            s1 = words[slot_off // 8]
            if s1 != 2 * k + 2:
                continue  # a newer frame came between reading latest and the stamp
            fence()
            t, nbytes, rows = _SLOT_META.unpack_from(self._mv, slot_off + 8)
            if nbytes > self.frame_nbytes:
                continue
            src = self._bytes[slot_off + SLOT_HEADER : slot_off + SLOT_HEADER + nbytes]
            if out is None:
                data = src.copy()
            else:
                data = out[:nbytes]
                data[...] = src
            fence()
            if self._words[slot_off // 8] == s1:
                return FrameRead(k, t, rows, data)
        return None
