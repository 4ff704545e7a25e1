"""bridge/core.py's relay decisions (docs/protocol.md §4.3–§4.5, §5), driven in-process over a
device in bytearrays: decimation, ring overwrite, frames, events with ``to=``, flow control,
shared messages and the core's scheduling outputs. The test moves the clock."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core import OUTBOX_LIMIT
from test_core import T0, Harness, column

CONGESTED = (OUTBOX_LIMIT + 1, 0)


@pytest.fixture
def h() -> Harness:
    return Harness()


def ticks(h: Harness, n: int, publish=None, dt: float = 1 / 60) -> None:
    """``n`` polls ``dt`` apart, calling ``publish(i)`` before each."""
    for i in range(n):
        if publish is not None:
            publish(i)
        h.advance(dt)
        h.tick()


# -- records: decimation and overwrite ---------------------------------------------------

def test_a_batch_over_the_budget_is_decimated_keeping_extremes_and_seq_covers_the_whole_batch(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"}, capacity=64)
    h.tick()
    h.connect("a")
    ack = h.event("a", "subscribe", {"channels": ["temps"], "rate": 10, "max_points": 100, "window": 1})
    assert ack["points_per_update"] == 10  # max(2, floor(100 / (1 × 10)))
    values = np.sin(np.arange(50) / 4).astype("f4")
    values[17], values[33] = 50.0, -50.0  # one-sample spike and dip
    for i, v in enumerate(values):
        temps.publish(t=T0 + i, v=float(v))
    h.advance(0.1)
    h.tick()
    (msg,) = h.to("a", "data")
    assert msg["decimated"] is True and 2 < msg["count"] <= 10
    assert msg["seq"] == [0, 49] and msg["missed"] == 0  # the whole batch, not the rows sent
    t, v = column(msg, "t"), column(msg, "v")
    assert len(t) == len(v) == msg["count"]
    assert 50.0 in v and -50.0 in v  # min/max rows survive
    assert t[0] == T0 and t[-1] == T0 + 49 and list(t) == sorted(set(t))  # first, last, in order
    assert [values[int(ti - T0)] for ti in t] == list(v)  # real records, never averages
    assert msg["t"] == T0 + 49

    # behind by more than the ring and over budget: seq and missed still cover everything
    for i in range(50, 150):
        temps.publish(t=T0 + i, v=float(i))
    h.advance(0.1)
    h.tick()
    msg = h.to("a", "data")[1]
    assert msg["decimated"] and msg["count"] <= 10
    assert msg["missed"] == 100 - 64 and msg["seq"] == [50 + 36, 149]
    assert column(msg, "t")[0] == T0 + 86 and column(msg, "v")[-1] == 149.0

    # a small batch is sent whole; its seq follows on
    for i in range(150, 153):
        temps.publish(t=T0 + i, v=float(i))
    h.advance(0.1)
    h.tick()
    msg = h.to("a", "data")[2]
    assert (msg["seq"], msg["count"], msg["decimated"], msg["missed"]) == ([150, 152], 3, False, 0)


def test_a_subscriber_behind_by_more_than_the_ring_is_told_exactly_how_many_were_overwritten(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"}, capacity=16)
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 1})
    for i in range(3):
        temps.publish(t=T0, v=float(i))
    h.advance(1 / 60)
    h.tick()
    for i in range(3, 43):  # 40 records before the next message is due: 24 of them overwritten
        temps.publish(t=T0, v=float(i))
    h.advance(0.5)
    h.tick()
    assert len(h.to("a", "data")) == 1  # not due yet
    h.advance(0.5)
    h.tick()
    first, second = h.to("a", "data")
    assert first["seq"] == [0, 2] and first["missed"] == 0
    assert second["missed"] == 24 and second["seq"] == [27, 42] and second["count"] == 16
    assert second["seq"][0] == first["seq"][1] + 1 + second["missed"]
    assert list(column(second, "v")) == [float(v) for v in range(27, 43)]


def test_subscribers_in_step_share_one_message_and_a_different_budget_or_rate_gets_its_own(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"}, capacity=256)
    h.tick()
    for sid in "abcd":
        h.connect(sid)
    for sid in "ab":
        h.event(sid, "subscribe", {"channels": ["temps"], "rate": 30})
    h.event("c", "subscribe", {"channels": ["temps"], "rate": 30, "max_points": 3})
    h.event("d", "subscribe", {"channels": ["temps"], "rate": 10})
    n = 0

    def publish(i):
        nonlocal n
        for _ in range(4):
            temps.publish(t=h.wall, v=float(n))
            n += 1

    ticks(h, 60, publish)  # 1 s at 60 polls/s, 240 records
    data = [m for m in h.sent if m.event == "data"]
    to_a = [m for m in data if "a" in m.to]
    assert len(to_a) == 30 and all(m.to[:2] == ("a", "b") for m in to_a)  # one message, encoded once
    to_d = [m for m in data if "d" in m.to]
    assert len(to_d) == 10
    # the first poll finds a, b and d at the same cursor, budget and missed: one message for
    # all three; after that d (10 Hz) is never in step with a and b (30 Hz) and gets its own
    assert to_a[0] is to_d[0] and to_d[0].to == ("a", "b", "d")
    assert all(m.to == ("a", "b") for m in to_a[1:]) and all(m.to == ("d",) for m in to_d[1:])
    to_c = [m.data for m in data if "c" in m.to]
    assert len(to_c) == 30 and all(m.to == ("c",) for m in data if "c" in m.to)
    assert all(m["decimated"] and 2 <= m["count"] <= 3 for m in to_c)
    assert all(list(column(m, "v")[[0, -1]]) == [float(s) for s in m["seq"]] for m in to_c)  # first, last kept
    for sid in "abcd":  # each covers every record once, in order, up to its last due poll
        msgs = h.to(sid, "data")
        assert msgs[0]["seq"][0] == 0 and msgs[-1]["seq"][1] == (235 if sid != "d" else 219)
        assert all(m2["seq"][0] == m1["seq"][1] + 1 for m1, m2 in zip(msgs, msgs[1:]))


def client_and_two_channels(h: Harness):
    """Records channels x and y, and a connected client "a"."""
    x = h.dev.records("x", {"t": "f8", "v": "f4"}, capacity=256)
    y = h.dev.records("y", {"t": "f8", "v": "f4"}, capacity=256)
    h.tick()
    h.connect("a")
    return x, y


def test_a_clients_later_subscription_at_the_same_rate_goes_in_step_with_its_first(h):
    x, y = client_and_two_channels(h)

    def publish(i):
        x.publish(t=h.wall, v=float(i))
        y.publish(t=h.wall, v=float(i))

    h.event("a", "subscribe", {"channels": ["x"], "rate": 30})
    ticks(h, 7, publish)   # x goes every other poll; the last poll sent it
    assert [m["channel"] for m in h.to("a", "data")][-1:] == ["x"] and len(h.to("a", "data")) == 4
    h.event("a", "subscribe", {"channels": ["y"], "rate": 30})   # at a poll where x is not due
    sent = []
    for i in range(30):
        publish(i)
        h.advance(1 / 60)
        mark = h.mark()
        h.tick()
        sent.append(sorted(m["channel"] for m in h.to("a", "data", since=mark)))
    # y waits for x's next turn, and from then on both go in the same polls
    assert [c for c in sent if c] == [["x", "y"]] * 15, sent


def test_a_later_subscription_below_10_hz_does_not_wait_for_the_clients_others(h):
    x, y = client_and_two_channels(h)
    h.event("a", "subscribe", {"channels": ["x"], "rate": 1})
    x.publish(t=h.wall, v=0.0)
    h.advance(1 / 60)
    h.tick()
    assert [m["channel"] for m in h.to("a", "data")] == ["x"]   # x's next message is due in ~1 s
    h.advance(0.2)
    h.event("a", "subscribe", {"channels": ["y"], "rate": 1})
    x.publish(t=h.wall, v=1.0)
    y.publish(t=h.wall, v=1.0)
    h.advance(1 / 60)
    h.tick()
    assert [m["channel"] for m in h.to("a", "data")] == ["x", "y"]   # y at once, x not yet


def polls(h: Harness, n: int, publish) -> list[list[str]]:
    """``n`` polls at 60 Hz: the channels of "a"'s data messages in each."""
    sent = []
    for i in range(n):
        publish(i)
        h.advance(1 / 60)
        mark = h.mark()
        h.tick()
        sent.append(sorted(m["channel"] for m in h.to("a", "data", since=mark)))
    return sent


