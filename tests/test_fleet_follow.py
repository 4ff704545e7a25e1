"""The fleet without Redis: OriginTap (bridge/fleet/origin.py) turns an origin device into
stream entries, Follower (bridge/fleet/follow.py) rebuilds a copy of the device from them in a
mirror.MemoryDevice, and the writers' ``skip_to`` keeps the origin's sequence numbers across
gaps. ``FakeStreams`` stands in for Redis (XADD appends, XREAD returns what follows each
position), so every test is in-process, single-threaded and clock-free.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from bridge.device_link import DeviceLink
from bridge.fleet import streams
from bridge.fleet.follow import Follower
from bridge.fleet.mirror import MemoryDevice as Mirror
from bridge.fleet.origin import OriginTap
from device_agent.attach import DeviceAttachment
from device_agent.frames import FrameSlots, slots_bytes
from device_agent.records import RecordRing, ring_bytes
from memory_device import MemoryDevice

NAME = "arm"
T0 = 1_700_000_000.0
DT = np.dtype([("t", "<f8"), ("v", "<f4"), ("pos", "<f4", (3,)), ("n", "<i8")])
TEMPS, MANIFEST, STATE = streams.channel_key(NAME, "temps"), streams.manifest_key(NAME), streams.state_key(NAME)
_closers: list = []   # what the test opened (each holds a socket): closed after it


def opened(thing, close=None):
    _closers.append(close or thing.close)
    return thing


@pytest.fixture(autouse=True)
def _close_all():
    yield
    while _closers:
        _closers.pop()()


def rows(start: int, n: int) -> np.ndarray:
    out = np.zeros(n, DT)
    out["t"] = T0 + np.arange(start, start + n) / 60
    out["v"] = np.sin(np.arange(start, start + n))
    out["pos"] = np.arange(3 * start, 3 * (start + n)).reshape(n, 3)   # rows(a, n)[k] == rows(a + k, 1)[0]
    out["n"] = np.arange(start, start + n) * 2**40
    return out


class FakeStreams:
    """Redis streams as XADD and XREAD with explicit IDs see them; ``ms`` is Redis's clock."""

    def __init__(self, ms: int = 10_000) -> None:
        self.ms = ms
        self.streams: dict[str, list[tuple[str, dict]]] = defaultdict(list)

    def add(self, key: str, fields: dict) -> None:
        self.ms += 1
        self.streams[key].append((f"{self.ms}-0", fields))

    def xadd(self, writes) -> None:
        for w in xadds(writes):
            self.add(w.key, w.value)

    def restart(self, ms: int = 1) -> None:
        """Redis came back from a snapshot under another clock: same entries, lower IDs."""
        old, self.streams, self.ms = self.streams, defaultdict(list), ms
        for key, fields in [(key, fields) for key, entries in old.items() for _, fields in entries]:
            self.add(key, fields)

    def start(self, follower: Follower, now: float = T0) -> None:
        """What edge.EdgeFollower._start reads: the newest manifest, state and frame IDs."""
        manifest_id, fields = self.streams[MANIFEST][-1]
        frames = {c: self.streams.get(streams.channel_key(NAME, c)) for c in follower.frame_channels(fields)}
        state = self.streams.get(STATE)
        follower.start(manifest_id, fields, state[-1] if state else None, now, {c: f[-1][0] for c, f in frames.items() if f})

    def feed(self, follower: Follower, now: float = T0) -> None:
        """One XREAD of every position (in order), applied entry by entry."""
        for key, position in list(follower.positions.items()):
            after = streams.parse_id(position.stream_id)
            for entry_id, fields in list(self.streams.get(key, [])):
                if streams.parse_id(entry_id) > after:
                    follower.apply(key, entry_id, fields, now)


class Origin:
    """An origin device (records, frame, events, state, a command) and its bridge's tap."""

    def __init__(self, pid: int = 4242, segments: dict | None = None, created: float = T0) -> None:
        self.dev = MemoryDevice(NAME, pid=pid, now=created, segments=segments)
        opened(self.dev, self.dev.release)
        self.temps = self.dev.records("temps", DT, capacity=64)
        self.cam = self.dev.frame("cam", (4, 3), "f4")
        self.log = self.dev.events("log")
        self.dev.command("home", [{"name": "speed", "type": "number"}])
        self.dev.set_state({"mode": "run", "gen": pid})
        self.att = opened(DeviceAttachment(NAME, open_segment=self.dev.open_segment))
        self.tap = OriginTap(NAME, rate=60)
        self.tap.want(frozenset({"cam"}))   # an edge's browser watches the frame channel
        self.now = 0.0

    def tick(self, dt: float = 1 / 30) -> list:
        self.now += dt
        self.att.refresh()
        return self.tap.tick(self.att, True, {"pid": self.dev.pid, "heartbeat_age": 0.0}, self.now, T0 + self.now)


