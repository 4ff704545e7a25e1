"""One bridge serving several devices (issue 15 §1), end to end with real processes:
``monbridge serve --attach A,B`` and ``--attach all`` with DEVICE processes
(tests/bridge_support.py) that launch no bridge of their own, and Socket.IO and HTTP clients.

The routing and the protocol's rules are unit-tested in test_hub.py; here: the CLI, the
shared memory of two live devices, the HTTP API and /metrics naming each device, and a
device that starts and one that closes under ``--attach all``.
"""

from __future__ import annotations

import pytest

from bridge_support import (BridgeHarness, check_error, concat_records, http, mb, value_of,  # noqa: F401
                            wait_devices)

pytestmark = pytest.mark.timeout(120)


def two_devices(mb: BridgeHarness):
    a, b = mb.device(mon="bridge=0"), mb.device(mon="bridge=0")
    bridge = mb.serve_devices(f"{a.name},{b.name}")
    wait_devices(bridge.url, {a.name: a.pid, b.name: b.pid})
    return a, b, bridge


def test_one_client_follows_two_devices_each_named_in_what_it_gets(mb: BridgeHarness) -> None:
    a, b, bridge = two_devices(mb)
    c = mb.client(bridge.url)
    hello = c.hello
    assert hello["multi"] is True and [d["name"] for d in hello["devices"]] == [a.name, b.name]
    assert hello["device"] is None and hello["channels"] == []
    check_error(c.call("subscribe", {"channels": ["telemetry"]}), "bad_request", "name the device", a.name, b.name)
    check_error(c.call("subscribe", {"device": "nope", "channels": ["telemetry"]}), "unknown_device", "'nope'")
    assert c.subscribe("telemetry", device=a.name)["device"] == a.name
    assert c.subscribe("telemetry", device=b.name)["device"] == b.name
    total_a = int(a.request("pub 30", "published"))
    total_b = int(b.request("pub 50", "published"))

    def got(device: str):
        return [m for m in c.records("telemetry") if m["device"] == device]
    for name, total in ((a.name, total_a), (b.name, total_b)):
        c.wait_for(lambda n=name, t=total: got(n) and got(n)[-1]["seq"][1] == t - 1, what=f"{name}'s records")
        cols = concat_records(got(name))
        assert list(cols["seq"]) == list(range(total))
        assert list(cols["value"]) == [value_of(s) for s in range(total)]
    assert all(m["device"] in (a.name, b.name) for m in c.of("state") + c.of("device"))

    # commands reach the device they name, and their answer names it
    assert c.call("command", {"device": b.name, "name": "record", "args": {"n": 7}}) == {"ok": True, "result": 7}
    assert c.call("command", {"device": a.name, "name": "history"}) == {"ok": True, "result": []}
    assert c.call("command", {"device": b.name, "name": "history"}) == {"ok": True, "result": [7]}
    assert [r["device"] for r in c.of("result")] == [b.name, a.name, b.name]
    check_error(c.call("command", {"name": "history"}), "bad_request", "name the device")


def test_the_http_api_and_metrics_name_each_device(mb: BridgeHarness) -> None:
    a, b, bridge = two_devices(mb)
    status, _, ack = http(bridge.url, "/api/command", "POST", body={"name": "echo", "args": {"value": 1}})
    assert status == 400 and ack["error"]["code"] == "bad_request" and a.name in ack["error"]["message"]
    status, _, ack = http(bridge.url, "/api/command", "POST", body={"device": "zz", "name": "echo"})
    assert status == 404 and ack["error"]["code"] == "unknown_device"
    status, _, ack = http(bridge.url, "/api/command", "POST",
                          body={"device": b.name, "name": "set_speed", "args": {"value": 2.5}})
    assert status == 200 and ack == {"ok": True, "result": 2.5}
    _, _, channels = http(bridge.url, "/api/channels")
    assert [d["name"] for d in channels["devices"]] == [a.name, b.name] and channels["channels"] == []
    _, _, health = http(bridge.url, "/api/health")
    assert health["device"] is None and {d["name"] for d in health["devices"]} == {a.name, b.name}

    def state_of(name: str):
        return http(bridge.url, "/api/state")[2]["devices"].get(name, {})
    c = mb.client(bridge.url)
    c.wait_for(lambda: state_of(b.name).get("speed") == 2.5, what="b's state")
    assert state_of(a.name).get("speed") != 2.5
    status, _, stats = http(bridge.url, f"/api/stats?device={b.name}")
    assert status == 200 and stats["device"]["name"] == b.name and stats["commands"]["accepted"] == 1
    assert http(bridge.url, "/api/stats")[0] == 400
    _, _, text = http(bridge.url, "/metrics")
    assert f'monbridge_device_online{{device="{a.name}"}} 1' in text
    assert f'monbridge_commands_total{{device="{b.name}",outcome="accepted"}} 1' in text


def test_attach_all_serves_devices_that_start_later_and_drops_one_that_closes(mb: BridgeHarness) -> None:
    a = mb.device(mon="bridge=0")
    bridge = mb.serve_devices("all")
    wait_devices(bridge.url, {a.name: a.pid})
    c = mb.client(bridge.url)
    assert c.hello["multi"] is True
    b = mb.device(mon="bridge=0")
    c.wait_event("devices", lambda d: b.name in [e["name"] for e in d["devices"]], timeout=15)
    wait_devices(bridge.url, {a.name: a.pid, b.name: b.pid})
    c.subscribe("telemetry", device=b.name)
    total = int(b.request("pub 10", "published"))
    c.wait_for(lambda: [m for m in c.records("telemetry") if m["device"] == b.name and m["seq"][1] == total - 1],
               what="the late device's records")
    mark = c.mark()
    b.request("close", "closed")   # DEVICE's mon.close(): a clean close
    # other devices may run on this machine (other tests'): only a and b are this test's business
    c.wait_event("devices", lambda d: {a.name, b.name} & {e["name"] for e in d["devices"]} == {a.name},
                 since=mark, timeout=15)
    _, _, health = http(bridge.url, "/api/health")
    names = {d["name"] for d in health["devices"]}
    assert a.name in names and b.name not in names