def confirm(h: Harness, channel: str) -> list[str]:
    """"a" confirms its last message on ``channel``; a tick at once (the wake-up): what went."""
    last = [m for m in h.to("a", "data") if m["channel"] == channel][-1]
    h.event("a", "consumed", {"channel": channel, "seq": last["seq"][1]})
    mark = h.mark()
    h.tick()
    return sorted(m["channel"] for m in h.to("a", "data", since=mark))


def both(h: Harness, x, y):
    def publish(i):
        x.publish(t=h.wall, v=float(i))
        y.publish(t=h.wall, v=float(i))
    return publish


def test_flow_controlled_channels_confirmed_one_by_one_and_late_still_go_together(h):
    x, y = client_and_two_channels(h)
    publish = both(h, x, y)
    h.event("a", "subscribe", {"channels": ["x", "y"], "rate": 30, "in_flight": 1})
    assert [c for c in polls(h, 2, publish) if c] == [["x", "y"]]
    for _ in range(5):   # the client takes 0.1 s, three intervals, then confirms x and y apart
        assert not any(polls(h, 6, publish))
        assert confirm(h, "x") == []              # x waits for y's confirmation
        assert not any(polls(h, 1, publish))
        assert confirm(h, "y") == ["x", "y"]      # then both go, in one poll


