"""bridge/hub.py: one bridge serving several devices, driven in-process over devices laid out
in bytearrays (tests/memory_device.py). No processes or sockets; the test passes the time.

What only the Hub decides: the hello listing every device, routing each event to the device
it names, refusing a missing or unknown device, tagging every per-device message, and the
``devices`` event when the set changes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bridge.commands import QUICK_REPLY
from bridge.core import DEVICE_TAGGED, CoreSettings, Message
from bridge.device_link import DeviceLink
from bridge.hub import Hub, attach_names
from memory_device import MemoryDevice

T0 = 1000.0


class HubHarness:
    def __init__(self, names: list[str], multi: bool = True, drop_closed: bool = False) -> None:
        self.now, self.wall = 0.0, T0
        self.devs = {n: MemoryDevice(n, pid=100 + i, now=T0) for i, n in enumerate(names)}
        self.hub = Hub(CoreSettings(max_rate=60.0), make_event=threading.Event, multi=multi, drop_closed=drop_closed)
        for n, dev in self.devs.items():
            self.add(n)
        self.sent: list[Message] = []

    def add(self, name: str) -> None:
        self.hub.add_device(name, DeviceLink(name, open_segment=self.devs[name].open_segment), self.wall)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds
        for dev in self.devs.values():
            dev.beat(self.wall)

    def tick(self):
        result = self.hub.tick(self.now, self.wall)
        self.sent += self.hub.take_messages()
        return result

    def connect(self, sid: str, role: str = "operator") -> None:
        self.hub.connect(sid, "127.0.0.1", "test", role, self.wall)
        self.sent += self.hub.take_messages()

    def event(self, sid: str, name: str, *args):
        ack = self.hub.on_event(sid, name, args, self.now, self.wall)
        self.sent += self.hub.take_messages()
        return ack

    def route(self) -> None:
        self.hub.route_replies(self.now)
        self.sent += self.hub.take_messages()

    def to(self, sid: str, event: str, since: int = 0) -> list:
        return [m.data for m in self.sent[since:] if sid in m.to and m.event == event]


def values_of(msg: dict) -> list[float]:
    f = next(f for f in msg["fields"] if f["name"] == "v")
    return list(np.frombuffer(msg["data"], "<f4", msg["count"], f["offset"]))


@pytest.fixture
def two() -> HubHarness:
    h = HubHarness(["arm1", "cam2"])
    for name, dev in h.devs.items():
        dev.records("temps", {"t": "f8", "v": "f4"})
        dev.command("add", [{"name": "a", "type": "integer"}])
        dev.set_state({"who": name})
    h.tick()
    return h


def test_hello_lists_every_device_and_each_sends_its_own_whole_state(two):
    two.connect("a")
    hello = two.to("a", "hello")[0]
    assert hello["protocol"] == 5 and hello["multi"] is True
    assert [e["name"] for e in hello["devices"]] == ["arm1", "cam2"]
    assert all([c["name"] for c in e["channels"]] == ["temps"] for e in hello["devices"])
    assert all(e["device"]["status"] == "online" for e in hello["devices"])
    assert hello["device"] is None and hello["channels"] == [] and hello["commands"] == []
    assert sorted((s["device"], s["values"]["who"]) for s in two.to("a", "state")) == [("arm1", "arm1"),
                                                                                        ("cam2", "cam2")]


def test_a_subscription_gets_the_named_devices_data_only_tagged_with_its_name(two):
    two.connect("a")
    ack = two.event("a", "subscribe", {"device": "cam2", "channels": ["temps"], "rate": 30})
    assert ack["ok"] and ack["device"] == "cam2"
    for i in range(10):
        two.devs["arm1"].channels["temps"].publish(t=two.wall, v=-1.0)
        two.devs["cam2"].channels["temps"].publish(t=two.wall, v=float(i))
        two.advance(1 / 30)
        two.tick()
    data = two.to("a", "data")
    assert data and all(m["device"] == "cam2" for m in data)
    assert [v for m in data for v in values_of(m)] == [float(i) for i in range(10)]
    # consumed and unsubscribe name the device too
    assert two.event("a", "consumed", {"device": "cam2", "channel": "temps", "seq": data[-1]["seq"][1]})["ok"]
    assert two.event("a", "unsubscribe", {"device": "cam2", "channels": ["temps"]})["device"] == "cam2"


def test_every_per_device_message_names_its_device(two):
    two.connect("a")
    two.event("a", "subscribe", {"device": "arm1", "channels": ["temps"]})
    two.devs["arm1"].channels["temps"].publish(t=two.wall, v=1.0)
    two.devs["cam2"].set_state({"who": "cam2", "n": 1})
    two.advance(1.1)
    two.tick()
    tagged = [m for m in two.sent if m.event in DEVICE_TAGGED]
    assert {m.event for m in tagged} >= {"state", "data", "device"}
    assert all(m.data["device"] in ("arm1", "cam2") for m in tagged)
    assert [m.data["values"] for m in tagged if m.event == "state" and m.data["device"] == "cam2"][-1] == {"n": 1}


@pytest.mark.parametrize("payload, code, words", [
    ({"channels": ["temps"]}, "bad_request", "name the device ('device': one of arm1, cam2)"),
    ({"device": "cam9", "channels": ["temps"]}, "unknown_device", "unknown device 'cam9' (devices: arm1, cam2)"),
    ({"device": 7, "channels": ["temps"]}, "bad_request", "'device' must be a device name, got 7"),
])
def test_a_missing_or_unknown_device_is_refused_with_the_names(two, payload, code, words):
    two.connect("a")
    ack = two.event("a", "subscribe", payload)
    assert ack["ok"] is False and ack["error"]["code"] == code and words in ack["error"]["message"]


def test_commands_go_to_the_named_device_and_their_results_name_it(two):
    two.connect("a")
    two.event("a", "command", {"id": 1, "device": "cam2", "name": "add", "args": {"a": 2}})
    assert two.devs["arm1"].take_commands() == []
    taken = two.devs["cam2"].take_commands()
    assert [(c["name"], c["args"]) for c in taken] == [("add", {"a": 2})]
    two.devs["cam2"].reply(taken[0]["id"], result=3)
    two.route()
    assert two.to("a", "result") == [{"id": 1, "ok": True, "result": 3, "device": "cam2"}]
    two.event("a", "command", {"id": 2, "name": "add", "args": {"a": 2}})
    result = two.to("a", "result")[-1]
    assert result["id"] == 2 and result["device"] is None and result["error"]["code"] == "bad_request"


def test_a_device_that_answered_its_last_command_quickly_is_watched_for_the_next_answer(two):
    """Hub.quick_repliers: the devices whose answer the adapter watches for right after
    queuing a command, rather than wait for the device to wake its reply task (server.py)."""
    two.connect("a")
    assert two.hub.quick_repliers(two.now) == []  # no command waits
    cam2 = two.hub.cores["cam2"].link.device

    def command_answered_after(seconds: float, command_id: int) -> None:
        two.event("a", "command", {"id": command_id, "device": "cam2", "name": "add", "args": {"a": 2}})
        (taken,) = two.devs["cam2"].take_commands()
        two.advance(seconds)
        assert not cam2.replies_waiting()
        two.devs["cam2"].reply(taken["id"], result=3)
        assert cam2.replies_waiting()
        two.route()
        assert not cam2.replies_waiting() and two.to("a", "result")[-1]["id"] == command_id

    two.event("a", "command", {"id": 0, "device": "cam2", "name": "add", "args": {"a": 2}})
    assert two.hub.quick_repliers(two.now) == [cam2]  # it has answered none yet: worth watching
    two.devs["cam2"].reply(two.devs["cam2"].take_commands()[0]["id"], result=3)
    two.route()
    command_answered_after(QUICK_REPLY * 5, 1)  # a slow handler
    two.event("a", "command", {"id": 2, "device": "cam2", "name": "add", "args": {"a": 2}})
    assert two.hub.quick_repliers(two.now) == []  # slow last time: wait to be woken
    two.devs["cam2"].reply(two.devs["cam2"].take_commands()[0]["id"], result=3)
    two.route()  # answered at once
    two.event("a", "command", {"id": 3, "device": "cam2", "name": "add", "args": {"a": 2}})
    assert two.hub.quick_repliers(two.now) == [cam2]
    assert two.devs["arm1"].take_commands() == []  # arm1 has no command waiting: never listed
    two.advance(QUICK_REPLY * 2)  # command 3 waits on: the device is stuck, or busy
    two.event("a", "command", {"id": 4, "device": "cam2", "name": "add", "args": {"a": 2}})
    assert two.hub.quick_repliers(two.now) == []
    for c in two.devs["cam2"].take_commands():
        two.devs["cam2"].reply(c["id"], result=3)
    two.route()
    assert [r["id"] for r in two.to("a", "result")[-2:]] == [3, 4]


def test_ping_and_unknown_events_need_no_device(two):
    two.connect("a")
    assert two.event("a", "ping", {"t": 1.5})["t"] == 1.5
    assert two.event("a", "nonsense", {})["error"]["code"] == "bad_request"


def test_single_mode_takes_events_without_a_device_or_with_its_own_name():
    h = HubHarness(["arm1"], multi=False)
    h.devs["arm1"].records("temps", {"t": "f8", "v": "f4"})
    h.tick()
    h.connect("a")
    hello = h.to("a", "hello")[0]
    assert hello["multi"] is False and hello["device"]["name"] == "arm1" and hello["channels"][0]["name"] == "temps"
    assert h.event("a", "subscribe", {"channels": ["temps"]})["ok"]
    assert h.event("a", "subscribe", {"device": "arm1", "channels": ["temps"]})["ok"]
    assert h.event("a", "subscribe", {"device": "arm2", "channels": ["temps"]})["error"]["code"] == "unknown_device"


def test_a_device_added_later_is_announced_and_a_closed_one_dropped_under_attach_all():
    h = HubHarness(["arm1"], drop_closed=True)
    h.tick()
    h.connect("a")
    h.devs["cam2"] = MemoryDevice("cam2", pid=7, now=h.wall)
    h.add("cam2")
    h.sent += h.hub.take_messages()
    assert [e["name"] for e in h.to("a", "devices")[-1]["devices"]] == ["arm1", "cam2"]
    h.advance(0.1)
    h.tick()
    h.devs["arm1"].close()
    h.advance(0.1)
    result = h.tick()
    assert result.dropped == ["arm1"] and list(h.hub.cores) == ["cam2"]
    assert [e["name"] for e in h.to("a", "devices")[-1]["devices"]] == ["cam2"]


@pytest.mark.parametrize("attach, names", [("arm1", None), ("auto", None), ("all", []),
                                           ("arm1,cam2", ["arm1", "cam2"]), (" arm1 , cam2 ", ["arm1", "cam2"])])
def test_attach_names(attach, names):
    assert attach_names(attach) == names


@pytest.mark.parametrize("attach", ["arm1,arm1", "arm 1", "arm1,auto", ",", "a/b"])
def test_attach_names_refuses_what_is_not_a_list_of_names(attach):
    with pytest.raises(ValueError, match="--attach"):
        attach_names(attach)