def xadds(writes) -> list:
    return [w for w in writes if w.op == "xadd"]


def keys(writes) -> list[str]:
    return [w.key for w in xadds(writes)]


def copy_of(follower: Follower) -> DeviceAttachment:
    opened(follower, lambda: follower.mirror.release())
    return opened(DeviceAttachment(NAME, open_segment=lambda n: follower.mirror.open_segment(n)))


@pytest.fixture
def fleet():
    """(origin, redis, follower): the follower started from the origin's first tick."""
    origin, redis, follower = Origin(), FakeStreams(), Follower(NAME)
    opened(follower, lambda: follower.mirror.release())
    redis.xadd(origin.tick())
    redis.start(follower)
    return origin, redis, follower


# -- the writers' skip_to ------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [16, 4])
def test_record_ring_skip_to_numbers_on_and_counts_the_hole_as_missed(capacity):
    buf = bytearray(ring_bytes(capacity, 8))
    ring = RecordRing.format(buf, 0, capacity, 8)
    ring.write_many(np.arange(0, 5, dtype="<i8").view("V8"))
    ring.skip_to(8)
    ring.skip_to(6)                                   # backwards: nothing
    assert ring.write_count == 8
    ring.write_many(np.arange(8, 10, dtype="<i8").view("V8"))
    got = ring.read(5)
    assert (got.first, got.missed, got.next_cursor) == (8, 3, 10)
    assert got.records.view("<i8").tolist() == [8, 9]
    for cursor in range(11):
        got = ring.read(cursor)
        assert len(got.records) + got.missed == got.next_cursor - cursor
        assert got.records.view("<i8").tolist() == list(range(got.first, got.next_cursor))


def test_frame_slots_skip_to_numbers_the_next_frame():
    slots = FrameSlots.format(bytearray(slots_bytes(3, 16)), 0, 3, 16)
    assert slots.write(np.arange(4, dtype="<f4"), 1.0) == 1
    slots.skip_to(6)
    slots.skip_to(2)                                  # backwards: nothing
    assert slots.latest == 1                          # readers see nothing until the next frame
    assert slots.write(np.arange(4, 8, dtype="<f4"), 2.0) == 7
    got = slots.read_latest(after=1)
    assert (got.seq, got.t, got.data.view("<f4").tolist()) == (7, 2.0, [4, 5, 6, 7])


# -- origin -> entries -> copy -------------------------------------------------------------

def publish_some(origin: Origin, start: int, n: int, frame_value: float) -> None:
    origin.temps.publish_many(rows(start, n))
    origin.cam.publish(np.full((4, 3), frame_value, "f4"), t=T0 + frame_value)
    origin.log.publish({"i": start}, t=T0 + start)
    origin.log.publish({"only": "you", "i": start}, to="someclient", t=T0 + start + 0.5)


