"""The recorder's read loop: one more reader of a device's shared memory, writing MCAP.

Imports device_agent's reading side (through the attachment it is given), numpy and
schemas.py; it never writes to the device's memory (no wake word, no doorbell, no bridge
blob), so the device cannot tell it is there — except for a frame pin while it copies a
frame, which the writer steps around without waiting (docs/shm-layout.md §3.2). It must
not import mcap (the sink is handed in: writer.McapFile, or a fake in tests) nor the web
stack.

    rec = Recorder(DeviceAttachment("robot_arm"), McapFile("run.mcap"), channels=None, specs={})
    rec.begin()                        # metadata, cursors at "now", first state snapshot
    while ...: rec.poll(); ...         # call every few ms; returns messages written
    rec.end("stopped"); sink.finish()

Cursors start at what the device has published when ``begin()`` runs (records and events),
and at its newest frame; every later record is written or counted in ``missed`` (the
ring's exact count; for frames the gap in frame sequence numbers).

What a poll costs is what the recorder costs, and each poll is a wake-up of the process, so
``poll_period`` is as long as the device's rates allow (up to MAX_POLL): every frame still
held in its slots is read on each poll (the newest and at least the one before it), records
and events only every ``READ_EVERY`` s or once their ring is a quarter full (a read has a
fixed cost of ~20 µs; the ring holds what waits), and a batch of records goes to the sink
as two arrays (stamps, CDR payloads), never as a Python object per record.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from .schemas import (EVENT_JSON_SCHEMA, LOG, SNAPSHOT_JSON_SCHEMA, STATE_JSON_SCHEMA, STATUS_JSON_SCHEMA,
                      FrameSchema, RecordsSchema, SchemaError, dumps, encode_log, frame_schema, log_fields,
                      message_name, state_change, time_field, unix_ns, unix_ns_column)

log = logging.getLogger("bridge.record")

STATE_TOPIC = "/monbridge/state"
SNAPSHOT_TOPIC = "/monbridge/state/snapshot"
STATUS_TOPIC = "/monbridge/recorder"
OFFLINE_AFTER = 2.0      # s without a heartbeat: the device is gone
MANIFEST_EVERY = 0.5     # s between manifest checks (new channels)
READ_EVERY = 0.5         # s between reads of a records or events ring (sooner when a quarter full)
READ_AT_FILL = 4         # ... "a quarter": read once capacity / READ_AT_FILL records wait
MIN_POLL, MAX_POLL = 0.002, 0.05   # s: the range of poll_period
FIRST_POLL = 0.005       # s: poll_period until the channels' rates are known
FRAME_ID = "world"       # frame_id of images and clouds: one common frame, no transforms
_LOG_SCHEMA = LOG.encode()


class Sink(Protocol):
    bytes_written: int
    def schema(self, name: str, encoding: str, data: bytes) -> int: ...
    def channel(self, topic: str, message_encoding: str, schema_id: int, metadata: dict[str, str] | None = None) -> int: ...
    def message(self, channel_id: int, log_time: int, data: Any, publish_time: int | None = None, sequence: int = 0,
                release: Callable[[], None] | None = None) -> None: ...
    def records(self, channel_id: int, stamps: np.ndarray, payloads: np.ndarray, first_sequence: int) -> None: ...
    def metadata(self, name: str, data: dict[str, str]) -> None: ...


class FrameBuffers:
    """Buffers for one frame channel's copies, handed to the sink with each frame and given
    back by it (from its thread) once it has copied them: fresh memory would cost a page fault
    per 4 KiB on every frame, more than the copy itself."""

    KEEP = 8

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._free: collections.deque[np.ndarray] = collections.deque(maxlen=self.KEEP)

    def take(self) -> np.ndarray:
        return self._free.pop() if self._free else np.empty(self.nbytes, np.uint8)   # only this thread pops

    def give(self, buffer: np.ndarray) -> None:
        self._free.append(buffer)


@dataclass
class Tap:
    """One device channel being recorded."""
    name: str
    kind: str
    reader: Any
    cursor: int = 0                 # records/events: next sequence number; frames: last frame seen
    messages: int = 0
    missed: int = 0
    topics: dict[str, int] = field(default_factory=dict)   # role -> MCAP channel id
    schema: Any = None
    tfield: str | None = None
    buffers: FrameBuffers | None = None
    read_at: int = 1                # records/events: read once this many wait...
    due: float = 0.0                # ... or at this time.monotonic()
    rate: float = 0.0               # records, events or frames a second, the highest lately
    counted: tuple[float, int] | None = None   # (time.monotonic(), count) of the last rate sample

    def count(self) -> int:
        return self.reader.latest if self.kind == "frame" else self.reader.write_count

    def safe_period(self) -> float:
        """The longest poll period that loses nothing at ``rate``: half the time until the
        slots no longer hold the oldest unread frame, or a quarter ring fills."""
        if self.rate <= 0:
            return MAX_POLL
        backlog = (self.reader.slots - 1) if self.kind == "frame" else self.read_at
        return 0.5 * backlog / self.rate


def poll_period(taps: Any) -> float:
    """The longest poll period that loses nothing on any of ``taps``, within [MIN_POLL, MAX_POLL]."""
    return min(MAX_POLL, max(MIN_POLL, min((tap.safe_period() for tap in taps), default=MAX_POLL)))


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


def check_channels(device: Any, wanted: list[str] | None) -> None:
    """Raise ValueError naming any wanted channel the device does not have."""
    if wanted is None:
        return
    have = [c["name"] for c in device.manifest.get("channels", [])]
    unknown = [c for c in wanted if c not in have]
    if unknown:
        raise ValueError(f"device {device.device!r} has no channel {', '.join(map(repr, unknown))} "
                         f"(channels: {', '.join(have) or 'none'})")


class Recorder:
    def __init__(self, device: Any, sink: Sink, channels: list[str] | None = None, specs: dict[str, str] | None = None,
                 snapshot_every: float = 5.0, clock_ns: Callable[[], int] = time.time_ns) -> None:
        """``device``: a DeviceAttachment; ``channels``: names to record (None: all, including
        channels the device adds later); ``specs``: {file name: text} of the view specs."""
        self.device = device
        self.sink = sink
        self.wanted = channels
        self.specs = specs or {}
        self.snapshot_every = snapshot_every
        self.clock_ns = clock_ns
        self.taps: dict[str, Tap] = {}
        self._type_names: set[str] = set()
        self._topics: dict[tuple[str, str], int] = {}
        self._state: dict[str, Any] = {}
        self._state_version = -1
        self._next_snapshot = 0.0
        self._next_manifest = 0.0
        self.poll_period = FIRST_POLL   # s until the next poll() (the caller sleeps it)
        self.started_ns = 0
        self.stopped: str | None = None   # why the device side ended, once it has

    # -- setup -----------------------------------------------------------------------------

    def begin(self) -> None:
        check_channels(self.device, self.wanted)
        self.started_ns = self.clock_ns()
        manifest = self.device.manifest
        self.sink.metadata("monbridge.recording", {
            "device": self.device.device,
            "device_pid": str(self.device.writer_pid),
            "started_ns": str(self.started_ns),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_ns / 1e9)),
            "recorder_pid": str(os.getpid()),
            "channels": _json(self.wanted) if self.wanted is not None else "all",
            "time": "log_time = publish_time = the device's time for the message (frame/event t, or a "
                    "records field t/time/timestamp holding Unix seconds); else the recorder's clock when it read it",
        })
        self._write_manifest(manifest)
        if self.specs:
            self.sink.metadata("monbridge.specs", dict(self.specs))
        self._sync_channels()
        self._poll_state(force_snapshot=True)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        self.sink.metadata("monbridge.manifest", {"json": _json(manifest)})
        self.sink.metadata("monbridge.commands", {"json": _json(manifest.get("commands", []))})

    def _topic(self, topic: str, encoding: str, schema_name: str, schema_encoding: str, schema: bytes,
               meta: dict[str, str] | None = None) -> int:
        key = (topic, schema_name)
        if key not in self._topics:
            sid = self.sink.schema(schema_name, schema_encoding, schema)
            self._topics[key] = self.sink.channel(topic, encoding, sid, meta)
        return self._topics[key]

    def _json_topic(self, topic: str, schema: dict[str, Any], meta: dict[str, str] | None = None) -> int:
        return self._topic(topic, "json", schema["title"], "jsonschema", dumps(schema), meta)

    def _sync_channels(self) -> None:
        """Start a tap for every wanted channel the device has and we do not yet record."""
        for spec in self.device.manifest.get("channels", []):
            name = spec["name"]
            if name in self.taps or (self.wanted is not None and name not in self.wanted):
                continue
            reader = self.device.channels.get(name)
            if reader is None:
                continue   # announced, not attachable yet: next manifest check
            try:
                tap = self._open_tap(spec, reader)
            except SchemaError as exc:
                log.warning("not recording channel %r: %s", name, exc)
                continue
            self.taps[name] = tap
            meta = {k: _json(v) if not isinstance(v, str) else v for k, v in spec.items() if k != "segment"}
            meta["topic"] = f"/{name}"
            if isinstance(tap.schema, RecordsSchema):
                meta.update(schema=tap.schema.name, renamed=_json(tap.schema.renamed), time_field=tap.tfield or "")
            elif isinstance(tap.schema, FrameSchema):
                meta.update(schema=tap.schema.name, frame_kind=tap.schema.kind)
            else:
                meta.update(schema="foxglove_msgs/msg/Log", json_topic=f"/{name}/json")
            self.sink.metadata(f"monbridge.channel.{name}", meta)

    def _open_tap(self, spec: dict[str, Any], reader: Any) -> Tap:
        name, kind = spec["name"], spec["kind"]
        tap = Tap(name, kind, reader)
        if kind == "records":
            type_name = message_name(name)
            while type_name in self._type_names:   # channels "a_b" and "a-b": distinct types
                type_name += "X"
            tap.schema = RecordsSchema(name, reader.dtype, type_name)
            self._type_names.add(type_name)
            tap.tfield = time_field(reader.dtype)
            tap.topics["data"] = self._topic(f"/{name}", "cdr", tap.schema.name, "ros2msg", tap.schema.text.encode())
            tap.cursor = reader.write_count
            tap.read_at = max(1, int(spec.get("capacity") or 0) // READ_AT_FILL)
        elif kind == "frame":
            tap.schema = frame_schema(reader.dtype, reader.shape)
            tap.topics["data"] = self._topic(f"/{name}", "cdr", tap.schema.name, "ros2msg", tap.schema.text.encode())
            tap.buffers = FrameBuffers(int(np.prod(reader.shape)) * reader.dtype.itemsize)
            tap.cursor = max(reader.latest - 1, 0)   # the frame on show now is recorded too
        elif kind == "events":
            tap.cursor = reader.write_count
            tap.read_at = max(1, int(spec.get("capacity") or 0) // READ_AT_FILL)
        else:
            raise SchemaError(f"unknown channel kind {kind!r}")
        return tap

    # -- the loop --------------------------------------------------------------------------

    def poll(self, drain: bool = False) -> int:
        """Read what is new from every tap and the state (``drain``: every ring, however few
        records wait); return messages written."""
        written = 0
        now = time.monotonic()
        if now >= self._next_manifest:
            self._next_manifest = now + MANIFEST_EVERY
            self._check_device()
            try:
                if self.device.refresh():
                    self._write_manifest(self.device.manifest)
                    self._sync_channels()
            except (ValueError, OSError) as exc:
                log.warning("cannot re-read the manifest of %r: %s", self.device.device, exc)
            self._measure_rates(now)
        for tap in self.taps.values():
            if tap.kind == "frame":
                written += self._poll_frame(tap)
                continue
            waiting = tap.reader.write_count - tap.cursor
            if waiting and (drain or waiting >= tap.read_at or waiting < 0 or now >= tap.due):
                tap.due = now + READ_EVERY
                written += self._poll_records(tap) if tap.kind == "records" else self._poll_events(tap)
        written += self._poll_state()
        return written

    def _measure_rates(self, now: float) -> None:
        """Each tap's rate (a rise at once, a fall by half a sample at most) and from them poll_period."""
        for tap in self.taps.values():
            count = tap.count()
            if tap.counted is not None and now > tap.counted[0]:
                measured = max(0, count - tap.counted[1]) / (now - tap.counted[0])
                tap.rate = max(measured, tap.rate / 2)
            tap.counted = (now, count)
        if any(tap.rate > 0 for tap in self.taps.values()):
            self.poll_period = poll_period(self.taps.values())

    def _check_device(self) -> None:
        if self.stopped:
            return
        if self.device.closed:
            self.stopped = "device closed"
        elif self.device.heartbeat_age() > OFFLINE_AFTER:
            self.stopped = f"device stopped beating (pid {self.device.writer_pid})"

    def _poll_records(self, tap: Tap) -> int:
        batch = tap.reader.read(tap.cursor)
        tap.missed += batch.missed
        tap.cursor = batch.next_cursor
        n = len(batch.records)
        if not n:
            return 0
        now = self.clock_ns()
        stamps = unix_ns_column(batch.records[tap.tfield], now) if tap.tfield else np.full(n, now, np.int64)
        self.sink.records(tap.topics["data"], stamps, tap.schema.layout.encode_array(batch.records), batch.first)
        tap.messages += n
        return n

    def _poll_frame(self, tap: Tap) -> int:
        """Every frame after the cursor up to the newest seen at the start, that the slots still
        hold, oldest first (frames published meanwhile wait for the next poll: reading the
        newest at the end instead would skip those between)."""
        unread = tap.reader.unread(after=tap.cursor)
        written = 0
        for seq in unread:
            buffer = tap.buffers.take()
            written += self._write_frame(tap, tap.reader.read_frame(seq, out=buffer), buffer)
        if unread and tap.cursor < unread[-1]:   # even the newest was overwritten meanwhile (lapped)
            buffer = tap.buffers.take()
            written += self._write_frame(tap, tap.reader.read_latest(after=tap.cursor, out=buffer), buffer)
        return written

    def _write_frame(self, tap: Tap, frame: Any, buffer: np.ndarray) -> int:
        if frame is None:   # overwritten before it could be read: counted from the next one's seq
            tap.buffers.give(buffer)
            return 0
        tap.missed += frame.seq - tap.cursor - 1
        tap.cursor = frame.seq
        stamp = unix_ns(frame.t, self.clock_ns())
        self.sink.message(tap.topics["data"], stamp, tap.schema.encode_parts(frame.array, stamp, FRAME_ID), stamp,
                          frame.seq, release=lambda: tap.buffers.give(buffer))
        tap.messages += 1
        return 1

    def _poll_events(self, tap: Tap) -> int:
        events, missed, tap.cursor = tap.reader.read(tap.cursor)
        tap.missed += missed
        if not events:
            return 0
        now = self.clock_ns()
        for ev in events:
            stamp = unix_ns(ev.t, now)
            fields = log_fields(ev.message) if ev.to is None else None
            if fields is not None:
                cid = self._topic(f"/{tap.name}", "cdr", "foxglove_msgs/msg/Log", "ros2msg", _LOG_SCHEMA)
                data = encode_log(stamp, *fields)
            else:
                cid = self._json_topic(f"/{tap.name}/json", EVENT_JSON_SCHEMA)
                data = dumps({"message": ev.message} if ev.to is None else {"message": ev.message, "to": ev.to})
            self.sink.message(cid, stamp, data, stamp, ev.seq)
        tap.messages += len(events)
        return len(events)

    def _poll_state(self, force_snapshot: bool = False) -> int:
        written = 0
        version = self.device.state_version
        now = self.clock_ns()
        if version != self._state_version:
            try:
                version, state = self.device.state()
            except ValueError as exc:
                log.warning("cannot read the state of %r: %s", self.device.device, exc)
                return 0
            change = state_change(self._state, state)
            if change is not None and self._state_version >= 0:
                cid = self._json_topic(STATE_TOPIC, STATE_JSON_SCHEMA)
                self.sink.message(cid, now, dumps(change), now, version // 2)
                written += 1
            self._state, self._state_version = state, version
        mono = time.monotonic()
        if force_snapshot or mono >= self._next_snapshot:
            self._next_snapshot = mono + self.snapshot_every
            cid = self._json_topic(SNAPSHOT_TOPIC, SNAPSHOT_JSON_SCHEMA)
            self.sink.message(cid, now, dumps(self._state), now, max(self._state_version, 0) // 2)
            written += 1
        return written

    # -- status and the end ----------------------------------------------------------------

    def counts(self) -> tuple[int, dict[str, int]]:
        """(messages from device channels, {channel: records missed})."""
        return sum(t.messages for t in self.taps.values()), {n: t.missed for n, t in self.taps.items()}

    def write_status(self) -> None:
        """A ``/monbridge/recorder`` message: what a killed recording leaves of its counters."""
        now = self.clock_ns()
        messages, missed = self.counts()
        cid = self._json_topic(STATUS_TOPIC, STATUS_JSON_SCHEMA)
        self.sink.message(cid, now, dumps({"elapsed_s": round((now - self.started_ns) / 1e9, 3), "messages": messages,
                                           "missed": missed, "missed_total": sum(missed.values())}), now, 0)

    def end(self, reason: str) -> dict[str, Any]:
        """Drain what is left, write the last snapshot and the summary metadata; return it."""
        try:
            self.poll(drain=True)
        except (ValueError, OSError) as exc:   # the device's memory going away mid-read
            log.warning("last read of %r failed: %s", self.device.device, exc)
        self._poll_state(force_snapshot=True)
        self.write_status()
        now = self.clock_ns()
        messages, missed = self.counts()
        summary = {"ended": reason, "duration_s": round((now - self.started_ns) / 1e9, 3),
                   "messages": {n: t.messages for n, t in self.taps.items()}, "missed": missed,
                   "missed_total": sum(missed.values())}
        self.sink.metadata("monbridge.summary", {k: v if isinstance(v, str) else _json(v) for k, v in summary.items()})
        return summary
