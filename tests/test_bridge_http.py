"""The bridge's HTTP API against a real bridge: health, channels, state, clients, metrics,
and POST /api/command with its token rules and error acknowledgements.
"""

from __future__ import annotations

import re

from bridge_support import check_error, http, mb, wait_attached  # noqa: F401  (mb: fixture)
from conftest import wait_for

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.]+(e[+-]?[0-9]+)?$')


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → {'name{labels}': value}; every line must be valid."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert not line or re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ", line), line
            continue
        assert SAMPLE.match(line), f"not a Prometheus sample: {line!r}"
        key, value = line.rsplit(" ", 1)
        assert key not in out, f"duplicate sample {key}"
        out[key] = float(value)
    return out


def test_health_channels_and_state(mb):
    dev = mb.device()
    status, ctype, health = http(dev.url, "/api/health")
    assert status == 200 and ctype.startswith("application/json")
    assert health["ok"] is True and health["clients"] == 0 and health["uptime"] >= 0
    assert health["device"]["name"] == dev.name and health["device"]["status"] == "online"
    assert health["device"]["pid"] == dev.pid

    status, _, channels = http(dev.url, "/api/channels")
    assert status == 200
    assert [(ch["name"], ch["kind"]) for ch in channels["channels"]] == \
        [("telemetry", "records"), ("img", "frame"), ("log", "events")]
    assert all("segment" not in ch for ch in channels["channels"])
    assert {cmd["name"] for cmd in channels["commands"]} >= {"add", "echo", "set_speed", "record", "nap"}

    assert http(dev.url, "/api/state")[2] == {"values": {"mode": "idle", "speed": 0.0},
                                              "devices": {dev.name: {"mode": "idle", "speed": 0.0}}}
    dev.request('state {"mode": "run", "n": 3}', "stated")
    wait_for(lambda: http(dev.url, "/api/state")[2]["values"] == {"mode": "run", "speed": 0.0, "n": 3},
             what="/api/state to follow the device")
    # reads work without a token on a loopback bind; a wrong token is refused
    assert http(dev.url, "/api/health", token=None)[0] == 200
    status, _, body = http(dev.url, "/api/state", token="wrong-token-123")
    assert status == 401
    check_error(body, "unauthorized", "token")


def test_clients_lists_role_address_and_subscriptions(mb):
    dev = mb.device()
    with mb.connected(dev.url) as op, mb.connected(dev.url, token=None) as viewer:
        op.subscribe("telemetry", rate=30)
        viewer.subscribe("img", "log")
        status, _, body = http(dev.url, "/api/clients")
        assert status == 200
        rows = {r["id"]: r for r in body["clients"]}
        assert set(rows) == {op.sid, viewer.sid}
        assert rows[op.sid]["role"] == "operator" and rows[viewer.sid]["role"] == "viewer"
        assert rows[op.sid]["address"] == rows[viewer.sid]["address"] == "127.0.0.1"
        assert [(s["channel"], s["rate"]) for s in rows[op.sid]["subscriptions"]] == [("telemetry", 30)]
        assert sorted(s["channel"] for s in rows[viewer.sid]["subscriptions"]) == ["img", "log"]
        assert http(dev.url, "/api/health")[2]["clients"] == 2
        # the count of messages sent follows what the client got
        dev.request("pub 10", "published")
        op.wait_for(lambda: (m := op.records("telemetry")) and m[-1]["seq"][1] == 9, what="data")
        sent = wait_for(lambda: (n := _sent(dev, op.sid)) >= len(op.records("telemetry")) and n,
                        what="'sent' in /api/clients")
        assert sent == len(op.records("telemetry"))
        viewer.close()
        wait_for(lambda: [r["id"] for r in http(dev.url, "/api/clients")[2]["clients"]] == [op.sid],
                 what="the viewer to leave the table")


def _sent(dev, sid):
    for row in http(dev.url, "/api/clients")[2]["clients"]:
        if row["id"] == sid:
            return sum(s["sent"] for s in row["subscriptions"])
    return 0


