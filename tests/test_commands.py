"""Commands through a real device process: the test process plays the bridge.

The reply protocol is in device_agent/commands.py. Replies are collected with the
attachment's doorbell (``listen_for_replies``), so nothing here sleeps to synchronise.
"""

from __future__ import annotations

import time

from conftest import TIMEOUT, wait_for
from device_agent.control import QUEUE_SLOTS
from device_agent.errors import QueueFull

DEVICE = r'''
import sys, threading
from typing import Literal
import device_agent

manual = sys.argv[2:] == ["manual"]
mon = device_agent.start(sys.argv[1], dispatch="manual" if manual else "thread")
ran = {"record": [], "set_speed": []}   # handler calls, in the order they ran
gate = threading.Event()


@mon.command
def add(a: float, b: float = 1.0) -> float:
    """Add two numbers.

    Only the first paragraph goes into the catalog."""
    print("ran add", flush=True)
    return a + b


@mon.command
def fail(message: str):
    raise ValueError(message)


@mon.command
def scale(value: float, times: int = 1, mode: Literal["fast", "slow"] = "fast"):
    return {"value": value * times, "mode": mode}


@mon.command
def whoami(client):
    return client


@mon.command
def record(i: int):
    ran["record"].append(i)
    return i


@mon.command
def history():
    return ran


@mon.command
def hold():
    print("holding", flush=True)
    if not gate.wait(60):
        raise TimeoutError("the test never released the gate")
    return "released"


@mon.command(coalesce=True)
def set_speed(value: float):
    ran["set_speed"].append(value)
    return value


@mon.command
def on_main_thread():
    return threading.current_thread() is threading.main_thread()


print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "release":
        gate.set()
    elif cmd == "poll":
        print("polled", mon.poll(), flush=True)
    elif cmd == "count":
        print("count", len(ran["record"]), flush=True)
mon.close()
'''


def collect(att, ids, timeout=TIMEOUT):
    """Wait for replies to every id in ``ids``; return all replies taken, in order.

    Only replies taken here count: pass the ids whose replies you have not taken yet.
    """
    bell = att.listen_for_replies()
    replies = []
    deadline = time.monotonic() + timeout
    while not set(ids) <= {r["id"] for r in replies}:
        left = deadline - time.monotonic()
        assert left > 0, f"no reply to {set(ids) - {r['id'] for r in replies}} within {timeout} s"
        replies += att.take_replies()
        bell.wait(min(left, 0.05))  # woken by the device's ring; the timeout is a backstop
    return replies


def call(att, name, args=None, client=None):
    cid = att.send_command(name, args, client=client)
    (reply,) = [r for r in collect(att, [cid]) if r["id"] == cid]
    return reply


