"""A device laid out in ``bytearray``s in this process: what an edge bridge attaches to.

An edge (bridge/fleet/edge.py) rebuilds the origin's device here from Redis — its manifest,
channels, state and heartbeat — with device_agent's own layouts and writer classes, so the
bridge's DeviceLink, relay and command broker serve it unchanged
(``DeviceLink(name, open_segment=mirror.open_segment)``): pacing, decimation, flow control,
late joiners and exact ``missed`` counts come from the same code as on the origin. The
channels keep the origin's sequence numbers (``skip_to``), so a gap in Redis is a gap in the
ring, counted as missed like records a ring overwrote. tests/memory_device.py builds on it.

Imports device_agent (layouts, channels, doorbells) and numpy; no Redis, Flask or socketio.
Nothing here reads the clock: callers pass ``now`` (Unix seconds, as device heartbeats are).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from device_agent import layout
from device_agent.channels import EventsChannel, FrameChannel, RecordsChannel, Waker
from device_agent.control import CONTROL_SIZE, BridgeInfo, ControlLayout
from device_agent.doorbell import Doorbell, Ringer
from device_agent.frames import FrameSlots, slots_bytes
from device_agent.layout import HEADER_SIZE, SegmentKind
from device_agent.payloads import dtype_from_json, event_record_size
from device_agent.records import RecordRing, ring_bytes

Channel = RecordsChannel | FrameChannel | EventsChannel
HEARTBEAT_PERIOD = 0.25    # what the manifest says; the edge beats when the origin says online


class MemorySegment:
    """What ``open_segment`` hands the bridge: a view of one bytearray; close() is a no-op."""

    def __init__(self, data: bytearray) -> None:
        self.buf = memoryview(data)

    def close(self) -> None:
        pass


class MemoryDevice:
    """One device process's segments in ``segments`` (a dict shared across restarts: a new
    run lays its segments out afresh in the same dict, with another ``pid`` / creation time,
    so the bridge sees a restarted device). ``doorbell``: a Doorbell the bridge rings when it
    queues a command (None: nobody listens, the caller polls ``take_commands``)."""

    def __init__(self, name: str, pid: int, now: float, segments: dict[str, bytearray] | None = None,
                 commands: list[dict[str, Any]] | None = None, doorbell: Doorbell | None = None) -> None:
        self.name = name
        self.pid = pid
        self.segments: dict[str, bytearray] = {} if segments is None else segments
        self.doorbell = doorbell
        self._created = now
        self._ctl_buf = self._segment(layout.control_segment_name(name), CONTROL_SIZE, SegmentKind.CONTROL)
        self.ctl = ControlLayout(self._ctl_buf, format=True)
        self._ringer = Ringer()
        self._waker = Waker(self.ctl.wake, lambda: self._ring_bridge("data_doorbell"))
        self._bridge_info = BridgeInfo(self.ctl.bridge)
        self._replies_lock = threading.Lock()   # the replies queue has one writer at a time
        self.channel_specs: list[dict[str, Any]] = []
        self.channels: dict[str, Channel] = {}
        self.commands: list[dict[str, Any]] = list(commands or [])
        self.publish_manifest()
        self.beat(now)

    def _segment(self, seg_name: str, size: int, kind: SegmentKind) -> bytearray:
        data = bytearray((size + 4095) // 4096 * 4096)
        layout.write_header(data, kind, self.pid, self._created)
        self.segments[seg_name] = data
        return data

    def open_segment(self, seg_name: str) -> MemorySegment:
        """The bridge's way in (DeviceLink(open_segment=...)); FileNotFoundError if absent."""
        try:
            return MemorySegment(self.segments[seg_name])
        except KeyError:
            raise FileNotFoundError(seg_name) from None

    # -- the device's side -------------------------------------------------------------

    def beat(self, now: float) -> None:
        layout.write_heartbeat(self._ctl_buf, now)

    def close(self) -> None:
        """The device closed cleanly (the bridge says so, and stops serving it with
        --exit-with-device)."""
        layout.mark_closed(self._ctl_buf)
        self._ring_bridge("doorbell")

    def set_state(self, values: dict[str, Any]) -> None:
        self.ctl.state.write(json.dumps(values, separators=(",", ":")).encode())

    def publish_manifest(self) -> None:
        manifest = {"device": self.name, "pid": self.pid, "doorbell": self.doorbell.address if self.doorbell else "",
                    "heartbeat_period": HEARTBEAT_PERIOD, "channels": self.channel_specs, "commands": self.commands}
        self.ctl.manifest.write(json.dumps(manifest).encode())

    def add_channel(self, spec: dict[str, Any]) -> Channel:
        """Lay out a channel as a manifest entry describes it (``name``, ``kind`` and the
        kind's fields: docs/shm-layout.md), and list it in the manifest."""
        name, kind = spec["name"], spec["kind"]
        seg_name = layout.channel_segment_name(self.name, name)

        def segment(size: int, seg_kind: SegmentKind) -> memoryview:
            return memoryview(self._segment(seg_name, HEADER_SIZE + size, seg_kind))

        channel: Channel
        if kind == "records":
            dtype, capacity = dtype_from_json(spec["dtype"]), int(spec["capacity"])
            buf = segment(ring_bytes(capacity, dtype.itemsize), SegmentKind.RECORDS)
            RecordRing.format(buf, HEADER_SIZE, capacity, dtype.itemsize)
            channel = RecordsChannel(name, dtype, buf, self._waker)
        elif kind == "frame":
            dtype, shape, slots = np.dtype(spec["dtype"]), tuple(int(d) for d in spec["shape"]), int(spec.get("slots", 3))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            buf = segment(slots_bytes(slots, nbytes), SegmentKind.FRAME)
            FrameSlots.format(buf, HEADER_SIZE, slots, nbytes)
            channel = FrameChannel(name, shape, dtype, buf, self._waker)
        elif kind == "events":
            capacity, max_bytes = int(spec["capacity"]), int(spec["max_bytes"])
            record = event_record_size(max_bytes)
            buf = segment(ring_bytes(capacity, record), SegmentKind.EVENTS)
            RecordRing.format(buf, HEADER_SIZE, capacity, record)
            channel = EventsChannel(name, max_bytes, buf, self._waker)
        else:
            raise ValueError(f"channel {name!r}: unknown kind {kind!r}")
        self.channel_specs.append({**spec, "segment": seg_name})
        self.channels[name] = channel
        self.publish_manifest()
        return channel

    # -- commands and replies ------------------------------------------------------------

    def take_commands(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The commands the bridge queued, oldest first (the device's side of the queue);
        at most ``limit`` of them, freeing that many slots."""
        out: list[dict[str, Any]] = []
        while (limit is None or len(out) < limit) and (raw := self.ctl.commands.get()) is not None:
            out.append(json.loads(raw))
        return out

    def put_reply(self, reply: dict[str, Any]) -> None:
        """Queue a reply (``{"id", "ok", "result" | "error"}``, docs/protocol.md §6) and ring
        the bridge."""
        with self._replies_lock:
            self.ctl.replies.put(json.dumps(reply, separators=(",", ":")).encode())
        self._ring_bridge("doorbell")

    def _ring_bridge(self, which: str) -> None:
        """Ring the bridge's ``doorbell`` (replies) or ``data_doorbell`` (a publish it waits
        for), at the address it wrote into the control segment."""
        address = self._bridge_info.get().get(which)
        if address:
            self._ringer.ring(address)

    def release(self) -> None:
        """Close what this process holds open (the ringer); the segments stay in ``segments``."""
        self._ringer.close()
