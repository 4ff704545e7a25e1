"""Playing a recording back on its recorded timing: the clock (speed, pause, seek) and the
loop that hands each tick's messages to an output.

Pure: numpy and the standard library. Time is passed in (``now``: seconds of a monotonic
clock), messages come from a ``reader.Recording`` (or anything with the same few members)
and go to an ``Output``, so tests/test_replay_clock.py drives it with a fake clock and an
in-memory recording. Must not import mcap, device_agent or the web stack; replay_cli.py
wires it to a file and a device.

    clock = PlaybackClock(recording.duration_ns, now=time.monotonic(), speed=1.0)
    player = Player(recording, output, clock, loop=False)
    player.prepare(time.monotonic())            # the state at the start; the first messages read
    while ...:
        wait = player.tick(time.monotonic())    # publishes what is due; seconds until more is
        clock.seek(...), clock.pause(...)        # from command handlers, between two ticks

Position 0 is the recording's first message (``recording.start_ns``); a message is due when
the position reaches ``log_time - start_ns``. Each tick publishes, per channel, everything
that has come due (or will within the player's ``lead``): records as one batch (decoded bit for bit), the newest frame only (frames
are latest-wins on the device too), events in sequence order, and the recorded state's
changes. A seek (``clock.epoch`` changes) restarts the message stream at the new position
and publishes the whole recorded state as it was there.

``speed=FLAT_OUT`` (``monbridge replay --speed max``) plays as fast as the file can be read:
the clock no longer follows wall time, each tick plays the next ``FLAT_OUT_STEP_NS`` of the
recording and moves the position there (records all published, frames the newest of each
step, as a device's frame channel would hold them).
"""

from __future__ import annotations

import array
import bisect
import math
import struct
from typing import Any, Protocol

import numpy as np

MIN_SPEED, MAX_SPEED = 0.1, 20.0
FLAT_OUT = math.inf              # the speed of "as fast as possible" (--speed max)
FLAT_OUT_STEP_NS = 250_000_000   # recording played per tick at FLAT_OUT
MAX_TIMING_SAMPLES = 2_000_000   # per-message lateness samples kept for timing()
DECODE_ERRORS = (ValueError, KeyError, IndexError, TypeError, struct.error)   # what a decoder may raise
SKIP = object()   # an event decoder's answer for an event not to publish again (reader.py)


class PlaybackClock:
    """Where playback is: ``position(now)`` in ns from the recording's start, advancing at
    ``speed`` × wall time while ``playing``, held in [0, duration]. ``epoch`` counts jumps
    (seek, and resuming from the end), so a reader can tell a jump from playing on."""

    def __init__(self, duration_ns: int, now: float, speed: float = 1.0, playing: bool = True) -> None:
        self.duration_ns = max(int(duration_ns), 0)
        self.speed = check_speed(speed, flat_out=True)
        self.playing = playing
        self.epoch = 0
        self._anchor_pos = 0          # position at _anchor_wall
        self._anchor_wall = now

    def position(self, now: float) -> int:
        pos = self._anchor_pos
        if self.playing and self.speed != FLAT_OUT:   # flat out, the player moves the position
            pos += int((now - self._anchor_wall) * self.speed * 1e9)
        return min(max(pos, 0), self.duration_ns)

    def at_end(self, now: float) -> bool:
        return self.position(now) >= self.duration_ns

    def _rebase(self, now: float) -> None:
        self._anchor_pos, self._anchor_wall = self.position(now), now

    def pause(self, now: float) -> None:
        self._rebase(now)
        self.playing = False

    def resume(self, now: float) -> None:
        """Play on; at the end, play again from the start (a jump: ``epoch`` + 1)."""
        self._rebase(now)
        if self._anchor_pos >= self.duration_ns:
            self._anchor_pos = 0
            self.epoch += 1
        self.playing = True

    def seek(self, position_ns: int, now: float) -> None:
        """Jump to ``position_ns`` (held in [0, duration]); playing or paused stays as it was."""
        self._anchor_pos = min(max(int(position_ns), 0), self.duration_ns)
        self._anchor_wall = now
        self.epoch += 1

    def set_speed(self, speed: float, now: float) -> None:
        self._rebase(now)
        self.speed = check_speed(speed, flat_out=True)

    def advance(self, position_ns: int, now: float) -> None:
        """Move to ``position_ns`` without counting a jump (playing flat out)."""
        self._anchor_pos = min(max(int(position_ns), 0), self.duration_ns)
        self._anchor_wall = now

    def wall_until(self, position_ns: int, now: float) -> float:
        """Seconds until the position reaches ``position_ns`` (0 if it has; inf when paused)."""
        left = position_ns - self.position(now)
        if left <= 0 or (self.playing and self.speed == FLAT_OUT):
            return 0.0
        return left / (self.speed * 1e9) if self.playing else math.inf


