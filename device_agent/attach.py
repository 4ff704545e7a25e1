"""The reading side of a device's shared memory: used by the bridge, tests and benchmarks.

Imports only numpy and the standard library. An attacher never unlinks and never lets
the resource tracker own a segment (see shm.py). Each reader keeps its own cursor, so
any number of readers can follow one device.

    dev = DeviceAttachment("robot_arm")
    temps = dev.channel("temps")              # RecordsReader
    batch = temps.read(cursor=0)              # .records (structured array), .first, .missed
    reply = dev.call("set_speed", {"value": 1.5})   # a blocking round trip, for scripts
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import layout
from .control import ControlLayout
from .doorbell import Doorbell, Ringer
from .errors import ChannelError, LayoutError
from .frames import FrameSlots
from .layout import HEADER_SIZE, SegmentKind, control_segment_name
from .payloads import EVENT_META, EVENT_TO_CLIENT, dtype_from_json
from .records import RecordRing
from .shm import attach_segment, close_segment, list_segments, segment_owner

log = logging.getLogger("device_agent")

REPLY_SPIN_S = 0.0003  # call(): poll for the reply this long before sleeping on the doorbell


def json_list_prefix(items: list[Any], capacity: int) -> tuple[bytes, int]:
    """Compact JSON of the longest prefix of ``items`` that fits in ``capacity`` bytes, and
    that prefix's length (``b"[]"``, 0 if not even one item fits)."""
    def encode(n: int) -> bytes:
        return json.dumps(items[:n], separators=(",", ":")).encode()

    data = encode(len(items))
    if len(data) <= capacity:
        return data, len(items)
    fits, too_many = 0, len(items)  # encode(fits) fits, encode(too_many) does not
    while too_many - fits > 1:
        mid = (fits + too_many) // 2
        if len(encode(mid)) <= capacity:
            fits = mid
        else:
            too_many = mid
    return encode(fits), fits


@dataclass(frozen=True)
class RecordsBatch:
    records: np.ndarray  # structured array with the channel's dtype, oldest first
    first: int           # sequence number of records[0]
    missed: int          # records between the cursor and ``first`` that were overwritten
    next_cursor: int


@dataclass(frozen=True)
class Frame:
    seq: int
    t: float
    array: np.ndarray    # shape (rows, *declared_shape[1:]), a private copy


@dataclass(frozen=True)
class Event:
    seq: int
    t: float
    message: Any
    to: str | None       # a client id, or None for everyone


OpenSegment = Callable[[str], Any]  # segment name -> an object with .buf and .close() (AttachedSegment)


class _Reader:
    def __init__(self, spec: dict[str, Any], kind: SegmentKind, open_segment: OpenSegment = attach_segment) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.kind: str = spec["kind"]
        self._shm = open_segment(spec["segment"])
        try:
            layout.read_header(self._shm.buf, expect=kind)
            self._open()
        except Exception:
            self._core = None
            close_segment(self._shm)
            raise

    def _open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._core = None
        close_segment(self._shm)


class RecordsReader(_Reader):
    def __init__(self, spec: dict[str, Any], open_segment: OpenSegment = attach_segment) -> None:
        self.dtype = dtype_from_json(spec["dtype"])
        super().__init__(spec, SegmentKind.RECORDS, open_segment)

    def _open(self) -> None:
        self._core = RecordRing(self._shm.buf, HEADER_SIZE)
        if self._core.record_size != self.dtype.itemsize:
            raise LayoutError(f"channel {self.name!r}: ring holds {self._core.record_size}-byte records, "
                              f"manifest says {self.dtype.itemsize}")

    @property
    def write_count(self) -> int:
        return self._core.write_count

    def read(self, cursor: int, max_records: int | None = None) -> RecordsBatch:
        got = self._core.read(cursor, max_records)
        return RecordsBatch(got.records.view(self.dtype), got.first, got.missed, got.next_cursor)


