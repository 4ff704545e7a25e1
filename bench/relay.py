"""Bridge relay benchmark: the real bridge between a real device process and Socket.IO
clients, side by side with a bare Flask-SocketIO echo server in the same configuration.

    python -m bench.relay [--quick] [--json] [--only rtt,stream,slow,max]

``--json`` prints exactly one JSON object on stdout; progress goes to stderr. ``--quick``
takes about 35-40 s on a 2-core machine (under 50 s); the full run about 2 minutes.

Processes (each a fresh interpreter started with ``subprocess``, bounded by a timeout and
killed in a ``finally``; all bound to 127.0.0.1 on free ports):

* device: ``device_agent.start(NAME, mon="bridge=0")`` with records channels ``s0..sN``
  (``t`` f8, ``x`` f4, ``y`` f4), a frame channel ``cloud`` (20,000×3 f4) and an ``echo``
  command; it publishes on request, stamping every record with ``t=time.time()``.
* bridge: started by hand as the device would start it (``python -m bridge serve --attach
  NAME --host 127.0.0.1 --port 0 --rate 60 --async-mode eventlet --exit-with-device``) plus
  ``--command-rate 100000`` so the per-client command limit (default 100/s) does not
  interfere; MON has no key for the command rate, hence by hand. The device learns the URL
  from the control segment and passes it on.
* echo: a bare Flask-SocketIO server in the bridge's configuration — eventlet,
  monkey-patched first, the same ``SocketIO(...)`` settings, ``bridge.netio.listen`` (the
  TCP_NODELAY listener) and ``bridge.netio.server`` — whose ``echo`` handler returns its
  payload.
* clients ×2: asyncio processes with 5 ``socketio.AsyncClient`` each
  (``transports=['websocket']``), so one process is not the bottleneck; for the
  throughput ladder each also opens 5 lean raw websocket clients (``RawClient``, a third to
  a sixth of AsyncClient's CPU per message), so that the ladder measures the bridge.
* slow: one raw websocket client that speaks Engine.IO v4 / Socket.IO v5 text frames,
  subscribes to ``cloud`` and then never reads.

What is measured:

* command round trip: sequential ``call('command', {name: echo, ...})`` through the bridge
  to the device's handler and back, vs sequential ``call('echo', same payload)`` to the
  echo server; same client kind, same process, warm-up first, blocks alternated so load
  from elsewhere hits both alike.
* stream latency: 4 records channels at 60 Hz (plus ``cloud`` published at 30 Hz that
  nobody subscribes to, the baseline for the slow-client test) to 10 clients; latency =
  receive time − ``t`` of the newest record in each message; delivered ratio = records
  received / published in the window, per client (minimum over clients). The device runs
  1/window Hz slower than 60 Hz so that its phase against the bridge's 60 Hz relay tick
  slides through one whole tick during the window (two 60 Hz loops otherwise keep
  whatever phase they start with, and the figure would depend on luck).
* slow client: the same stream while the slow client sits on ``cloud``; bridge RSS from
  /proc (peak during the window − before the slow client connected), the fast clients'
  p99 relative to the stream run, and once a second the slow client's outbox as the
  bridge's /api/clients shows it (it disappears when the bridge drops the client).
* max deliveries: records channels at 120 Hz (every 60 Hz relay tick has new data), more
  channels each step, until messages delivered per second stop growing (bounded steps).

CPU of the bridge, device and client processes comes from /proc/PID/stat over each window.
"""

from __future__ import annotations

from bench.common import (Child as _Child, Replies as _Replies, Settler, cpu_stall_us, git_revision, judge,
                          leftover_segments, percentile, remove_segments, round_figures, rss_mb,
                          watchdog)

import sys

if __name__ == "__main__" and sys.argv[1:3] == ["--role", "echo"]:
    # the echo server must be green before flask, socketio or sockets are imported (as cli.py)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EventletDeprecationWarning: known, see DESIGN.md
        import eventlet

        eventlet.monkey_patch()

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIELDS = {"t": "f8", "x": "f4", "y": "f4"}   # 16-byte telemetry record
FRAME_SHAPE = (20_000, 3)                    # 240 KB of f4: the heavy channel
FRAME_CHANNEL = "cloud"
RELAY_RATE = 60.0                            # the bridge's --rate (its default)
STREAM_CHANNELS = 4
STREAM_HZ = 60
FRAME_EVERY = 2                              # cloud at 60/2 = 30 Hz
CLIENT_PROCS = 2
CLIENTS_PER_PROC = 5
LADDER_HZ = 120                              # > relay rate: every tick has new records
RTT_WARMUP = 200
START_TIMEOUT = 30.0                         # a fresh interpreter importing flask/numpy on 2 busy cores
CALL_TIMEOUT = 20.0                          # any other request to a child
GRACE_S = 0.4                                # after a window: messages still in flight
# what a ladder step must keep to count as sustained: no records lost, a median latency that has
# not run away (p50, not p99: a scheduling spike from elsewhere must not end the ladder)
SUSTAINED = {"delivered_ratio": 0.99, "latency_p50_ms": 50.0}

TARGETS: dict[str, dict[str, float]] = {
    "command_rtt_ratio": {"max": 1.5},
    "command_rtt_p99_ms": {"max": 5.0},
    "stream_latency_p50_ms": {"max": 5.0},
    "stream_latency_p99_ms": {"max": 15.0},
    "delivered_ratio": {"min": 0.99},
    "slow_client_rss_growth_mb": {"max": 20.0},
    "slow_client_p99_ratio": {"max": 1.5},
}