def test_flow_controlled_channels_sent_apart_fall_into_step(h):
    x, y = client_and_two_channels(h)
    publish = both(h, x, y)
    h.event("a", "subscribe", {"channels": ["x"], "rate": 30, "in_flight": 1})
    assert [c for c in polls(h, 4, publish) if c] == [["x"]]   # x waits for the client from here on
    h.event("a", "subscribe", {"channels": ["y"], "rate": 30, "in_flight": 1})
    assert [c for c in polls(h, 2, publish) if c] == [["y"]]   # x's due time is past: y goes alone
    assert confirm(h, "x") == []                  # y's message is newer: x waits for it
    assert confirm(h, "y") == []                  # y was sent under 1/30 s ago
    assert [c for c in polls(h, 2, publish) if c] == [["x", "y"]]
    for _ in range(3):
        polls(h, 6, publish)
        assert confirm(h, "y") == []
        assert confirm(h, "x") == ["x", "y"]


def test_a_channel_waits_for_an_unconfirmed_one_at_most_one_interval(h):
    x, y = client_and_two_channels(h)
    publish = both(h, x, y)
    h.event("a", "subscribe", {"channels": ["x", "y"], "rate": 30, "in_flight": 1})
    polls(h, 2, publish)
    polls(h, 6, publish)
    assert confirm(h, "x") == []                  # y is never confirmed
    assert polls(h, 3, publish) == [[], ["x"], []]    # x goes 1/30 s after its confirmation
    polls(h, 2, publish)
    assert confirm(h, "x") == ["x"]               # y's message is older than x's: no more waiting


def test_below_10_hz_a_confirmed_channel_does_not_wait_for_the_others(h):
    x, y = client_and_two_channels(h)
    publish = both(h, x, y)
    h.event("a", "subscribe", {"channels": ["x", "y"], "rate": 5, "in_flight": 1})
    assert [c for c in polls(h, 2, publish) if c] == [["x", "y"]]
    polls(h, 30, publish)
    assert confirm(h, "x") == ["x"]


# -- frames ------------------------------------------------------------------------------

