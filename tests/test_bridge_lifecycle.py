"""The bridge process over time: a device killed and restarted under it, a device that exits
(the bridge follows it), who may connect, and the threading async mode.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import socketio

from bridge_support import (
    check_error,
    concat_records,
    connect,
    http,
    mb,  # noqa: F401  (fixture)
    parse_url,
    pid_gone,
    value_of,
    wait_attached,
)
from conftest import segments_of, wait_for
from device_agent.monitor import BRIDGE_EXIT_WAIT


def test_device_killed_and_restarted_under_the_same_client(mb):
    name = mb.new_name()
    bridge = mb.serve(name)
    first = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, first.pid)
    with mb.connected(bridge.url) as c:
        sid = c.sid
        c.subscribe("telemetry")
        first.request("pub 5", "published")
        c.wait_for(lambda: (m := c.records("telemetry")) and m[-1]["seq"][1] == 4, what="data from the first device")

        mark = c.mark()
        first.proc.proc.send_signal(signal.SIGKILL)  # the device only: its resource tracker unlinks
        offline = c.wait_event("device", lambda d: d["status"] == "offline", since=mark)
        assert offline["name"] == name and offline["pid"] == first.pid
        check_error(c.command("add", a=1), "offline")
        assert first.proc.wait_gone() == -signal.SIGKILL
        wait_for(lambda: segments_of(name) == [], what="the dead device's segments to go")

        mark = c.mark()
        second = mb.device(name, mon="bridge=0")  # same name, new process
        online = c.wait_event("device", lambda d: d["status"] == "online", since=mark)
        assert online["pid"] == second.pid
        # the catalog is sent again, as the new device declares its channels (one at a time:
        # a bridge that attaches between two declarations sends the ones so far first)
        names = lambda d: {ch["name"] for ch in d["channels"]}  # noqa: E731
        c.wait_event("channels", lambda d: names(d) == {"telemetry", "img", "log"}, since=mark)
        assert all(names(d) <= {"telemetry", "img", "log"} for d in c.of("channels", mark))
        second.request('state {"generation": 2}', "stated")
        full = c.wait_event("state", lambda d: d["full"], since=mark)  # the new device's state, whole
        assert full["values"].items() <= {"mode": "idle", "speed": 0.0, "generation": 2}.items()
        c.wait_event("state", lambda d: d["values"].get("generation") == 2, since=mark)

        # data flows to the same subscription, without reconnecting, from seq 0 of the new device
        second.request("pub 3", "published")
        msgs = c.wait_for(lambda: (m := c.records("telemetry", mark)) and m[-1]["seq"][1] == 2 and m,
                          what="data from the restarted device")
        got = concat_records(msgs)
        np.testing.assert_array_equal(got["seq"], [0, 1, 2])
        np.testing.assert_array_equal(got["value"], value_of(np.arange(3)).astype("f4"))
        assert all(m["missed"] == 0 for m in msgs)
        assert c.sid == sid and c.connected
        assert len(c.of("hello")) == 1, "the client was made to reconnect"
        who = c.command("whoami")
        assert who["ok"] and who["result"]["id"] == sid
        assert c.command("queue_log") == {"ok": True, "result": ["whoami", "queue_log"]}


def test_bridge_launched_by_a_device_exits_when_the_device_closes(mb):
    dev = mb.device()
    bridge_pid = dev.bridge_pid()
    with mb.connected(dev.url) as c:
        c.subscribe("telemetry")
        answer = dev.request("close", "closed").split()
        code, seconds = answer[0], float(answer[1])
        # exit code 0, and soon enough that close() never had to terminate it
        assert code == "0" and seconds < BRIDGE_EXIT_WAIT, answer
        assert pid_gone(bridge_pid)
        c.wait_for(lambda: not c.connected, what="the client to be disconnected")
    assert dev.proc.wait_gone() == 0


def test_hand_started_bridge_with_exit_with_device_exits_by_itself(mb):
    name = mb.new_name()
    bridge = mb.serve(name, "--exit-with-device", expect_url=False)  # it leaves the URL to the device
    dev = mb.device(name, mon="bridge=0")
    url = parse_url(dev.request("url", "url"))  # the bridge wrote it into the device's segment
    assert url.port and wait_attached(url, dev.pid)
    dev.request("close", "closed")
    assert bridge.wait_gone() == 0  # nobody signalled it
    assert "Traceback" not in "".join(bridge.stderr), bridge.describe()


def test_wrong_token_is_refused_and_no_token_is_a_viewer_on_loopback(mb):
    dev = mb.device()
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect(dev.url, token="not-the-token-at-all")
    refused = socketio.Client(reconnection=False, serializer="msgpack")
    errors = []
    refused.on("connect_error", lambda data=None: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(dev.url.base, auth={"token": "wrong-token-123"}, transports=["websocket"], wait_timeout=10)
    assert errors and "unauthorized" in str(errors[0]) and "token" in str(errors[0]), errors
    # the token may also come in the query string, as the printed URL has it
    with mb.connected(dev.url.url) as op:
        assert op.hello["role"] == "operator"
    with mb.connected(dev.url, token=None) as viewer:
        assert viewer.hello["role"] == "viewer"
    status, _, body = http(dev.url, "/api/health", token="wrong-token-123")
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_non_loopback_bind_needs_a_token(mb):
    name = mb.new_name()
    proc = mb.serve(name, "--host", "0.0.0.0", expect_url=False)
    assert proc.wait_gone() == 2
    err = "".join(proc.stderr)
    assert "refusing to listen on 0.0.0.0 without a token" in err and "--token" in err, err

    token = "a-long-enough-token"
    bridge = mb.serve(name, "--host", "0.0.0.0", "--token", token)
    assert bridge.url.token == token
    local = parse_url(f"http://127.0.0.1:{bridge.url.port}/?token={token}")
    # with a token required, not even a loopback client gets in without it
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect(local, token=None)
    status, _, body = http(local, "/api/health", token=None)
    assert status == 401 and body["ok"] is False
    with mb.connected(local) as op:
        assert op.hello["role"] == "operator"
    assert bridge.terminate() == 0


def test_threading_mode_smoke(mb):
    dev = mb.device(mon="port=0,async_mode=threading")
    assert b"threading" in open(f"/proc/{dev.bridge_pid()}/cmdline", "rb").read()
    with mb.connected(dev.url) as c, mb.connected(dev.url, token=None) as viewer:
        assert c.hello["role"] == "operator" and viewer.hello["role"] == "viewer"
        c.subscribe("telemetry", "img")
        dev.request("pub 200", "published")
        dev.request("frame 2", "framed")
        msgs = c.wait_for(lambda: (m := c.records("telemetry")) and m[-1]["seq"][1] == 199 and m, what="records")
        np.testing.assert_array_equal(concat_records(msgs)["seq"], np.arange(200))
        c.wait_event("data", lambda d: d["channel"] == "img")
        mark = viewer.mark()
        dev.request('state {"mode": "threads"}', "stated")
        assert viewer.wait_event("state", since=mark) == {"device": dev.name, "full": False,
                                                          "values": {"mode": "threads"}}
        check_error(viewer.command("add", a=1), "forbidden")
        acks = []
        for i in range(100):
            c.fire("command", {"name": "record", "args": {"n": i}}, acks, key=i)
        c.wait_for(lambda: len(acks) == 100, what="100 acks")
        assert all(a == {"ok": True, "result": k} for k, a in acks), [a for a in acks if not a[1]["ok"]][:3]
        assert c.command("history")["result"] == list(range(100))
        assert c.call("ping", {"t": 1})["t"] == 1
        status, _, health = http(dev.url, "/api/health")
        assert status == 200 and health["clients"] == 2
        answer = dev.request("close", "closed").split()
        assert answer[0] == "0" and float(answer[1]) < BRIDGE_EXIT_WAIT, answer
        c.wait_for(lambda: not c.connected, what="the client to be disconnected")
    assert dev.proc.wait_gone() == 0


def test_a_client_can_connect_before_the_device_starts(mb):
    name = mb.new_name()
    bridge = mb.serve(name)
    with mb.connected(bridge.url) as c:
        assert c.hello["device"] == {"name": name, "status": "offline", "pid": None, "heartbeat_age": None}
        mark = c.mark()
        dev = mb.device(name, mon="bridge=0")
        assert c.wait_event("device", lambda d: d["status"] == "online", since=mark)["pid"] == dev.pid
        c.wait_event("channels", lambda d: any(ch["name"] == "telemetry" for ch in d["channels"]), since=mark)
        c.subscribe("telemetry")
        started = time.monotonic()
        dev.request("pub 1", "published")
        c.wait_for(lambda: c.records("telemetry"), what="data")
        assert time.monotonic() - started < 5
