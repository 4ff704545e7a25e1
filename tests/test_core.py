"""bridge/core.py: the bridge's decisions, driven in-process over a device in bytearrays
(tests/memory_device.py). No processes, sockets or clocks: the test passes the time.

This file holds the Harness and the cases about clients, subscriptions, state, the clients
table and device restarts; test_core_relay.py (relay) and test_core_commands.py (commands)
use the same Harness."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bridge.core import DEVICE_TAGGED, OUTBOX_LIMIT, BridgeCore, CoreSettings, Message
from bridge.device_link import DeviceLink
from memory_device import MemoryDevice

T0 = 1000.0  # the device's and the bridge's wall clock at the start (seconds)


class Harness:
    """A core attached to a MemoryDevice, with a clock the test moves."""

    def __init__(self, rate: float = 60.0, **settings) -> None:
        self.dev = MemoryDevice("dev", now=T0)
        self.now = 0.0    # monotonic
        self.wall = T0
        self.queued: dict[str, tuple[int, int]] = {}
        self.link = DeviceLink("dev", offline_after=1.0, open_segment=self.dev.open_segment)
        self.core = BridgeCore(self.link, CoreSettings(max_rate=rate, **settings), make_event=threading.Event,
                               outbox=lambda sid: self.queued.get(sid, (0, 0)))
        self.sent: list[Message] = []

    def advance(self, seconds: float, beat: bool = True) -> None:
        self.now += seconds
        self.wall += seconds
        if beat:
            self.dev.beat(self.wall)

    def tick(self):
        result = self.core.tick(self.now, self.wall)
        self.sent += self.core.take_messages()
        return result

    def connect(self, sid: str, role: str = "operator") -> None:
        self.core.connect(sid, "127.0.0.1", "test", role, self.wall)
        self.sent += self.core.take_messages()

    def event(self, sid: str, name: str, *args):
        ack = self.core.on_event(sid, name, args, self.now, self.wall)
        self.sent += self.core.take_messages()
        return ack

    def to(self, sid: str, event: str | None = None, since: int = 0) -> list:
        """What ``sid`` got (of ``event``), each per-device payload checked to name this device
        and shown without that ``device`` key."""
        return [self._untagged(m) for m in self.sent[since:] if sid in m.to and (event is None or m.event == event)]

    def _untagged(self, m: Message):
        if m.event not in DEVICE_TAGGED:
            return m.data
        assert m.data["device"] == self.dev.name, (m.event, m.data)
        return {k: v for k, v in m.data.items() if k != "device"}

    def mark(self) -> int:
        return len(self.sent)

    def route(self) -> None:
        """The reply pump: the device may have answered (and freed queue slots)."""
        self.core.route_replies(self.now)
        self.sent += self.core.take_messages()

    def restart(self, pid: int) -> MemoryDevice:
        """A new device process under the same name: its segments replace the old ones."""
        self.dev = MemoryDevice("dev", pid=pid, now=self.wall, segments=self.dev.segments)
        return self.dev


def column(msg: dict, name: str) -> np.ndarray:
    """One field of a records ``data`` message, decoded as docs/protocol.md §4.3 says."""
    f = next(f for f in msg["fields"] if f["name"] == name)
    dt = np.dtype("<" + f["dtype"])
    return np.frombuffer(msg["data"], dt, f["nbytes"] // dt.itemsize, f["offset"])


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_client_gets_hello_and_state_then_data_it_subscribed_to_at_its_rate(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.dev.set_state({"mode": "idle"})
    h.tick()
    h.connect("a")
    hello = h.to("a", "hello")[0]
    assert [c["name"] for c in hello["channels"]] == ["temps"] and hello["protocol"] == 5
    assert h.to("a", "state") == [{"full": True, "values": {"mode": "idle"}}]
    ack = h.event("a", "subscribe", {"channels": ["temps"], "rate": 10})
    assert ack["ok"] and ack["rate"] == 10
    for i in range(30):  # 1 s of ticks at 30 Hz, publishing 3 records per tick
        for k in range(3):
            temps.publish(t=h.wall, v=float(3 * i + k))
        h.advance(1 / 30)
        h.tick()
    msgs = h.to("a", "data")
    assert 9 <= len(msgs) <= 11, len(msgs)  # 10 Hz
    # every record exactly once, in order, none missed
    seq = [(m["seq"][0], m["seq"][1]) for m in msgs]
    assert all(b[0] == a[1] + 1 for a, b in zip(seq, seq[1:])) and all(m["missed"] == 0 for m in msgs)
    values = np.concatenate([np.frombuffer(m["data"], "<f4", m["count"], m["fields"][1]["offset"]) for m in msgs])
    assert list(values) == [float(v) for v in range(len(values))]


def test_a_tick_in_two_parts_relays_first_then_does_the_rest_without_relaying_again(h):
    """server.py's relay loop: ``relay_tick`` (its messages sent at once), then ``tick(relay=False)``."""
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.dev.set_state({"mode": "idle"})
    h.tick()
    h.connect("a")
    h.event("a", "subscribe", {"channels": ["temps"]})
    temps.publish(t=h.wall, v=1.0)
    h.dev.set_state({"mode": "run"})
    h.advance(1 / 60)
    mark = h.mark()
    assert h.core.relay_tick(h.now, h.wall) == 1
    h.sent += h.core.take_messages()
    assert [m["seq"] for m in h.to("a", "data", mark)] == [[0, 0]] and h.to("a", "state", mark) == []
    temps.publish(t=h.wall, v=2.0)   # due by the time the rest of the tick runs: not relayed there
    h.advance(1 / 60)
    mark = h.mark()
    h.core.tick(h.now, h.wall, relay=False)
    h.sent += h.core.take_messages()
    assert h.to("a", "data", mark) == []
    assert h.to("a", "state", mark) == [{"full": False, "values": {"mode": "run"}}]
    h.tick()
    assert [m["seq"] for m in h.to("a", "data", mark)] == [[1, 1]]