def test_result_is_returned(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    att.listen_for_replies()
    assert att.call("add", {"a": 2, "b": 3.5}) == {"id": 1, "ok": True, "result": 5.5}
    assert call(att, "add", {"a": 2}) == {"id": 2, "ok": True, "result": 3.0}  # default b
    assert call(att, "scale", {"value": 1.5, "times": 2, "mode": "slow"})["result"] == {"value": 3.0, "mode": "slow"}
    catalog = {c["name"]: c for c in att.manifest["commands"]}
    assert catalog["add"]["params"] == [{"name": "a", "type": "number"},
                                        {"name": "b", "type": "number", "default": 1.0}]
    assert catalog["add"]["doc"] == "Add two numbers."
    assert catalog["set_speed"]["coalesce"] is True and catalog["add"]["coalesce"] is False
    assert catalog["whoami"]["params"] == []  # "client" is filled in by the device, not declared
    dev.stop()


def test_handler_error_is_reported_and_device_keeps_running(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    reply = call(att, "fail", {"message": "motor 3 stalled"})
    assert reply["ok"] is False
    assert reply["error"]["code"] == "handler_error"
    assert "motor 3 stalled" in reply["error"]["message"]
    assert "ValueError" in reply["error"]["message"]
    assert "result" not in reply
    assert call(att, "add", {"a": 1, "b": 1}) == {"id": reply["id"] + 1, "ok": True, "result": 2}
    assert dev.proc.poll() is None
    dev.stop()
    assert "motor 3 stalled" in "".join(dev.stderr)  # logged on the device side


def test_unknown_command(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    reply = call(att, "self_destruct", {})
    assert reply["ok"] is False and reply["error"]["code"] == "unknown_command"
    assert "self_destruct" in reply["error"]["message"]
    assert "add" in reply["error"]["message"]  # lists what is known
    # internals are not reachable by name (the napari getattr mistake)
    for name in ("close", "poll", "_service", "__init__"):
        assert call(att, name)["error"]["code"] == "unknown_command", name
    dev.stop()


def test_invalid_args_name_the_argument(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    cases = [
        ("scale", {"value": "fast"}, ["'value'", "number", "str"]),
        ("scale", {}, ["missing", "'value'"]),
        ("scale", {"value": 1, "bogus": 2}, ["unexpected", "'bogus'"]),
        ("scale", {"value": 1, "times": 1.5}, ["'times'", "integer"]),
        ("scale", {"value": 1, "times": True}, ["'times'", "integer", "bool"]),
        ("scale", {"value": 1, "mode": "medium"}, ["'mode'", "medium"]),
        ("add", {"a": None}, ["'a'", "number"]),
        ("whoami", {"client": {"id": "spoofed"}}, ["unexpected", "'client'"]),
    ]
    for name, args, words in cases:
        reply = call(att, name, args)
        assert reply["ok"] is False, (name, args, reply)
        assert reply["error"]["code"] == "invalid_args", (name, args, reply)
        for word in words:
            assert word in reply["error"]["message"], (name, args, word, reply)
    reply = call(att, "scale", [1, 2])  # args must be an object
    assert reply["error"]["code"] == "invalid_args" and "object" in reply["error"]["message"]
    dev.stop()


def test_client_argument_receives_the_client(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    client = {"id": "sid-42", "address": "127.0.0.1:50123", "role": "operator"}
    assert call(att, "whoami", client=client)["result"] == client
    assert call(att, "whoami")["result"] == {}
    dev.stop()


def test_arrival_order_is_preserved(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    bell = att.listen_for_replies()
    n = 400  # several times the 128-slot queues: exercises wrap-around and back-pressure
    ids, replies = [], []
    deadline = time.monotonic() + 60
    for i in range(n):
        # the bridge's discipline: never more commands in flight than the reply queue holds
        while len(ids) - len(replies) >= QUEUE_SLOTS:
            assert time.monotonic() < deadline, f"device stopped answering after {len(replies)} replies"
            bell.wait(0.05)
            replies += att.take_replies()
        ids.append(att.send_command("record", {"i": i}))
        replies += att.take_replies()
    replies += collect(att, set(ids) - {r["id"] for r in replies})
    assert [r["id"] for r in replies] == ids
    assert [r["result"] for r in replies] == list(range(n))
    assert all(r["ok"] for r in replies)
    assert call(att, "history")["result"]["record"] == list(range(n))
    dev.stop()


def test_no_reply_is_dropped_when_the_bridge_reads_late(launch, attach, device_name):
    """Every command taken gets its reply, even if the bridge takes replies late.

    Here the bridge sends as fast as the command queue accepts while the dispatcher is
    busy, and does not read replies: 1 + 128 commands for a 128-slot reply queue. The
    dispatcher runs only what it has reply room for (the hold + 127) and leaves the last
    command queued; once the bridge reads, it runs, and no reply is ever dropped.
    """
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    hold = att.send_command("hold")
    dev.expect("holding")
    ids = []
    while True:
        try:
            ids.append(att.send_command("record", {"i": len(ids)}))
        except QueueFull:
            break
    assert len(ids) == QUEUE_SLOTS
    dev.send("release")
    # the device's main thread reports what the handlers ran, without touching the queues
    wait_for(lambda: dev.request("count", "count") == str(len(ids) - 1),
             what="the device to run all it has reply room for", timeout=30, interval=0.05)
    assert att._ctl.commands.pending() == 1  # the last command waits for reply room
    replies = collect(att, [hold, *ids], timeout=5)
    assert [r["id"] for r in replies] == [hold, *ids]
    dev.stop()


def test_coalesced_commands_only_newest_runs(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    hold = att.send_command("hold")
    dev.expect("holding")  # the dispatcher is busy: what follows waits in the queue
    queued = [
        att.send_command("set_speed", {"value": 1.0}),
        att.send_command("record", {"i": 7}),
        att.send_command("set_speed", {"value": 2.0}),
        att.send_command("set_speed", {"value": 3.0}),
    ]
    dev.send("release")
    replies = collect(att, [hold, *queued])
    assert [r["id"] for r in replies] == [hold, *queued]  # answered in arrival order
    assert replies[0] == {"id": hold, "ok": True, "result": "released"}
    by_id = {r["id"]: r for r in replies}
    assert by_id[queued[0]] == {"id": queued[0], "ok": True, "result": None, "coalesced": True}
    assert by_id[queued[1]] == {"id": queued[1], "ok": True, "result": 7}
    assert by_id[queued[2]] == {"id": queued[2], "ok": True, "result": None, "coalesced": True}
    assert by_id[queued[3]] == {"id": queued[3], "ok": True, "result": 3.0}
    assert call(att, "history")["result"] == {"record": [7], "set_speed": [3.0]}
    # alone, a coalescing command just runs
    assert call(att, "set_speed", {"value": 4.0}) == {"id": queued[3] + 2, "ok": True, "result": 4.0}
    dev.stop()


def heartbeat(att):
    return -att.heartbeat_age(now=0.0)  # the device's last heartbeat, unix time


def test_manual_dispatch_runs_nothing_until_poll(launch, attach, device_name):
    dev = launch(DEVICE, device_name, "manual")
    att = attach(device_name)
    att.listen_for_replies()
    cid = att.send_command("add", {"a": 1, "b": 2})
    cid2 = att.send_command("on_main_thread")
    # Give a dispatcher ample time to misbehave, measured on the device's own clock: two
    # heartbeats (at least one HEARTBEAT_PERIOD) after sending. In "thread" mode the reply
    # comes within milliseconds (test_result_is_returned).
    beat = heartbeat(att)
    beat = wait_for(lambda: heartbeat(att) > beat and heartbeat(att), what="a heartbeat")
    wait_for(lambda: heartbeat(att) > beat, what="a second heartbeat")
    assert att.take_replies() == []
    dev.request("count", "count")  # every line the device printed before is in dev.stdout now
    assert not any(line.startswith("ran add") for line in dev.stdout)
    assert dev.request("poll", "polled") == "2"
    replies = collect(att, [cid, cid2])
    assert replies == [{"id": cid, "ok": True, "result": 3.0}, {"id": cid2, "ok": True, "result": True}]
    assert dev.request("poll", "polled") == "0"
    dev.stop()