def test_metrics_are_prometheus_text_and_count_what_happened(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        c.subscribe("telemetry")
        dev.request("pub 20", "published")
        c.wait_for(lambda: (m := c.records("telemetry")) and m[-1]["seq"][1] == 19, what="data")
        assert c.command("add", a=1)["ok"]
        check_error(c.command("nope"), "unknown_command")
        status, ctype, text = http(dev.url, "/metrics")
        assert status == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype
        m = parse_metrics(text)
        d = f'device="{dev.name}"'   # every device's series carries its name
        assert m[f"monbridge_device_online{{{d}}}"] == 1
        assert m["monbridge_clients"] == 1
        assert m[f'monbridge_commands_total{{{d},outcome="accepted"}}'] == 1
        assert m[f'monbridge_commands_total{{{d},outcome="rejected"}}'] == 1
        assert m[f'monbridge_commands_total{{{d},outcome="timeouts"}}'] == 0
        assert 0 < m[f'monbridge_command_rtt_seconds{{{d},quantile="0.5"}}'] < 5
        assert m[f'monbridge_channel_delivered_total{{{d},channel="telemetry"}}'] == len(c.records("telemetry"))
        assert m[f'monbridge_channel_missed_total{{{d},channel="telemetry"}}'] == 0
        assert m["monbridge_relay_tick_seconds"] >= 0
        # startup's objects (Flask, eventlet, numpy, socketio) are frozen: no collection scans them
        assert m["monbridge_gc_frozen_objects"] > 10_000
        assert all(f'monbridge_gc_pause_seconds_max{{generation="{g}"}}' in m for g in range(3))
        assert http(dev.url, "/api/stats")[2]["gc"]["frozen_objects"] == m["monbridge_gc_frozen_objects"]
        assert http(dev.url, "/metrics", token="wrong-token-123")[0] == 401


def test_post_command_needs_the_operator_token(mb):
    dev = mb.device()
    wait_attached(dev.url)
    status, _, ack = http(dev.url, "/api/command", "POST", body={"name": "add", "args": {"a": 2, "b": 2}})
    assert (status, ack) == (200, {"ok": True, "result": 4})
    # the token may also be in the body
    status, _, ack = http(dev.url, "/api/command", "POST", token=None,
                          body={"name": "whoami", "token": dev.url.token})
    assert status == 200 and ack["result"] == {"id": "http:127.0.0.1", "address": "127.0.0.1", "role": "operator"}
    # no token: a viewer, forbidden; a wrong token: unauthorized
    status, _, ack = http(dev.url, "/api/command", "POST", token=None, body={"name": "add", "args": {"a": 1}})
    assert status == 403
    check_error(ack, "forbidden", "operator token")
    status, _, ack = http(dev.url, "/api/command", "POST", token="wrong-token-123", body={"name": "add", "args": {"a": 1}})
    assert status == 401
    check_error(ack, "unauthorized")
    # nothing of those reached the device
    status, _, ack = http(dev.url, "/api/command", "POST", body={"name": "queue_log"})
    assert ack == {"ok": True, "result": ["add", "whoami", "queue_log"]}


def test_post_command_errors_map_to_http_statuses(mb):
    dev = mb.device()
    wait_attached(dev.url)
    cases = [
        (b"{not json", 400, "bad_request", ["JSON"]),
        (b"[1, 2]", 400, "bad_request", ["JSON"]),
        (b'{"args": {}}', 400, "bad_request", ["'name'"]),
        (b'{"name": "add", "args": {"a": "x"}}', 400, "invalid_args", ["'a'", "integer"]),
        (b'{"name": "add", "args": {}}', 400, "invalid_args", ["missing argument 'a'"]),
        (b'{"name": "launch_rockets"}', 404, "unknown_command", ["'launch_rockets'"]),
        (b'{"name": "echo", "args": {"value": "' + b"z" * 5000 + b'"}}', 413, "too_large", ["4096"]),
    ]
    for data, want_status, code, words in cases:
        status, ctype, ack = http(dev.url, "/api/command", "POST", data=data)
        assert ctype.startswith("application/json"), (data[:40], ctype, ack)
        assert status == want_status, (data[:40], status, ack)
        check_error(ack, code, *words)
    status, _, ack = http(dev.url, "/api/command", "POST", body={"name": "queue_log"})
    assert ack == {"ok": True, "result": ["queue_log"]}, "a rejected command reached the device"


def test_post_command_to_an_offline_device_is_503(mb):
    bridge = mb.serve(mb.new_name())
    status, _, ack = http(bridge.url, "/api/command", "POST", body={"name": "add", "args": {"a": 1}})
    assert status == 503
    check_error(ack, "offline")
    assert http(bridge.url, "/api/health")[2]["device"]["status"] == "offline"