def test_a_congested_client_skips_forward_and_is_told_exactly_what_it_missed(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    h.connect("b")
    for sid in "ab":
        h.event(sid, "subscribe", {"channels": ["temps"], "rate": 60})
    h.queued["b"] = (OUTBOX_LIMIT + 1, 0)  # b stops reading
    for i in range(10):
        temps.publish(t=h.wall, v=float(i))
        h.advance(1 / 60)
        h.tick()
    assert len(h.to("b", "data")) == 0 and len(h.to("a", "data")) == 10
    h.queued["b"] = (0, 0)  # b drains
    temps.publish(t=h.wall, v=10.0)
    h.advance(1 / 60)
    h.tick()
    (msg,) = h.to("b", "data")
    assert msg["missed"] == 10 and msg["seq"] == [10, 10] and msg["count"] == 1


def test_commands_are_validated_queued_in_order_and_answered_to_the_client_that_sent_them(h):
    h.dev.command("add", [{"name": "a", "type": "integer"}])
    h.tick()
    h.connect("op")
    h.connect("other")
    h.connect("viewer", role="viewer")
    for i in range(3):
        assert h.event("op", "command", {"id": f"c{i}", "name": "add", "args": {"a": i}}) is None
    h.event("viewer", "command", {"id": 1, "name": "add", "args": {"a": 1}})
    h.event("op", "command", {"id": 9, "name": "add", "args": {"a": "x"}})
    h.event("op", "command", {"name": "add", "args": {"a": 1}})
    assert h.to("viewer", "result")[0]["error"]["code"] == "forbidden"
    refused = h.to("op", "result")
    assert [(r["id"], r["error"]["code"]) for r in refused] == [(9, "invalid_args"), (None, "bad_request")]
    taken = h.dev.answer(lambda name, args, client: (args["a"] + 1, client["id"]))
    assert [c["args"]["a"] for c in taken] == [0, 1, 2]  # arrival order
    h.core.route_replies(h.now)
    h.sent += h.core.take_messages()
    answers = [r for r in h.to("op", "result") if r["ok"]]
    assert answers == [{"id": f"c{i}", "ok": True, "result": [i + 1, "op"]} for i in range(3)]
    assert h.to("other", "result") == []


def test_a_command_the_device_never_answers_times_out(h):
    h = Harness(command_timeout=2.0)
    h.dev.command("slow")
    h.tick()
    h.connect("op")
    h.event("op", "command", {"id": 1, "name": "slow"})
    h.advance(1.9)
    h.core.route_replies(h.now)
    assert h.core.take_messages() == []
    h.advance(0.2)
    h.core.route_replies(h.now)
    (msg,) = h.core.take_messages()
    assert msg.event == "result" and msg.data["id"] == 1 and msg.data["error"]["code"] == "timeout"


def test_state_changes_go_as_deltas_and_a_late_joiner_gets_the_whole_state(h):
    h.dev.set_state({"mode": "idle", "speed": 1})
    h.tick()
    h.connect("early")
    mark = h.mark()
    h.dev.set_state({"mode": "run", "speed": 1})
    h.advance(0.01)
    h.tick()
    assert h.to("early", "state", mark) == [{"full": False, "values": {"mode": "run"}}]
    h.connect("late")
    assert h.to("late", "state") == [{"full": True, "values": {"mode": "run", "speed": 1}}]


def test_the_device_going_silent_is_offline_and_fails_pending_commands(h):
    h.dev.command("noop")
    h.tick()
    h.connect("op")
    h.event("op", "command", {"id": 7, "name": "noop"})
    h.advance(1.5, beat=False)  # no heartbeat for longer than offline_after
    mark = h.mark()
    h.tick()
    assert h.to("op", "device", mark)[-1]["status"] == "offline"
    assert h.to("op", "result", mark) == [{"id": 7, "ok": False, "error": {
        "code": "offline", "message": "the device went offline before answering"}}]


def test_bad_input_gets_an_error_ack_and_never_raises(h):
    h.tick()
    h.connect("a")
    assert h.event("a", "subscribe", {"channels": ["nope"]})["error"]["code"] == "unknown_channel"
    assert h.event("a", "subscribe", "x")["error"]["code"] == "bad_request"
    assert h.event("a", "ping", {"t": float("nan")})["error"]["code"] == "bad_request"
    assert h.event("a", "ping", {}, {})["error"]["code"] == "bad_request"  # two payloads
    assert h.event("a", "launch", {})["error"]["code"] == "bad_request"
    assert h.event("a", "ping", {"t": 1.5}) == {"ok": True, "t": 1.5, "server_t": h.wall}


def test_a_subscription_starts_from_now_is_replaced_by_a_new_subscribe_and_ends_with_unsubscribe(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    for i in range(10):  # already in the ring: neither sent nor missed
        temps.publish(t=h.wall, v=-1.0)
    h.tick()
    h.connect("a")
    mark = h.mark()
    ack = h.event("a", "subscribe", {"channels": ["temps", "temps"], "rate": 500, "max_points": 5.9})
    assert ack == {"ok": True, "channels": ["temps"], "rate": 60.0, "max_points": 5, "points_per_update": 5,
                   "in_flight": None}  # rate capped at max_rate, duplicates dropped
    assert h.to("a", "state", mark) == [{"full": True, "values": {}}]  # sent with the subscribe
    temps.publish(t=h.wall, v=1.0)
    temps.publish(t=h.wall, v=2.0)
    h.advance(1 / 60)
    h.tick()
    (msg,) = h.to("a", "data")
    assert msg["seq"] == [10, 11] and msg["missed"] == 0 and list(column(msg, "v")) == [1.0, 2.0]
    assert h.event("a", "subscribe", {"channels": ["temps"], "rate": 10})["rate"] == 10
    assert [s["rate"] for s in h.core.client_rows()[0]["subscriptions"]] == [10]  # replaced, not added
    for i in range(60):  # 1 s at 60 Hz
        temps.publish(t=h.wall, v=float(i))
        h.advance(1 / 60)
        h.tick()
    assert len(h.to("a", "data")) == 1 + 10
    assert h.event("a", "unsubscribe", {"channels": ["temps"]}) == {"ok": True, "channels": ["temps"]}
    assert h.event("a", "unsubscribe", {"channels": ["temps"]}) == {"ok": True, "channels": ["temps"]}
    mark = h.mark()
    for i in range(12):
        temps.publish(t=h.wall, v=0.0)
        h.advance(1 / 60)
        h.tick()
    assert h.to("a", "data", mark) == [] and h.core.client_rows()[0]["subscriptions"] == []


def test_a_congested_client_gets_no_state_deltas_then_the_whole_state_once_it_drains(h):
    h.dev.set_state({"mode": "idle", "speed": 1})
    h.tick()
    h.connect("a")
    h.connect("b")
    mark = h.mark()
    h.queued["b"] = (OUTBOX_LIMIT + 1, 0)
    h.dev.set_state({"mode": "run", "speed": 1})
    h.dev.set_state({"mode": "idle", "speed": 2})  # two updates between polls: the latest wins
    h.advance(0.01)
    h.tick()
    h.dev.set_state({"mode": "stop", "speed": 2})
    h.advance(0.01)
    h.tick()
    assert h.to("a", "state", mark) == [{"full": False, "values": {"speed": 2}},
                                        {"full": False, "values": {"mode": "stop"}}]
    assert h.to("b", "state", mark) == []
    h.queued["b"] = (10, 9 * 1024 * 1024)  # few packets but over 8 MiB: still congested
    h.advance(0.01)
    h.tick()
    assert h.to("b", "state", mark) == []
    h.queued["b"] = (0, 0)
    for _ in range(3):
        h.advance(0.01)
        h.tick()
    assert h.to("b", "state", mark) == [{"full": True, "values": {"mode": "stop", "speed": 2}}]  # once
    assert len(h.to("a", "state", mark)) == 2  # a is not sent it again


def test_the_clients_table_is_published_to_the_device_when_it_changes(h):
    h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    assert h.dev.clients() == []
    h.connect("a")
    h.connect("b", role="viewer")
    h.tick()
    rows = h.dev.clients()
    assert [(r["id"], r["role"], r["address"], r["user_agent"], r["subscriptions"]) for r in rows] == [
        ("a", "operator", "127.0.0.1", "test", []), ("b", "viewer", "127.0.0.1", "test", [])]
    assert rows[0]["connected_at"] == h.wall
    version = h.dev.ctl.clients.version
    h.advance(0.01)
    h.tick()
    assert h.dev.ctl.clients.version == version  # unchanged: not rewritten
    h.event("a", "subscribe", {"channels": ["temps"], "rate": 10, "in_flight": 3})
    h.tick()
    (sub,) = h.dev.clients()[0]["subscriptions"]
    assert (sub["channel"], sub["rate"], sub["in_flight"], sub["sent"]) == ("temps", 10, 3, 0)
    h.core.disconnect("b")
    h.tick()
    assert [r["id"] for r in h.dev.clients()] == ["a"]


def records_device(dev: MemoryDevice, state: dict):
    dev.command("slow")
    dev.set_state(state)
    return dev.records("temps", {"t": "f8", "v": "f4"})


def test_a_device_restarted_under_the_same_name_is_announced_and_everything_starts_over(h):
    temps = records_device(h.dev, {"mode": "old", "gen": 1})
    h.tick()
    for sid in "ab":
        h.connect(sid)
        h.event(sid, "subscribe", {"channels": ["temps"]})
    for i in range(3):
        temps.publish(t=h.wall, v=float(i))
    h.advance(1 / 60)
    h.tick()
    h.queued["b"] = (OUTBOX_LIMIT + 1, 0)  # b skips 4 records
    for i in range(4):
        temps.publish(t=h.wall, v=float(i))
    h.advance(1 / 60)
    h.tick()
    h.event("a", "command", {"id": 1, "name": "slow"})
    h.queued["b"] = (0, 0)
    h.advance(1.5, beat=False)  # the old process dies
    mark = h.mark()
    h.tick()
    assert [m["status"] for m in h.to("a", "device", mark)] == ["offline"]
    (flush,) = h.to("b", "data", mark)  # the count it is owed, in a message without rows
    assert (flush["seq"], flush["missed"], flush["count"]) == ([7, 6], 4, 0)
    assert h.to("a", "data", mark) == []
    assert h.to("a", "result", mark) == [{"id": 1, "ok": False, "error": {
        "code": "offline", "message": "the device went offline before answering"}}]
    h.event("a", "command", {"id": 2, "name": "slow"})
    assert h.to("a", "result")[-1]["error"]["code"] == "offline"  # refused at once while offline

    new = h.restart(pid=5555)
    temps = records_device(new, {"mode": "new"})
    for i in range(5):
        temps.publish(t=h.wall, v=float(i))
    h.advance(0.6)
    mark = h.mark()
    result = h.tick()
    assert "attached to device 'dev' (pid 5555)" in result.notes
    for sid in "ab":
        assert [c["name"] for c in h.to(sid, "channels", mark)[0]["channels"]] == ["temps"]
        assert [(d["status"], d["pid"]) for d in h.to(sid, "device", mark)] == [("online", 5555)]
        assert h.to(sid, "state", mark) == [{"full": True, "values": {"mode": "new"}}]
    assert h.to("a", "data", mark) == []  # the new device's 5 records predate the attach
    temps.publish(t=h.wall, v=10.0)
    temps.publish(t=h.wall, v=11.0)
    h.advance(1 / 60)
    h.tick()
    for sid in "ab":  # cursors restart at the new process's count, nothing owed
        msg = h.to(sid, "data")[-1]
        assert (msg["seq"], msg["missed"], list(column(msg, "v"))) == ([5, 6], 0, [10.0, 11.0])
    assert [r["id"] for r in new.clients()] == ["a", "b"]  # the new process gets the table
    h.event("a", "command", {"id": 3, "name": "slow"})
    assert [c["name"] for c in new.take_commands()] == ["slow"]


def test_a_replacement_seen_in_one_poll_flushes_missed_fails_commands_and_forgets_unconfirmed(h):
    temps = records_device(h.dev, {"mode": "old"})
    h.tick()
    h.connect("a")
    h.connect("b")
    h.event("a", "subscribe", {"channels": ["temps"], "in_flight": 1})
    h.event("b", "subscribe", {"channels": ["temps"]})
    h.queued["b"] = (OUTBOX_LIMIT + 1, 0)
    for i in range(6):
        temps.publish(t=h.wall, v=float(i))
    h.advance(1 / 60)
    h.tick()
    assert len(h.to("a", "data")) == 1 and h.to("b", "data") == []  # a: one unconfirmed; b: owed 6
    h.event("a", "command", {"id": "c", "name": "slow"})
    h.queued["b"] = (0, 0)
    new = h.restart(pid=5555)
    temps = records_device(new, {"mode": "new"})
    temps.publish(t=h.wall, v=0.0)
    h.advance(1.5)  # the old heartbeat is stale and the new one fresh when the bridge looks
    mark = h.mark()
    h.tick()
    events = [(m.event, m.to) for m in h.sent[mark:]]
    (flush,) = h.to("b", "data", mark)
    assert (flush["seq"], flush["missed"], flush["count"], flush["decimated"]) == ([6, 5], 6, 0, False)
    assert events.index(("data", ("b",))) < events.index(("device", ("a", "b")))  # before the new pid
    assert [d["status"] for d in h.to("a", "device", mark)] == ["online"]
    assert h.to("a", "result", mark) == [{"id": "c", "ok": False, "error": {
        "code": "offline", "message": "the device restarted before answering"}}]
    temps.publish(t=h.wall, v=1.0)
    h.advance(1 / 60)
    h.tick()  # a sends again without confirming: the old process's sequence numbers are void
    for sid in "ab":
        msg = h.to(sid, "data")[-1]
        assert (msg["seq"], msg["missed"]) == ([1, 1], 0)


def test_missed_owed_is_flushed_even_if_the_new_process_has_not_declared_the_channel_yet(h):
    temps = records_device(h.dev, {})
    h.tick()
    h.connect("b")
    h.event("b", "subscribe", {"channels": ["temps"]})
    h.queued["b"] = (OUTBOX_LIMIT + 1, 0)
    for i in range(5):
        temps.publish(t=h.wall, v=float(i))
    h.advance(1 / 60)
    h.tick()
    h.queued["b"] = (0, 0)
    h.restart(pid=5555)  # no channels yet
    h.advance(1.5)
    mark = h.mark()
    h.tick()
    assert [(m["missed"], m["count"]) for m in h.to("b", "data", mark)] == [(5, 0)]