class FrameReader(_Reader):
    def __init__(self, spec: dict[str, Any], open_segment: OpenSegment = attach_segment) -> None:
        self.dtype = np.dtype(spec["dtype"])
        self.shape = tuple(spec["shape"])
        super().__init__(spec, SegmentKind.FRAME, open_segment)

    def _open(self) -> None:
        self._core = FrameSlots(self._shm.buf, HEADER_SIZE)

    @property
    def latest(self) -> int:
        return self._core.latest

    def read_latest(self, after: int = 0, out: np.ndarray | None = None) -> Frame | None:
        """The newest frame after sequence ``after``, or None. ``out``: a reusable uint8
        buffer of at least the frame's bytes (the frame's array is then a view of it)."""
        return self._frame(self._core.read_latest(after, out=out))

    @property
    def slots(self) -> int:
        return self._core.nslots

    def unread(self, after: int) -> range:
        """The frames after ``after``, up to the newest now, that the slots may still hold: at
        most ``slots`` of them (read each with read_frame; one overwritten meanwhile is None)."""
        latest = self._core.latest
        return range(max(after + 1, latest - self._core.nslots + 1), latest + 1)

    def read_frame(self, seq: int, out: np.ndarray | None = None) -> Frame | None:
        """Frame ``seq`` if still held (the newest and at least the one before it), else None."""
        return self._frame(self._core.read_frame(seq, out=out))

    def _frame(self, got: Any) -> Frame | None:
        if got is None:
            return None
        return Frame(got.seq, got.t, got.data.view(self.dtype).reshape((got.rows, *self.shape[1:])))


class EventsReader(_Reader):
    def __init__(self, spec: dict[str, Any], open_segment: OpenSegment = attach_segment) -> None:
        super().__init__(spec, SegmentKind.EVENTS, open_segment)

    def _open(self) -> None:
        self._core = RecordRing(self._shm.buf, HEADER_SIZE)

    @property
    def write_count(self) -> int:
        return self._core.write_count

    def read(self, cursor: int, max_records: int | None = None) -> tuple[list[Event], int, int]:
        """Return (events, missed, next_cursor)."""
        got = self._core.read(cursor, max_records)
        events = []
        for i, rec in enumerate(got.records):
            raw = rec.tobytes()
            t, n, flags = EVENT_META.unpack_from(raw, 0)
            try:
                message = json.loads(raw[EVENT_META.size : EVENT_META.size + n])
            except ValueError:
                continue
            to = None
            if flags & EVENT_TO_CLIENT and isinstance(message, dict):
                to, message = message.get("to"), message.get("message")
            events.append(Event(got.first + i, t, message, to))
        return events, got.missed, got.next_cursor


_READERS = {"records": RecordsReader, "frame": FrameReader, "events": EventsReader}