def test_the_copy_holds_the_origins_data_with_the_same_sequence_numbers(fleet):
    origin, redis, follower = fleet
    for start, n, value in [(0, 5, 1.0), (5, 2, 2.0), (7, 9, 3.0)]:
        publish_some(origin, start, n, value)
        redis.xadd(origin.tick())
        redis.feed(follower)
    copy = copy_of(follower)
    mine, theirs = copy.channels["temps"].read(0), origin.att.channels["temps"].read(0)
    assert (mine.first, mine.missed, mine.next_cursor) == (theirs.first, theirs.missed, theirs.next_cursor) == (0, 0, 16)
    assert mine.records.dtype == theirs.records.dtype and mine.records.tobytes() == theirs.records.tobytes()
    frame, origin_frame = copy.channels["cam"].read_latest(0), origin.att.channels["cam"].read_latest(0)
    assert (frame.seq, frame.t) == (origin_frame.seq, origin_frame.t) == (3, T0 + 3.0)
    assert frame.array.dtype == origin_frame.array.dtype and np.array_equal(frame.array, origin_frame.array)
    events = copy.channels["log"].read(0)
    assert events == origin.att.channels["log"].read(0)
    assert [(e.seq, e.to) for e in events[0]] == [(i, "someclient" if i % 2 else None) for i in range(6)]
    assert copy.state()[1] == origin.att.state()[1] == {"mode": "run", "gen": 4242}
    assert copy.manifest["commands"] == origin.dev.commands
    assert [c["name"] for c in copy.manifest["channels"]] == ["temps", "cam", "log"]
    assert copy.writer_pid == 4242
    assert follower.counts == {"entries": 9, "missed": 0, "restarts": 0, "bad_entries": 0}
    origin.dev.set_state({"mode": "stop"})            # later changes of state and catalog
    origin.dev.command("park")
    redis.xadd(origin.tick())
    redis.feed(follower)
    copy.refresh()
    assert copy.state()[1] == {"mode": "stop"}
    assert [c["name"] for c in copy.manifest["commands"]] == ["home", "park"]


def test_a_late_follower_backfills_records_and_events_but_takes_only_the_newest_frame():
    origin, redis = Origin(), FakeStreams()
    redis.xadd(origin.tick())
    for start, value in [(0, 1.0), (3, 2.0), (6, 3.0)]:
        publish_some(origin, start, 3, value)
        redis.xadd(origin.tick())
    follower = Follower(NAME)
    redis.start(follower)
    redis.feed(follower)
    copy = copy_of(follower)
    assert copy.channels["temps"].read(0).records.tobytes() == rows(0, 9).tobytes()
    assert [e.seq for e in copy.channels["log"].read(0)[0]] == list(range(6))
    assert copy.channels["cam"].read_latest(0).seq == 3
    assert follower.counts["entries"] == 3 + 3 + 1


# -- gaps, overlaps, duplicates ------------------------------------------------------------

def lose_the_middle_entry(origin: Origin, redis: FakeStreams) -> None:
    """Records entries of 3, 4 and 2 rows; the 4-row one never reaches Redis (or was trimmed)."""
    for start, n in [(0, 3), (3, 4), (7, 2)]:
        origin.temps.publish_many(rows(start, n))
        redis.xadd(origin.tick())
    del redis.streams[TEMPS][1]


def read_on(reader, cursor: int = 0) -> tuple[bytes, int, int]:
    """Read like the relay until caught up: (the rows' bytes, the missed total, the cursor)."""
    got, missed = [], 0
    while cursor < reader.write_count:
        batch = reader.read(cursor)
        got.append(batch.records.tobytes())
        missed, cursor = missed + batch.missed, batch.next_cursor
    return b"".join(got), missed, cursor


def test_a_lost_records_entry_is_missed_exactly_by_a_reader_in_step(fleet):
    origin, redis, follower = fleet
    reader = copy_of(follower).channels["temps"]
    lose_the_middle_entry(origin, redis)
    data, missed, cursor = b"", 0, 0
    for entry_id, fields in redis.streams[TEMPS]:     # the relay reads after each entry the edge applies
        follower.apply(TEMPS, entry_id, fields, T0)
        more, lost, cursor = read_on(reader, cursor)
        data, missed = data + more, missed + lost
    assert missed == follower.counts["missed"] == 4 and cursor == 9
    assert data == np.concatenate([rows(0, 3), rows(7, 2)]).tobytes()


def test_a_reader_behind_a_hole_still_gets_the_rows_before_it(fleet):
    """BUG (see the report): the edge applies A, (B lost), C in one XREAD before the relay
    reads. The copy's ring then has a hole in the middle, and RecordRing.read keeps only what
    follows the last bad slot, so A's rows, intact in the ring, are reported as missed."""
    origin, redis, follower = fleet
    reader = copy_of(follower).channels["temps"]
    lose_the_middle_entry(origin, redis)
    redis.feed(follower)
    data, missed, cursor = read_on(reader)
    assert follower.counts["missed"] == 4 and cursor == 9
    assert missed == 4, f"the relay counts {missed} missed, the edge lost 4"
    assert data == np.concatenate([rows(0, 3), rows(7, 2)]).tobytes()