MODES = {
    "quick": dict(rtt_calls=1000, rtt_blocks=4, stream_s=8.0, slow_s=10.0, warm_s=0.7,
                  step_s=1.5, warm_step_s=0.5, steps=(8, 16, 32, 64), budget_s=150.0, settle_s=3.0,
                  deadline_s=40.0),
    "full": dict(rtt_calls=5000, rtt_blocks=10, stream_s=30.0, slow_s=30.0, warm_s=1.5,
                 step_s=5.0, warm_step_s=1.0, steps=(8, 16, 32, 48, 64, 96, 128), budget_s=600.0,
                 settle_s=30.0, deadline_s=None),
}
MEASUREMENTS = ("rtt", "stream", "slow", "max")


def log(message: str) -> None:
    print(f"bench.relay: {message}", file=sys.stderr, flush=True)


# ======================================================================================
# child roles: python -m bench.relay --role ROLE JSON-ARGS
# Each reads JSON requests on stdin, answers JSON lines on stdout, exits on EOF or after
# its timeout (a watchdog), so nothing outlives a parent that died.
# ======================================================================================

def _watchdog(seconds: float, on_expiry: Any = None) -> None:
    watchdog(seconds, on_expiry, label="bench.relay child")


def role_echo(args: dict[str, Any]) -> None:
    """A bare Flask-SocketIO echo server in the bridge's configuration (already green)."""
    import eventlet.patcher

    real_threading = eventlet.patcher.original("threading")
    real_time = eventlet.patcher.original("time")
    replies = _Replies()

    def stdin_eof() -> None:  # a real thread: the parent closing our stdin ends us
        try:
            while os.read(0, 4096):
                pass
        finally:
            os._exit(0)

    def expire() -> None:
        real_time.sleep(args["timeout"])
        os._exit(3)

    real_threading.Thread(target=stdin_eof, daemon=True).start()
    real_threading.Thread(target=expire, daemon=True).start()

    from flask import Flask
    from flask_socketio import SocketIO

    from bridge import netio

    app = Flask("bench-echo", static_folder=None)
    sio = SocketIO(app, async_mode="eventlet", max_http_buffer_size=256 * 1024, ping_interval=10,
                   ping_timeout=10, logger=False, engineio_logger=False)  # as bridge.server.Bridge

    @sio.on("echo")
    def echo(payload: Any = None) -> Any:
        return payload

    sock, port = netio.listen("127.0.0.1", 0)
    run, _stop = netio.server("eventlet", sock, app)
    replies.send(ok=True, port=port)
    run()


def role_device(args: dict[str, Any]) -> None:
    import numpy as np

    import device_agent

    replies = _Replies()
    mon = device_agent.start(args["name"], mon="bridge=0")
    _watchdog(args["timeout"], mon.close)
    try:
        chans = [mon.records(f"s{i}", FIELDS) for i in range(args["channels"])]
        cloud = mon.frame(FRAME_CHANNEL, FRAME_SHAPE, "f4")
        frame = np.random.default_rng(0).random(FRAME_SHAPE, dtype=np.float32)

        @mon.command
        def echo(value: float) -> float:
            """Return ``value``."""
            return value

        replies.send(ok=True, ready=True, pid=os.getpid())
        for line in sys.stdin:
            req = json.loads(line)
            op = req.get("op")
            try:
                if op == "url":
                    replies.send(ok=True, url=mon.wait_url(req.get("timeout", START_TIMEOUT)))
                elif op == "run":
                    replies.send(ok=True, **_device_run(req, chans, cloud, frame))
                elif op == "quit":
                    break
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception:
                replies.send(ok=False, error=traceback.format_exc())
    finally:
        mon.close()


def _device_run(req: dict[str, Any], chans: list[Any], cloud: Any, frame: Any) -> dict[str, Any]:
    """Publish the first ``channels`` records channels every ``period`` s (and cloud every
    ``frame_every`` ticks) until ``stop_at``; report each channel's sequence window [lo, hi)
    of the records stamped in [t0, t1)."""
    active = chans[: req["channels"]]
    period = req["period"]
    frame_every = req.get("frame_every") or 0
    t0, t1, stop_at = req["t0"], req["t1"], req["stop_at"]
    lo: dict[str, int] | None = None
    hi: dict[str, int] | None = None
    ticks = late = frames = 0
    wall = time.time
    mono = time.monotonic
    next_tick = mono()
    while True:
        now = wall()
        if now >= stop_at:
            break
        if lo is None and now >= t0:
            lo = {c.name: c.count for c in active}
        if hi is None and now >= t1:
            hi = {c.name: c.count for c in active}
        x = math.sin(now)
        for c in active:
            c.publish(wall(), x, -x)
        if frame_every and ticks % frame_every == 0:
            frame[0, 0] = now
            cloud.publish(frame)
            frames += 1
        ticks += 1
        next_tick += period
        delay = next_tick - mono()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
            if delay < -period:
                next_tick = mono()
    if lo is None or hi is None:
        raise RuntimeError("the publishing window was missed (t0/t1 already past stop_at)")
    return {"windows": {n: [lo[n], hi[n]] for n in lo}, "ticks": ticks, "late_ticks": late, "frames": frames}


def role_clients(args: dict[str, Any]) -> None:
    import asyncio

    replies = _Replies()
    _watchdog(args["timeout"])
    asyncio.run(_clients_main(replies))


