"""Fleet benchmark (issue 15 §4): a device, its origin bridge publishing into a real
redis-server, and an edge bridge serving the same device from Redis, side by side with the
origin serving the same clients directly, in one run.

    python -m bench.fleet [--quick] [--json] [--no-settle]

Measures: stream latency through origin → Redis → edge against the origin directly (4 records
channels at 60 Hz to 20 clients each way, alternating windows); edge and direct CPU per
delivery; origin + redis-server CPU with 10 and with 100 clients on the edge; delivered ratio
and missed; CPU per 1 MB frame (30 Hz to one client) on the edge against the origin serving
it directly (a frame channel reaches an edge only while a browser there subscribes to it);
the ``echo`` command's round trip through the edge against directly; failover: a client
behind a TCP balancer (bench/balancer.py) in front of two edges, the time from SIGKILL of its
edge to its next records. Reuses bench.relay's device, clients and windows. Figures and how:
docs/performance.md, "Fleet".
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import Clock, finish, git_revision, logger, percentile, windows_main
from bench.procs import Child, broadcast, cpu_seconds, http_json, remove_segments
from bench.relay import CALL_TIMEOUT, FRAME_CHANNEL, FRAME_SHAPE, RELAY_RATE, ROLES, START_TIMEOUT, STREAM_CHANNELS, STREAM_HZ, Rig, \
    cpu_per_1k, spawn

BIG_FRAME_SHAPE = (87_382, 3)       # f4: 1 MiB
CLIENT_PROCS = 2
TARGETS: dict[str, dict[str, float]] = {   # issue 15 §4
    "added_latency_p50_ms": {"max": 3.0}, "added_latency_p99_ms": {"max": 15.0},
    "edge_cpu_per_delivery_ratio": {"max": 1.5}, "origin_redis_cpu_pct": {"max": 8.0},
    "origin_redis_cpu_100_vs_10": {"max": 1.25}, "edge_delivered_ratio": {"min": 0.999},
    "edge_follow_ms_per_1mb_frame": {"max": 3.0}, "edge_command_added_p50_ms": {"max": 2.0},
    "edge_command_p99_ms": {"max": 15.0}, "failover_max_s": {"max": 3.0},
}
MODES = {
    "quick": dict(window_s=5.0, windows=2, warm_s=0.7, frames_s=4.0, rtt_calls=300, settle_s=3.0, failovers=2),
    "full": dict(window_s=15.0, windows=3, warm_s=1.5, frames_s=10.0, rtt_calls=2000, settle_s=20.0, failovers=5),
}
log = logger("bench.fleet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FleetRig(Rig):
    """bench.relay's Rig with an origin (the Rig's bridge, plus --publish), a redis-server and an
    edge instead of the bare server."""

    def start(self) -> None:
        t = self.limit
        self.redis_dir = tempfile.mkdtemp(prefix="bench-fleet-")
        redis_port = free_port()
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("bench.fleet needs redis-server: sudo apt-get install redis-server")
        self.redis = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                                       "--appendonly", "no", "--dir", self.redis_dir], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{redis_port}"
        log(f"starting device {self.name!r}, redis-server (pid {self.redis.pid}), origin and edge bridges")
        self.device = spawn("device", "device", t, name=self.name, channels=STREAM_CHANNELS,
                            frame_shape=list(BIG_FRAME_SHAPE))
        env = {k: v for k, v in os.environ.items() if k != "MON"}
        env["MONBRIDGE_TOKEN"] = self.token
        common = ["--host", "127.0.0.1", "--rate", f"{RELAY_RATE:g}", "--async-mode", "eventlet",
                  "--command-rate", "100000"]
        self.port, self.edge_port = free_port(), free_port()
        self.device.recv(START_TIMEOUT)
        self.bridge = Child("origin", [sys.executable, "-m", "bridge", "serve", "--attach", self.name,
                                       "--port", str(self.port), "--publish", url, *common], env, json_io=False, log=log)
        self.redis_url, self.env, self.common = url, env, common
        self.edge = self.start_edge(self.edge_port)
        self.clients = [spawn("clients", f"clients{i}", t, module="bench.clients") for i in range(CLIENT_PROCS)]
        for port in (self.port, self.edge_port):
            self.wait_online(port)
        for c in self.clients:
            c.recv(START_TIMEOUT)
        for kind, port, n in (("direct", self.port, 10), ("edge", self.edge_port, 10)):
            broadcast(self.clients, START_TIMEOUT, op="connect", kind=kind, port=port, token=self.token, n=n)
        log(f"origin pid {self.bridge.pid} on port {self.port}, edge pid {self.edge.pid} on port {self.edge_port}; "
            f"{CLIENT_PROCS * 10} clients on each")

    def start_edge(self, port: int) -> Child:
        return Child("edge", [sys.executable, "-m", "bridge", "serve", "--edge", self.redis_url, "--attach", self.name,
                              "--port", str(port), *self.common], self.env, json_io=False, log=log)

    def wait_online(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                health = http_json(port, "/api/health")
                if health["device"]["status"] == "online" and len(http_json(port, "/api/channels")["channels"]) > 1:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge on port {port} did not serve the device online")
            time.sleep(0.1)

    def close(self) -> None:
        for child in self.clients:
            try:
                child.stop()
            except Exception as exc:
                log(f"stopping {child.label}: {exc}")
        if self.device is not None:
            self.device.stop(grace=10.0)
        for child in (self.bridge, getattr(self, "edge", None), *getattr(self, "spare_edges", [])):  # serve until SIGTERM
            if child is not None and child.proc.poll() is None:
                child.proc.terminate()
                child.proc.wait(10)
        if getattr(self, "redis", None) is not None:
            self.redis.terminate()
            self.redis.wait(10)
            shutil.rmtree(self.redis_dir, ignore_errors=True)

    # -- measurements ---------------------------------------------------------------------

    def stream(self, kind: str) -> dict[str, Any]:
        pid = self.edge.pid if kind.startswith("edge") else self.bridge.pid
        return self.window(STREAM_CHANNELS, STREAM_HZ, 2, self.cfg["window_s"], self.cfg["warm_s"], kind=kind,
                           frame_rows=FRAME_SHAPE[0],
                           server_pid=pid, extra_pids={"origin": self.bridge.pid, "redis": self.redis.pid})

    def streams(self) -> dict[str, Any]:
        got: dict[str, list[dict[str, Any]]] = {"direct": [], "edge": []}
        for i in range(self.cfg["windows"]):
            for kind in ("direct", "edge") if i % 2 == 0 else ("edge", "direct"):
                w = self.stream(kind)
                log(f"  {kind:6} window {i + 1}: p50 {w['latency_p50_ms']:.2f} ms, p99 {w['latency_p99_ms']:.2f} ms, "
                    f"delivered {w['delivered_ratio']:.4f}, server CPU {w['server_cpu_pct']:.1f} %")
                got[kind].append(w)
        out: dict[str, Any] = {}
        for kind, ws in got.items():
            lat = sorted(x for w in ws for x in w["lat"])
            out.update({f"{kind}_latency_p50_ms": percentile(lat, 50), f"{kind}_latency_p99_ms": percentile(lat, 99),
                        f"{kind}_cpu_ms_per_1k": cpu_per_1k(ws), f"{kind}_delivered_ratio": min(w["delivered_ratio"]
                                                                                              for w in ws),
                        f"{kind}_missed": sum(w["missed"] for w in ws),
                        f"{kind}_messages_per_s": sum(w["messages_per_s"] for w in ws) / len(ws)})
        out["added_latency_p50_ms"] = out["edge_latency_p50_ms"] - out["direct_latency_p50_ms"]
        out["added_latency_p99_ms"] = out["edge_latency_p99_ms"] - out["direct_latency_p99_ms"]
        out["edge_cpu_per_delivery_ratio"] = out["edge_cpu_ms_per_1k"] / out["direct_cpu_ms_per_1k"]
        out["origin_redis_cpu_pct_10"] = self._origin_redis(got["edge"])
        return out

    @staticmethod
    def _origin_redis(ws: list[dict[str, Any]]) -> float:
        return sum(w["cpu_pct"]["origin"] + w["cpu_pct"]["redis"] for w in ws) / len(ws)

    def viewers(self) -> dict[str, Any]:
        """Origin + Redis CPU with 10 and with 100 clients on the edge (nobody on the origin)."""
        out: dict[str, Any] = {}
        for n in (10, 100):
            kind = f"edge{n}"
            broadcast(self.clients, START_TIMEOUT, op="connect", kind=kind, port=self.edge_port, token=self.token,
                      n=n // CLIENT_PROCS)
            w = self.stream(kind)
            broadcast(self.clients, START_TIMEOUT, op="disconnect", kind=kind)
            out[f"origin_redis_cpu_pct_{n}"] = self._origin_redis([w])
            out[f"edge_{n}_delivered_ratio"] = w["delivered_ratio"]
            log(f"  {n} clients on the edge: origin {w['cpu_pct']['origin']:.1f} % + redis {w['cpu_pct']['redis']:.1f} %"
                f" of a core, edge {w['server_cpu_pct']:.0f} %, delivered {w['delivered_ratio']:.4f}")
        out["origin_redis_cpu_pct"] = max(out["origin_redis_cpu_pct_10"], out["origin_redis_cpu_pct_100"])
        out["origin_redis_cpu_100_vs_10"] = out["origin_redis_cpu_pct_100"] / out["origin_redis_cpu_pct_10"]
        return out

    def big_frames(self) -> dict[str, Any]:
        """1 MiB frames at 30 Hz to one client on the edge, then to one client on the origin
        directly (no edge wants the channel then: nothing goes into Redis): CPU per frame of
        each process, and what the edge adds over the direct bridge."""
        edge = self._frames_cpu(self.edge_port)
        direct = self._frames_cpu(self.port)
        out = {f"{p}_ms_per_1mb_frame": v for p, v in edge.items()}
        out["direct_ms_per_1mb_frame"] = direct["origin"]
        out["edge_follow_ms_per_1mb_frame"] = edge["edge"] - direct["origin"]
        log(f"  1 MiB frames at 30 Hz to one client: on the edge {edge['edge']:.2f} ms of edge CPU per frame (origin "
            f"{edge['origin']:.2f}, redis {edge['redis']:.2f}); directly {direct['origin']:.2f} ms of origin CPU; "
            f"the edge adds {out['edge_follow_ms_per_1mb_frame']:.2f} ms")
        return out

    def _frames_cpu(self, port: int) -> dict[str, float]:
        seconds = self.cfg["frames_s"]
        watcher = self.clients[0]
        watcher.call(op="connect", kind="frames", port=port, token=self.token)
        watcher.call(op="subscribe", kind="frames", subscriptions=[{"channels": [FRAME_CHANNEL], "rate": 30}])
        self.settler()
        t0 = time.time() + 0.5
        self.device.send(op="run", channels=0, period=1 / 60, frame_every=2, t0=t0, t1=t0 + seconds,
                         stop_at=t0 + seconds + 0.1)
        time.sleep(max(0.0, t0 - time.time()))
        pids = {"edge": self.edge.pid, "origin": self.bridge.pid, "redis": self.redis.pid}
        c0 = {p: cpu_seconds(pid) for p, pid in pids.items()}
        time.sleep(seconds)
        c1 = {p: cpu_seconds(pid) for p, pid in pids.items()}
        dev = self.device.recv(seconds + CALL_TIMEOUT)
        watcher.call(op="disconnect", kind="frames")
        frames = dev["frames"] * seconds / (seconds + 0.1)
        return {p: 1e3 * (c1[p] - c0[p]) / frames for p in c0}

    def commands(self) -> dict[str, Any]:
        c0, n = self.clients[0], self.cfg["rtt_calls"]
        c0.call(op="connect", kind="command", port=self.port, token=self.token)
        c0.call(op="connect", kind="ecommand", port=self.edge_port, token=self.token)
        samples: dict[str, list[float]] = {"command": [], "ecommand": []}
        for group in samples:
            c0.call(60.0, op="rtt", event="command", group=group, n=50, base=-50)
        self.settler()
        for b in range(4):
            for group in ("command", "ecommand") if b % 2 == 0 else ("ecommand", "command"):
                samples[group] += c0.call(120.0, op="rtt", event="command", group=group, n=n // 4,
                                          base=b * n)["samples_us"]
        out = {f"{'edge' if g == 'ecommand' else 'direct'}_command_{q}_ms": percentile(s, p) / 1000
               for g, s in samples.items() for q, p in (("p50", 50), ("p99", 99))}
        out["edge_command_added_p50_ms"] = out["edge_command_p50_ms"] - out["direct_command_p50_ms"]
        log(f"  command round trip: direct p50 {out['direct_command_p50_ms']:.2f} ms, through the edge p50 "
            f"{out['edge_command_p50_ms']:.2f} ms, p99 {out['edge_command_p99_ms']:.2f} ms")
        return out

    def failovers(self) -> dict[str, Any]:
        """A public client (bridge.client) behind a balancer in front of two edges: SIGKILL the
        edge it is connected to, time until records published after the kill reach it (it
        reconnects through the balancer to the other edge and subscribes again). Each trial
        kills one edge and starts a fresh one beside the survivor."""
        from bench.balancer import Balancer
        from bridge.client import Client

        self.spare_edges: list[Child] = []
        live = [(self.edge, self.edge_port)]
        took: list[float] = []
        seconds = 8.0 * self.cfg["failovers"] + 10.0
        t0 = time.time() + 0.3
        self.device.send(op="run", channels=1, period=1 / STREAM_HZ, t0=t0, t1=t0 + seconds,
                         stop_at=t0 + seconds + 0.1)
        for _ in range(self.cfg["failovers"]):
            port = free_port()
            self.spare_edges.append(self.start_edge(port))
            self.wait_online(port)
            live.append((self.spare_edges[-1], port))
            balancer = Balancer([("127.0.0.1", p) for _, p in live])
            try:
                with Client(f"{balancer.url}/?token={self.token}", timeout=10) as client:
                    sub = client.subscribe("s0", rate=30)
                    sub.get(timeout=10)
                    victim = next(e for e in live if e[1] == balancer.chosen[0][1])
                    victim[0].proc.kill()
                    killed_wall, killed = time.time(), time.monotonic()
                    victim[0].proc.wait(10)
                    while float(sub.get(timeout=15).data["t"].max()) <= killed_wall:
                        pass     # sent by the dead edge before it died, or published before the kill
                    took.append(time.monotonic() - killed)
            finally:
                balancer.close()
            live.remove(victim)
            log(f"  failover: records again {took[-1]:.2f} s after the edge was killed")
        self.device.recv(seconds + CALL_TIMEOUT)
        (self.edge, self.edge_port), = live
        return {"failover_s": [round(t, 3) for t in took], "failover_max_s": max(took)}


def run(mode: str, settle: bool = True) -> dict[str, Any]:
    clock = Clock()
    cfg = {**MODES[mode], "steps": (STREAM_CHANNELS,), "budget_s": 600.0, "deadline_s": None}
    rig = FleetRig(cfg, settle)
    rig.name = f"bench-fleet-{os.getpid()}"
    rig.token = secrets.token_urlsafe(16)
    figures: dict[str, Any] = {}
    try:
        rig.start()
        clock.lap("start")
        log(f"streams: {STREAM_CHANNELS} records channels at {STREAM_HZ} Hz + a {FRAME_SHAPE[0]}-point cloud at 30 Hz, "
            f"{cfg['window_s']:g} s windows, direct and through the edge")
        figures.update(rig.streams())
        clock.lap("streams")
        figures.update(rig.viewers())
        clock.lap("viewers")
        figures.update(rig.big_frames())
        clock.lap("frames")
        figures.update(rig.commands())
        clock.lap("commands")
        figures.update(rig.failovers())
        clock.lap("failover")
    finally:
        rig.close()
        clock.lap("stop")
        remove_segments(f"monbridge.{rig.name}.")
    result: dict[str, Any] = {
        "bench": "fleet", "quick": mode == "quick", "git": git_revision("bridge", "device_agent"), **clock.machine(),
        "clients_each_way": CLIENT_PROCS * 10, "relay_rate_hz": RELAY_RATE, "loadavg_1m": clock.loadavg(),
        **clock.pressure(), **figures, "settle": rig.settler.report(), "phase_s": clock.phases,
    }
    return finish(result, TARGETS, clock, "monbridge.bench-fleet-")


def main(argv: list[str] | None = None) -> int:
    return windows_main(argv, "bench.fleet", __doc__, "short windows (about 90 s in all)", ROLES, run, log, hide=("targets",))


if __name__ == "__main__":
    raise SystemExit(main())