def test_overlaps_and_a_redis_restart_write_nothing_twice(fleet):
    origin, redis, follower = fleet
    for start, value in [(0, 1.0), (4, 2.0)]:
        publish_some(origin, start, 4, value)
        redis.xadd(origin.tick())
    redis.feed(follower)
    copy = copy_of(follower)
    before = {c: copy.channels[c].write_count for c in ("temps", "log")}
    counts = dict(follower.counts)
    redis.restart(ms=1)                               # the same entries under lower IDs
    follower.after_redis_restart()
    assert all(p.stream_id == streams.FIRST_ID for p in follower.positions.values())
    redis.feed(follower)
    assert {c: copy.channels[c].write_count for c in ("temps", "log")} == before
    assert copy.channels["cam"].latest == 2 and follower.counts == counts
    # an entry overlapping what was delivered (rows 6..10 after 0..7): only 8..10 are written
    origin.temps.publish_many(rows(8, 3))
    redis.add(TEMPS, streams.entry_for_records(origin.tap.run, rows(6, 5), 6))
    redis.feed(follower)
    temps = copy.channels["temps"].read(0)
    assert (temps.first, temps.missed) == (0, 0)
    assert temps.records.tobytes() == origin.att.channels["temps"].read(0).records.tobytes()
    assert follower.counts["missed"] == 0 and follower.counts["entries"] == counts["entries"] + 1


def test_malformed_entries_are_counted_and_skipped(fleet):
    origin, redis, follower = fleet
    run = origin.tap.run
    good = streams.entry_for_records(run, rows(0, 2), 0)
    follower.apply(TEMPS, "20000-0", {k: v for k, v in good.items() if k != "kind"}, T0)
    follower.apply(TEMPS, "20001-0", {**good, "seq": b"x1"}, T0)
    follower.apply(TEMPS, "20002-0", {**good, "n": b"-3"}, T0)
    follower.apply(TEMPS, "20003-0", good, T0)
    follower.apply(TEMPS, "20004-0", streams.entry_for_records(run, rows(2, 3), 2), T0)
    assert follower.counts["bad_entries"] == 3
    assert follower.positions[TEMPS].stream_id == "20004-0"
    got = copy_of(follower).channels["temps"].read(0)
    assert (got.first, got.missed) == (0, 0) and got.records.tobytes() == rows(0, 5).tobytes()


# -- a new device process at the origin ----------------------------------------------------

def test_a_new_run_builds_a_new_copy_that_device_link_sees_as_a_restart(fleet):
    origin, redis, follower = fleet
    publish_some(origin, 0, 5, 1.0)
    redis.xadd(origin.tick())
    redis.feed(follower, now=T0)
    link = opened(DeviceLink(NAME, offline_after=1.0, open_segment=lambda n: follower.mirror.open_segment(n)))
    assert link.poll(T0).attached and link.device.writer_pid == 4242
    old_mirror, old_run = follower.mirror, follower.run

    new = Origin(pid=5555, segments=origin.dev.segments, created=T0 + 5)
    new.tap = origin.tap                              # the same bridge, now attached to the new process
    new.now = origin.now
    new.temps.publish_many(rows(100, 2))              # before the tap sees it: not sent
    redis.xadd(new.tick())
    new.temps.publish_many(rows(200, 3))
    redis.xadd(new.tick())
    redis.feed(follower, now=T0 + 5)
    redis.feed(follower, now=T0 + 5)
    assert follower.counts["restarts"] == 1 and follower.mirror is not old_mirror
    assert follower.run == new.tap.run != old_run
    changes = link.poll(T0 + 5)
    assert changes.attached and link.device.writer_pid == 5555
    assert link.device.state()[1] == {"mode": "run", "gen": 5555}
    got = link.device.channels["temps"].read(0)      # the new run's numbering, none of the old rows
    assert (got.first, got.missed) == (2, 2) and got.records.tobytes() == rows(200, 3).tobytes()
    assert follower.counts["missed"] == 0


# -- OriginTap --------------------------------------------------------------------------------