def test_frames_are_latest_wins_and_missed_counts_the_frames_published_in_between(h):
    cam = h.dev.frame("cam", (2, 3), "u1")
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["cam"], "rate": 10})
    for k in range(1, 4):
        cam.publish(np.full((2, 3), k, "u1"), t=T0 + k)
    h.advance(1 / 60)
    h.tick()
    (first,) = h.to("a", "data")
    assert (first["seq"], first["missed"], first["t"]) == ([3, 3], 0, T0 + 3)  # 1 and 2 superseded
    assert (first["shape"], first["dtype"]) == ([2, 3], "u1")
    assert first["data"] == bytes([3] * 6)
    k = 3

    def publish(i):  # one frame per poll, 60 Hz, to a 10 Hz subscriber
        nonlocal k
        k += 1
        cam.publish(np.full((2, 3), k, "u1"), t=T0 + k)

    ticks(h, 60, publish)
    msgs = h.to("a", "data")[1:]
    assert len(msgs) == 10
    last = 3
    for m in msgs:
        seq = m["seq"][0]
        assert m["seq"] == [seq, seq] and m["missed"] == seq - last - 1 > 0  # downsampling, exactly counted
        assert m["data"] == bytes([seq] * 6) and m["t"] == T0 + seq  # the newest frame at that poll
        last = seq
    assert last == k  # the last poll sent the newest frame
    cam.publish(np.full((1, 3), 99, "u1"), t=T0)  # first dimension shorter than declared
    h.advance(0.1)
    h.tick()
    msg = h.to("a", "data")[-1]
    assert msg["shape"] == [1, 3] and msg["data"] == bytes([99] * 3) and msg["missed"] == 0


def test_a_new_frame_subscriber_gets_the_newest_frame_and_subscribers_that_saw_the_same_frame_share(h):
    cam = h.dev.frame("cam", (4,), "f4")
    for k in range(1, 6):
        cam.publish(np.full(4, k, "f4"), t=T0 + k)
    h.tick()
    for sid in "abc":
        h.connect(sid)
    h.event("a", "subscribe", {"channels": ["cam"], "rate": 60})
    h.advance(1 / 60)
    h.tick()
    assert [(m["seq"], m["missed"]) for m in h.to("a", "data")] == [([5, 5], 0)]
    for sid in "bc":
        h.event(sid, "subscribe", {"channels": ["cam"], "rate": 60})
    mark = h.mark()
    h.advance(1 / 60)
    h.tick()  # nothing new: b and c get frame 5, a nothing
    (msg,) = [m for m in h.sent[mark:] if m.event == "data"]
    assert msg.to == ("b", "c") and msg.data["seq"] == [5, 5] and msg.data["missed"] == 0
    assert np.frombuffer(msg.data["data"], "<f4").tolist() == [5.0] * 4

    h.queued["c"] = CONGESTED  # c misses frame 6
    cam.publish(np.full(4, 6, "f4"), t=T0 + 6)
    mark = h.mark()
    h.advance(1 / 60)
    h.tick()
    (msg,) = [m for m in h.sent[mark:] if m.event == "data"]
    assert msg.to == ("a", "b") and msg.data["seq"] == [6, 6] and msg.data["missed"] == 0
    h.queued["c"] = (0, 0)
    cam.publish(np.full(4, 7, "f4"), t=T0 + 7)
    mark = h.mark()
    h.advance(1 / 60)
    h.tick()
    msgs = {m.to: m.data for m in h.sent[mark:] if m.event == "data"}
    assert set(msgs) == {("a", "b"), ("c",)}  # c last saw another frame: its own message
    assert (msgs[("a", "b")]["seq"], msgs[("a", "b")]["missed"]) == ([7, 7], 0)
    assert (msgs[("c",)]["seq"], msgs[("c",)]["missed"]) == ([7, 7], 1)


# -- events ------------------------------------------------------------------------------

def test_an_event_for_one_client_reaches_only_it_and_others_gaps_are_not_missed(h):
    log = h.dev.events("log")
    h.tick()
    for sid in "ab":
        h.connect(sid)
        h.event(sid, "subscribe", {"channels": ["log"]})
    log.publish({"n": 0}, t=T0)
    log.publish({"n": 1}, to="a", t=T0 + 1)
    log.publish({"n": 2}, to="b", t=T0 + 2)
    log.publish({"n": 3}, t=T0 + 3)
    h.advance(1 / 60)
    h.tick()
    (ea,) = h.to("a", "event")
    (eb,) = h.to("b", "event")
    assert [(e["seq"], e["message"]) for e in ea["events"]] == [(0, {"n": 0}), (1, {"n": 1}), (3, {"n": 3})]
    assert [(e["seq"], e["message"]) for e in eb["events"]] == [(0, {"n": 0}), (2, {"n": 2}), (3, {"n": 3})]
    assert ea["seq"] == eb["seq"] == [0, 3] and ea["missed"] == eb["missed"] == 0 and ea["t"] == T0 + 3
    log.publish({"n": 4}, to="a", t=T0 + 4)  # a poll with nothing for b
    h.advance(1 / 60)
    h.tick()
    assert len(h.to("a", "event")) == 2 and len(h.to("b", "event")) == 1
    log.publish({"n": 5}, t=T0 + 5)
    h.advance(1 / 60)
    h.tick()
    eb = h.to("b", "event")[-1]
    assert eb["seq"] == [5, 5] and eb["missed"] == 0  # the gap at 4 is a's event, not a loss
    assert h.to("a", "event")[-1]["seq"] == [5, 5]