class DeviceAttachment:
    """Everything a bridge needs from one device's shared memory."""

    def __init__(self, device: str, open_segment: OpenSegment = attach_segment) -> None:
        """Attach to ``device``'s segments, opened with ``open_segment`` (tests pass one that
        hands out ``bytearray``s)."""
        self.device = layout.check_name("device", device)
        self._open_segment = open_segment
        self._shm = open_segment(control_segment_name(device))  # FileNotFoundError if absent
        try:
            self.header = layout.read_header(self._shm.buf, expect=SegmentKind.CONTROL)
            self._ctl = ControlLayout(self._shm.buf)
        except Exception:
            close_segment(self._shm)
            raise
        self._manifest_version = -1
        self.manifest: dict[str, Any] = {}
        self.channels: dict[str, RecordsReader | FrameReader | EventsReader] = {}
        self._ringer = Ringer()
        self._ids = itertools.count(1)
        self._doorbell: Doorbell | None = None
        self._bridge_info: dict[str, Any] = {}
        try:
            self.refresh()
        except Exception:
            self.close()
            raise

    # -- device status -----------------------------------------------------------------

    @property
    def writer_pid(self) -> int:
        return self.header.writer_pid

    def heartbeat_age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - layout.read_heartbeat(self._shm.buf)

    @property
    def closed(self) -> bool:
        return layout.is_closed(self._shm.buf)

    # -- manifest, channels, state -----------------------------------------------------

    def refresh(self) -> bool:
        """Re-read the manifest if it changed and attach new channels; True if it changed."""
        version = self._ctl.manifest.version
        if version == self._manifest_version:
            return False
        version, data = self._ctl.manifest.read()
        if not data:
            raise LayoutError(f"device {self.device!r} is starting: it has not published its manifest yet")
        try:
            manifest = json.loads(data)
        except ValueError as exc:
            raise LayoutError(f"device {self.device!r} has a corrupt manifest: {exc}") from None
        for spec in manifest.get("channels", []):
            if spec["name"] not in self.channels:
                try:
                    self.channels[spec["name"]] = _READERS[spec["kind"]](spec, self._open_segment)
                except FileNotFoundError:
                    continue  # announced but gone (device closing); picked up next time
                except (LayoutError, ChannelError, KeyError, ValueError) as exc:
                    log.warning("channel %r of %r cannot be read: %s", spec.get("name"), self.device, exc)
        self.manifest = manifest
        self._manifest_version = version
        return True

    def channel(self, name: str) -> Any:
        try:
            return self.channels[name]
        except KeyError:
            raise ChannelError(f"device {self.device!r} has no channel {name!r} "
                               f"(channels: {', '.join(self.channels) or 'none'})") from None

    @property
    def state_version(self) -> int:
        return self._ctl.state.version

    def state(self) -> tuple[int, dict[str, Any]]:
        version, data = self._ctl.state.read()
        return version, (json.loads(data) if data else {})

    # -- what the bridge writes --------------------------------------------------------

    def publish_clients(self, table: list[dict[str, Any]]) -> int:
        """Write the clients table for ``mon.clients``; return how many rows it holds.

        A table larger than the 64 KiB blob keeps its first rows (for the bridge, the
        clients connected longest) rather than leaving the device an outdated table."""
        data, rows = json_list_prefix(table, self._ctl.clients.capacity)
        self.publish_clients_json(data)
        return rows

    def publish_clients_json(self, data: bytes) -> None:
        """Write an already encoded clients table (a JSON list of at most 64 KiB)."""
        self._ctl.clients.write(data)

    def publish_bridge(self, **info: Any) -> None:
        """Merge ``info`` (url, pid, ...) into what the device knows about its bridge."""
        self._bridge_info.update(info)
        self._ctl.bridge.write(json.dumps(self._bridge_info, separators=(",", ":")).encode())

    def listen_for_replies(self) -> Doorbell:
        """Bind a doorbell the device rings after writing replies, and tell the device."""
        if self._doorbell is None:
            self._doorbell = Doorbell(f"{self.device}.bridge")
            self.publish_bridge(doorbell=self._doorbell.address, pid=os.getpid())
        return self._doorbell

    def want_wake(self) -> None:
        """Ask the device to ring the ``data_doorbell`` (see publish_bridge) at its next
        publish on any channel; it does so once, then waits to be asked again."""
        self._ctl.wake[0] = 1

    # -- commands ----------------------------------------------------------------------

    def send_command(self, name: str, args: dict[str, Any] | None = None,
                     client: dict[str, Any] | None = None, command_id: int | None = None) -> int:
        """Queue a command for the device and ring its doorbell; return the command id.

        Raises QueueFull (the device is not taking commands) or MessageTooLarge.
        """
        cid = next(self._ids) if command_id is None else command_id
        msg = {"id": cid, "name": name, "args": args or {}}
        if client is not None:
            msg["client"] = client
        self._ctl.commands.put(json.dumps(msg, separators=(",", ":")).encode())
        self._ringer.ring(self.manifest.get("doorbell", ""))
        return cid

    def replies_waiting(self) -> bool:
        """True if the device has put replies that take_replies has not taken yet."""
        return self._ctl.replies.pending() > 0

    def take_replies(self) -> list[dict[str, Any]]:
        replies = []
        while (raw := self._ctl.replies.get()) is not None:
            try:
                replies.append(json.loads(raw))
            except ValueError:
                continue
        return replies

    def call(self, name: str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send a command and wait for its reply (a blocking helper for scripts and tests).

        Only one caller per attachment may wait for replies at a time.
        """
        bell = self.listen_for_replies()
        cid = self.send_command(name, args)
        deadline = time.monotonic() + timeout
        # An idle handler answers in tens of microseconds, less than it takes this process
        # to fall asleep in select() and be woken again (~100 µs on a VM). So poll
        # the reply queue for a moment before blocking on the doorbell; a slow handler
        # costs at most REPLY_SPIN_S of this process's CPU, never the device's.
        replies = self._ctl.replies
        spin_end = time.perf_counter() + REPLY_SPIN_S
        while not replies.pending() and time.perf_counter() < spin_end:
            pass
        while True:
            for reply in self.take_replies():
                if reply.get("id") == cid:
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                return {"id": cid, "ok": False, "error": {"code": "timeout", "message": f"no reply to {name} in {timeout} s"}}
            bell.wait(min(left, 0.05))

    def close(self) -> None:
        for reader in self.channels.values():
            reader.close()
        self.channels.clear()
        self._ctl = None  # type: ignore[assignment]
        if self._doorbell is not None:
            self._doorbell.close()
        self._ringer.close()
        close_segment(self._shm)

    def __enter__(self) -> "DeviceAttachment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def running_devices() -> list[str]:
    """Names of devices whose control segment exists in /dev/shm."""
    names = []
    for seg in list_segments():
        parts = seg[len(layout.SEGMENT_PREFIX):].rsplit(".", 1)
        if len(parts) == 2 and parts[1] == "ctl":
            names.append(parts[0])
    return names


def live_devices() -> list[str]:
    """Names of running devices whose process is alive (a killed one leaves its segments)."""
    return [n for n in running_devices() if segment_owner(control_segment_name(n)) is not None]