async def _clients_main(replies: _Replies) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    groups: dict[str, list[Any]] = {"sio": [], "raw": []}   # kind -> clients
    rtt: dict[str, Any] = {}
    subscribed: dict[str, list[str]] = {"sio": [], "raw": []}

    async def op_connect(req: dict[str, Any]) -> dict[str, Any]:
        kind = req.get("kind", "sio")
        for _ in range(req["n"]):
            c = SioClient() if kind == "sio" else RawClient()
            await c.connect(req["port"], req["token"])
            groups[kind].append(c)
        return {}

    async def op_subscribe(req: dict[str, Any]) -> dict[str, Any]:
        kind = req.get("kind", "sio")
        await op_unsubscribe(req)
        acks = await asyncio.gather(*(c.call("subscribe", {"channels": req["channels"]}) for c in groups[kind]))
        bad = [a for a in acks if not a.get("ok")]
        if bad:
            raise RuntimeError(f"subscribe refused: {bad[0]}")
        subscribed[kind] = list(req["channels"])
        return {}

    async def op_unsubscribe(req: dict[str, Any]) -> dict[str, Any]:
        kind = req.get("kind", "sio")
        if subscribed[kind]:
            channels = subscribed[kind]
            await asyncio.gather(*(c.call("unsubscribe", {"channels": channels}) for c in groups[kind]))
            subscribed[kind] = []
        return {}

    async def op_report(req: dict[str, Any]) -> dict[str, Any]:
        t0, t1, windows = req["t0"], req["t1"], req["windows"]
        out = []
        for c in groups[req.get("kind", "sio")]:
            taken, c.entries[:] = list(c.entries), []
            lat = []
            slices = []  # whole seconds into the window, per sample
            records = {ch: 0 for ch in windows}
            missed = messages = 0
            for recv, t, ch, a, b, miss in taken:
                if t is not None and t0 <= t < t1:
                    lat.append(round((recv - t) * 1000, 4))
                    slices.append(int(t - t0))
                    messages += 1
                w = windows.get(ch)
                if w is not None:
                    records[ch] += max(0, min(b + 1, w[1]) - max(a, w[0]))
                missed += miss
            out.append({"lat_ms": lat, "slice": slices, "messages": messages, "records": records, "missed": missed})
        return {"clients": out}

    async def op_rtt_connect(req: dict[str, Any]) -> dict[str, Any]:
        c = SioClient()
        await c.connect(req["port"], req.get("token", ""))
        rtt[req["key"]] = c
        return {}

    async def op_rtt(req: dict[str, Any]) -> dict[str, Any]:
        c = rtt[req["key"]]
        event = req["event"]
        clock = time.perf_counter_ns
        samples = []
        base = req.get("base", 0)
        for i in range(req["n"]):
            value = float(base + i)
            payload = {"name": "echo", "args": {"value": value}}
            a = clock()
            ack = await c.call(event, payload)
            b = clock()
            expected = payload if event == "echo" else {"ok": True, "result": value}
            if ack != expected:
                raise RuntimeError(f"{event}: unexpected acknowledgement {ack!r}")
            samples.append((b - a) / 1000)
        return {"samples_us": samples}

    async def op_rtt_close(req: dict[str, Any]) -> dict[str, Any]:
        for c in rtt.values():
            await c.disconnect()
        rtt.clear()
        return {}

    ops = {"connect": op_connect, "subscribe": op_subscribe, "unsubscribe": op_unsubscribe,
           "report": op_report, "rtt_connect": op_rtt_connect, "rtt": op_rtt, "rtt_close": op_rtt_close}
    replies.send(ok=True, ready=True, pid=os.getpid())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            try:
                replies.send(ok=True, **await ops[req["op"]](req))
            except Exception:
                replies.send(ok=False, error=traceback.format_exc())
    finally:
        for c in groups["sio"] + groups["raw"] + list(rtt.values()):
            try:
                await asyncio.wait_for(c.disconnect(), 2)
            except Exception:
                pass


class SioClient:
    """``socketio.AsyncClient`` over websocket, logging every ``data`` message."""

    def __init__(self) -> None:
        import socketio

        self.entries: list[tuple] = []
        self.sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
        clock = time.time
        append = self.entries.append

        async def on_data(msg: dict[str, Any]) -> None:
            seq = msg["seq"]
            append((clock(), msg["t"], msg["channel"], seq[0], seq[1], msg["missed"]))

        self.sio.on("data", on_data)

    async def connect(self, port: int, token: str) -> None:
        await self.sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"], auth={"token": token},
                               wait_timeout=10)

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=10)

    async def disconnect(self) -> None:
        await self.sio.disconnect()


