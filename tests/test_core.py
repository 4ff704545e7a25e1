"""bridge/core.py: the bridge's decisions, driven in-process over a device in bytearrays
(tests/memory_device.py). No processes, sockets or clocks: the test passes the time."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bridge.core import OUTBOX_LIMIT, BridgeCore, CoreSettings, Message
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
        return [m.data for m in self.sent[since:] if sid in m.to and (event is None or m.event == event)]

    def mark(self) -> int:
        return len(self.sent)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_client_gets_hello_and_state_then_data_it_subscribed_to_at_its_rate(h):
    temps = h.dev.records("temps", {"t": "f8", "v": "f4"})
    h.dev.set_state({"mode": "idle"})
    h.tick()
    h.connect("a")
    hello = h.to("a", "hello")[0]
    assert [c["name"] for c in hello["channels"]] == ["temps"] and hello["protocol"] == 3
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
