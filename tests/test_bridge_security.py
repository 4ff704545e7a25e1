"""Guards around the bridge: requests addressed to another host name are refused on a
loopback bind (DNS rebinding), a device will not serve a non-loopback address without a
token, and a device restarted after kill -9 reuses the bridge that outlived it."""

from __future__ import annotations

import http.client
import signal

from bridge_support import DASHBOARD_LINE, mb, parse_url, wait_attached, wait_stderr  # noqa: F401  (mb: fixture)
from conftest import segments_of, wait_for

from device_agent.monitor import running_bridge


def _get(url, path: str, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_requests_for_another_host_name_are_refused_on_loopback(mb):
    dev = mb.device()
    ok_status, _ = _get(dev.url, f"/api/health?token={dev.url.token}", f"127.0.0.1:{dev.url.port}")
    assert ok_status == 200
    assert _get(dev.url, "/api/health", f"localhost:{dev.url.port}")[0] == 200
    for path in (f"/api/health?token={dev.url.token}", "/", "/socket.io/?EIO=4&transport=polling"):
        status, body = _get(dev.url, path, f"attacker.example:{dev.url.port}")
        assert status == 403, (path, status, body)
        assert b"only answers requests addressed to this machine" in body


def test_device_refuses_a_non_loopback_bridge_without_a_token(mb):
    dev = mb.device(mon="port=0,host=0.0.0.0", wait_url=False)
    wait_for(lambda: "not serving on 0.0.0.0 without a token" in "".join(dev.proc.stderr),
             what="the device's refusal on stderr")
    assert dev.request("pub 2", "published") == "2"   # the device itself keeps running
    assert running_bridge(dev.name) is None


def test_restart_after_kill_reuses_the_bridge_that_outlived_the_device(mb):
    first = mb.device()
    bridge_pid = first.bridge_pid()
    assert running_bridge(first.name) == bridge_pid
    first.proc.proc.send_signal(signal.SIGKILL)
    first.proc.proc.wait()
    wait_for(lambda: segments_of(first.name) == [], what="the dead device's segments to go")
    second = mb.device(first.name, wait_url=False)
    line = wait_stderr(second.proc, DASHBOARD_LINE)   # printed once the old bridge attaches
    assert parse_url(line["url"]).port == first.url.port
    assert "already running" in "".join(second.proc.stderr)
    wait_attached(first.url, second.pid)
    assert running_bridge(first.name) == bridge_pid   # still the one bridge, no second launched