def check_speed(speed: float, flat_out: bool = False) -> float:
    """``speed`` as a float if it is in [MIN_SPEED, MAX_SPEED] (or FLAT_OUT, where allowed)."""
    if flat_out and speed == FLAT_OUT:
        return FLAT_OUT
    if not isinstance(speed, (int, float)) or isinstance(speed, bool) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be a number from {MIN_SPEED:g} to {MAX_SPEED:g} (times the recorded pace), "
                         f"got {speed!r}")
    return float(speed)


class Output(Protocol):
    """Where a tick's messages go (replay_cli.DeviceOutput: a device's channels)."""
    def records(self, track: str, rows: np.ndarray) -> None: ...
    def frame(self, track: str, array: np.ndarray, t: float) -> None: ...
    def event(self, track: str, message: Any, t: float) -> None: ...
    def state(self, values: dict[str, Any]) -> None: ...


class Player:
    """Publishes a recording through ``output`` as ``clock`` advances; see the module docstring.

    ``lead``: seconds (of wall time) ahead of its due time a message may go out: a caller
    that ticks every ``d`` seconds passes ``d / 2``, so each message goes out within half a
    tick of its due time, early or late, instead of up to a whole tick late.

    Counters: ``published`` (messages per track), ``undecodable`` (messages per track that
    could not be decoded or did not fit their channel: skipped), ``loops`` (times a
    ``loop`` replay went round), ``ended`` (reached the end without ``loop``: paused there).
    """

    def __init__(self, recording: Any, output: Output, clock: PlaybackClock, loop: bool = False,
                 lead: float = 0.0) -> None:
        self.recording = recording
        self.output = output
        self.clock = clock
        self.loop = loop
        self.lead = lead
        self.start_ns = recording.start_ns
        self.by_topic = recording.by_topic
        self.published = {name: 0 for name in recording.tracks}
        self.undecodable = {name: 0 for name in recording.tracks}
        self.loops = 0
        self.ended = False
        self._epoch = -1              # != clock.epoch: the first tick starts the stream
        self._stream: Any = iter(())
        self._next: Any = None
        self._state_times = [t for t, _ in recording.states]
        self._state_i = 0
        self._state: dict[str, Any] = {}
        self._lateness = array.array("d")   # ms, one per message published

    # -- the tick ----------------------------------------------------------------------

    def tick(self, now: float) -> float:
        """Publish everything due at ``now``; return the seconds until something more is due
        (``math.inf`` while paused)."""
        clock = self.clock
        if clock.epoch != self._epoch:
            self._restart(now)
        if not clock.playing:
            return math.inf           # paused: nothing is due (a seek meanwhile set the state above)
        position = clock.position(now)
        if clock.speed == FLAT_OUT:
            position = min(position + FLAT_OUT_STEP_NS, clock.duration_ns)
            clock.advance(position, now)
            ahead = 0
        else:
            ahead = int(self.lead * clock.speed * 1e9)   # recording time: what goes out early
        target = self.start_ns + min(position + ahead, clock.duration_ns)
        due: dict[str, list[Any]] = {}
        nxt = self._next
        while nxt is not None and nxt.log_time <= target:
            track = self.by_topic.get(nxt.topic)
            if track is not None:
                due.setdefault(track.name, []).append(nxt)
            nxt = next(self._stream, None)
        self._next = nxt
        if due:
            self._publish(due, self.start_ns + position)
        self._play_state(target)
        if clock.playing and position >= clock.duration_ns:
            if self.loop:
                self.loops += 1
                clock.seek(0, now)
                return 0.0
            clock.pause(now)
            self.ended = True
            return math.inf
        ends = [clock.duration_ns]
        if nxt is not None:
            ends.append(nxt.log_time - self.start_ns - ahead)
        if self._state_i < len(self._state_times):
            ends.append(self._state_times[self._state_i] - self.start_ns - ahead)
        return clock.wall_until(min(ends), now)

    def prepare(self, now: float) -> None:
        """Open the message stream at the clock's position and publish the recorded state
        there, without publishing any message (``tick`` does this itself after a jump)."""
        self._restart(now)

    def _restart(self, now: float) -> None:
        """Start the message stream at the clock's position and publish the state there."""
        self._epoch = self.clock.epoch
        self.ended = False
        target = self.start_ns + self.clock.position(now)
        self._stream = self.recording.messages(target)
        self._next = next(self._stream, None)
        # before the first recorded state (records stamped by the device a little before the
        # recorder's first snapshot) the first one is the best there is
        self._state_i = max(bisect.bisect_right(self._state_times, target), min(len(self._state_times), 1))
        whole = self.recording.states[self._state_i - 1][1] if self._state_i else None
        if whole is not None:
            self._state = dict(whole)
            self.output.state(dict(whole))

    def _publish(self, due: dict[str, list[Any]], now_ns: int) -> None:
        tracks = self.recording.tracks
        for name, items in due.items():
            track = tracks[name]
            try:
                if track.kind == "records":
                    self._publish_records(track, items)
                elif track.kind == "frame":
                    self._publish_frame(track, items)
                else:
                    self._publish_events(track, items)
            except DECODE_ERRORS:
                self.undecodable[name] += len(items)
                continue
            self._sample(items, now_ns)

    def _publish_records(self, track: Any, items: list[Any]) -> None:
        by_topic: dict[str, list[Any]] = {}
        for item in items:
            by_topic.setdefault(item.topic, []).append(item)
        for topic, group in by_topic.items():
            rows = _decoded_rows(group)
            if rows is None:
                rows = track.decoders[topic]([i.data for i in group], [i.log_time for i in group])
            self.undecodable[track.name] += len(group) - len(rows)
            if len(rows):
                self.output.records(track.name, rows)
                self.published[track.name] += len(rows)

    def _publish_frame(self, track: Any, items: list[Any]) -> None:
        newest = items[-1]                       # latest wins: the older ones would be overwritten
        array = track.decoders[newest.topic](newest.data)
        if array is None:
            self.undecodable[track.name] += 1
            return
        self.output.frame(track.name, array, newest.log_time / 1e9)
        self.published[track.name] += 1

    def _publish_events(self, track: Any, items: list[Any]) -> None:
        for item in sorted(items, key=lambda i: (i.log_time, i.sequence)):
            try:
                message = track.decoders[item.topic](item.data)
            except DECODE_ERRORS:
                self.undecodable[track.name] += 1
                continue
            if message is SKIP:
                continue
            self.output.event(track.name, message, item.log_time / 1e9)
            self.published[track.name] += 1

    def _play_state(self, target: int) -> None:
        states = self.recording.states
        changed: dict[str, Any] = {}
        while self._state_i < len(states) and states[self._state_i][0] <= target:
            whole = states[self._state_i][1]
            changed.update({k: v for k, v in whole.items() if k not in self._state or self._state[k] != v})
            self._state = dict(whole)
            self._state_i += 1
        if changed:
            self.output.state(changed)

    # -- figures -------------------------------------------------------------------------

    def _sample(self, items: list[Any], now_ns: int) -> None:
        """Keep how late each message was published (early: negative): (the position now,
        as a log time - its log time) / speed."""
        if len(self._lateness) >= MAX_TIMING_SAMPLES or self.clock.speed == FLAT_OUT:
            return
        ms = 1e-6 / self.clock.speed   # wall ms per ns of recording; a list, not numpy: a tick has few items
        self._lateness.extend([(now_ns - i.log_time) * ms for i in items])

    def timing(self) -> dict[str, float]:
        """Publish-time error of the messages so far, how far (early or late) from their
        recorded log_time at the replay's speed they went out: ``p50_ms``, ``p99_ms``,
        ``max_ms``, ``messages`` (the error of the tick itself included: a tick that wakes
        late publishes its messages late)."""
        if not self._lateness:
            return {"messages": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        late = np.abs(np.frombuffer(self._lateness, np.float64))
        return {"messages": int(late.size), "p50_ms": float(np.percentile(late, 50)),
                "p99_ms": float(np.percentile(late, 99)), "max_ms": float(late.max())}

    def status(self, now: float) -> dict[str, Any]:
        """The state keys a dashboard's timeline bar reads (docs/recording.md, Replay)."""
        clock = self.clock
        return {"replay_position": round(clock.position(now) / 1e9, 3),
                "replay_duration": round(clock.duration_ns / 1e9, 3),
                "replay_playing": clock.playing, "replay_speed": "max" if clock.speed == FLAT_OUT else clock.speed,
                "replay_epoch": clock.epoch, "replay_loop": self.loop}


def _decoded_rows(group: list[Any]) -> np.ndarray | None:
    """The rows of records messages that were decoded ahead (reader.decode_ahead) as one
    slice of their block, if they are consecutive rows of one block; else None."""
    first, last = group[0].decoded, group[-1].decoded
    if first is None or last is None or first[0] is not last[0] or last[1] - first[1] != len(group) - 1:
        return None
    return first[0][first[1] : last[1] + 1]