def test_origin_tap_writes_only_what_changed():
    origin = Origin()
    assert keys(origin.tick()) == [MANIFEST, STATE]
    assert origin.tap.waiting_for_data and not origin.tap.news(origin.att)
    origin.temps.publish(t=1.0, v=2.0, pos=(1, 2, 3), n=4)
    assert origin.tap.news(origin.att)
    assert keys(origin.tick()) == [TEMPS]
    assert not origin.tap.news(origin.att)      # temps was read; cam and log wait for a publish
    assert keys(origin.tick()) == [] and origin.tap.waiting_for_data

    origin.dev.set_state({"mode": "idle"})
    (state,) = xadds(origin.tick())
    assert streams.decode_state(state.value)[2] == {"mode": "idle"}

    origin.dev.events("alarms")                       # a new channel: a new manifest entry
    (manifest,) = xadds(origin.tick())
    assert manifest.key == MANIFEST
    assert [c["name"] for c in streams.decode_manifest(manifest.value)[1]["channels"]] == ["temps", "cam", "log", "alarms"]
    origin.dev.channels["alarms"].publish("hot")
    assert keys(origin.tick()) == [streams.channel_key(NAME, "alarms")]
    alarms = streams.channel_key(NAME, "alarms")
    # Redis empty (restarted, or never reached): everything read since the tap began, again
    origin.tap.resync()
    again = origin.tick()
    assert keys(again) == [MANIFEST, STATE, TEMPS, alarms]
    newest = {w.key.rsplit(":", 1)[1]: streams.decode_entry(w.value) for w in xadds(again) if ":ch:" in w.key}
    assert [(e.first, e.count) for e in newest.values()] == [(0, 1), (0, 1)]
    # Redis holding this device process's newest entries: only manifest and state again
    origin.tap.resync(newest)
    assert keys(origin.tick()) == [MANIFEST, STATE]
    assert keys(origin.tick()) == []


def test_origin_tap_reads_each_channel_at_its_publish_not_a_tick_later():
    """Channels published a moment apart are each read when they are published: the tap paces
    each channel on its own, as the relay paces each subscription (issue 15's added latency)."""
    origin = Origin()
    origin.tick()
    origin.temps.publish(t=1.0, v=2.0, pos=(1, 2, 3), n=4)
    assert keys(origin.tick()) == [TEMPS]
    origin.cam.publish(np.ones((4, 3), "f4"))        # 1 ms later
    assert origin.tap.news(origin.att)
    assert keys(origin.tick(dt=0.001)) == [streams.channel_key(NAME, "cam")]
    origin.temps.publish(t=2.0, v=2.0, pos=(1, 2, 3), n=5)
    # temps is not due again before 0.75 / rate after its last read. It waited for its publish
    # (its first read found nothing); that came before it was due: it is read when due
    assert origin.tap.news(origin.att) and keys(origin.tick(dt=0.001)) == []
    assert not origin.tap.news(origin.att)
    assert origin.tap.next_due == pytest.approx(origin.now - 0.002 + 0.75 / 60)
    origin.now = origin.tap.next_due - 1 / 30
    assert keys(origin.tick()) == [TEMPS]


def test_origin_tap_waits_for_the_publish_of_a_channel_slower_than_its_rate():
    """A channel published less often than the tap may read it (a 30 Hz camera at a 60 Hz
    rate) is read at its publish, without a wake at its due time to find nothing; one that
    publishes faster is read at its due times."""
    origin = Origin()
    origin.tap.frames_wanted = frozenset({"cam"})
    origin.tick()
    for k in range(3):                                     # cam at 30 Hz
        origin.cam.publish(np.full((4, 3), k, "f4"))
        assert origin.tap.news(origin.att)
        assert keys(origin.tick(dt=0.001)) == [streams.channel_key(NAME, "cam")]
        assert origin.tap.next_due == float("inf") and origin.tap.waiting_for_data   # its next publish rings
        assert not origin.tap.news(origin.att) and keys(origin.tick(dt=1 / 30 - 0.001)) == []
    # temps faster than the rate: read at its due times, in between it waits for nothing
    origin.temps.publish(t=1.0, v=2.0, pos=(1, 2, 3), n=4)
    assert keys(origin.tick(dt=0.001)) == [TEMPS]          # waited for this publish (the first read found none)
    origin.temps.publish(t=1.1, v=2.0, pos=(1, 2, 3), n=5)
    assert origin.tap.news(origin.att) and keys(origin.tick(dt=0.001)) == []   # early: read when due
    due = origin.tap.next_due
    assert due == pytest.approx(origin.now - 0.001 + 0.75 / 60) and not origin.tap.news(origin.att)
    origin.now = due - 0.0001
    assert keys(origin.tick(dt=0.0001)) == [TEMPS]
    origin.temps.publish(t=1.2, v=2.0, pos=(1, 2, 3), n=6)
    assert not origin.tap.news(origin.att)                 # not waiting: its due time comes first
    assert origin.tap.next_due == pytest.approx(origin.now + 0.75 / 60)