def test_events_overwritten_in_the_ring_are_counted_as_missed(h):
    log = h.dev.events("log", capacity=8)
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["log"], "rate": 1})
    log.publish("first", t=T0)
    h.advance(1 / 60)
    h.tick()
    for n in range(1, 21):
        log.publish(n, t=T0 + n)
    h.advance(1)
    h.tick()
    first, second = h.to("a", "event")
    assert first["seq"] == [0, 0] and first["events"][0]["message"] == "first"
    assert second["missed"] == 12 and second["seq"] == [13, 20]
    assert [e["message"] for e in second["events"]] == list(range(13, 21))


def test_a_congested_client_is_not_owed_events_that_were_addressed_to_others(h):
    log = h.dev.events("log")
    h.tick()
    for sid in "ab":
        h.connect(sid)
        h.event(sid, "subscribe", {"channels": ["log"]})
    h.queued["b"] = CONGESTED
    log.publish("for a", to="a", t=T0)
    log.publish("for a too", to="a", t=T0)
    h.advance(1 / 60)
    h.tick()
    assert len(h.to("a", "event")) == 1 and h.to("b", "event") == []
    h.queued["b"] = (0, 0)
    log.publish("for all", t=T0)
    h.advance(1 / 60)
    h.tick()
    (eb,) = h.to("b", "event")
    assert eb["seq"] == [2, 2] and eb["missed"] == 0  # today: missed == 2


# -- flow control ------------------------------------------------------------------------

def test_in_flight_caps_unconfirmed_messages_and_consumed_frees_the_subscription_once(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    for i in range(10):  # already in the ring: not sent
        temps.publish(t=h.wall, v=-1.0)
    assert h.event("a", "subscribe", {"channels": ["temps"], "rate": 60, "in_flight": 2})["in_flight"] == 2
    ticks(h, 5, lambda i: temps.publish(t=h.wall, v=float(i)))
    msgs = h.to("a", "data")
    assert [m["seq"] for m in msgs] == [[10, 10], [11, 11]]  # then it waits for the client
    assert h.core.waiting_for_data is False  # waiting for the client, not for data
    assert h.core.client_rows()[0]["subscriptions"][0]["unconfirmed"] == 2
    assert h.event("a", "consumed", {"channel": "temps", "seq": 9}) == {"ok": True}  # before both: frees none
    assert h.core.take_wake() is False
    assert h.event("a", "consumed", {"channel": "temps", "seq": msgs[0]["seq"][1]}) == {"ok": True}
    assert h.core.take_wake() is True and h.core.take_wake() is False
    h.tick()  # woken at once, same time: every record since its cursor, nothing missed
    msg = h.to("a", "data")[-1]
    assert msg["seq"] == [12, 14] and msg["missed"] == 0 and list(column(msg, "v")) == [2.0, 3.0, 4.0]
    ticks(h, 3, lambda i: temps.publish(t=h.wall, v=0.0))
    assert len(h.to("a", "data")) == 3  # [11, 11] and [12, 14] unconfirmed: the limit again
    h.event("a", "consumed", {"channel": "temps", "seq": 14})  # confirms both at once
    assert h.core.take_wake() is True
    h.event("a", "consumed", {"channel": "temps", "seq": 14})  # twice: harmless, no wake
    assert h.core.take_wake() is False
    h.tick()
    assert h.to("a", "data")[-1]["seq"] == [15, 17]


def test_flow_control_on_frames_sends_the_newest_frame_when_confirmed_not_a_backlog(h):
    cam = h.dev.frame("cam", (1,), "u1")
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["cam"], "in_flight": 1})
    ticks(h, 6, lambda i: cam.publish(np.array([i + 1], "u1"), t=T0))
    (msg,) = h.to("a", "data")
    assert msg["seq"] == [1, 1]
    h.event("a", "consumed", {"channel": "cam", "seq": 1})
    assert h.core.take_wake()
    h.tick()
    msg = h.to("a", "data")[-1]
    assert msg["seq"] == [6, 6] and msg["missed"] == 4 and msg["data"] == bytes([6])