class RawClient:
    """A lean Socket.IO v5 / Engine.IO v4 websocket client (asyncio protocol): answers
    pings, matches acks, and logs each ``data`` message when its last binary attachment
    has arrived. A third to a sixth of AsyncClient's CPU per message, so that the throughput
    ladder measures the bridge rather than the clients (see docs/performance.md)."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []
        self.transport: Any = None
        self.buf = bytearray()
        self.upgraded = False
        self.pending: dict[int, Any] = {}
        self.ids = 0
        self.header: Any = None
        self.attachments = 0
        self.connected: Any = None
        self.closed = False

    async def connect(self, port: int, token: str) -> None:
        import asyncio
        import base64

        loop = asyncio.get_running_loop()
        self.connected = loop.create_future()
        self.token = token
        self.transport, _ = await loop.create_connection(lambda: _RawProtocol(self), "127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.wait_for(self.connected, 10)

    def _send(self, text: str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(ws_text_frame(text))

    async def call(self, event: str, data: Any) -> Any:
        import asyncio

        self.ids += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = fut
        self._send(f"42{self.ids}" + json.dumps([event, data], separators=(",", ":")))
        return await asyncio.wait_for(fut, 10)

    async def disconnect(self) -> None:
        if self.transport is not None and not self.closed:
            self._send("41")
            self.transport.close()
        self.closed = True

    def feed(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in bytes(buf[:end]).split(b"\r\n", 1)[0]:
                self._fail(RuntimeError(f"websocket handshake failed: {bytes(buf[:200])!r}"))
                return
            del buf[: end + 4]
            self.upgraded = True
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size, head = b1 & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2: pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2: pos + 10], "big"), 10
            if n - pos < head + size:
                break
            start = pos + head
            pos = start + size
            opcode = b0 & 0x0F
            if opcode == 2:
                self._attachment()
            elif opcode == 1:
                self._text(bytes(buf[start:pos]).decode())
            elif opcode == 8:
                self.closed = True
            elif opcode == 9:  # websocket ping: answer pong with the same payload
                self.transport.write(ws_frame(bytes(buf[start:pos]), 0xA))
        del buf[:pos]

    def _attachment(self) -> None:
        self.attachments -= 1
        if self.attachments == 0 and self.header is not None:
            msg, self.header = self.header, None
            if msg[0] == "data":
                d = msg[1]
                seq = d["seq"]
                self.entries.append((time.time(), d["t"], d["channel"], seq[0], seq[1], d["missed"]))

    def _text(self, text: str) -> None:
        kind = text[:2]
        if kind == "45" or kind == "46":  # binary event / ack: "45N-[...]"
            dash = text.index("-")
            self.attachments = int(text[2:dash])
            body = text[dash + 1:]
            if kind == "45":
                self.header = json.loads(body[body.index("["):])
        elif kind == "43":  # ack: "43<id>[...]"
            i = 2
            while text[i].isdigit():
                i += 1
            fut = self.pending.pop(int(text[2:i]), None)
            if fut is not None and not fut.done():
                fut.set_result(json.loads(text[i:])[0])
        elif text == "2":
            self._send("3")
        elif kind == "40":
            if not self.connected.done():
                self.connected.set_result(True)
        elif text[:1] == "0":
            self._send("40" + json.dumps({"token": self.token}))
        elif kind == "44":
            self._fail(RuntimeError(f"connection refused: {text}"))

    def _fail(self, exc: BaseException) -> None:
        if self.connected is not None and not self.connected.done():
            self.connected.set_exception(exc)
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _RawProtocol(asyncio.Protocol):
    def __init__(self, client: RawClient) -> None:
        self.client = client

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.client.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Any) -> None:
        self.client.closed = True
        self.client._fail(ConnectionError("connection lost"))

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def ws_frame(data: bytes, opcode: int) -> bytes:
    """One masked client frame."""
    n = len(data)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
    masked = (int.from_bytes(data, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + masked


def ws_text_frame(text: str) -> bytes:
    return ws_frame(text.encode(), 0x1)


def role_slow(args: dict[str, Any]) -> None:
    """A websocket client that subscribes and then never reads (a hung browser tab)."""
    replies = _Replies()
    _watchdog(args["timeout"])
    ws = RawWebSocket("127.0.0.1", args["port"])
    try:
        opening = ws.read_text()
        if not opening.startswith("0"):
            raise RuntimeError(f"expected an Engine.IO open packet, got {opening[:80]!r}")
        ws.send_text("40" + json.dumps({"token": args["token"]}))
        while True:
            text = ws.read_text()
            if text.startswith("40"):
                sid = json.loads(text[2:]).get("sid")
                break
            if text.startswith("44"):
                raise RuntimeError(f"connection refused: {text}")
        ws.send_text("420" + json.dumps(["subscribe", {"channels": args["channels"]}]))
        replies.send(ok=True, ready=True, sid=sid, pid=os.getpid())
        for line in sys.stdin:  # never read the socket again; wait for "quit" or EOF
            if json.loads(line).get("op") == "quit":
                break
    finally:
        ws.close()


class RawWebSocket:
    """Just enough of RFC 6455 for the slow client: handshake, masked text frames out,
    unfragmented frames in."""

    def __init__(self, host: str, port: int) -> None:
        import base64
        import socket

        self.sock = socket.create_connection((host, port), timeout=START_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket handshake failed: {head[:200]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_text(self) -> str:
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._take(2), "big")
            elif n == 127:
                n = int.from_bytes(self._take(8), "big")
            data = self._take(n)
            opcode = b0 & 0x0F
            if opcode == 1:
                return data.decode()
            if opcode == 8:
                raise ConnectionError("the server closed the websocket")

    def send_text(self, text: str) -> None:
        self.sock.sendall(ws_text_frame(text))

    def close(self) -> None:
        self.sock.close()


ROLES = {"echo": role_echo, "device": role_device, "clients": role_clients, "slow": role_slow}


# ======================================================================================
# the parent
# ======================================================================================

class Child(_Child):
    """A child process speaking JSON lines (bench.common.Child); stderr goes to ours."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str] | None = None, json_io: bool = True) -> None:
        super().__init__(label, argv, env, json_io, log=log, call_timeout=CALL_TIMEOUT)


def spawn_role(role: str, label: str, timeout: float, **args: Any) -> Child:
    argv = [sys.executable, "-m", "bench.relay", "--role", role, json.dumps({"timeout": timeout, **args})]
    env = {k: v for k, v in os.environ.items() if k != "MON"}
    return Child(label, argv, env)


