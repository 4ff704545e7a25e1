"""bridge/record/replay.py in memory: the playback clock under a fake clock, and the player
fed by an in-memory recording into a list — no file, no device, no mcap."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest

from bridge.record.replay import SKIP, MAX_SPEED, MIN_SPEED, Player, PlaybackClock, check_speed

MS = 1_000_000
START = 1_700_000_000 * 1_000_000_000   # the recording's first log_time


# -- the clock -------------------------------------------------------------------------

def test_position_follows_wall_time_times_speed():
    clock = PlaybackClock(10_000 * MS, now=100.0)
    assert clock.position(100.0) == 0
    assert clock.position(100.5) == 500 * MS
    clock.set_speed(4, now=101.0)                  # 1000 ms played at 1x, then 4x
    assert clock.position(101.25) == 2000 * MS
    assert clock.wall_until(3000 * MS, now=101.25) == pytest.approx(0.25)
    assert clock.wall_until(1000 * MS, now=101.25) == 0.0


def test_pause_holds_the_position_and_resume_continues():
    clock = PlaybackClock(10_000 * MS, now=0.0)
    clock.pause(now=1.0)
    assert not clock.playing
    assert clock.position(5.0) == 1000 * MS
    assert clock.wall_until(2000 * MS, now=5.0) == math.inf
    clock.resume(now=7.0)
    assert clock.position(7.5) == 1500 * MS
    assert clock.epoch == 0                        # no jump


def test_seek_jumps_counts_epochs_and_keeps_play_or_pause():
    clock = PlaybackClock(10_000 * MS, now=0.0)
    clock.seek(4000 * MS, now=1.0)
    assert clock.epoch == 1 and clock.position(1.0) == 4000 * MS and clock.position(2.0) == 5000 * MS
    clock.pause(now=2.0)
    clock.seek(500 * MS, now=3.0)
    assert clock.epoch == 2 and not clock.playing and clock.position(9.0) == 500 * MS
    clock.seek(-5, now=3.0)
    assert clock.position(3.0) == 0
    clock.seek(99_000 * MS, now=3.0)
    assert clock.position(3.0) == 10_000 * MS


def test_the_position_stops_at_the_end_and_resume_there_starts_over():
    clock = PlaybackClock(1000 * MS, now=0.0)
    assert clock.position(5.0) == 1000 * MS and clock.at_end(5.0)
    clock.pause(now=5.0)
    clock.resume(now=6.0)
    assert clock.epoch == 1 and clock.position(6.0) == 0 and clock.playing


def test_speed_is_checked():
    assert check_speed(MIN_SPEED) == 0.1 and check_speed(MAX_SPEED) == 20.0
    for bad in (0.05, 21, 0, -1, True, "2", float("nan")):
        with pytest.raises(ValueError, match=r"speed must be a number from 0.1 to 20"):
            check_speed(bad)
    clock = PlaybackClock(1000 * MS, now=0.0, speed=2.0)
    with pytest.raises(ValueError):
        clock.set_speed(50, now=0.1)
    assert clock.speed == 2.0


# -- the player ------------------------------------------------------------------------

class Item(NamedTuple):
    log_time: int
    sequence: int
    topic: str
    data: Any
    decoded: Any = None


@dataclass
class Track:
    name: str
    kind: str
    decoders: dict[str, Callable[..., Any]]


@dataclass
class FakeRecording:
    """What Player uses of reader.Recording: messages are Python values, not bytes."""
    items: list[Item]
    tracks: dict[str, Track]
    states: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    start_ns: int = START
    end_ns: int = START + 1000 * MS
    opened: list[int] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def by_topic(self) -> dict[str, Track]:
        return {topic: t for t in self.tracks.values() for topic in t.decoders}

    def messages(self, start_ns: int):
        self.opened.append(start_ns)
        return iter([i for i in self.items if i.log_time >= start_ns])


class Collect:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, Any]] = []

    def records(self, track, rows):
        self.calls.append(("records", track, rows.copy(), None))

    def frame(self, track, array, t):
        self.calls.append(("frame", track, array, t))

    def event(self, track, message, t):
        self.calls.append(("event", track, message, t))

    def state(self, values):
        self.calls.append(("state", "", values, None))

    def take(self, kind=None):
        out = [c for c in self.calls if kind is None or c[0] == kind]
        self.calls = [c for c in self.calls if not (kind is None or c[0] == kind)]
        return out


DTYPE = np.dtype([("t", "f8"), ("seq", "i8")])


def records_decoder(datas, times):
    rows = np.zeros(len(datas), DTYPE)
    rows["seq"] = datas
    rows["t"] = np.asarray(times) / 1e9
    return rows


def recording(**kw) -> FakeRecording:
    """tel: a record every 10 ms (data = its number); cam: a frame every 100 ms; log: events."""
    items = [Item(START + k * 10 * MS, k, "/tel", k) for k in range(100)]
    items += [Item(START + k * 100 * MS, k, "/cam", k) for k in range(10)]
    items += [Item(START + 250 * MS, 1, "/log/json", "second"), Item(START + 250 * MS, 0, "/log", "first"),
              Item(START + 260 * MS, 2, "/log/json", SKIP)]
    items.sort(key=lambda i: i.log_time)
    tracks = {"tel": Track("tel", "records", {"/tel": records_decoder}),
              "cam": Track("cam", "frame", {"/cam": lambda d: np.full((2, 2), d, "u1") if d != 7 else None}),
              "log": Track("log", "events", {"/log": lambda d: d, "/log/json": lambda d: d})}
    return FakeRecording(items, tracks, **kw)


def test_each_tick_publishes_what_is_due_records_in_one_batch():
    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    assert [c[2]["seq"].tolist() for c in out.take("records")] == [[0]]
    wait = player.tick(0.055)
    assert [c[2]["seq"].tolist() for c in out.take("records")] == [[1, 2, 3, 4, 5]]   # one batch
    assert wait == pytest.approx(0.005)            # the record at 60 ms
    player.tick(0.1)
    batch = out.take("records")[0][2]
    assert batch["seq"].tolist() == [6, 7, 8, 9, 10]
    assert batch["t"].tolist() == [(START + k * 10 * MS) / 1e9 for k in range(6, 11)]
    assert player.published["tel"] == 11


def test_frames_are_latest_wins_and_events_go_in_sequence_order():
    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    player.tick(0.35)                               # frames 0..3 due: only frame 3 is published
    frames = out.take("frame")
    assert [(c[2][0, 0], c[3]) for c in frames] == [(0, START / 1e9), (3, (START + 300 * MS) / 1e9)]
    assert [c[2] for c in out.take("event")] == ["first", "second"]   # sorted by sequence, SKIP left out


def test_undecodable_frames_are_counted_not_published():
    rec, out = recording(), Collect()
    player = Player(rec, out, PlaybackClock(rec.duration_ns, now=0.0))
    player.tick(0.0)
    out.take()
    player.tick(0.705)                              # frame 7 is the newest due, and does not decode
    assert out.take("frame") == [] and player.undecodable["cam"] == 1
    player.tick(0.8)
    assert [c[2][0, 0] for c in out.take("frame")] == [8]


def test_the_recorded_state_is_replayed_and_set_whole_after_a_seek():
    states = [(START, {"mode": "idle", "k": 0}), (START + 200 * MS, {"mode": "run", "k": 1}),
              (START + 600 * MS, {"mode": "run", "k": 2})]
    rec, out = recording(states=states), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    assert [c[2] for c in out.take("state")] == [{"mode": "idle", "k": 0}]
    player.tick(0.3)
    assert [c[2] for c in out.take("state")] == [{"mode": "run", "k": 1}]
    player.tick(0.7)
    assert [c[2] for c in out.take("state")] == [{"k": 2}]            # only what changed
    clock.seek(100 * MS, now=0.7)
    player.tick(0.7)
    assert [c[2] for c in out.take("state")] == [{"mode": "idle", "k": 0}]   # whole, as it was there


def test_a_seek_restarts_the_stream_at_the_new_position():
    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    player.tick(0.5)
    out.take()
    clock.seek(200 * MS, now=0.5)
    player.tick(0.5)
    assert rec.opened == [START, START + 200 * MS]
    assert [c[2]["seq"].tolist() for c in out.take("records")] == [[20]]
    assert [c[2][0, 0] for c in out.take("frame")] == [2]
    player.tick(0.53)
    assert out.take("records")[0][2]["seq"].tolist() == [21, 22, 23]


def test_the_end_pauses_there_or_loops():
    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    assert player.tick(2.0) == math.inf
    assert player.ended and not clock.playing and clock.position(9.0) == rec.duration_ns
    assert player.published["tel"] == 100

    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock, loop=True)
    player.tick(0.0)
    player.tick(1.5)
    assert player.loops == 1 and clock.epoch == 1 and clock.playing and not player.ended
    out.take()
    player.tick(1.5)                                # round two starts at the beginning
    assert out.take("records")[0][2]["seq"].tolist() == [0]
    player.tick(1.52)
    assert out.take("records")[0][2]["seq"].tolist() == [1, 2]


def test_speed_and_pause_change_what_a_tick_publishes():
    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0, speed=4.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    player.tick(0.025)                              # 100 ms of recording in 25 ms
    assert out.take("records")[-1][2]["seq"].tolist() == list(range(1, 11))
    clock.pause(0.025)
    assert player.tick(5.0) == math.inf and out.take("records") == []
    clock.resume(5.0)
    clock.set_speed(0.5, 5.0)
    player.tick(5.04)                               # 20 ms of recording
    assert out.take("records")[0][2]["seq"].tolist() == [11, 12]


def test_timing_measures_how_late_messages_went_out():
    rec, out = recording(), Collect()
    clock = PlaybackClock(rec.duration_ns, now=0.0, speed=2.0)
    player = Player(rec, out, clock)
    player.tick(0.0)        # the record and the frame at 0 ms, on time
    player.tick(0.01)       # position 20 ms: records 1 (10 ms late in recording time) and 2 (on time)
    timing = player.timing()
    assert timing["messages"] == 4 and timing["max_ms"] == pytest.approx(5.0)   # 10 ms of recording at 2x
    assert player.status(0.01) == {"replay_position": 0.02, "replay_duration": 1.0, "replay_playing": True,
                                   "replay_speed": 2.0, "replay_epoch": 0, "replay_loop": False}


def test_records_decoded_ahead_are_published_as_slices_without_decoding_again():
    """Rows the read-ahead thread decoded (reader.decode_ahead: ``decoded=(block, row)``) go out
    as a slice of their block; a tick whose rows span two blocks decodes them as usual."""
    rec, out = recording(), Collect()
    block_a, block_b = records_decoder(list(range(0, 6)), [START + k * 10 * MS for k in range(0, 6)]), \
        records_decoder(list(range(6, 100)), [START + k * 10 * MS for k in range(6, 100)])
    rec.items = [i._replace(decoded=(block_a, i.data) if i.data < 6 else (block_b, i.data - 6))
                 if i.topic == "/tel" else i for i in rec.items]
    decoded_again: list[int] = []
    rec.tracks["tel"].decoders["/tel"] = lambda datas, times: decoded_again.append(len(datas)) or \
        records_decoder(datas, times)
    clock = PlaybackClock(rec.duration_ns, now=0.0)
    player = Player(rec, out, clock)
    player.tick(0.0)
    player.tick(0.045)                    # rows 1..4 of block a: one slice
    assert [c[2]["seq"].tolist() for c in out.take("records")] == [[0], [1, 2, 3, 4]]
    assert decoded_again == []
    player.tick(0.075)                    # rows 5 (block a) and 6, 7 (block b): decoded from data
    assert [c[2]["seq"].tolist() for c in out.take("records")] == [[5, 6, 7]]
    assert decoded_again == [3]
    player.tick(0.095)
    assert [c[2]["seq"].tolist() for c in out.take("records")] == [[8, 9]] and decoded_again == [3]
    assert player.published["tel"] == 10


def test_decode_ahead_decodes_each_records_topic_of_a_batch_in_one_call():
    from bridge.record.chunks import Item as FileItem
    from bridge.record.cdr import RecordLayout
    from bridge.record.reader import Track as FileTrack, decode_ahead, _records_decoder

    layout = RecordLayout(DTYPE, ["t", "seq"])
    rows = np.zeros(5, DTYPE)
    rows["seq"], rows["t"] = np.arange(5), np.arange(5) / 10
    datas = layout.encode(rows)
    calls: list[int] = []
    decode = _records_decoder(layout)
    tracks = {"tel": FileTrack("tel", "records", {}, {"/tel": lambda d, t: calls.append(len(d)) or decode(d, t)}, "recorded"),
              "cam": FileTrack("cam", "frame", {}, {"/cam": lambda d: 1 / 0}, "recorded")}
    batch = [FileItem(k, k, "/tel", datas[k]) for k in range(3)] + [FileItem(3, 0, "/cam", b"frame")] + \
        [FileItem(k + 1, k, "/tel", datas[k]) for k in range(3, 5)]
    out = decode_ahead(tracks)(batch)
    assert calls == [5]                                     # one call for the topic's five messages
    assert out[3].decoded is None and out[3].data == b"frame"   # frames are decoded when due
    tel = [i for i in out if i.topic == "/tel"]
    assert [(i.sequence, i.data) for i in tel] == [(k, datas[k]) for k in range(5)]
    assert np.array_equal(np.array([i.decoded[0][i.decoded[1]] for i in tel]), rows)   # bit for bit
    assert len({id(i.decoded[0]) for i in tel}) == 1
    # one message that does not decode (cut short): none of the batch is decoded ahead
    cut = [FileItem(0, 0, "/tel", datas[0]), FileItem(1, 1, "/tel", datas[1][:-1])]
    assert [i.decoded for i in decode_ahead(tracks)(cut)] == [None, None]