# -- what the core tells its adapter -----------------------------------------------------

def test_waiting_for_data_and_next_deadline_say_when_to_tick_again():
    h = Harness(rate=1000)  # polls every 2 ms; a 400 Hz subscriber is due 1.5 ms after a message
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    poll = h.core.next_deadline()
    assert poll == pytest.approx(h.now + 0.002)
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 400})
    h.tick()
    assert h.to("a", "data") == [] and h.core.waiting_for_data is True  # due, nothing new
    temps.publish(t=h.wall, v=1.0)
    h.tick()  # the device rang: same time
    assert len(h.to("a", "data")) == 1
    h.advance(0.0005)
    temps.publish(t=h.wall, v=2.0)
    h.tick()
    assert len(h.to("a", "data")) == 1  # not due yet, data waiting
    assert h.core.waiting_for_data is False
    due = h.now - 0.0005 + 1 / 400 - 0.002 / 2
    assert h.core.next_deadline() == pytest.approx(due) and due < poll  # sooner than the next poll
    h.advance(due - h.now)
    h.tick()
    assert [m["seq"] for m in h.to("a", "data")] == [[0, 0], [1, 1]]
    h.queued["a"] = CONGESTED
    h.advance(0.002)
    h.tick()
    assert h.core.waiting_for_data is False  # a congested client waits for its queue, not for data


def test_a_subscriber_due_later_than_the_next_regular_tick_does_not_ask_for_a_wake_up(h):
    idle = 1.5 / 60  # a regular tick comes 1.5 periods after the last tick
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 10})
    temps.publish(t=h.wall, v=1.0)
    h.advance(1 / 240)
    h.tick()
    assert len(h.to("a", "data")) == 1
    due = h.now + 1 / 10 - 1 / 480  # 1/rate less half a poll
    h.advance(1 / 240)
    h.tick()
    assert h.core.waiting_for_data is False  # next due in ~0.1 s: no wake-up at every publish till then
    assert h.core.next_deadline() == pytest.approx(h.now + idle)
    temps.publish(t=h.wall, v=2.0)
    h.tick()  # data waiting, due long after the next regular tick: that tick is still the deadline
    assert h.core.next_deadline() == pytest.approx(h.now + idle)
    while h.core.next_deadline() < due - 1e-9:  # regular ticks, until the due time comes first
        h.advance(h.core.next_deadline() - h.now)
        h.tick()
    assert h.core.next_deadline() == pytest.approx(due) and len(h.to("a", "data")) == 1
    h.advance(due - h.now + 1e-9)
    h.tick()  # right when it is due
    assert len(h.to("a", "data")) == 2
    due = h.now + 1 / 10 - 1 / 480
    h.advance(1 / 240)
    h.tick()
    assert h.core.waiting_for_data is False and h.core.next_deadline() == pytest.approx(h.now + idle)
    while h.core.next_deadline() < due - 1e-9:
        h.advance(h.core.next_deadline() - h.now)
        h.tick()
    # due before the next regular tick, nothing new: it waits for the device's next publish
    assert h.core.waiting_for_data is True and h.core.next_deadline() == pytest.approx(h.now + idle)
    h.advance(0.1)
    h.tick()
    assert h.core.waiting_for_data is True  # due, nothing new


