"""Bridge relay benchmark: the real bridge between a real device process and Socket.IO
clients, side by side with a bare Flask-SocketIO server in the same configuration.

    python -m bench.relay [--quick] [--json] [--no-settle]

Measures, each against the bare server in the same run: the command round trip (vs its
``echo``; also vs ``echo_hop``, its echo through a helper process), stream latency, delivered
ratio and CPU per 1,000 deliveries (4 records channels at 60 Hz to 10 clients, vs the bare
server emitting the same messages itself), and the most deliveries per second sustained (the
same ladder against both); also the bridge's RSS and the other clients' latency while one
client stops reading; CPU of every process from /proc.
``--quick`` takes under 60 s, the full run about 3 minutes. The figures, the processes and
why it is done this way: docs/performance.md, "Bridge relay".
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:3] == ["--role", "bare"]:
    # the bare server must be green before anything imports threading or sockets (as cli.py)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EventletDeprecationWarning
        import eventlet

        eventlet.monkey_patch()

import asyncio
import contextlib
import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import threading
import time
from typing import Any

from bench.common import Clock, Settler, finish, git_revision, logger, percentile, windows_main
from bench.procs import Child, Replies, broadcast, cpu_seconds, cpu_stall_us, http_json, remove_segments, rss_mb, \
    serve, url_port, watchdog

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
STEP_OVERHEAD_S = 1.2                        # a ladder step besides its window: subscribe, grace, report
# a ladder step is sustained if no records were lost and the median latency has not run away
SUSTAINED = {"delivered_ratio": 0.99, "latency_p50_ms": 50.0}
LABEL = "bench.relay child"

TARGETS: dict[str, dict[str, float]] = {   # issue 12 §3
    "command_rtt_ratio": {"max": 1.2}, "command_rtt_p99_ms": {"max": 3.0},
    "stream_latency_p50_ms": {"max": 2.5}, "stream_latency_p99_ms": {"max": 6.0},
    "stream_latency_p50_ratio": {"max": 1.4}, "delivered_ratio": {"min": 0.99},
    "slow_client_rss_growth_mb": {"max": 20.0}, "slow_client_p99_ratio": {"max": 1.5},
    "max_deliveries_ratio": {"min": 0.8},
}

MODES = {
    "quick": dict(rtt_calls=1000, rtt_blocks=4, stream_s=8.0, slow_s=10.0, warm_s=0.7,
                  step_s=1.5, warm_step_s=0.5, steps=(32, 64), budget_s=150.0, settle_s=3.0,
                  deadline_s=54.0),
    "full": dict(rtt_calls=5000, rtt_blocks=10, stream_s=30.0, slow_s=30.0, warm_s=1.5,
                 step_s=5.0, warm_step_s=1.0, steps=(8, 16, 32, 48, 64, 96, 128), budget_s=600.0,
                 settle_s=30.0, deadline_s=None),
}


log = logger("bench.relay")


# -- child roles: python -m bench.relay --role ROLE JSON-ARGS ----------------------------

def role_bare(args: dict[str, Any]) -> None:
    """A bare Flask-SocketIO server in the bridge's configuration (already green): the ``echo``
    event returns its payload, ``echo_hop`` the answer of a helper process (HopEcho);
    ``subscribe`` / ``unsubscribe`` join / leave a room per channel; ``POST /bench/run``
    (device_run's request) emits records channels s0..sN to those rooms as the bridge would,
    on a background task; ``GET /bench/result`` is device_run's answer once it is done
    ({"running": true} until then)."""
    import traceback

    import numpy as np
    from eventlet.patcher import original

    replies = Replies()

    def watch() -> None:  # a real thread: anything on stdin ("quit", EOF) or the timeout ends us
        os._exit(0 if original("select").select([0], [], [], args["timeout"])[0] else 3)

    original("threading").Thread(target=watch, daemon=True).start()

    from flask import Flask, request
    from flask_socketio import SocketIO, join_room, leave_room

    from bridge import netio
    from bridge.protocol import encode_records
    from bridge.server import socketio_options

    app = Flask("bench-bare", static_folder=None)
    sio = SocketIO(app, **socketio_options("eventlet"))  # as bridge.server.Bridge
    hop = HopEcho()

    @sio.on("echo")
    def echo(payload: Any = None) -> Any:
        return payload

    @sio.on("echo_hop")
    def echo_hop(payload: Any = None) -> Any:
        return hop.call(payload)

    @sio.on("subscribe")
    def subscribe(msg: dict[str, Any]) -> dict[str, Any]:
        for ch in msg["channels"]:
            join_room(ch)
        return {"ok": True}

    @sio.on("unsubscribe")
    def unsubscribe(msg: dict[str, Any]) -> dict[str, Any]:
        for ch in msg["channels"]:
            leave_room(ch)
        return {"ok": True}

    class Channel:
        """device_run's view of a channel: each publish emits one record as the bridge's ``data`` message."""

        def __init__(self, name: str) -> None:
            self.name, self.count = name, 0
            self.record = np.zeros(1, np.dtype(list(FIELDS.items())))

        def publish(self, *values: float) -> None:
            self.record[0] = values
            sio.emit("data", encode_records(self.name, self.record, self.count, 0), to=self.name)
            self.count += 1

    chans: list[Channel] = []
    result: dict[str, Any] = {}

    @app.post("/bench/run")
    def bench_run() -> dict[str, Any]:
        req = request.get_json()
        chans.extend(Channel(f"s{i}") for i in range(len(chans), req["channels"]))
        result.clear()
        result["running"] = True

        def task() -> None:
            try:
                result.update(device_run(req, chans, None, None))
            except Exception:
                result["error"] = traceback.format_exc()
            result["running"] = False

        sio.start_background_task(task)
        return {"ok": True}

    @app.get("/bench/result")
    def bench_result() -> dict[str, Any]:
        return result

    sock, port = netio.listen("127.0.0.1", 0)
    run, _stop = netio.server("eventlet", sock, app)
    replies.send(ok=True, port=port)
    run()


class HopEcho:
    """The least a device hop costs: a helper process that answers each JSON message with the
    same JSON over a Unix socket pair (one wake-up of the helper, one of the server). It goes
    when the server does: its recv then returns nothing."""

    SCRIPT = ("import json, socket, sys\n"
              "s = socket.socket(fileno=int(sys.argv[1]))\n"
              "s.setblocking(True)\n"   # the server's end of the pair is green: non-blocking
              "while m := s.recv(65536):\n"
              "    s.send(json.dumps(json.loads(m)).encode())\n")

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(theirs.fileno())],
                                      pass_fds=(theirs.fileno(),))
        theirs.close()
        self._lock = threading.Lock()   # green in the bare server: one message on the pair at a time

    def call(self, payload: Any) -> Any:
        with self._lock:
            self._sock.sendall(json.dumps(payload).encode())
            return json.loads(self._sock.recv(65536))

    def close(self, timeout: float = 5.0) -> int:
        """Close our end; the helper then exits. Return its exit status."""
        self._sock.close()
        return self._proc.wait(timeout)


def role_device(args: dict[str, Any]) -> None:
    """Records channels s0..sN, the frame channel and an ``echo`` command; publishes on request."""
    import numpy as np

    import device_agent

    replies = Replies()
    mon = device_agent.start(args["name"], mon="bridge=0")
    watchdog(args["timeout"], mon.close, LABEL)
    try:
        chans = [mon.records(f"s{i}", FIELDS) for i in range(args["channels"])]
        shape = tuple(args.get("frame_shape", FRAME_SHAPE))
        cloud = mon.frame(FRAME_CHANNEL, shape, "f4")
        frame = np.random.default_rng(0).random(shape, dtype=np.float32)

        @mon.command
        def echo(value: float) -> float:
            """Return ``value``."""
            return value

        replies.send(ok=True, ready=True, pid=os.getpid())
        asyncio.run(serve(replies, {"url": lambda req: {"url": mon.wait_url(req.get("timeout", START_TIMEOUT))},
                                    "run": lambda req: device_run(req, chans, cloud, frame)}))
    finally:
        mon.close()


def device_run(req: dict[str, Any], chans: list[Any], cloud: Any, frame: Any) -> dict[str, Any]:
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
            rows = req.get("frame_rows")
            cloud.publish(frame[:rows] if rows else frame)
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


ROLES = {"bare": role_bare, "device": role_device}


# -- the clients ------------------------------------------------------------------------

# -- the parent --------------------------------------------------------------------------

def spawn(role: str, label: str, timeout: float, module: str = "bench.relay", **args: Any) -> Child:
    return Child.role(module, role, label, {"timeout": timeout, **args}, log=log, call_timeout=CALL_TIMEOUT)


class Rig:
    """Device, bridge, bare server and client processes for one run. The clients' groups
    (kinds): "sio" and "raw" of the bridge, "emit" and "emit_raw" of the bare server."""

    def __init__(self, cfg: dict[str, Any], settle: bool = True) -> None:
        self.cfg = cfg
        # --quick ends in under 60 s: past deadline_s nothing waits for quiet, the ladder stops
        self.deadline = time.perf_counter() + cfg["deadline_s"] if cfg["deadline_s"] else None
        self.settler = Settler(cfg["settle_s"] if settle else 0.0, log,
                               self.deadline - 12.0 if self.deadline is not None else None)
        self.name = f"bench-relay-{os.getpid()}"
        self.token = secrets.token_urlsafe(16)
        self.limit = cfg["budget_s"]
        self.device = self.bridge = self.bare = self.slow = None   # Child
        self.clients: list[Child] = []
        self.watched_row: dict[str, Any] | None = None
        self.port = self.bare_port = 0

    def start(self) -> None:
        t = self.limit
        channels = max(self.cfg["steps"])
        log(f"starting device {self.name!r} ({channels} records channels + {FRAME_CHANNEL!r}) and the others")
        self.device = spawn("device", "device", t, name=self.name, channels=channels)
        # started as the device would start it, plus a command rate limit that does not interfere
        env = {k: v for k, v in os.environ.items() if k != "MON"}
        env["MONBRIDGE_TOKEN"] = self.token
        self.bridge = Child("bridge", [sys.executable, "-m", "bridge", "serve", "--attach", self.name,
                                       "--host", "127.0.0.1", "--port", "0", "--rate", f"{RELAY_RATE:g}",
                                       "--async-mode", "eventlet", "--exit-with-device", "--command-rate", "100000"],
                            env, json_io=False, log=log)
        self.bare = spawn("bare", "bare server", t)
        self.clients = [spawn("clients", f"clients{i}", t, module="bench.clients") for i in range(CLIENT_PROCS)]
        self.device.recv(START_TIMEOUT)
        url = self.device.call(START_TIMEOUT + 5, op="url", timeout=START_TIMEOUT)["url"]
        if not url:
            raise RuntimeError("the bridge never published its URL")
        self.port = url_port(url)
        self.bare_port = self.bare.recv(START_TIMEOUT)["port"]
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the bridge sees the device online with every channel
            with contextlib.suppress(OSError):
                online = http_json(self.port, "/api/health")["device"]["status"] == "online"
                if online and len(http_json(self.port, "/api/channels")["channels"]) > channels:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the bridge did not attach to the device")
            time.sleep(0.05)
        for c in self.clients:
            c.recv(START_TIMEOUT)
        broadcast(self.clients, START_TIMEOUT, op="connect", kind="sio", port=self.port, token=self.token,
                  n=CLIENTS_PER_PROC)
        broadcast(self.clients, START_TIMEOUT, op="connect", kind="emit", port=self.bare_port, n=CLIENTS_PER_PROC)
        log(f"bridge pid {self.bridge.pid} on port {self.port}, bare server pid {self.bare.pid} on port "
            f"{self.bare_port}; {CLIENT_PROCS * CLIENTS_PER_PROC} clients connected to each")

    def close(self) -> None:
        for child in ([self.slow] if self.slow else []) + self.clients + ([self.bare] if self.bare else []):
            try:
                child.stop()
            except Exception as exc:
                log(f"stopping {child.label}: {exc}")
        if self.device is not None:
            self.device.stop(grace=10.0)
        if self.bridge is not None:
            self.bridge.stop(grace=8.0)  # --exit-with-device: it leaves when the device closes

    # -- command round trip ---------------------------------------------------------------

    def rtt(self) -> dict[str, Any]:
        cfg = self.cfg
        c0 = self.clients[0]
        c0.call(op="connect", kind="echo", port=self.bare_port)
        c0.call(op="connect", kind="command", port=self.port, token=self.token)
        per_block = cfg["rtt_calls"] // cfg["rtt_blocks"]
        log(f"round trips: {RTT_WARMUP} warm-up + {cfg['rtt_blocks']} rotated blocks of {per_block} calls of each kind")
        kinds = ("echo", "echo_hop", "command")   # echo_hop: on the echo connection, via HopEcho
        samples: dict[str, list[float]] = {key: [] for key in kinds}
        for key in kinds:
            c0.call(op="rtt", event=key, n=RTT_WARMUP, base=-RTT_WARMUP)
        self.settler()
        cpu0 = cpu_seconds(self.bridge.pid)
        t0 = time.perf_counter()
        for b in range(cfg["rtt_blocks"]):
            for key in kinds[b % 3:] + kinds[:b % 3]:
                got = c0.call(60.0, op="rtt", event=key, n=per_block, base=b * per_block)
                samples[key] += got["samples_us"]
        bridge_cpu = 100 * (cpu_seconds(self.bridge.pid) - cpu0) / (time.perf_counter() - t0)
        for key in ("echo", "command"):
            c0.call(op="disconnect", kind=key)
        out: dict[str, Any] = {"rtt_calls": len(samples["command"])}
        for key, s in samples.items():
            out.update({f"{key}_rtt_p50_ms": percentile(s, 50) / 1000, f"{key}_rtt_p99_ms": percentile(s, 99) / 1000,
                        f"{key}_rtt_max_ms": max(s) / 1000})
        out["command_rtt_ratio"] = out["command_rtt_p50_ms"] / out["echo_rtt_p50_ms"]
        # no target: how much of the round trip is the process hop itself (docs/performance.md)
        out["command_rtt_ratio_vs_hop"] = out["command_rtt_p50_ms"] / out["echo_hop_rtt_p50_ms"]
        out["rtt_bridge_cpu_pct"] = bridge_cpu  # bridge share during all the blocks
        return out

    # -- streaming windows ----------------------------------------------------------------

    def window(self, channels: int, hz: float, frame_every: int, seconds: float, warm: float,
               rss_baseline: float | None = None, kind: str = "sio", watch_sid: str | None = None,
               server_pid: int | None = None, extra_pids: dict[str, int] | None = None,
               frame_rows: int | None = None) -> dict[str, Any]:
        """Subscribe the clients of ``kind`` to s0..s{channels-1}; publish (the device through
        the bridge, or the bare server itself for the "emit" kinds); measure one window.
        ``server_pid``: the server the clients of ``kind`` use, if not the bridge or the bare
        server (bench.fleet's edge); ``extra_pids``: more processes whose CPU to report."""
        names = [f"s{i}" for i in range(channels)]
        emit = kind.startswith("emit")
        server = server_pid or (self.bare.pid if emit else self.bridge.pid)
        self.settler()
        broadcast(self.clients, op="subscribe", kind=kind, subscriptions=[{"channels": names}])
        t0 = time.time() + warm
        t1 = t0 + seconds
        # at the relay's rate, the device runs 1/window Hz slow: its phase against the relay
        # tick slides through one whole period during the window (docs/performance.md)
        slide = hz == RELAY_RATE and not emit
        period = (1 / RELAY_RATE) / (1 - 1 / (RELAY_RATE * seconds)) if slide else 1 / hz
        run = dict(channels=channels, period=period, frame_every=frame_every, t0=t0, t1=t1, stop_at=t1 + 0.1,
                   frame_rows=frame_rows)
        if emit:
            http_json(self.bare_port, "/bench/run", run)
        else:
            self.device.send(op="run", **run)
        pids = {"server": server} if emit else {"server": server, "device": self.device.pid}
        pids.update({c.label: c.pid for c in self.clients}, **(extra_pids or {}))
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        stall0 = cpu_stall_us()
        rss = [rss_mb(server)]
        watch: list[tuple[float, int | None]] = []   # (s into the window, outbox or None once gone)
        self.watched_row = None
        next_watch = t0 + 1.0
        while time.time() < t1:
            time.sleep(min(0.25, max(0.0, t1 - time.time())))
            if rss_baseline is not None:
                rss.append(rss_mb(server))
            if watch_sid is not None and time.time() >= next_watch:
                next_watch += 1.0
                row = {r["id"]: r for r in http_json(self.port, "/api/clients")["clients"]}.get(watch_sid)
                if row is not None:
                    self.watched_row = row
                watch.append((round(time.time() - t0, 2), row["queued"] if row else None))
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        stall1 = cpu_stall_us()
        span = time.time() - t0
        dev = self.emit_result() if emit else self.device.recv(seconds + warm + CALL_TIMEOUT)
        time.sleep(GRACE_S)
        rss.append(rss_mb(server))
        reports = broadcast(self.clients, op="report", kind=kind, t0=t0, t1=t1, windows=dev["windows"])
        broadcast(self.clients, op="unsubscribe", kind=kind)
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
        messages = sum(r["messages"] for r in per_client)
        out = {
            "channels": channels, "hz": hz, "window_s": seconds, "published_records": published,
            "messages": messages, "messages_per_s": messages / seconds,
            "latency_p50_ms": percentile(lat, 50), "latency_p99_ms": percentile(lat, 99),
            "latency_max_ms": lat[-1] if lat else math.nan, "latency_samples": len(lat),
            "latency_p99_1s_median_ms": statistics.median(slice_p99) if slice_p99 else math.nan,
            "slice_p99": slice_p99, "lat": lat,
            "cpu_pressure_pct": 100 * (stall1 - stall0) / 1e6 / span if None not in (stall0, stall1) else math.nan,
            "delivered_ratio": min(ratios), "missed": sum(r["missed"] for r in per_client),
            "server_cpu_pct": cpu["server"], "server_cpu_s": cpu1["server"] - cpu0["server"],
            "device_cpu_pct": cpu.get("device", math.nan),
            "client_cpu_pct": max(client_cpu), "client_cpu_pct_total": sum(client_cpu),  # the busiest, all
            "device_late_ticks": dev["late_ticks"], "frames_published": dev["frames"], "bridge_rss_mb": rss,
            "cpu_pct": cpu,
        }
        if watch_sid is not None:
            out["watch"] = watch
        if rss_baseline is not None:
            out["rss_growth_peak_mb"] = max(rss) - rss_baseline
            out["rss_growth_end_mb"] = rss[-1] - rss_baseline
        return out

    def emit_result(self) -> dict[str, Any]:
        """The bare server's device_run answer, once its run is over."""
        deadline = time.monotonic() + CALL_TIMEOUT
        while (res := http_json(self.bare_port, "/bench/result")).get("running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bare server's run did not end in {CALL_TIMEOUT:.0f} s")
            time.sleep(0.05)
        if "error" in res:
            raise RuntimeError(f"the bare server's run failed:\n{res['error']}")
        return res

    def stream_window(self, which: str) -> dict[str, Any]:
        """One half of the stream measurement; the halves run before and after the slow client."""
        seconds = self.cfg["stream_s"] / 2
        log(f"stream ({which}): {STREAM_CHANNELS} records channels at {STREAM_HZ} Hz, {seconds} s")
        return self.window(STREAM_CHANNELS, STREAM_HZ, FRAME_EVERY, seconds, self.cfg["warm_s"])

    @staticmethod
    def stream_figures(halves: list[dict[str, Any]]) -> dict[str, Any]:
        """Pool the halves' samples; CPU figures are time-weighted means."""
        lat = sorted(x for w in halves for x in w["lat"])
        span = sum(w["window_s"] for w in halves)

        def mean(key: str) -> float:
            return sum(w[key] * w["window_s"] for w in halves) / span

        return {
            "stream_latency_p50_ms": percentile(lat, 50), "stream_latency_p99_ms": percentile(lat, 99),
            "stream_latency_max_ms": lat[-1] if lat else math.nan, "stream_latency_samples": len(lat),
            "stream_latency_p99_halves_ms": [w["latency_p99_ms"] for w in halves],  # before, after the slow client
            # p99 of each second of the window, median over the seconds: one bad second does not move it
            "stream_latency_p99_1s_median_ms": statistics.median(x for w in halves for x in w["slice_p99"]),
            "stream_cpu_pressure_pct": mean("cpu_pressure_pct"),
            "delivered_ratio": min(w["delivered_ratio"] for w in halves),
            "stream_messages_per_s": mean("messages_per_s"), "stream_missed": sum(w["missed"] for w in halves),
            "stream_window_s": span, "bridge_cpu_pct": mean("server_cpu_pct"), "device_cpu_pct": mean("device_cpu_pct"),
            "bridge_cpu_ms_per_1k_deliveries": cpu_per_1k(halves),
            "client_cpu_pct": max(w["client_cpu_pct"] for w in halves),
            "client_cpu_pct_total": mean("client_cpu_pct_total"), "bridge_rss_mb": halves[0]["bridge_rss_mb"][-1],
        }

    def emit_stream(self) -> dict[str, Any]:
        """The bare server emitting the stream's messages to the same clients, as long as one half."""
        seconds = self.cfg["stream_s"] / 2
        log(f"emit baseline: the bare server emits {STREAM_CHANNELS} records channels at {STREAM_HZ} Hz, {seconds} s")
        w = self.window(STREAM_CHANNELS, STREAM_HZ, 0, seconds, self.cfg["warm_s"], kind="emit")
        return {"emit_latency_p50_ms": w["latency_p50_ms"], "emit_latency_p99_ms": w["latency_p99_ms"],
                "emit_latency_samples": w["latency_samples"], "emit_delivered_ratio": w["delivered_ratio"],
                "emit_server_cpu_pct": w["server_cpu_pct"], "emit_messages_per_s": w["messages_per_s"],
                "emit_cpu_ms_per_1k_deliveries": cpu_per_1k([w]), "emit_late_ticks": w["device_late_ticks"]}

    def slow_client(self) -> dict[str, Any]:
        cfg = self.cfg
        time.sleep(0.5)
        before = rss_mb(self.bridge.pid)
        log(f"slow client on {FRAME_CHANNEL!r} beside the stream, {cfg['slow_s']} s (bridge RSS {before:.1f} MB)")
        self.slow = spawn("slow", "slow client", self.limit, module="bench.clients", port=self.port, token=self.token,
                          channels=[FRAME_CHANNEL])
        sid = self.slow.recv(START_TIMEOUT)["sid"]
        w = self.window(STREAM_CHANNELS, STREAM_HZ, FRAME_EVERY, cfg["slow_s"], cfg["warm_s"], rss_baseline=before,
                        watch_sid=sid)
        gone = [t for t, q in w["watch"] if q is None]
        slow_row = next((r for r in http_json(self.port, "/api/clients")["clients"] if r.get("id") == sid), None)
        last_row = slow_row or self.watched_row  # the last the bridge showed of it
        sent = skipped = None
        for s in (last_row or {}).get("subscriptions", []):
            if s["channel"] == FRAME_CHANNEL:
                sent, skipped = s["sent"], s["skipped"]
        self.slow.stop()
        self.slow = None
        return {
            "slow_client_rss_growth_mb": w["rss_growth_peak_mb"],
            "slow_client_rss_growth_end_mb": w["rss_growth_end_mb"],
            "slow_client_rss_before_mb": before, "slow_client_stream_p50_ms": w["latency_p50_ms"],
            "slow_client_stream_p99_ms": w["latency_p99_ms"],
            "slow_client_stream_p99_1s_median_ms": w["latency_p99_1s_median_ms"],
            "slow_client_cpu_pressure_pct": w["cpu_pressure_pct"], "slow_client_delivered_ratio": w["delivered_ratio"],
            "slow_client_bridge_cpu_pct": w["server_cpu_pct"], "slow_client_connected_at_end": slow_row is not None,
            "slow_client_dropped_after_s": gone[0] if gone else None,  # into the window, ±1 s
            "slow_client_outbox": [q for _, q in w["watch"]],           # engine.io packets queued, once a second
            "slow_client_queued_at_end": slow_row.get("queued") if slow_row else None,
            "slow_client_frames_sent": sent, "slow_client_frames_skipped": skipped,
            "slow_client_frames_published": w["frames_published"],
        }

    def max_deliveries(self) -> dict[str, Any]:
        """The bridge's ladder and the bare server's, step by step: raw clients, more records
        channels each step; the bare server emits each channel at the relay's rate (the most
        messages a second the bridge sends of one channel), so a step offers both the same."""
        cfg = self.cfg
        n_clients = CLIENT_PROCS * CLIENTS_PER_PROC
        log(f"max deliveries: {list(cfg['steps'])} records channels at {LADDER_HZ} Hz through the bridge and at "
            f"{RELAY_RATE:g} Hz from the bare server, {cfg['step_s']} s each")
        for kind, port in (("raw", self.port), ("emit_raw", self.bare_port)):
            broadcast(self.clients, START_TIMEOUT, op="connect", kind=kind, port=port, token=self.token,
                      n=CLIENTS_PER_PROC)
        ladders = {"raw": Ladder("bridge", LADDER_HZ), "emit_raw": Ladder("bare server", RELAY_RATE)}
        for k in cfg["steps"]:
            active = {kind: lad for kind, lad in ladders.items() if not lad.stopped}
            if not active:
                break
            step_cost = (cfg["step_s"] + cfg["warm_step_s"] + STEP_OVERHEAD_S) * len(active)
            if k != cfg["steps"][0] and self.deadline is not None and time.perf_counter() + step_cost > self.deadline:
                for lad in active.values():
                    lad.stopped = f"time budget of --quick, before {k} channels"
                break
            for kind, lad in active.items():
                w = self.window(k, lad.hz, 0, cfg["step_s"], cfg["warm_step_s"], kind=kind)
                w["offered_per_s"] = n_clients * k * RELAY_RATE
                log(f"  {lad.name:11} {k:3d} channels: {w['messages_per_s']:8.0f} deliveries/s of "
                    f"{w['offered_per_s']:.0f}, records delivered {100 * w['delivered_ratio']:.0f}%, "
                    f"p50 {w['latency_p50_ms']:.1f} ms, p99 {w['latency_p99_ms']:.1f} ms, "
                    f"server CPU {w['server_cpu_pct']:.0f}%, busiest client process {w['client_cpu_pct']:.0f}%")
                lad.add(w, k)
        else:
            for lad in ladders.values():
                lad.stopped = lad.stopped or "not saturated by the largest step"
        bridge, emit = ladders["raw"].figures("max_deliveries"), ladders["emit_raw"].figures("emit_max_deliveries")
        return {**bridge, **emit,
                "max_deliveries_ratio": bridge["max_deliveries_per_s"] / emit["emit_max_deliveries_per_s"]}


class Ladder:
    """One server's throughput ladder: its steps, the best sustained (no loss, bounded latency)
    and the highest seen at all, and why it stopped."""

    def __init__(self, name: str, hz: float) -> None:
        self.name, self.hz = name, hz
        self.steps: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.peak: dict[str, Any] | None = None
        self.stopped = ""

    def add(self, w: dict[str, Any], k: int) -> None:
        self.steps.append(w)
        sustained = (w["delivered_ratio"] >= SUSTAINED["delivered_ratio"]
                     and w["latency_p50_ms"] <= SUSTAINED["latency_p50_ms"])
        grew = self.peak is None or w["messages_per_s"] > 1.05 * self.peak["messages_per_s"]
        if self.peak is None or w["messages_per_s"] > self.peak["messages_per_s"]:
            self.peak = w
        if sustained and (self.best is None or w["messages_per_s"] > self.best["messages_per_s"]):
            self.best = w
        if not sustained or not grew:
            self.stopped = why_stopped(w, k)

    def figures(self, prefix: str) -> dict[str, Any]:
        best, stopped = self.best, self.stopped
        if best is None:
            best = self.steps[0]
            stopped += "; even the first step was not sustained"
        return {
            f"{prefix}_per_s": best["messages_per_s"], f"{prefix}_channels": best["channels"],
            f"{prefix}_p99_ms": best["latency_p99_ms"], f"{prefix}_server_cpu_pct": best["server_cpu_pct"],
            f"{prefix}_client_cpu_pct": best["client_cpu_pct"],
            f"{prefix}_peak_per_s": self.peak["messages_per_s"],  # with loss or late
            f"{prefix}_limited_by": stopped,
            f"{prefix}_steps": [
                {k: w[k] for k in ("channels", "offered_per_s", "messages_per_s", "delivered_ratio", "missed",
                                   "latency_p50_ms", "latency_p99_ms", "server_cpu_pct", "client_cpu_pct",
                                   "device_cpu_pct", "cpu_pressure_pct")}
                for w in self.steps
            ],
        }


def why_stopped(w: dict[str, Any], k: int) -> str:
    why = ("clients saturated" if w["client_cpu_pct"] >= 90 else
           "bridge skipped clients as congested (records missed)" if w["missed"] else
           "server CPU saturated" if w["server_cpu_pct"] >= 90 else
           "records lost" if w["delivered_ratio"] < SUSTAINED["delivered_ratio"] else
           "p50 latency" if w["latency_p50_ms"] > SUSTAINED["latency_p50_ms"] else "no growth")
    return f"{why} at {k} channels (server CPU {w['server_cpu_pct']:.0f}%, clients {w['client_cpu_pct']:.0f}%)"


def cpu_per_1k(windows: list[dict[str, Any]]) -> float:
    """Server CPU ms per 1,000 messages delivered (to all clients) over ``windows``."""
    messages = sum(w["messages"] for w in windows)
    return 1e6 * sum(w["server_cpu_s"] for w in windows) / messages if messages else math.nan


def run(mode: str, settle: bool = True) -> dict[str, Any]:
    clock = Clock()
    rig = Rig(dict(MODES[mode]), settle)
    figures: dict[str, Any] = {}
    try:
        rig.start()
        clock.lap("start")
        figures.update(rig.rtt())
        clock.lap("rtt")
        # the stream in two halves with the bare server's emit window and the slow client between them
        halves = [rig.stream_window("1 of 2")]
        clock.lap("stream")
        figures.update(rig.emit_stream())
        clock.lap("emit")
        slow = rig.slow_client()
        clock.lap("slow")
        halves.append(rig.stream_window("2 of 2"))
        figures.update(**rig.stream_figures(halves), **slow)
        clock.lap("stream")
        # the bridge's collections since it started serving: a full one pauses the relay
        figures["bridge_gc"] = http_json(rig.port, "/api/stats")["gc"]
        # against the stream windows just before and just after: drifting load affects both alike
        figures["slow_client_p99_ratio"] = figures["slow_client_stream_p99_ms"] / figures["stream_latency_p99_ms"]
        figures["slow_client_p99_ratio_1s_median"] = (figures["slow_client_stream_p99_1s_median_ms"]
                                                      / figures["stream_latency_p99_1s_median_ms"])
        for q in ("p50", "p99"):
            figures[f"stream_latency_{q}_ratio"] = figures[f"stream_latency_{q}_ms"] / figures[f"emit_latency_{q}_ms"]
        figures.update(rig.max_deliveries())
        clock.lap("max")
    finally:
        rig.close()
        clock.lap("stop")
        removed = remove_segments(f"monbridge.{rig.name}.")
        if removed:
            log(f"removed {len(removed)} segment(s) left by a killed device: {removed}")
    result: dict[str, Any] = {
        "bench": "relay", "quick": mode == "quick", "git": git_revision("bridge", "device_agent"), **clock.machine(),
        "clients": CLIENT_PROCS * CLIENTS_PER_PROC, "client_processes": CLIENT_PROCS, "relay_rate_hz": RELAY_RATE,
        "stream_clients": "sio", "loadavg_1m": clock.loadavg(), **clock.pressure(),
        **figures, "settle": rig.settler.report(), "phase_s": clock.phases,
    }
    return finish(result, TARGETS, clock, "monbridge.bench-relay-")


def main(argv: list[str] | None = None) -> int:
    return windows_main(argv, "bench.relay", __doc__, "short windows (under 60 s in all)", ROLES, run, log, hide=("targets", "max_deliveries_steps", "emit_max_deliveries_steps"))


if __name__ == "__main__":
    raise SystemExit(main())