class Bridge:
    """The bridge, started the way a device starts it, under coreutils ``timeout``."""

    def __init__(self, name: str, token: str, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MON"}
        env["MONBRIDGE_TOKEN"] = token
        argv = ["timeout", "-k", "5", str(int(timeout)), sys.executable, "-m", "bridge", "serve",
                "--attach", name, "--host", "127.0.0.1", "--port", "0", "--rate", f"{RELAY_RATE:g}",
                "--async-mode", "eventlet", "--exit-with-device", "--command-rate", "100000"]
        self.child = Child("bridge", argv, env, json_io=False)
        self.pid: int | None = None

    def find_pid(self, timeout: float = 10.0) -> int:
        tpid = self.child.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{tpid}/task/{tpid}/children") as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            if kids:
                self.pid = int(kids[0])
                return self.pid
            if self.child.proc.poll() is not None:
                raise RuntimeError(f"the bridge exited (code {self.child.proc.returncode})")
            time.sleep(0.02)
        raise TimeoutError("the bridge process did not appear")

    def stop(self, grace: float = 8.0) -> None:
        p = self.child.proc
        if p.poll() is None and self.pid is not None:
            try:
                p.wait(grace)  # --exit-with-device: it leaves when the device closes
            except subprocess.TimeoutExpired:
                log("the bridge did not exit with the device; sending SIGTERM")
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.terminate()  # timeout(1) forwards it
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                if self.pid is not None:
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait(3)


# -- /proc --------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def http_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


# -- the run ------------------------------------------------------------------------------

class Rig:
    """Device, bridge, echo server and client processes for one run."""

    def __init__(self, cfg: dict[str, Any], only: set[str], stream_clients: str = "sio", settle: bool = True) -> None:
        self.cfg = cfg
        # --quick must end in under 50 s even on a busy machine: past ``deadline_s`` (from the
        # start) nothing waits for quiet and the throughput ladder takes no further step
        self.deadline = time.perf_counter() + cfg["deadline_s"] if cfg["deadline_s"] else None
        self.settler = Settler(cfg["settle_s"] if settle else 0.0, log,
                               self.deadline - 12.0 if self.deadline is not None else None)
        self.only = only
        self.stream_kind = stream_clients
        self.raw_connected = False
        self.name = f"bench-relay-{os.getpid()}"
        self.token = secrets.token_urlsafe(16)
        self.limit = cfg["budget_s"]
        self.device: Child | None = None
        self.bridge: Bridge | None = None
        self.echo: Child | None = None
        self.clients: list[Child] = []
        self.slow: Child | None = None
        self.port = 0
        self.echo_port = 0

    def start(self) -> None:
        cfg, t = self.cfg, self.limit
        channels = max(cfg["steps"]) if "max" in self.only else STREAM_CHANNELS
        log(f"starting device {self.name!r} ({channels} records channels + {FRAME_CHANNEL!r}), bridge, "
            f"{'echo server, ' if 'rtt' in self.only else ''}{CLIENT_PROCS} client processes")
        self.device = spawn_role("device", "device", t, name=self.name, channels=channels)
        self.bridge = Bridge(self.name, self.token, t)
        if "rtt" in self.only:
            self.echo = spawn_role("echo", "echo server", t)
        self.clients = [spawn_role("clients", f"clients{i}", t) for i in range(CLIENT_PROCS)]
        self.device.recv(START_TIMEOUT)
        self.bridge.find_pid()
        url = self.device.call(START_TIMEOUT + 5, op="url", timeout=START_TIMEOUT)["url"]
        if not url:
            raise RuntimeError("the bridge never published its URL")
        self.port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        if self.echo is not None:
            self.echo_port = self.echo.recv(START_TIMEOUT)["port"]
        deadline = time.monotonic() + START_TIMEOUT
        want = channels + 1
        while True:  # the bridge sees the device online with every channel
            try:
                health = http_json(self.port, "/api/health")
                n = len(http_json(self.port, "/api/channels")["channels"])
                if health["device"]["status"] == "online" and n >= want:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the bridge did not attach to the device")
            time.sleep(0.05)
        for c in self.clients:
            c.recv(START_TIMEOUT)
        for c in self.clients:
            c.send(op="connect", kind="sio", port=self.port, token=self.token, n=CLIENTS_PER_PROC)
        for c in self.clients:
            c.recv(START_TIMEOUT)
        log(f"bridge pid {self.bridge.pid} on port {self.port}; {CLIENT_PROCS * CLIENTS_PER_PROC} clients connected")

    def connect_raw(self) -> None:
        if self.raw_connected:
            return
        for c in self.clients:
            c.send(op="connect", kind="raw", port=self.port, token=self.token, n=CLIENTS_PER_PROC)
        for c in self.clients:
            c.recv(START_TIMEOUT)
        self.raw_connected = True

    def close(self) -> None:
        for child in ([self.slow] if self.slow else []) + self.clients + ([self.echo] if self.echo else []):
            try:
                child.stop()
            except Exception as exc:
                log(f"stopping {child.label}: {exc}")
        if self.device is not None:
            self.device.stop(grace=10.0)
        if self.bridge is not None:
            self.bridge.stop()

    # -- command round trip ---------------------------------------------------------------

    def rtt(self) -> dict[str, Any]:
        cfg = self.cfg
        c0 = self.clients[0]
        c0.call(op="rtt_connect", key="echo", port=self.echo_port)
        c0.call(op="rtt_connect", key="command", port=self.port, token=self.token)
        per_block = cfg["rtt_calls"] // cfg["rtt_blocks"]
        log(f"round trips: {RTT_WARMUP} warm-up + {cfg['rtt_blocks']} alternating blocks of {per_block} "
            f"calls to the echo server and through the bridge")
        samples: dict[str, list[float]] = {"echo": [], "command": []}
        for key in ("echo", "command"):
            c0.call(op="rtt", key=key, event=key, n=RTT_WARMUP, base=-RTT_WARMUP)
        self.settler()
        cpu0 = cpu_seconds(self.bridge.pid)
        t0 = time.perf_counter()
        for b in range(cfg["rtt_blocks"]):
            order = ("echo", "command") if b % 2 == 0 else ("command", "echo")
            for key in order:
                got = c0.call(60.0, op="rtt", key=key, event=key, n=per_block, base=b * per_block)
                samples[key] += got["samples_us"]
        bridge_cpu = 100 * (cpu_seconds(self.bridge.pid) - cpu0) / (time.perf_counter() - t0)
        c0.call(op="rtt_close")
        out: dict[str, Any] = {"rtt_calls": len(samples["command"])}
        for key, prefix in (("echo", "echo_rtt"), ("command", "command_rtt")):
            s = sorted(samples[key])
            out[f"{prefix}_p50_ms"] = percentile(s, 50) / 1000
            out[f"{prefix}_p99_ms"] = percentile(s, 99) / 1000
            out[f"{prefix}_max_ms"] = s[-1] / 1000
        out["command_rtt_ratio"] = out["command_rtt_p50_ms"] / out["echo_rtt_p50_ms"]
        out["rtt_bridge_cpu_pct"] = bridge_cpu  # bridge share during both kinds of blocks
        return out

    # -- streaming windows ----------------------------------------------------------------

    def window(self, channels: int, hz: int, frame_every: int, seconds: float, warm: float,
               rss_baseline: float | None = None, kind: str = "sio", watch_sid: str | None = None) -> dict[str, Any]:
        """Subscribe the fast clients to s0..s{channels-1}; publish; measure one window."""
        names = [f"s{i}" for i in range(channels)]
        self.settler()
        for c in self.clients:
            c.send(op="subscribe", kind=kind, channels=names)
        for c in self.clients:
            c.recv()
        t0 = time.time() + warm
        t1 = t0 + seconds
        stop_at = t1 + 0.1
        if hz == RELAY_RATE:
            # Two 60 Hz loops on one monotonic clock keep whatever phase they start with, and
            # the latency depends on that phase (0-16.7 ms of waiting for the next relay tick).
            # Run the device 1/window Hz slow so the phase slides through one whole relay
            # period during the window: every run samples every phase alike.
            period = (1 / RELAY_RATE) / (1 - 1 / (RELAY_RATE * seconds))
        else:
            period = 1 / hz
        self.device.send(op="run", channels=channels, period=period, frame_every=frame_every,
                         t0=t0, t1=t1, stop_at=stop_at)
        pids = {"bridge": self.bridge.pid, "device": self.device.pid}
        pids.update({c.label: c.pid for c in self.clients})
        sleep_until(t0)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        stall0 = cpu_stall_us()
        rss = [rss_mb(self.bridge.pid)]
        watch: list[tuple[float, int | None]] = []   # (s into the window, outbox or None once gone)
        self.watched_row: dict[str, Any] | None = None
        next_watch = t0 + 1.0
        while time.time() < t1:
            time.sleep(min(0.25, max(0.0, t1 - time.time())))
            if rss_baseline is not None:
                rss.append(rss_mb(self.bridge.pid))
            if watch_sid is not None and time.time() >= next_watch:
                next_watch += 1.0
                rows = {r["id"]: r for r in http_json(self.port, "/api/clients")["clients"]}
                row = rows.get(watch_sid)
                if row is not None:
                    self.watched_row = row
                watch.append((round(time.time() - t0, 2), row["queued"] if row else None))
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        stall1 = cpu_stall_us()
        span = time.time() - t0
        dev = self.device.recv(seconds + warm + CALL_TIMEOUT)
        time.sleep(GRACE_S)
        rss.append(rss_mb(self.bridge.pid))
        for c in self.clients:
            c.send(op="report", kind=kind, t0=t0, t1=t1, windows=dev["windows"])
        reports = [c.recv() for c in self.clients]
        for c in self.clients:
            c.send(op="unsubscribe", kind=kind)
        for c in self.clients:
            c.recv()
        per_client = [r for rep in reports for r in rep["clients"]]
        published = sum(hi - lo for lo, hi in dev["windows"].values())
        lat = sorted(x for r in per_client for x in r["lat_ms"])
        by_slice: dict[int, list[float]] = {}
        for r in per_client:
            for x, k in zip(r["lat_ms"], r["slice"]):
                by_slice.setdefault(k, []).append(x)
        slice_p99 = [percentile(sorted(v), 99) for _, v in sorted(by_slice.items())]
        ratios = [sum(r["records"].values()) / published if published else math.nan for r in per_client]
        cpu = {k: 100 * (cpu1[k] - cpu0[k]) / span for k in pids}
        client_cpu = [cpu[c.label] for c in self.clients]
        out = {
            "channels": channels,
            "hz": hz,
            "window_s": seconds,
            "published_records": published,
            "messages_per_s": sum(r["messages"] for r in per_client) / seconds,
            "latency_p50_ms": percentile(lat, 50),
            "latency_p99_ms": percentile(lat, 99),
            "latency_max_ms": lat[-1] if lat else math.nan,
            "latency_samples": len(lat),
            "latency_p99_1s_median_ms": statistics.median(slice_p99) if slice_p99 else math.nan,
            "slice_p99": slice_p99,
            "cpu_pressure_pct": (100 * (stall1 - stall0) / 1e6 / span
                                 if stall0 is not None and stall1 is not None else math.nan),
            "lat": lat,
            "delivered_ratio": min(ratios),
            "missed": sum(r["missed"] for r in per_client),
            "bridge_cpu_pct": cpu["bridge"],
            "device_cpu_pct": cpu["device"],
            "client_cpu_pct": max(client_cpu),          # the busiest client process
            "client_cpu_pct_total": sum(client_cpu),
            "device_late_ticks": dev["late_ticks"],
            "frames_published": dev["frames"],
            "bridge_rss_mb": rss,
        }
        if watch_sid is not None:
            out["watch"] = watch
        if rss_baseline is not None:
            out["rss_growth_peak_mb"] = max(rss) - rss_baseline
            out["rss_growth_end_mb"] = rss[-1] - rss_baseline
        return out

    def stream_window(self, which: str) -> dict[str, Any]:
        """One half of the stream measurement; the halves run before and after the slow client."""
        cfg = self.cfg
        seconds = cfg["stream_s"] / 2
        log(f"stream ({which}): {STREAM_CHANNELS} records channels at {STREAM_HZ} Hz (+ {FRAME_CHANNEL} at "
            f"{STREAM_HZ // FRAME_EVERY} Hz, unsubscribed) to {CLIENT_PROCS * CLIENTS_PER_PROC} clients, {seconds} s")
        if self.stream_kind == "raw":
            self.connect_raw()
        return self.window(STREAM_CHANNELS, STREAM_HZ, FRAME_EVERY, seconds, cfg["warm_s"], kind=self.stream_kind)

    @staticmethod
    def stream_figures(halves: list[dict[str, Any]]) -> dict[str, Any]:
        """Pool the halves' samples; CPU figures are time-weighted means."""
        lat = sorted(x for w in halves for x in w["lat"])
        span = sum(w["window_s"] for w in halves)

        def mean(key: str) -> float:
            return sum(w[key] * w["window_s"] for w in halves) / span

        return {
            "stream_latency_p50_ms": percentile(lat, 50),
            "stream_latency_p99_ms": percentile(lat, 99),
            "stream_latency_max_ms": lat[-1] if lat else math.nan,
            "stream_latency_samples": len(lat),
            "stream_latency_p99_halves_ms": [w["latency_p99_ms"] for w in halves],  # before, after the slow client
            # p99 of each second of the window, median over the seconds: what a burst of load from
            # elsewhere on the machine (one bad second) does not move
            "stream_latency_p99_1s_median_ms": statistics.median(x for w in halves for x in w["slice_p99"]),
            "stream_cpu_pressure_pct": mean("cpu_pressure_pct"),
            "delivered_ratio": min(w["delivered_ratio"] for w in halves),
            "stream_messages_per_s": mean("messages_per_s"),
            "stream_missed": sum(w["missed"] for w in halves),
            "stream_window_s": span,
            "bridge_cpu_pct": mean("bridge_cpu_pct"),
            "device_cpu_pct": mean("device_cpu_pct"),
            "client_cpu_pct": max(w["client_cpu_pct"] for w in halves),
            "client_cpu_pct_total": mean("client_cpu_pct_total"),
            "bridge_rss_mb": halves[0]["bridge_rss_mb"][-1],
        }

    def slow_client(self) -> dict[str, Any]:
        cfg = self.cfg
        time.sleep(0.5)
        before = rss_mb(self.bridge.pid)
        log(f"slow client: a raw websocket on {FRAME_CHANNEL!r} ({FRAME_SHAPE[0]}×{FRAME_SHAPE[1]} f4 at "
            f"{STREAM_HZ // FRAME_EVERY} Hz) that never reads, beside the same stream, {cfg['slow_s']} s "
            f"(bridge RSS before: {before:.1f} MB)")
        self.slow = spawn_role("slow", "slow client", self.limit, port=self.port, token=self.token,
                               channels=[FRAME_CHANNEL])
        sid = self.slow.recv(START_TIMEOUT)["sid"]
        w = self.window(STREAM_CHANNELS, STREAM_HZ, FRAME_EVERY, cfg["slow_s"], cfg["warm_s"], rss_baseline=before,
                        kind=self.stream_kind, watch_sid=sid)
        gone = [t for t, q in w["watch"] if q is None]
        rows = http_json(self.port, "/api/clients")["clients"]
        mine = [r for r in rows if r.get("id") == sid]
        slow_row = mine[0] if mine else None
        last_row = slow_row or self.watched_row  # the last the bridge showed of it
        sent = skipped = None
        if last_row:
            for s in last_row.get("subscriptions", []):
                if s["channel"] == FRAME_CHANNEL:
                    sent, skipped = s["sent"], s["skipped"]
        self.slow.stop()
        self.slow = None
        out = {
            "slow_client_rss_growth_mb": w["rss_growth_peak_mb"],
            "slow_client_rss_growth_end_mb": w["rss_growth_end_mb"],
            "slow_client_rss_before_mb": before,
            "slow_client_stream_p50_ms": w["latency_p50_ms"],
            "slow_client_stream_p99_ms": w["latency_p99_ms"],
            "slow_client_stream_p99_1s_median_ms": w["latency_p99_1s_median_ms"],
            "slow_client_cpu_pressure_pct": w["cpu_pressure_pct"],
            "slow_client_delivered_ratio": w["delivered_ratio"],
            "slow_client_bridge_cpu_pct": w["bridge_cpu_pct"],
            "slow_client_connected_at_end": slow_row is not None,
            "slow_client_dropped_after_s": gone[0] if gone else None,  # into the window, ±1 s
            "slow_client_outbox": [q for _, q in w["watch"]],           # engine.io packets queued, once a second
            "slow_client_queued_at_end": slow_row.get("queued") if slow_row else None,
            "slow_client_frames_sent": sent,
            "slow_client_frames_skipped": skipped,
            "slow_client_frames_published": w["frames_published"],
        }
        return out

    def max_deliveries(self) -> dict[str, Any]:
        cfg = self.cfg
        n_clients = CLIENT_PROCS * CLIENTS_PER_PROC
        log(f"max deliveries: records channels at {LADDER_HZ} Hz to {n_clients} clients, "
            f"channels {list(cfg['steps'])}, {cfg['step_s']} s each, until deliveries/s stop growing")
        self.connect_raw()
        steps = []
        best: dict[str, Any] | None = None   # the highest rate sustained: no loss, bounded latency
        peak: dict[str, Any] | None = None   # the highest rate seen at all
        stopped = ""
        for k in cfg["steps"]:
            if steps and self.deadline is not None and time.perf_counter() + 3 * cfg["step_s"] > self.deadline:
                stopped = f"time budget of --quick, before {k} channels"
                break
            w = self.window(k, LADDER_HZ, 0, cfg["step_s"], cfg["warm_step_s"], kind="raw")
            w["offered_per_s"] = n_clients * k * RELAY_RATE
            steps.append(w)
            log(f"  {k:3d} channels: {w['messages_per_s']:8.0f} deliveries/s of {w['offered_per_s']:.0f}, "
                f"records delivered {100 * w['delivered_ratio']:.0f}%, p50 {w['latency_p50_ms']:.1f} ms, "
                f"p99 {w['latency_p99_ms']:.1f} ms, bridge CPU {w['bridge_cpu_pct']:.0f}%, "
                f"busiest client process {w['client_cpu_pct']:.0f}%")
            sustained = (w["delivered_ratio"] >= SUSTAINED["delivered_ratio"]
                         and w["latency_p50_ms"] <= SUSTAINED["latency_p50_ms"])
            grew = peak is None or w["messages_per_s"] > 1.05 * peak["messages_per_s"]
            if peak is None or w["messages_per_s"] > peak["messages_per_s"]:
                peak = w
            if sustained and (best is None or w["messages_per_s"] > best["messages_per_s"]):
                best = w
            if not sustained or not grew:
                if w["missed"] and w["client_cpu_pct"] < 90:
                    # clients that keep up were judged congested and skipped
                    stopped = f"bridge skipped clients as congested at {k} channels (records missed)"
                elif w["client_cpu_pct"] >= 90:
                    stopped = f"clients saturated at {k} channels"
                elif w["bridge_cpu_pct"] >= 90:
                    stopped = f"bridge CPU saturated at {k} channels"
                else:
                    why = ("records lost" if w["delivered_ratio"] < SUSTAINED["delivered_ratio"] else
                           "p50 latency" if w["latency_p50_ms"] > SUSTAINED["latency_p50_ms"] else "no growth")
                    stopped = (f"{why} at {k} channels with the bridge at {w['bridge_cpu_pct']:.0f}% CPU "
                               f"(bridge, clients and device share 2 cores)")
                break
        else:
            stopped = "not saturated by the largest step"
        if best is None:
            best = steps[0]
            stopped += "; even the first step was not sustained"
        return {
            "max_deliveries_per_s": best["messages_per_s"],
            "max_deliveries_channels": best["channels"],
            "max_deliveries_p99_ms": best["latency_p99_ms"],
            "max_deliveries_bridge_cpu_pct": best["bridge_cpu_pct"],
            "max_deliveries_client_cpu_pct": best["client_cpu_pct"],
            "max_deliveries_peak_per_s": peak["messages_per_s"] if peak else math.nan,  # with loss or late
            "max_deliveries_limited_by": stopped,
            "max_deliveries_steps": [
                {k: w[k] for k in ("channels", "offered_per_s", "messages_per_s", "delivered_ratio", "missed",
                                   "latency_p50_ms", "latency_p99_ms", "bridge_cpu_pct", "client_cpu_pct",
                                   "device_cpu_pct", "cpu_pressure_pct")}
                for w in steps
            ],
        }


def run(mode: str, only: set[str], stream_clients: str = "sio", settle: bool = True) -> dict[str, Any]:
    cfg = dict(MODES[mode])
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    stall_before = cpu_stall_us()
    rig = Rig(cfg, only, stream_clients, settle)
    figures: dict[str, Any] = {}
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - mark
        mark = now

    try:
        rig.start()
        lap("start")
        if "rtt" in only:
            figures.update(rig.rtt())
            lap("rtt")
        halves = []
        slow: dict[str, Any] = {}
        if "stream" in only or "slow" in only:
            halves.append(rig.stream_window("1 of 2"))
            lap("stream")
        if "slow" in only:
            slow = rig.slow_client()
            lap("slow")
        if "stream" in only or "slow" in only:
            halves.append(rig.stream_window("2 of 2"))
            figures.update(rig.stream_figures(halves))
            lap("stream")
        figures.update(slow)
        if "slow" in only:
            # against the pooled stream windows taken just before and just after: drifting
            # load from elsewhere on the machine affects both sides alike
            figures["slow_client_p99_ratio"] = figures["slow_client_stream_p99_ms"] / figures["stream_latency_p99_ms"]
            figures["slow_client_p99_ratio_1s_median"] = (figures["slow_client_stream_p99_1s_median_ms"]
                                                          / figures["stream_latency_p99_1s_median_ms"])
        if "max" in only:
            figures.update(rig.max_deliveries())
            lap("max")
    finally:
        rig.close()
        lap("stop")
        removed = remove_segments(f"monbridge.{rig.name}.")
        if removed:
            log(f"removed {len(removed)} segment(s) left by a killed device: {removed}")

    result: dict[str, Any] = {
        "bench": "relay",
        "quick": mode == "quick",
        "git": git_revision("bridge", "device_agent"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "clients": CLIENT_PROCS * CLIENTS_PER_PROC,
        "client_processes": CLIENT_PROCS,
        "relay_rate_hz": RELAY_RATE,
        "stream_clients": stream_clients,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
    }
    stall_after = cpu_stall_us()
    if stall_before is not None and stall_after is not None:
        # share of the run during which some runnable task waited for a CPU (Linux PSI)
        result["cpu_pressure_pct"] = 100 * (stall_after - stall_before) / 1e6 / (time.perf_counter() - started)
    result.update(figures)
    result["settle"] = rig.settler.report()
    result["phase_s"] = phases  # wall time of each part of the run
    result["targets"] = TARGETS
    result["pass"] = judge(result, TARGETS)
    result["leftover_segments"] = leftover_segments("monbridge.bench-relay-")
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--role"]:
        ROLES[argv[1]](json.loads(argv[2]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short windows (under 50 s in all, ~35-40 s)")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    ap.add_argument("--no-settle", action="store_true",
                    help="do not wait for other load on the machine to settle before each window")
    ap.add_argument("--stream-clients", choices=("sio", "raw"), default="sio",
                    help="client kind for the stream and slow-client windows: socketio.AsyncClient (default) "
                         "or the lean raw websocket client the max-deliveries ladder uses (a diagnostic)")
    args = ap.parse_args(argv)
    only = set(MEASUREMENTS)
    if args.only:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = only - set(MEASUREMENTS)
        if unknown:
            ap.error(f"unknown measurement(s) {sorted(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    result = round_figures(run("quick" if args.quick else "full", only, args.stream_clients, not args.no_settle))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key not in ("targets", "max_deliveries_steps"):
                print(f"{key:36} {value}")
    log(f"done in {result['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