def test_each_subscriber_sent_to_counts_for_the_wake_up_not_just_the_first_of_its_group(h):
    """After a message, subscribers sent the same message are judged for the wake-up one by
    one: the first of them may wait longer (a slower rate) or for its client (flow control)."""
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("slow")
    h.connect("a")
    h.event("slow", "subscribe", {"channels": ["temps"], "rate": 10})  # first in the table
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 60})
    h.advance(1 / 60)
    temps.publish(t=h.wall, v=1.0)
    h.tick()
    assert len(h.to("slow", "data")) == len(h.to("a", "data")) == 1
    assert h.core.waiting_for_data is True  # "a" is due again before the next regular tick

    h2 = Harness()
    temps = h2.dev.records("temps", {"t": "f8", "v": "f4"})
    h2.tick()
    for sid in ("full", "a"):  # in step: same cursor, rate and limit, so one message for both
        h2.connect(sid)
        h2.event(sid, "subscribe", {"channels": ["temps"], "rate": 60, "in_flight": 2})
    h2.advance(1 / 60)
    temps.publish(t=h2.wall, v=1.0)
    h2.tick()
    h2.event("a", "consumed", {"channel": "temps", "seq": 0})
    h2.advance(1 / 60)
    temps.publish(t=h2.wall, v=2.0)
    h2.tick()
    assert [m["seq"] for m in h2.to("a", "data")] == [[0, 0], [1, 1]] and len(h2.to("full", "data")) == 2
    assert h2.core.waiting_for_data is True  # "full" waits for its client, "a" for the next publish


def test_a_publish_after_the_tick_and_before_the_wake_request_is_news(h):
    """The device rings only if the bridge asked before the publish: the adapter asks, then
    checks ``news()`` for a publish made in between, which nothing will ring for."""
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 60})
    h.advance(1 / 60)
    h.tick()
    assert h.core.waiting_for_data is True and h.core.news() is False
    temps.publish(t=h.wall, v=1.0)
    assert h.core.news() is True
    h.tick()
    assert len(h.to("a", "data")) == 1 and h.core.news() is False


def test_a_subscriber_fed_at_its_rate_waits_for_the_publish_not_for_a_regular_tick(h):
    """After a message, a 60 Hz subscriber is due again before the next regular tick (1.5
    periods after this one): the adapter waits for the device's next publish to ring."""
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 60})
    for i in range(3):
        h.advance(1 / 60)
        temps.publish(t=h.wall, v=float(i))
        h.tick()  # the device rang
        assert len(h.to("a", "data")) == i + 1
        assert h.core.waiting_for_data is True
        assert h.core.next_deadline() == pytest.approx(h.now + 1.5 / 60)


def test_a_record_published_while_the_tick_runs_is_news(h):
    """Published after the tick found a due subscriber with nothing new: nothing will ring for
    it (the device had not been asked to yet), and ``news()`` says so."""
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 60})
    reader = h.link.device.channels["temps"]
    plain = type(reader)
    published = []

    class Racy(plain):  # the device publishes right after the relay's first look at the ring
        @property
        def write_count(self):
            count = plain.write_count.fget(self)
            if not published:
                published.append(True)
                temps.publish(t=h.wall, v=1.0)
            return count

    reader.__class__ = Racy
    h.advance(1 / 60)
    h.tick()
    reader.__class__ = plain
    assert h.to("a", "data") == [] and published
    # the tick decided on what it saw: wait for a ring; but the adapter, having asked for one,
    # finds news and ticks at once
    assert h.core.waiting_for_data is True and h.core.news() is True
    h.tick()
    assert [m["seq"] for m in h.to("a", "data")] == [[0, 0]]


def test_a_tick_over_its_budget_leaves_the_rest_to_a_tick_at_once_and_they_go_first(h):
    a = h.dev.records("a", {"t": "f8", "v": "f4"})
    b = h.dev.records("b", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("c")
    h.event("c", "subscribe", {"channels": ["a", "b"], "rate": 60})
    a.publish(t=h.wall, v=1.0)
    b.publish(t=h.wall, v=2.0)
    slow = iter(range(0, 10**6, 10))  # each look at the clock: 10 s later, over any budget
    h.core._clock = lambda: float(next(slow))
    h.advance(1 / 60)
    h.tick()
    first = [m["channel"] for m in h.to("c", "data")]
    assert len(first) == 1  # the budget ran out after one channel
    assert h.core.next_deadline() == pytest.approx(h.now)  # the rest: at once
    h.tick()
    assert [m["channel"] for m in h.to("c", "data")] == first + [{"a": "b", "b": "a"}[first[0]]]
