"""The Redis ACL users of docs/scaling.md ("Securing Redis") run a fleet, and keep an edge in
its place: a real redis-server with those users (read from the docs, so the recipe cannot
drift from what is tested), an origin and an edge bridge each logged in as its user, a
Socket.IO client on the edge getting records, a frame (which needs the edge's wants entry)
and a command's answer; and the edge user refused (NOPERM) when it writes data or deletes.
An edge whose user cannot write the wants stream says so in its log; an origin whose user is
refused a command says so once and keeps publishing the rest.
"""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.fleet import streams
from bridge_support import BridgeHarness, decode_frame, image, mb, wait_attached, wait_stderr  # noqa: F401
from redis_support import RedisServer, redis_server  # noqa: F401
from test_fleet_bridges import _bridge, last_seq, wait_published

pytestmark = pytest.mark.timeout(120)

SCALING_MD = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"


def acl_lines() -> list[str]:
    lines = re.findall(r"^ACL SETUSER .*$", SCALING_MD.read_text(), re.M)
    assert [shlex.split(line)[2] for line in lines] == ["origin", "edge"], lines
    return lines


def acl_urls(server: RedisServer, edge_line: str = "") -> tuple[str, str]:
    """Create the documented users (``edge_line``: another edge user instead); their URLs."""
    passwords = {"ORIGIN-SECRET": secrets.token_hex(12), "EDGE-SECRET": secrets.token_hex(12)}
    admin = redis.Redis.from_url(server.url)
    try:
        origin_line, documented_edge = acl_lines()
        for line in (origin_line, edge_line or documented_edge):
            for placeholder, password in passwords.items():
                line = line.replace(placeholder, password)
            assert admin.execute_command(*shlex.split(line)) in (b"OK", "OK", True)
    finally:
        admin.close()
    where = f"127.0.0.1:{server.port}/0"
    return (f"redis://origin:{passwords['ORIGIN-SECRET']}@{where}",
            f"redis://edge:{passwords['EDGE-SECRET']}@{where}")


def acl_fleet(mb: BridgeHarness, server: RedisServer, origin_url: str, edge_url: str) -> tuple[Any, Any, Any]:
    """A device, its origin and one edge, logged in as the given users: (device, origin, edge)."""
    name = mb.new_name()
    started = [mb.serve(name, "--publish", origin_url, expect_url=False),
               mb.serve(name, "--edge", edge_url, expect_url=False)]
    dev = mb.device(name, mon="bridge=0")
    origin, edge = (_bridge(p, name) for p in started)
    for b in (origin, edge):
        wait_attached(b.url, dev.pid)
    wait_published(server.url, name)
    return dev, origin, edge


def test_the_documented_acl_users_run_a_fleet_and_the_edge_cannot_write_data(redis_server: RedisServer,
                                                                                mb: BridgeHarness) -> None:
    origin_url, edge_url = acl_urls(redis_server)
    dev, _origin, edge = acl_fleet(mb, redis_server, origin_url, edge_url)
    name = dev.name
    c = mb.client(edge.url)
    c.subscribe("img", "telemetry")
    dev.request("frame 4", "framed")
    frame = c.wait_event("data", lambda d: d["channel"] == "img")
    assert frame["seq"] == [1, 1] and (decode_frame(frame) == image(4)).all()
    total = int(dev.request("pub 20", "published"))
    c.wait_for(lambda: last_seq(c) == total - 1, what=f"records up to {total - 1}")
    assert c.command("echo", value="through the acl") == {"ok": True, "result": "through the acl"}
    assert not [line for line in edge.proc.stderr if "Redis layout" in line]   # one version: nothing to say

    as_edge = redis.Redis.from_url(edge_url)
    try:
        for write in (lambda: as_edge.xadd(streams.channel_key(name, "telemetry"), {"kind": "records"}),
                      lambda: as_edge.set(streams.heartbeat_key(name), "{}"),
                      lambda: as_edge.xadd(streams.state_key(name), {"x": "1"}),
                      lambda: as_edge.delete(streams.commands_key(name))):
            with pytest.raises(redis.exceptions.NoPermissionError):
                write()
    finally:
        as_edge.close()


def test_an_edge_user_that_cannot_write_wants_is_told_so(redis_server: RedisServer, mb: BridgeHarness) -> None:
    """Without write access to the wants stream an edge gets records but no frames: its log says why."""
    _, edge_line = acl_lines()
    origin_url, edge_url = acl_urls(redis_server, edge_line.replace(" %W~monbridge:{*}:wants", ""))
    dev, _origin, edge = acl_fleet(mb, redis_server, origin_url, edge_url)
    c = mb.client(edge.url)
    c.subscribe("img", "telemetry")
    wait_stderr(edge.proc, re.compile(r"cannot write '[^']+''s wants stream in Redis \(NoPermissionError: .*\): "
                                      r"origins will not send this edge's browsers the frame channels they watch"))
    total = int(dev.request("pub 5", "published"))
    c.wait_for(lambda: last_seq(c) == total - 1, what=f"records up to {total - 1}")


def test_an_origin_user_refused_a_command_says_so_and_keeps_publishing(redis_server: RedisServer,
                                                                       mb: BridgeHarness) -> None:
    """Without SADD the origin's heartbeat tick is refused each second: its log says so once and
    the records still reach the edge (a refusal is not a Redis that went down)."""
    origin_url, edge_url = acl_urls(redis_server)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.execute_command("ACL", "SETUSER", "origin", "-sadd")
    finally:
        admin.close()
    name = mb.new_name()
    started = [mb.serve(name, "--publish", origin_url, expect_url=False),
               mb.serve(name, "--edge", edge_url, expect_url=False)]
    dev = mb.device(name, mon="bridge=0")
    origin, edge = (_bridge(p, name) for p in started)
    wait_attached(origin.url, dev.pid)
    wait_stderr(origin.proc, re.compile(r"Redis at \S+ refused a write for '[^']+' \(NoPermissionError: .*sadd.*\): "
                                        r"edges miss what it refused"))
    wait_attached(edge.url, dev.pid)
    c = mb.client(edge.url)
    c.subscribe("telemetry")
    for _ in range(3):   # across several refused heartbeats
        total = int(dev.request("pub 5", "published"))
        c.wait_for(lambda: last_seq(c) == total - 1, what=f"records up to {total - 1}")
    assert not [line for line in origin.proc.stderr if "cannot reach Redis" in line]
    assert sum("refused a write" in line for line in origin.proc.stderr) == 1