def test_origin_tap_sets_the_heartbeat_at_most_once_a_second():
    origin = Origin()
    beats = []
    for now in [0.0, 0.4, 0.8, 0.99, 1.0, 1.5, 1.99, 2.1, 2.2]:
        origin.now = now
        beats += [now for w in origin.tick(dt=0) if w.op == "set"]
    assert beats == [0.0, 1.0, 2.1]


# -- the mirror's command queues -------------------------------------------------------------

def test_mirror_passes_commands_to_take_commands_and_replies_to_take_replies():
    mirror = Mirror(NAME, pid=7, now=T0, commands=[{"name": "home", "params": []}])
    opened(mirror, mirror.release)
    bridge = opened(DeviceAttachment(NAME, open_segment=mirror.open_segment))
    assert bridge.manifest["commands"] == [{"name": "home", "params": []}]
    first = bridge.send_command("home", {"speed": 2}, client={"id": "c1"})
    second = bridge.send_command("stop")
    assert mirror.take_commands(limit=1) == [{"id": first, "name": "home", "args": {"speed": 2}, "client": {"id": "c1"}}]
    assert mirror.take_commands() == [{"id": second, "name": "stop", "args": {}}]
    assert mirror.take_commands() == []
    mirror.put_reply({"id": first, "ok": True, "result": 3})
    mirror.put_reply({"id": second, "ok": False, "error": {"code": "offline", "message": "x"}})
    assert bridge.take_replies() == [{"id": first, "ok": True, "result": 3},
                                     {"id": second, "ok": False, "error": {"code": "offline", "message": "x"}}]
    assert bridge.take_replies() == []


def test_a_malformed_manifest_or_state_entry_is_skipped_and_counted():
    follower = Follower(NAME)
    follower.start("5-0", streams.manifest_entry("run-1", {"device": NAME, "pid": 1, "channels": [], "commands": []}),
                   None, T0)
    follower.apply(MANIFEST, "6-0", {b"run": b"run-1", b"manifest": b"not json"}, T0)
    follower.apply(STATE, "7-0", {b"run": b"run-1", b"version": b"2", b"values": b"[1, 2]"}, T0)
    follower.apply(STATE, "8-0", streams.state_entry("run-1", 4, {"mode": "scan"}), T0)
    assert follower.counts["bad_entries"] == 2
    assert follower.positions[MANIFEST].stream_id == "6-0" and follower.positions[STATE].stream_id == "8-0"
    assert json.loads(follower.mirror.ctl.state.read()[1]) == {"mode": "scan"}


def test_origin_tap_publishes_a_frame_channel_only_while_an_edge_wants_it():
    origin = Origin()
    origin.tap.want(frozenset())
    origin.tick()                                      # the manifest and state; cursors from now
    origin.cam.publish(np.full((4, 3), 1, "f4"))
    origin.temps.publish_many(rows(0, 2))
    first = keys(origin.tick())
    assert streams.channel_key(NAME, "temps") in first and streams.channel_key(NAME, "cam") not in first
    origin.cam.publish(np.full((4, 3), 2, "f4"))
    assert streams.channel_key(NAME, "cam") not in keys(origin.tick())
    origin.tap.want(frozenset({"cam", "temps"}))       # a browser subscribes on an edge
    assert origin.tap.next_due == 0.0                  # read at the next tick, whenever it was due
    (entry,) = [streams.decode_entry(w.value) for w in xadds(origin.tick(dt=0.001))
                if w.key == streams.channel_key(NAME, "cam")]
    assert entry.first == 2                            # the newest frame, published before it was wanted
    origin.tap.want(frozenset({"temps"}))
    origin.cam.publish(np.full((4, 3), 3, "f4"))
    assert streams.channel_key(NAME, "cam") not in keys(origin.tick())


def test_origin_tap_publishes_every_frame_channel_with_publish_frames_all():
    origin = Origin()
    origin.tap.want(frozenset())
    origin.tap.all_frames = True                       # monbridge serve --publish-frames all
    origin.tick()
    origin.cam.publish(np.full((4, 3), 1, "f4"))
    assert streams.channel_key(NAME, "cam") in keys(origin.tick())
