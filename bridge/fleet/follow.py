"""Following a device's streams into a copy of it: the edge's logic, without I/O.

``Follower`` turns what an edge reads from Redis (the newest manifest and state, then entries
of the manifest, state and channel streams) into writes to a ``mirror.MemoryDevice``, keeping
the origin's sequence numbers: an entry that starts later than expected leaves a gap the
relay counts as missed, exactly; one that overlaps what was written drops its first rows; an
entry of another device process (``run``) waits for that process's manifest, which builds a
new copy (the bridge sees a restart). bridge/fleet/edge.py does the Redis calls around it;
tests/test_fleet_follow.py drives it with entries made by ``streams``.

Imports numpy, device_agent (through mirror.py) and ``streams``; no redis, Flask or socketio.
"""

from __future__ import annotations

import logging
from typing import Any

from device_agent.errors import ChannelError

from . import streams
from .mirror import MemoryDevice
from .streams import Position

log = logging.getLogger("bridge.fleet")


class Follower:
    """The copy of device ``device`` and where this edge stands in each of its streams
    (``positions``: stream key -> Position; the next XREAD asks for what follows each)."""

    def __init__(self, device: str, doorbell: Any = None) -> None:
        self.device = device
        self.doorbell = doorbell
        self.segments: dict[str, bytearray] = {}   # what DeviceLink opens (shared by successive copies)
        self.mirror: MemoryDevice | None = None
        self.run = ""
        self.positions: dict[str, Position] = {}
        self._channels: dict[str, str] = {}         # channel stream key -> channel name
        self.counts = {"entries": 0, "missed": 0, "restarts": 0, "bad_entries": 0}

    @property
    def manifest_key(self) -> str:
        return streams.manifest_key(self.device)

    @property
    def state_key(self) -> str:
        return streams.state_key(self.device)

    def start(self, manifest_id: str, manifest_fields: Any, state: tuple[str, Any] | None, now: float,
              frame_starts: dict[str, str] | None = None) -> None:
        """Build the copy from the newest manifest entry and the newest state entry (None if
        there is none). ``frame_starts``: channel name -> the stream ID of its newest frame
        (a frame stream is read from there; records and events from their start: a late
        joiner's backfill)."""
        run, manifest = streams.decode_manifest(manifest_fields)
        self.positions[self.manifest_key] = Position(manifest_id)
        self._build(run, manifest, now, frame_starts or {})
        if state is not None:
            self.positions[self.state_key] = Position(state[0])
            _run, _version, values = streams.decode_state(state[1])
            self.mirror.set_state(values)
        else:
            self.positions[self.state_key] = Position()

    def after_redis_restart(self) -> None:
        """Redis restarted: read every stream again from its start (sequence numbers keep what
        was written from coming twice)."""
        self.positions = {key: p.after_redis_restart() for key, p in self.positions.items()}

    def frame_channels(self, manifest_fields: Any) -> list[str]:
        """The frame channels a manifest entry lists (their newest IDs go to ``start``)."""
        _run, manifest = streams.decode_manifest(manifest_fields)
        return [c["name"] for c in manifest["channels"] if isinstance(c, dict) and c.get("kind") == "frame"]

    def _build(self, run: str, manifest: dict[str, Any], now: float, frame_starts: dict[str, str]) -> None:
        old = self.mirror
        pid = manifest.get("pid") if isinstance(manifest.get("pid"), int) else 0
        mirror = MemoryDevice(self.device, pid, now, segments=self.segments,
                              commands=manifest.get("commands", []), doorbell=self.doorbell)
        for key in self._channels:
            self.positions.pop(key, None)
        self._channels = {}
        for spec in manifest.get("channels", []):
            self._add_channel(mirror, spec, frame_starts.get(spec.get("name")) if isinstance(spec, dict) else None)
        self.run = run
        self.mirror = mirror
        if old is not None:
            old.release()
            self.counts["restarts"] += 1

    def _add_channel(self, mirror: MemoryDevice, spec: Any, newest_frame: str | None) -> None:
        try:
            mirror.add_channel(spec)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            name = spec.get("name") if isinstance(spec, dict) else spec
            log.warning("device %r: cannot serve channel %r from Redis: %s", self.device, name, exc)
            return
        key = streams.channel_key(self.device, spec["name"])
        self._channels[key] = spec["name"]
        self.positions[key] = _just_before(newest_frame) if newest_frame else Position()

    def apply(self, key: str, entry_id: str, fields: Any, now: float) -> None:
        """One entry read from stream ``key`` after ``positions[key]``."""
        if key in (self.manifest_key, self.state_key):
            self.positions[key] = Position(entry_id)
            try:
                if key == self.manifest_key:
                    self._apply_manifest(fields, now)
                else:
                    run, _version, values = streams.decode_state(fields)
                    if run == self.run and self.mirror is not None:
                        self.mirror.set_state(values)
            except ValueError as exc:   # EntryError; skipped, the next entry of the stream counts
                self.counts["bad_entries"] += 1
                log.warning("device %r: skipping a malformed entry %s of %s: %s", self.device, entry_id, key, exc)
        elif key in self._channels:
            self._apply_channel(key, entry_id, fields)

    def _apply_manifest(self, fields: Any, now: float) -> None:
        run, manifest = streams.decode_manifest(fields)
        mirror = self.mirror
        if run != self.run or mirror is None:
            self._build(run, manifest, now, {})
            return
        known = set(mirror.channels)
        for spec in manifest.get("channels", []):
            if isinstance(spec, dict) and spec.get("name") not in known:
                self._add_channel(mirror, spec, None)
        if manifest.get("commands", []) != mirror.commands:
            mirror.commands = list(manifest.get("commands", []))
            mirror.publish_manifest()

    def _apply_channel(self, key: str, entry_id: str, fields: Any) -> None:
        position = self.positions[key]
        try:
            entry = streams.decode_entry(fields)
        except ValueError as exc:
            self.counts["bad_entries"] += 1
            log.warning("device %r: skipping a malformed entry %s of %s: %s", self.device, entry_id, key, exc)
            self.positions[key] = Position(entry_id, position.run, position.next_seq)
            return
        if entry.run != self.run:   # another device process than the copy's: its manifest builds a new copy
            self.positions[key] = Position(entry_id, position.run, position.next_seq)
            return
        step = streams.step(position, entry_id, entry)
        self.positions[key] = step.position
        if step.duplicate:
            return
        self.counts["entries"] += 1
        self.counts["missed"] += step.missed
        target = self.mirror.channels[self._channels[key]]
        try:
            if entry.kind == "records":
                rows = streams.records_of(entry, target.dtype)[step.skip:]
                target.skip_to(entry.first + step.skip)
                target.publish_many(rows)
            elif entry.kind == "frame":
                target.skip_to(entry.first - 1)
                target.publish(streams.frame_of(entry), entry.t)
            else:
                first = entry.first + step.skip
                for event in streams.events_of(entry):
                    if event.seq >= first:
                        target.skip_to(event.seq)
                        target.publish(event.message, to=event.to, t=event.t)
                target.skip_to(entry.next_seq)
        except (ChannelError, ValueError, TypeError, AttributeError) as exc:   # a kind or shape that does not fit the channel
            self.counts["bad_entries"] += 1
            log.warning("device %r: entry %s of %s does not fit its channel: %s", self.device, entry_id, key, exc)


def _just_before(entry_id: str) -> Position:
    """A position from which XREAD returns the entry ``entry_id`` first."""
    ms, seq = streams.parse_id(entry_id)
    return Position(f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2**64 - 1}" if ms else streams.FIRST_ID)
