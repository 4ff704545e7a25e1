"""Recording and replay benchmark (issue 14 §5): ``monbridge record`` and ``monbridge replay``
as users run them, each figure beside its baseline in the same run.

    python -m bench.record [--quick] [--json] [--no-settle] [--only demo,throughput,loop,replay,seek]

- demo: examples/robot_arm.py (with its bridge) recorded for a window (full: a minute). The
  recorder's CPU (/proc) against a bare reader's (a process that only copies every new frame
  and record out of the device's memory: the floor of any reader); the file's MB a minute
  against the raw bytes of its messages; records missed; reading the file with the ``mcap``
  reader, CRCs checked, scaled to a minute, against the same read without CRCs.
- throughput: a device publishing 10-field records faster than any recorder takes them;
  records a second in the file, against the ``mcap`` library's Writer taking the same CDR records.
- loop: a device loop at 200 Hz publishing the demo's channels; its period p99 in windows
  with the recorder attached against windows without, alternating.
- replay and seek (need demo's file): ``monbridge replay`` of it at 1× (publish-time error
  p99; CPU against the demo device's own), 10× and ``--speed max`` (speed achieved); then,
  through the bridge with ``bridge.client.Client``, ``seek`` commands and the time until a
  cloud frame from the new position arrives, against a new subscription's first frame.

``--quick`` takes 70-90 s, the full run about 5 minutes. The figures and why they are
measured this way: docs/performance.md, "Recording and replay".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from bench.common import Clock, Settler, arguments, exit_on_sigterm, finish, git_revision, logger, only, \
    percentile, report, round_figures
from bench.procs import REPO, Child, DeviceProcess, Replies, cpu_seconds, kill_descendants, remove_segments, \
    run_role, serve, watchdog

DEMO = REPO / "examples" / "robot_arm.py"
RECORD = [sys.executable, "-m", "bridge", "record"]
REPLAY = [sys.executable, "-m", "bridge", "replay"]
JOINTS = {"t": "f8", **{f"{k}{i}": "f4" for k in ("j", "i", "temp") for i in (1, 2, 3)}}   # the demo's 10 fields
POLL = 1 / 30                # s: the bare reader's period, the recorder's on the demo (its 30 Hz cloud in 3 slots)
FLOOD_RATE = 1_000_000       # records/s offered: the recorder takes them all (3 M/s: ~1.4 M/s, the rest missed)
FLOOD_BATCH = 5000
FLOOD_CAPACITY = 1 << 18
LOOP_HZ = 200                # the demo's step rate, publishing as the demo does
START_TIMEOUT = 45.0
LABEL = "bench.record child"
MEASUREMENTS = ("demo", "throughput", "loop", "replay", "seek")

TARGETS: dict[str, dict[str, float]] = {   # issue 14 §5
    "recorder_cpu_pct": {"max": 5.0}, "records_per_s": {"min": 150_000}, "mb_per_min": {"max": 150.0},
    "read_minute_s": {"max": 1.0}, "replay_1x_p99_ms": {"max": 10.0}, "replay_1x_cpu_pct": {"max": 5.0},
    "replay_10x_speed": {"min": 9.5}, "replay_max_speed": {"min": 50.0}, "seek_first_frame_ms": {"max": 200.0},
    "loop_p99_ratio": {"max": 1.1},
}
MODES = {
    "quick": dict(window_s=10.0, flood_s=4.0, loop_window_s=3.0, seeks=3, warm_s=1.0, settle_s=5.0),
    "full": dict(window_s=60.0, flood_s=10.0, loop_window_s=8.0, seeks=8, warm_s=2.0, settle_s=30.0),
}

log = logger("bench.record")


# -- the figures (pure) ------------------------------------------------------------------

def in_windows(times: list[float], values: list[float], windows: list[tuple[float, float]]) -> list[float]:
    """The values whose time falls in one of the [start, end) windows."""
    return [v for t, v in zip(times, values) if any(a <= t < b for a, b in windows)]


def loop_figures(times: list[float], periods: list[float], on: list[tuple[float, float]],
                 off: list[tuple[float, float]]) -> dict[str, Any]:
    """Device loop period p50/p99 with and without the recorder, and the p99 ratio."""
    with_rec, without = in_windows(times, periods, on), in_windows(times, periods, off)
    p99_on, p99_off = percentile(with_rec, 99), percentile(without, 99)
    return {"loop_p50_ms": percentile(with_rec, 50), "loop_p99_ms": p99_on, "loop_baseline_p50_ms": percentile(without, 50),
            "loop_baseline_p99_ms": p99_off, "loop_steps": [len(with_rec), len(without)],
            "loop_p99_ratio": p99_on / p99_off if p99_off else math.nan}


REPLAY_END = re.compile(r"reached the end \(([\d.]+) s of recording, ([\d.]+) s since")
REPLAY_TIMING = re.compile(r"publish time vs recorded: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms")


def replay_timing(lines: list[str]) -> dict[str, float]:
    """p50/p99/max publish-time error (ms) from a replay's last line (nan if absent)."""
    for line in reversed(lines):
        if m := REPLAY_TIMING.search(line):
            return dict(zip(("p50_ms", "p99_ms", "max_ms"), map(float, m.groups())))
    return {"p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}


def file_figures(path: str) -> dict[str, Any]:
    """What the recorder wrote: size and raw bytes a minute, messages, missed, duration."""
    import json

    from mcap.reader import make_reader

    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        meta = {m.name: m.metadata for m in reader.iter_metadata()}
    stats = summary.statistics
    span = (stats.message_end_time - stats.message_start_time) / 1e9
    per_min = 60 / span if span else math.nan
    raw = sum(c.uncompressed_size for c in summary.chunk_indexes)
    counts = {summary.channels[cid].topic: n for cid, n in stats.channel_message_counts.items()}
    return {"duration_s": span, "start_ns": stats.message_start_time, "mb_per_min": os.path.getsize(path) / 1e6 * per_min,
            "raw_mb_per_min": raw / 1e6 * per_min, "messages": stats.message_count, "counts": counts,
            "missed": json.loads(meta.get("monbridge.summary", {}).get("missed", "{}"))}


def read_seconds(path: str, crcs: bool, repeat: int = 2) -> float:
    """CPU seconds (best of ``repeat``) to read every record of the file with mcap's StreamReader."""
    from mcap.stream_reader import StreamReader

    best = math.inf
    for _ in range(repeat):
        t = time.thread_time()
        for _ in StreamReader(path, validate_crcs=crcs).records:
            pass
        best = min(best, time.thread_time() - t)
    return best


def library_records_per_s(n: int) -> float:
    """The ``mcap`` library's Writer taking ``n`` CDR records of JOINTS, one add_message each."""
    import io

    from mcap.writer import Writer

    from bridge.record.schemas import RecordsSchema

    recs = np.zeros(n, list(JOINTS.items()))
    recs["t"] = time.time() + np.arange(n) * 1e-6
    schema = RecordsSchema("flood", recs.dtype)
    datas, stamps = schema.encode(recs), (recs["t"] * 1e9).astype(np.int64).tolist()
    w = Writer(io.BytesIO(), chunk_size=4 << 20)
    w.start()
    cid = w.register_channel("/flood", "cdr", w.register_schema(schema.name, "ros2msg", schema.text.encode()))
    t = time.perf_counter()
    for i, data in enumerate(datas):
        w.add_message(cid, log_time=stamps[i], data=data, publish_time=stamps[i], sequence=i)
    w.finish()
    return n / (time.perf_counter() - t)


# -- child roles: python -m bench.record --role ROLE JSON-ARGS ---------------------------

def _child(args: dict[str, Any], work: Callable[[threading.Event], dict[str, Any]], close: Callable[[], Any]) -> None:
    """Run ``work(stop)`` on a thread until the parent's "stop" request, which gets its answer."""
    replies = Replies()
    watchdog(args["timeout"], close, LABEL)
    stop, answer = threading.Event(), {}
    thread = threading.Thread(target=lambda: answer.update(work(stop)), daemon=True)
    thread.start()

    def end(_req: dict[str, Any]) -> dict[str, Any]:
        stop.set()
        thread.join()
        return answer

    replies.send(ok=True, ready=True, pid=os.getpid())
    try:
        asyncio.run(serve(replies, {"stop": end}))
    finally:
        close()


def role_reader(args: dict[str, Any]) -> None:
    """The bare reader: every POLL s, copies each new frame and record out of the device's
    memory (as the recorder does, into reused buffers) and writes nothing."""
    from device_agent.attach import DeviceAttachment

    dev = DeviceAttachment(args["name"])
    kinds = {c["name"]: c["kind"] for c in dev.manifest["channels"]}
    frames = {n: np.empty(int(np.prod(r.shape)) * r.dtype.itemsize, np.uint8) for n, r in dev.channels.items()
              if kinds[n] == "frame"}
    cursors = {n: (r.latest if kinds[n] == "frame" else r.write_count) for n, r in dev.channels.items()}

    def work(stop: threading.Event) -> dict[str, Any]:
        while not stop.is_set():
            for name, r in dev.channels.items():
                if kinds[name] == "frame":   # every frame still held, as the recorder
                    for seq in r.unread(after=cursors[name]):
                        got = r.read_frame(seq, out=frames[name])
                        cursors[name] = cursors[name] if got is None else got.seq
                elif kinds[name] == "records":
                    cursors[name] = r.read(cursors[name]).next_cursor
            time.sleep(POLL)
        return {}

    _child(args, work, dev.close)


def role_flood(args: dict[str, Any]) -> None:
    """A device publishing JOINTS records at ``rate`` a second, in batches, until stopped."""
    import device_agent

    mon = device_agent.start(args["name"], mon="bridge=0")
    ch = mon.records("flood", JOINTS, capacity=FLOOD_CAPACITY)
    batch = np.zeros(FLOOD_BATCH, ch.dtype)

    def work(stop: threading.Event) -> dict[str, Any]:
        published, t0 = 0, time.monotonic()
        while not stop.is_set():
            batch["t"] = time.time() + np.arange(FLOOD_BATCH) / args["rate"]
            ch.publish_many(batch)
            published += FLOOD_BATCH
            time.sleep(max(0.0, published / args["rate"] - (time.monotonic() - t0)))
        return {"published": published, "seconds": time.monotonic() - t0}

    _child(args, work, mon.close)


def role_loop(args: dict[str, Any]) -> None:
    """A device loop at LOOP_HZ publishing the demo's channels at the demo's rates; it keeps
    each step's start (Unix time) and period (ms) until stopped."""
    import device_agent

    mon = device_agent.start(args["name"], mon="bridge=0")
    joints = mon.records("joints", JOINTS, capacity=16384)
    cloud, camera = mon.frame("cloud", shape=(20_000, 6), dtype="f4"), mon.frame("camera", shape=(240, 320, 3), dtype="u1")
    rng = np.random.default_rng(1)
    points, image = rng.random((20_000, 6), dtype=np.float32), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    batch = np.zeros(1000 // LOOP_HZ, joints.dtype)

    def work(stop: threading.Event) -> dict[str, Any]:
        starts, periods, step, last = [], [], 0, time.perf_counter()
        next_step = last
        while not stop.is_set():
            t0 = time.perf_counter()
            starts.append(time.time())
            periods.append((t0 - last) * 1e3)
            last, batch["t"] = t0, time.time()
            joints.publish_many(batch)
            if step % (LOOP_HZ // 30) == 0:
                points[step % 20_000] = step
                cloud.publish(points)
            if step % (LOOP_HZ // 15) == 0:
                camera.publish(image)
            step, next_step = step + 1, next_step + 1 / LOOP_HZ
            delay = next_step - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_step = time.perf_counter()
        return {"starts": starts[1:], "periods_ms": periods[1:]}

    _child(args, work, mon.close)


ROLES = {"reader": role_reader, "flood": role_flood, "loop": role_loop}


# -- the parent --------------------------------------------------------------------------

class Watched(DeviceProcess):
    """A process whose output lines are watched: DeviceProcess (drained output, ``stop()``),
    ready when a line matches ``ready`` instead of at a dashboard URL."""

    def __init__(self, argv: list[str], name: str, ready: str, watch: tuple[str, ...] = ()) -> None:
        super().__init__(argv, name, START_TIMEOUT, on_line=self._line)
        self.ready = re.compile(ready)
        self.watch = [re.compile(w) for w in watch]
        self.marks: dict[str, tuple[float, float]] = {}   # pattern -> (perf_counter, CPU seconds) when first seen

    def _line(self, line: str) -> None:
        for pattern in [self.ready, *self.watch]:
            if pattern.pattern not in self.marks and pattern.search(line):
                try:
                    self.marks[pattern.pattern] = (time.perf_counter(), cpu_seconds(self.proc.pid))
                except ProcessLookupError:
                    self.marks[pattern.pattern] = (time.perf_counter(), math.nan)
        if self.ready.search(line):
            self._seen.set()

    def launch(self, mon: str = "bridge=0") -> "Watched":
        env = dict(os.environ, MON=mon, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._seen.wait(START_TIMEOUT) or self.proc.poll() is not None and self.ready.pattern not in self.marks:
            raise RuntimeError(f"{self.argv[3]} did not start:\n{self.output()}")
        return self


@contextlib.contextmanager
def timer_lateness() -> Iterator[list[float]]:
    """The floor of any timing on this machine meanwhile: how late (ms) a thread of ours
    wakes from 5 ms sleeps, one value per sleep, while the ``with`` block runs."""
    late: list[float] = []
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            t = time.perf_counter()
            time.sleep(0.005)
            late.append((time.perf_counter() - t - 0.005) * 1e3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield late
    finally:
        done.set()
        thread.join()


def cpu_pct(pid: int, seconds: float) -> float:
    """% of a core the process used over the next ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)


class Run:
    def __init__(self, cfg: dict[str, Any], settle: bool, tmp: str) -> None:
        self.cfg, self.tmp = cfg, tmp
        self.settler = Settler(cfg["settle_s"] if settle else 0.0, log)
        self.name = f"bench-record-{os.getpid()}"
        self.figures: dict[str, Any] = {}
        self.problems: list[str] = []
        self.demo_file = os.path.join(tmp, "demo.mcap")

    def recorder(self, device: str, out: str) -> Watched:
        return Watched([*RECORD, "--attach", device, "-o", out, "--force"], device, r"recording device").launch()

    def stop(self, proc: Any) -> None:
        self.problems += proc.stop()

    def demo(self) -> None:
        cfg, token = self.cfg, secrets.token_urlsafe(12)
        dev = DeviceProcess([sys.executable, str(DEMO)], self.name, START_TIMEOUT)
        try:
            dev.start(f"port=0,name={self.name},token={token}")
            time.sleep(cfg["warm_s"])
            log(f"demo: bare reader, then the recorder, {cfg['window_s']:g} s each")
            reader = Child.role("bench.record", "reader", "reader", {"name": self.name, "timeout": 600}, log=log)
            try:
                reader.recv(START_TIMEOUT)
                time.sleep(cfg["warm_s"])
                self.settler()
                self.figures["reader_cpu_pct"] = cpu_pct(reader.pid, cfg["window_s"])
                reader.call(op="stop")
            finally:
                reader.stop()
            rec = self.recorder(self.name, self.demo_file)
            try:
                time.sleep(cfg["warm_s"])
                self.settler()
                d0 = cpu_seconds(dev.proc.pid)
                self.figures["recorder_cpu_pct"] = cpu_pct(rec.proc.pid, cfg["window_s"])
                self.figures["demo_device_cpu_pct"] = 100 * (cpu_seconds(dev.proc.pid) - d0) / cfg["window_s"]
            finally:
                self.stop(rec)
        finally:
            self.problems += dev.stop()
        f = file_figures(self.demo_file)
        self.demo_start_ns, self.demo_duration = f["start_ns"], f["duration_s"]
        self.figures.update(mb_per_min=f["mb_per_min"], raw_mb_per_min=f["raw_mb_per_min"], demo_messages=f["messages"],
                            demo_seconds=f["duration_s"], demo_missed=f["missed"])
        scale = 60 / f["duration_s"]
        self.figures["read_minute_s"] = read_seconds(self.demo_file, crcs=True) * scale
        self.figures["read_minute_nocrc_s"] = read_seconds(self.demo_file, crcs=False) * scale
        log(f"demo: recorder {self.figures['recorder_cpu_pct']:.1f} % (bare reader {self.figures['reader_cpu_pct']:.1f} %), "
            f"{f['mb_per_min']:.1f} MB/min, reading a minute {self.figures['read_minute_s']:.2f} s")

    def throughput(self) -> None:
        name, out = f"{self.name}-flood", os.path.join(self.tmp, "flood.mcap")
        dev = Child.role("bench.record", "flood", "flood device", {"name": name, "rate": FLOOD_RATE, "timeout": 600},
                         log=log)
        try:
            dev.recv(START_TIMEOUT)
            rec = self.recorder(name, out)
            try:
                self.settler()
                time.sleep(self.cfg["flood_s"])
            finally:
                self.stop(rec)
            offered = dev.call(op="stop")
        finally:
            dev.stop()
        f = file_figures(out)
        written = f["counts"].get("/flood", 0)
        self.figures.update(records_per_s=written / f["duration_s"], records_written=written,
                            records_missed=f["missed"].get("flood"), records_offered_per_s=offered["published"] / offered["seconds"],
                            library_records_per_s=library_records_per_s(100_000))
        log(f"throughput: {self.figures['records_per_s']:.0f} records/s in the file (mcap's Writer "
            f"{self.figures['library_records_per_s']:.0f}/s), missed {f['missed'].get('flood')}")

    def loop(self) -> None:
        w, name = self.cfg["loop_window_s"], f"{self.name}-loop"
        dev = Child.role("bench.record", "loop", "loop device", {"name": name, "timeout": 600}, log=log)
        on: list[tuple[float, float]] = []
        off: list[tuple[float, float]] = []
        try:
            dev.recv(START_TIMEOUT)
            time.sleep(self.cfg["warm_s"])
            log(f"loop: {LOOP_HZ} Hz, windows of {w:g} s without / with the recorder, twice")
            for k in range(2):
                self.settler()
                t0 = time.time()
                time.sleep(w)
                off.append((t0, time.time()))
                rec = self.recorder(name, os.path.join(self.tmp, f"loop{k}.mcap"))
                try:
                    time.sleep(self.cfg["warm_s"])
                    t0 = time.time()
                    time.sleep(w)
                    on.append((t0, time.time()))
                finally:
                    self.stop(rec)
            got = dev.call(60.0, op="stop")
        finally:
            dev.stop()
        self.figures.update(loop_figures(got["starts"], got["periods_ms"], on, off))

    def replays(self) -> None:
        """The demo's file played to its end at 1x, 10x and flat out, without a bridge (the replay's own cost)."""
        duration, playing, end = self.demo_duration, r"^monbridge replay: playing ", r"^monbridge replay: reached the end"
        for speed in ("1", "10", "max"):
            self.settler()
            rep = Watched([*REPLAY, self.demo_file, "--speed", speed, "--exit-at-end", "--name", f"{self.name}-replay"],
                          f"{self.name}-replay", playing, watch=(end,)).launch()
            try:
                with timer_lateness() as late:
                    rep.proc.wait(duration / (1 if speed == "1" else 5) + START_TIMEOUT)
            finally:
                self.stop(rep)
            if speed == "1":
                self.figures["timer_late_p99_ms"] = percentile(late, 99)
            lines = list(rep.lines)
            (t0, c0), (t1, c1) = rep.marks[playing], rep.marks.get(end, (math.nan, math.nan))
            ended = next((m for line in lines if (m := REPLAY_END.search(line))), None)
            key = f"replay_{speed}x" if speed != "max" else "replay_max"
            self.figures[f"{key}_speed"] = float(ended.group(1)) / float(ended.group(2)) if ended else math.nan
            self.figures[f"{key}_cpu_pct"] = 100 * (c1 - c0) / (t1 - t0)
            timing = replay_timing(lines)
            if speed != "max":
                self.figures[f"{key}_p99_ms"], self.figures[f"{key}_p50_ms"] = timing["p99_ms"], timing["p50_ms"]
            log(f"replay {speed}: {self.figures[f'{key}_speed']:.1f}x, CPU {self.figures[f'{key}_cpu_pct']:.1f} %, "
                f"p99 {timing['p99_ms']} ms" + (f" (a 5 ms sleep wakes {self.figures['timer_late_p99_ms']:.1f} ms late, "
                                                f"p99)" if speed == "1" else ""))

    def seek(self) -> None:
        from bridge.client import Client

        token, start_s, duration = secrets.token_urlsafe(12), self.demo_start_ns / 1e9, self.demo_duration
        rep = Watched([*REPLAY, self.demo_file, "--loop", "--name", f"{self.name}-seek"], f"{self.name}-seek",
                      r"monbridge: dashboard for '[^']+' at ").launch(f"port=0,token={token}")
        first, seeks = [], []
        try:
            url = re.search(r" at (\S+)", next(line for line in rep.lines if "dashboard for" in line)).group(1)
            with Client(url, timeout=20) as client:
                for _ in range(self.cfg["seeks"]):
                    t = time.perf_counter()
                    with client.subscribe("cloud", rate=60) as sub:
                        sub.get(timeout=10)
                        first.append((time.perf_counter() - t) * 1e3)
                with client.subscribe("cloud", rate=60) as sub:
                    sub.get(timeout=10)
                    for k in range(self.cfg["seeks"]):
                        self.settler()
                        target = (0.15 + 0.55 * (k % 2) + 0.2 * k / self.cfg["seeks"]) * duration
                        t = time.perf_counter()
                        client.command("seek", t=target)
                        while not (start_s + target - 0.05 <= sub.get(timeout=10).t <= start_s + target + 1.0):
                            pass
                        seeks.append((time.perf_counter() - t) * 1e3)
        finally:
            self.stop(rep)
        self.figures.update(seek_first_frame_ms=max(seeks), seek_ms=seeks, seek_p50_ms=percentile(seeks, 50),
                            subscribe_first_frame_ms=percentile(first, 50))
        log(f"seek: first frame after {', '.join(f'{s:.0f}' for s in seeks)} ms (new subscription: {percentile(first, 50):.0f} ms)")


def run(mode: str, chosen: set[str], settle: bool) -> dict[str, Any]:
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        r = Run(MODES[mode], settle, tmp)
        try:
            if chosen & {"demo", "replay", "seek"}:
                r.demo()
                clock.lap("demo")
            for m, step in (("throughput", r.throughput), ("loop", r.loop), ("replay", r.replays), ("seek", r.seek)):
                if m in chosen:
                    step()
                    clock.lap(m)
        finally:
            r.problems += kill_descendants()
            if removed := remove_segments(f"monbridge.{r.name}"):   # the flood, loop and replay devices' too
                r.problems.append(f"removed segments left behind: {removed}")
    result = {"bench": "record", "quick": mode == "quick", "git": git_revision("bridge/record", "device_agent"),
              **clock.machine(), "loadavg_1m": clock.loadavg(), **clock.pressure(), **r.figures,
              "settle": r.settler.report(), "phase_s": clock.phases}
    return finish(result, TARGETS, clock, f"monbridge.{r.name}", problems=r.problems)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if run_role(argv, ROLES):
        return 0
    ap = arguments("bench.record", __doc__, "short windows (70-90 s in all)", MEASUREMENTS)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    result = round_figures(run("quick" if args.quick else "full", only(ap, args.only, MEASUREMENTS), not args.no_settle))
    report(result, args.json, log, done=": " + ("pass" if all(result["pass"].values()) else
                                                 "FAIL: " + ", ".join(k for k, v in result["pass"].items() if not v)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
