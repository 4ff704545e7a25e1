"""The segment header shared by every monbridge shared-memory segment, and segment names.

Sans-I/O: works on any writable buffer (``bytearray``, ``memoryview``, ``mmap``).
Standard library only. The full byte layout of every segment kind is in
docs/shm-layout.md; this module owns the first 64 bytes.

Segment header (all fields native byte order — little-endian on x86-64 and aarch64):

    offset  size  type  field
    0       8     8s    magic            b"MONBRDG\\0"
    8       4     u32   layout version   LAYOUT_VERSION; anything else is refused
    12      4     u32   kind             0 control, 1 records, 2 frame, 3 events
    16      8     u64   writer pid       the device process that created the segment
    24      8     f64   created          unix time
    32      8     f64   heartbeat        unix time of the writer's last beat; set to
                                         `created` everywhere, kept beating only in control
    40      8     u64   closed           1 once the writer closed cleanly (control only)
    48      16          reserved         zero

The kind-specific body starts at HEADER_SIZE (64).

Names: every segment of device ``D`` is called ``monbridge.D.<suffix>`` (``ctl`` for the
control segment, ``ch.<channel>`` for channels), so ``monbridge cleanup`` can find them
all in /dev/shm.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass

from .errors import LayoutError

MAGIC = b"MONBRDG\x00"
LAYOUT_VERSION = 1
HEADER_SIZE = 64
SEGMENT_PREFIX = "monbridge."

_HEADER = struct.Struct("=8sIIQdd Q16x")
assert _HEADER.size == HEADER_SIZE
HEARTBEAT_OFFSET = 32
CLOSED_OFFSET = 40

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,48}")


class SegmentKind(enum.IntEnum):
    CONTROL = 0
    RECORDS = 1
    FRAME = 2
    EVENTS = 3


@dataclass(frozen=True)
class SegmentHeader:
    kind: SegmentKind
    writer_pid: int
    created: float
    heartbeat: float
    closed: bool


def write_header(buf: memoryview | bytearray, kind: SegmentKind, pid: int, now: float) -> None:
    """Format the first 64 bytes of a fresh segment."""
    _HEADER.pack_into(buf, 0, MAGIC, LAYOUT_VERSION, int(kind), pid, now, now, 0)


def read_header(buf: memoryview | bytearray, expect: SegmentKind | None = None) -> SegmentHeader:
    """Parse and check a segment header; raise LayoutError if it is not ours."""
    if len(buf) < HEADER_SIZE:
        raise LayoutError(f"segment is {len(buf)} bytes, smaller than the {HEADER_SIZE}-byte header")
    magic, version, kind, pid, created, heartbeat, closed = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise LayoutError(f"not a monbridge segment (magic {magic!r})")
    if version != LAYOUT_VERSION:
        raise LayoutError(
            f"segment has layout version {version}, this monbridge reads version "
            f"{LAYOUT_VERSION}; run the device and the bridge from the same monbridge install"
        )
    try:
        seg_kind = SegmentKind(kind)
    except ValueError:
        raise LayoutError(f"unknown segment kind {kind}") from None
    if expect is not None and seg_kind != expect:
        raise LayoutError(f"segment is a {seg_kind.name.lower()} segment, expected {expect.name.lower()}")
    return SegmentHeader(seg_kind, pid, created, heartbeat, bool(closed))


def write_heartbeat(buf: memoryview | bytearray, now: float) -> None:
    """One aligned 8-byte store (a C double assignment), so a reader never sees half of it."""
    with memoryview(buf).cast("B")[:HEADER_SIZE] as head, head.cast("d") as doubles:
        doubles[HEARTBEAT_OFFSET // 8] = now


def read_heartbeat(buf: memoryview | bytearray) -> float:
    return struct.unpack_from("=d", buf, HEARTBEAT_OFFSET)[0]


def peek_owner(buf: memoryview | bytearray) -> int | None:
    """The writer pid of anything with our magic, whatever its layout version; else None.

    Used before reclaiming or cleaning up a segment: a live device of another monbridge
    version must not lose its segments just because we cannot read them.
    """
    if len(buf) < HEADER_SIZE or bytes(buf[:8]) != MAGIC:
        return None
    return struct.unpack_from("=Q", buf, 16)[0]


def mark_closed(buf: memoryview | bytearray) -> None:
    struct.pack_into("=Q", buf, CLOSED_OFFSET, 1)


def is_closed(buf: memoryview | bytearray) -> bool:
    return struct.unpack_from("=Q", buf, CLOSED_OFFSET)[0] != 0


def check_name(what: str, name: str) -> str:
    """Return ``name`` if it is a valid device/channel/command name, else raise."""
    from .errors import ChannelError

    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ChannelError(
            f"{what} name {name!r} is invalid: use 1-48 letters, digits, '_' or '-'"
        )
    return name


def control_segment_name(device: str) -> str:
    return f"{SEGMENT_PREFIX}{device}.ctl"


def channel_segment_name(device: str, channel: str) -> str:
    return f"{SEGMENT_PREFIX}{device}.ch.{channel}"


def align(n: int, to: int = 8) -> int:
    return (n + to - 1) // to * to
