"""A device laid out in ``bytearray``s, for unit tests of the bridge's core (tests/test_core.py).

The same byte layouts as a real device's shared memory, written with device_agent's own
writer classes (ControlLayout, RecordRing/FrameSlots and the channels), in this process:
no segments in /dev/shm, no threads, no clock of its own. The test says when the device
beats, publishes, and answers commands.

    dev = MemoryDevice("arm")
    temps = dev.records("temps", {"t": "f8", "v": "f4"})
    dev.command("add", {"a": {"type": "integer"}})
    link = DeviceLink("arm", open_segment=dev.open_segment)   # the bridge's side
    temps.publish(t=1.0, v=2.0)
    dev.answer(lambda name, args, client: args["a"] + 1)

A device restart under the same name: ``MemoryDevice("arm", pid=..., segments=dev.segments)``
lays its segments out afresh in the same dict, so the bridge's ``open_segment`` finds the new
control segment (another pid) where the old one was.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from device_agent import layout
from device_agent.channels import EventsChannel, FrameChannel, RecordsChannel, records_dtype
from device_agent.control import CONTROL_SIZE, ControlLayout
from device_agent.frames import FrameSlots, slots_bytes
from device_agent.layout import HEADER_SIZE, SegmentKind
from device_agent.payloads import dtype_to_json, event_record_size
from device_agent.records import RecordRing, ring_bytes



class MemorySegment:
    """What ``open_segment`` hands the bridge: a view of one bytearray; close() is a no-op."""

    def __init__(self, data: bytearray) -> None:
        self.buf = memoryview(data)

    def close(self) -> None:
        pass


class MemoryDevice:
    def __init__(self, name: str, pid: int = 4242, now: float = 1000.0,
                 segments: dict[str, bytearray] | None = None) -> None:
        """``segments``: share another device's dict (a restart replaces its segments)."""
        self.name = name
        self.pid = pid
        self.segments: dict[str, bytearray] = {} if segments is None else segments
        self._ctl_buf = self._segment(layout.control_segment_name(name), CONTROL_SIZE, SegmentKind.CONTROL, now)
        self.ctl = ControlLayout(self._ctl_buf, format=True)
        self.channels: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.publish_manifest()
        self.beat(now)

    def _segment(self, seg_name: str, size: int, kind: SegmentKind, now: float) -> bytearray:
        data = bytearray((size + 4095) // 4096 * 4096)
        layout.write_header(data, kind, self.pid, now)
        self.segments[seg_name] = data
        return data

    def open_segment(self, seg_name: str) -> MemorySegment:
        """The bridge's way in (DeviceLink(open_segment=...)); FileNotFoundError if absent."""
        try:
            return MemorySegment(self.segments[seg_name])
        except KeyError:
            raise FileNotFoundError(seg_name) from None

    # -- what a device does ----------------------------------------------------------

    def beat(self, now: float) -> None:
        layout.write_heartbeat(self._ctl_buf, now)

    def close(self) -> None:
        layout.mark_closed(self._ctl_buf)

    def set_state(self, values: dict[str, Any]) -> None:
        self.ctl.state.write(json.dumps(values).encode())

    def publish_manifest(self) -> None:
        manifest = {"device": self.name, "pid": self.pid, "doorbell": "", "heartbeat_period": 0.1,
                    "channels": self.channels, "commands": self.commands}
        self.ctl.manifest.write(json.dumps(manifest).encode())

    def _channel(self, spec: dict[str, Any], size: int, kind: SegmentKind) -> memoryview:
        seg_name = layout.channel_segment_name(self.name, spec["name"])
        data = self._segment(seg_name, HEADER_SIZE + size, kind, 0.0)
        self.channels.append({**spec, "segment": seg_name})
        self.publish_manifest()
        return memoryview(data)

    def records(self, name: str, fields: Any, capacity: int = 64) -> RecordsChannel:
        dtype = records_dtype(fields)
        buf = self._channel({"name": name, "kind": "records", "dtype": dtype_to_json(dtype), "capacity": capacity},
                            ring_bytes(capacity, dtype.itemsize), SegmentKind.RECORDS)
        RecordRing.format(buf, HEADER_SIZE, capacity, dtype.itemsize)
        return RecordsChannel(name, dtype, buf)

    def frame(self, name: str, shape: tuple[int, ...], dtype: str = "f4", slots: int = 3) -> FrameChannel:
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dt.itemsize
        buf = self._channel({"name": name, "kind": "frame", "dtype": dt.str, "shape": list(shape), "slots": slots},
                            slots_bytes(slots, nbytes), SegmentKind.FRAME)
        FrameSlots.format(buf, HEADER_SIZE, slots, nbytes)
        return FrameChannel(name, shape, dt, buf)

    def events(self, name: str, capacity: int = 64, max_bytes: int = 1024) -> EventsChannel:
        record = event_record_size(max_bytes)
        buf = self._channel({"name": name, "kind": "events", "capacity": capacity, "max_bytes": max_bytes},
                            ring_bytes(capacity, record), SegmentKind.EVENTS)
        RecordRing.format(buf, HEADER_SIZE, capacity, record)
        return EventsChannel(name, max_bytes, buf)

    def command(self, name: str, params: list[dict[str, Any]] | None = None, coalesce: bool = False) -> None:
        """Add ``name`` to the command catalog (params as docs/protocol.md §6.3 lists them)."""
        self.commands.append({"name": name, "params": params or [], "coalesce": coalesce, "doc": ""})
        self.publish_manifest()

    def take_commands(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The commands the bridge queued, oldest first (the device's side of the queue);
        at most ``limit`` of them, freeing that many slots."""
        out: list[dict[str, Any]] = []
        while (limit is None or len(out) < limit) and (raw := self.ctl.commands.get()) is not None:
            out.append(json.loads(raw))
        return out

    def reply(self, command_id: Any, result: Any = None, error: dict[str, str] | None = None,
              coalesced: bool = False) -> None:
        msg = {"id": command_id, "ok": error is None, **({"error": error} if error else {"result": result})}
        if coalesced:
            msg["coalesced"] = True
        self.ctl.replies.put(json.dumps(msg).encode())

    def clients(self) -> list[dict[str, Any]]:
        """The clients table the bridge wrote into the control segment (``mon.clients``)."""
        _, data = self.ctl.clients.read()
        return json.loads(data) if data else []

    def answer(self, handler: Callable[[str, dict[str, Any], dict[str, Any]], Any]) -> list[dict[str, Any]]:
        """Run ``handler(name, args, client)`` for every queued command and reply with its
        result; return the commands taken."""
        taken = self.take_commands()
        for cmd in taken:
            self.reply(cmd["id"], handler(cmd["name"], cmd["args"], cmd.get("client", {})))
        return taken
