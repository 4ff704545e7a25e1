"""Shared-memory transport benchmark: device_agent's rings and frame slots, side by side
with multiprocessing.Queue and a plain memcpy, measured in the same run.

    python -m bench.ring [--quick] [--json] [--only small,...] [--no-settle] [--device-env NAME=VALUE]

Measures small records (publish() while a reader process drains the ring, against a
multiprocessing.Queue), batched records (publish_many), 1 MB and 16 MB frames (against memcpy
and a bare two-process copy), the command round trip and the cost of publish() with MON off
and on. ``--quick`` is one round (about 25 s); the full run takes the median of 5 rounds
(about 2.5 min). Exit status 1 if a measurement failed (its error is in ``errors``). The
figures and how to read them: docs/performance.md, "Shared-memory transport".
"""

from __future__ import annotations

from bench.common import Clock, Settler, arguments, exit_on_sigterm, finish, git_revision, logger, only, \
    percentile, report, round_figures
from bench.procs import remove_segments

import contextlib
import gc
import itertools
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import traceback
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Callable, Iterator
from unittest import mock

import numpy as np

import device_agent
from device_agent.attach import DeviceAttachment
from device_agent.shm import attach_segment  # maps a segment without the resource tracker

CTX = mp.get_context("spawn")

FIELDS = {"t": "f8", "motor1": "f4", "motor2": "f4"}  # 16-byte record
RECORDS_CAPACITY = 8192        # the default capacity of mon.records()
BATCH = 1000                   # records per publish_many
BATCHED_CAPACITY = 65536       # ring for the batched test: 64 batches
FRAMES = {"1mb": (262144,), "16mb": (4194304,)}  # float32
FRAME_SLOTS = 3                # the default of mon.frame()
MSG_BYTES = 100                # multiprocessing.Queue message size
QUEUE_MAXSIZE = 10_000         # bounded, so a fast producer cannot grow it without limit
CHUNK = 1000                   # publish() calls between two clock reads
CONTENDED_SHARE = 0.8          # a side with less CPU than this did not have a core to itself
CHILD_SLACK = 30.0             # seconds a child may take beyond its window before it is killed

TARGETS: dict[str, dict[str, float]] = {
    "ratio_vs_mpqueue": {"min": 5.0}, "batched_records_per_s": {"min": 5_000_000},
    "frame_ratio_vs_memcpy": {"min": 0.3}, "frame16_ratio_vs_memcpy": {"min": 0.4},
    "command_rtt_p50_us": {"max": 200.0},
}

# seconds per throughput test and frame window; budgets for waiting for quiet (settle_s), for
# slow cross-core spells (spell_s) and for both together (wait_s)
MODES = {
    "quick": dict(window=1.5, rounds=1, rtt_calls=1000, busy_calls=100, ns_calls=200_000, ns_repeats=3,
                  memcpy_s=0.25, settle_s=8.0, frame_window=1.0, frame_windows=3, handoff_window=0.3,
                  spell_s=10.0, wait_s=12.0),
    "full": dict(window=2.5, rounds=5, rtt_calls=2000, busy_calls=100, ns_calls=1_000_000, ns_repeats=5,
                 memcpy_s=1.0, settle_s=20.0, frame_window=2.5, frame_windows=1, handoff_window=0.5,
                 spell_s=30.0, wait_s=45.0),
}
SLOW_SPELL = 0.25             # a bare handoff below this × memcpy: the VM's slow cross-core spell
SPELL_PAUSE = 0.5              # s between two probes while waiting a spell out
RTT_WARMUP = 200
MEASUREMENTS = ("small", "mpqueue", "batched", "frame1mb", "frame16mb", "rtt", "rtt_busy", "publish_ns")

_names = itertools.count(1)

DEVICE_ENV: dict[str, str] = {}   # --device-env: added to the device (writer) processes only


def added_environment(extra: dict[str, str]) -> Any:
    """``os.environ`` with ``extra`` added, put back as it was on exit, as a context manager
    (spawned children inherit the environment of the moment they start)."""
    return mock.patch.dict(os.environ, extra)


log = logger("bench.ring")


def device_name(kind: str) -> str:
    return f"bench-ring-{os.getpid()}-{kind}-{next(_names)}"


def segments_prefix() -> str:
    """The prefix of the segments of every device this process names (device_name)."""
    return f"monbridge.bench-ring-{os.getpid()}-"


# -- children (spawned; module-level so the spawn context can find them) -------------------

def _child_main(role: str, kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    sys.stdout = sys.stderr  # stdout is reserved for the parent's JSON
    try:
        _ROLES[role](kind, name, params, conn, stop, extra)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{role} {kind} (pid {os.getpid()}):\n{traceback.format_exc()}"))
        raise SystemExit(1)
    finally:
        stop.value = 1
        conn.close()


class CpuShare:
    """CPU time this process used per second of wall time since it was made (a busy-looping
    side near 1.0 had a core to itself)."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def share(self) -> float:
        return (time.process_time() - self.cpu0) / max(1e-9, time.perf_counter() - self.wall0)


def _wait_for(conn: Any, what: str, timeout: float) -> None:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {what!r} from the parent in {timeout:.0f} s")
    msg = conn.recv()
    if msg != what:
        raise RuntimeError(f"expected {what!r} from the parent, got {msg!r}")


def _ready_go(conn: Any, timeout: float) -> CpuShare:
    """Say "ready", wait for "go", start counting CPU."""
    conn.send(("ready",))
    _wait_for(conn, "go", timeout)
    return CpuShare()


def _device(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    timeout = params["timeout"]
    window = params.get("window", 0.0)
    _own_resource_tracker()
    mon = device_agent.start(name, mon="bridge=0")
    try:
        if kind in ("small", "rtt_busy", "batched"):
            ch = mon.records("data", FIELDS, capacity=params.get("capacity", RECORDS_CAPACITY))
        elif kind.startswith("frame"):
            ch = mon.frame("data", FRAMES[kind[len("frame"):]], "f4", slots=FRAME_SLOTS)
            warm = np.zeros(ch.shape, dtype=np.float32)
            for _ in range(FRAME_SLOTS):  # touch every slot once, as a running camera has
                ch.publish(warm)
        if kind.startswith("rtt"):
            @mon.command
            def echo(value: float) -> float:
                """Return ``value``."""
                return value

        cpu = _ready_go(conn, timeout)
        if kind == "small":
            end = time.perf_counter() + window
            result = _publish_small(ch, lambda now: now >= end)
        elif kind == "rtt_busy":  # the device loop keeps the GIL busy while commands arrive
            result = _publish_small(ch, lambda now: stop.value != 0)
        elif kind == "batched":
            result = _publish_batched(ch, window)
        elif kind.startswith("frame"):
            result = _publish_frames(ch, window)
        if kind == "rtt":
            _wait_for(conn, "exit", timeout)  # the parent calls the handler meanwhile
            return
        stop.value = 1
        result["cpu_share"] = cpu.share()
        result["count"] = int(ch.count)
        conn.send(("result", result))
        _wait_for(conn, "exit", timeout)
    finally:
        stop.value = 1
        mon.close()


def _own_resource_tracker() -> None:
    """Give this device process a resource tracker of its own, as a device started from a
    shell has (why: docs/performance.md, "Shared-memory transport")."""
    if sys.version_info >= (3, 13):
        return  # attachers pass track=False: nothing to untangle
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    with tracker._lock:
        if tracker._fd is not None:
            os.close(tracker._fd)
        tracker._fd = None  # the next register() launches a tracker for this process
        tracker._pid = None


def _publish_small(ch: Any, done: Callable[[float], bool]) -> dict[str, Any]:
    pub = ch.publish
    t, m1, m2 = 0.5, 1.5, 2.5
    n = 0
    clock = time.perf_counter
    t0 = now = clock()
    while not done(now):
        for _ in range(CHUNK):
            pub(t=t, motor1=m1, motor2=m2)
        n += CHUNK
        now = clock()
    return {"published": n, "elapsed": now - t0}


def _publish_batched(ch: Any, window: float) -> dict[str, Any]:
    batch = np.zeros(BATCH, dtype=ch.dtype)
    batch["t"] = np.arange(BATCH) * 1e-4
    batch["motor1"] = 1.5
    batch["motor2"] = 2.5
    pm = ch.publish_many
    n = 0
    clock = time.perf_counter
    t0 = now = clock()
    end = t0 + window
    while now < end:
        pm(batch)
        n += BATCH
        now = clock()
    return {"published": n, "elapsed": now - t0}


def _publish_frames(ch: Any, window: float) -> dict[str, Any]:
    src = np.random.default_rng(0).random(ch.shape, dtype=np.float32)
    nbytes = src.nbytes
    pub = ch.publish
    k = k0 = ch.count  # the warm-up frames
    ns = time.perf_counter_ns
    publish_ns: list[int] = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    clock = time.perf_counter
    t0 = now = clock()
    end = t0 + window
    while now < end:
        k += 1
        src[0] = src[-1] = k  # new contents each frame: the reader checks both ends = its seq
        a = ns()
        pub(src)
        publish_ns.append(ns() - a)
        now = clock()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    publish_ns.sort()
    return {"published": k - k0, "elapsed": now - t0, "nbytes": nbytes, "minflt": faults,
            "publish_us_p50": publish_ns[len(publish_ns) // 2] / 1000}


def _reader(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    timeout = params["timeout"]
    dev = DeviceAttachment(name)
    try:
        rd = dev.channel("data")
        cpu = _ready_go(conn, timeout)
        hard_end = time.perf_counter() + params["window"] + CHILD_SLACK
        if kind.startswith("frame"):
            result = _read_frames(rd, stop, hard_end)
        else:
            result = _read_records(rd, stop, hard_end)
        result["cpu_share"] = cpu.share()
        conn.send(("result", result))
    finally:
        dev.close()


def _read_records(rd: Any, stop: Any, hard_end: float) -> dict[str, Any]:
    read = rd.read
    clock = time.perf_counter
    cursor = delivered = missed = reads = 0
    t0 = clock()
    while not stop.value:
        batch = read(cursor)
        k = len(batch.records)
        if k:
            delivered += k
            reads += 1
        missed += batch.missed  # also when every record it found had been overwritten
        cursor = batch.next_cursor
        if clock() > hard_end:
            raise TimeoutError("the device never finished")
    batch = read(cursor)  # the writer has stopped: drain what is left
    delivered += len(batch.records)
    missed += batch.missed
    cursor = batch.next_cursor
    return {"delivered": delivered, "missed": missed, "reads": reads, "cursor": cursor, "elapsed": clock() - t0}


def _read_frames(rd: Any, stop: Any, hard_end: float) -> dict[str, Any]:
    read_latest = rd.read_latest
    buffer = np.empty(int(np.prod(rd.shape)) * rd.dtype.itemsize, np.uint8)  # reused, as a real reader would
    clock = time.perf_counter
    ns = time.perf_counter_ns
    frames = torn = polls = 0
    after = rd.latest  # the warm-up frames published before "go" do not count
    nbytes = 0
    copy_ns: list[int] = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = clock()
    while not stop.value:
        polls += 1
        a = ns()
        frame = read_latest(after, out=buffer)
        if frame is None:
            if clock() > hard_end:
                raise TimeoutError("the device never finished")
            continue
        copy_ns.append(ns() - a)
        arr = frame.array
        if arr[0] != arr[-1] or arr[0] != frame.seq:
            torn += 1
        frames += 1
        nbytes += arr.nbytes
        after = frame.seq
    elapsed = clock() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    copy_ns.sort()
    return {"frames": frames, "bytes": nbytes, "torn": torn, "polls": polls, "last_seq": after,
            "elapsed": elapsed, "copy_us_p50": copy_ns[len(copy_ns) // 2] / 1000 if copy_ns else None,
            "copy_s": sum(copy_ns) / 1e9, "minflt": faults}


def _queue_producer(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, q: Any) -> None:
    msg = os.urandom(MSG_BYTES)
    cpu = _ready_go(conn, params["timeout"])
    put = q.put
    n = 0
    clock = time.perf_counter
    t0 = now = clock()
    end = t0 + params["window"]
    while now < end:
        for _ in range(100):
            put(msg)
        n += 100
        now = clock()
    elapsed = now - t0
    put(None)
    conn.send(("result", {"published": n, "elapsed": elapsed, "cpu_share": cpu.share()}))
    _wait_for(conn, "exit", params["timeout"])
    q.close()
    q.join_thread()


def _queue_consumer(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, q: Any) -> None:
    cpu = _ready_go(conn, params["timeout"])
    get = q.get
    limit = params["window"] + CHILD_SLACK
    n = nbytes = 0
    clock = time.perf_counter
    t0 = clock()
    while True:
        msg = get(timeout=limit)
        if msg is None:
            break
        n += 1
        nbytes += len(msg)
    conn.send(("result", {"delivered": n, "bytes": nbytes, "elapsed": clock() - t0, "cpu_share": cpu.share()}))


@contextlib.contextmanager
def _handoff_slots(name: str, nbytes: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The bare handoff's segment: a counter (frames written, done flag) and FRAME_SLOTS slots."""
    shm = attach_segment(name)
    try:
        counter = np.ndarray((8,), np.int64, buffer=shm.buf)
        slots = np.ndarray((FRAME_SLOTS, nbytes), np.uint8, buffer=shm.buf, offset=64)
        yield counter, slots
    finally:
        del counter, slots
        shm.close()


def _handoff_writer(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    """The bare baseline for frames: copy into slot k % 3 of a plain SharedMemory buffer and
    bump a counter. No stamps, no pins, no API: only the cross-core copy itself."""
    with _handoff_slots(name, params["nbytes"]) as (counter, slots):
        src = np.random.default_rng(0).integers(0, 255, params["nbytes"], dtype=np.uint8)
        cpu = _ready_go(conn, params["timeout"])
        k = 0
        clock = time.perf_counter
        t0 = now = clock()
        end = t0 + params["window"]
        while now < end:
            k += 1
            slots[k % FRAME_SLOTS] = src
            counter[0] = k
            now = clock()
        counter[1] = 1
        conn.send(("result", {"published": k, "elapsed": now - t0, "cpu_share": cpu.share()}))
        _wait_for(conn, "exit", params["timeout"])


def _handoff_reader(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    with _handoff_slots(name, params["nbytes"]) as (counter, slots):
        out = np.empty(params["nbytes"], np.uint8)
        cpu = _ready_go(conn, params["timeout"])
        seen = frames = 0
        clock = time.perf_counter
        hard_end = clock() + params["window"] + CHILD_SLACK
        t0 = clock()
        while not counter[1]:
            k = int(counter[0])
            if k != seen:
                out[...] = slots[k % FRAME_SLOTS]
                seen = k
                frames += 1
            elif clock() > hard_end:
                raise TimeoutError("the writer never finished")
        conn.send(("result", {"frames": frames, "elapsed": clock() - t0, "cpu_share": cpu.share()}))


_ROLES: dict[str, Callable[..., None]] = {
    "device": _device, "reader": _reader, "qprod": _queue_producer, "qcons": _queue_consumer,
    "hwriter": _handoff_writer, "hreader": _handoff_reader,
}


# -- the parent: spawning, supervising, measuring ------------------------------------------

class Children:
    """Spawned children of one measurement; every one is joined or killed on exit."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.stop = CTX.RawValue("b", 0)
        self.procs: list[tuple[Any, Any]] = []

    def spawn(self, role: str, kind: str, name: str, params: dict[str, Any], extra: Any = None) -> int:
        parent, child = CTX.Pipe()
        proc = CTX.Process(target=_child_main, args=(role, kind, name, params, child, self.stop, extra),
                           name=f"bench-{role}-{kind}", daemon=True)
        with added_environment(DEVICE_ENV if role == "device" else {}):
            proc.start()
        child.close()  # so a child that dies shows up as EOF on our end
        self.procs.append((proc, parent))
        return len(self.procs) - 1

    def send(self, i: int, message: str) -> None:
        self.procs[i][1].send(message)

    def recv(self, i: int, what: str) -> Any:
        proc, conn = self.procs[i]
        left = self.deadline - time.monotonic()
        if left <= 0 or not conn.poll(left):
            raise TimeoutError(f"{proc.name} sent no {what!r} in time")
        try:
            msg = conn.recv()
        except EOFError:
            proc.join(1)
            raise RuntimeError(f"{proc.name} exited (code {proc.exitcode}) before sending {what!r}") from None
        if msg[0] == "error":
            raise RuntimeError(f"{proc.name} failed: {msg[1]}")
        if msg[0] != what:
            raise RuntimeError(f"{proc.name} sent {msg!r}, expected {what!r}")
        return msg[1] if len(msg) > 1 else None

    def run_pair(self, consumer: int, producer: int, producer_ready: bool = False) -> tuple[Any, Any]:
        """Wait until both are ready, start the consumer first, return (producer's, consumer's) result."""
        self.recv(consumer, "ready")
        if not producer_ready:
            self.recv(producer, "ready")
        self.send(consumer, "go")
        self.send(producer, "go")
        return self.recv(producer, "result"), self.recv(consumer, "result")

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.value = 1
        for proc, conn in self.procs:
            with contextlib.suppress(OSError, ValueError):
                conn.send("exit")
        for proc, conn in self.procs:
            proc.join(max(0.1, min(10.0, self.deadline - time.monotonic())))
            if proc.is_alive():
                log(f"killing {proc.name} (pid {proc.pid}): it did not exit in time")
                proc.kill()
                proc.join(5)
            conn.close()


def measure_pair(kind: str, window: float, params: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """A device process publishing ``kind`` for ``window`` s and a reader process draining it."""
    name = device_name(kind)
    p = {"window": window, "timeout": window + CHILD_SLACK, **(params or {})}
    with Children(window + 2 * CHILD_SLACK) as ch:
        dev = ch.spawn("device", kind, name, p)
        ch.recv(dev, "ready")   # its segments exist: the reader can attach
        return ch.run_pair(ch.spawn("reader", kind, name, p), dev, producer_ready=True)


def _records_accounting(kind: str, w: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """The reader's losses and reads, whether every record published was delivered or counted
    missed, and both sides' CPU."""
    return {f"{kind}_missed": r["missed"], f"{kind}_reads": r["reads"],
            f"{kind}_accounted": r["delivered"] + r["missed"] == w["count"] == w["published"],
            f"{kind}_cpu_share": [w["cpu_share"], r["cpu_share"]]}


def measure_small(window: float) -> dict[str, Any]:
    w, r = measure_pair("small", window, {"capacity": RECORDS_CAPACITY})
    return {"small_publish_per_s": w["published"] / w["elapsed"],
            "small_delivered_per_s": r["delivered"] / r["elapsed"],
            **_records_accounting("small", w, r)}


def measure_mpqueue(window: float) -> dict[str, Any]:
    p = {"window": window, "timeout": window + CHILD_SLACK}
    q = CTX.Queue(maxsize=QUEUE_MAXSIZE)
    try:
        with Children(window + 2 * CHILD_SLACK) as ch:
            w, r = ch.run_pair(ch.spawn("qcons", "mpqueue", "", p, q), ch.spawn("qprod", "mpqueue", "", p, q))
    finally:
        q.close()
        q.cancel_join_thread()
        del q
        gc.collect()  # the queue's named semaphores are unlinked when it is collected
    return {"mpqueue_per_s": r["delivered"] / r["elapsed"], "mpqueue_put_per_s": w["published"] / w["elapsed"],
            "mpqueue_accounted": r["delivered"] == w["published"],
            "mpqueue_cpu_share": [w["cpu_share"], r["cpu_share"]]}


def measure_batched(window: float) -> dict[str, Any]:
    w, r = measure_pair("batched", window, {"capacity": BATCHED_CAPACITY})
    return {"batched_records_per_s": r["delivered"] / r["elapsed"],
            "batched_publish_records_per_s": w["published"] / w["elapsed"], **_records_accounting("batched", w, r)}


def measure_frames(size: str, window: float) -> dict[str, Any]:
    w, r = measure_pair(f"frame{size}", window)
    fig = {"gbps": r["bytes"] / r["elapsed"] / 1e9, "publish_gbps": w["published"] * w["nbytes"] / w["elapsed"] / 1e9,
           "frames_read": r["frames"], "frames_published": w["published"], "torn": r["torn"],
           "publish_us_p50": w["publish_us_p50"], "read_us_p50": r["copy_us_p50"],  # one publish(), one read_latest()
           "read_us_mean": r["copy_s"] / max(1, r["frames"]) * 1e6,
           "reader_busy": r["copy_s"] / r["elapsed"],  # share of time spent copying
           "writer_faults_per_frame": w["minflt"] / max(1, w["published"]),
           "reader_faults_per_frame": r["minflt"] / max(1, r["frames"]), "cpu_share": [w["cpu_share"], r["cpu_share"]]}
    return {f"frame_{size}_{k}": v for k, v in fig.items()}


def measure_frames_windows(size: str, cfg: dict[str, Any], spells: dict[str, Any]) -> dict[str, Any]:
    """``frame_windows`` frame measurements, each right after a memcpy and between two probes
    of the bare handoff. A probe below SLOW_SPELL × memcpy marks a slow cross-core spell: one
    before a window is waited out, a window with one after it is set aside and measured again,
    both within ``spells["budget_s"]`` (docs/performance.md, "Slow cross-core spells").
    Returns the median kept window's figures and every window, kept or set aside."""
    hkey, mkey, key = f"handoff_{size}_gbps", f"memcpy_{size}_gbps", f"frame_{size}_gbps"
    kept: list[dict[str, Any]] = []
    set_aside: list[dict[str, Any]] = []

    def budget_left(since: float) -> bool:
        return spells["waited_s"] + time.perf_counter() - since < spells["budget_s"]

    before = measure_handoff(size, cfg["handoff_window"])[hkey]
    while len(kept) < cfg["frame_windows"]:
        memcpy = measure_memcpy(size, cfg["memcpy_s"])[mkey]
        started = time.perf_counter()
        while before < SLOW_SPELL * memcpy and budget_left(started):
            log(f"cross-core copy at {before:.1f} GB/s (memcpy {memcpy:.1f}): a slow spell of this VM, waiting")
            time.sleep(SPELL_PAUSE)
            before = measure_handoff(size, cfg["handoff_window"])[hkey]
        waiting = time.perf_counter()
        window = measure_frames(size, cfg["frame_window"])
        after = measure_handoff(size, cfg["handoff_window"])[hkey]
        window.update({hkey: (before + after) / 2, mkey: memcpy})
        in_spell = min(before, after) < SLOW_SPELL * memcpy
        spells["waited_s"] += waiting - started
        if in_spell and budget_left(waiting):
            log(f"a slow spell during the {size} window ({before:.1f} → {after:.1f} GB/s): measuring it again")
            spells["set_aside"] += 1
            spells["waited_s"] += time.perf_counter() - waiting
            set_aside.append({key: window[key], "around": [before, after]})
        else:
            spells["measured_in_spell"] += in_spell
            kept.append(window)
        before = after
    middle = sorted(kept, key=lambda r: r[key])[len(kept) // 2]  # the median window's figures
    out = {**middle}
    for k in (key, hkey, mkey):
        out[f"{k}_windows"] = [r[k] for r in kept]
    out[f"{key}_set_aside"] = [r[key] for r in set_aside]
    out[f"{hkey}_set_aside"] = [r["around"] for r in set_aside]  # [before, after] each
    out[hkey] = statistics.median(r[hkey] for r in kept)
    out[mkey] = statistics.median(r[mkey] for r in kept)
    return out


def measure_handoff(size: str, window: float) -> dict[str, Any]:
    """The same 1-writer/1-reader copy with no transport at all (see _handoff_writer): what
    the machine's cross-core copy does at the moment, next to the frame figure."""
    nbytes = int(np.prod(FRAMES[size])) * 4
    p = {"window": window, "timeout": window + CHILD_SLACK, "nbytes": nbytes}
    shm = SharedMemory(create=True, size=64 + FRAME_SLOTS * nbytes)
    try:
        with Children(window + 2 * CHILD_SLACK) as ch:
            w, r = ch.run_pair(ch.spawn("hreader", "handoff", shm.name, p), ch.spawn("hwriter", "handoff", shm.name, p))
    finally:
        shm.close()
        shm.unlink()
    return {f"handoff_{size}_gbps": r["frames"] * nbytes / r["elapsed"] / 1e9,
            f"handoff_{size}_cpu_share": [w["cpu_share"], r["cpu_share"]]}


def measure_memcpy(size: str, seconds: float) -> dict[str, Any]:
    shape = FRAMES[size]
    src = np.random.default_rng(1).random(shape, dtype=np.float32)
    shm = SharedMemory(create=True, size=src.nbytes)
    try:
        dst = np.ndarray(shape, dtype=np.float32, buffer=shm.buf)
        try:
            np.copyto(dst, src)  # touch every page once
            per_check = max(1, (64 << 20) // src.nbytes)
            n = 0
            t0 = now = time.perf_counter()
            while now - t0 < seconds:
                for _ in range(per_check):
                    np.copyto(dst, src)
                n += per_check
                now = time.perf_counter()
        finally:
            del dst
    finally:
        shm.close()
        shm.unlink()
    return {f"memcpy_{size}_gbps": n * src.nbytes / (now - t0) / 1e9}


def measure_rtt(calls: int, busy: bool) -> dict[str, Any]:
    kind = "rtt_busy" if busy else "rtt"
    name = device_name(kind)
    budget = 60.0 + calls * (0.05 if busy else 0.005)
    p = {"timeout": budget, "window": budget}
    samples: list[int] = []
    with Children(budget + CHILD_SLACK) as ch:
        dev = ch.spawn("device", kind, name, p)
        ch.recv(dev, "ready")
        ch.send(dev, "go")
        with DeviceAttachment(name) as att:
            call = att.call
            clock = time.perf_counter_ns
            for i in range(RTT_WARMUP + calls):
                t0 = clock()
                reply = call("echo", {"value": float(i)})
                t1 = clock()
                if not reply.get("ok") or reply.get("result") != float(i):
                    raise RuntimeError(f"command failed: {reply}")
                if i >= RTT_WARMUP:
                    samples.append(t1 - t0)
        ch.stop.value = 1
        if busy:
            w = ch.recv(dev, "result")
    prefix = "command_rtt_busy" if busy else "command_rtt"
    out = {f"{prefix}_samples_us": [s / 1000 for s in samples]}
    if busy:
        out["command_rtt_busy_device_publish_per_s"] = w["published"] / w["elapsed"]
    return out


def measure_publish_ns(calls: int, repeats: int) -> dict[str, Any]:
    def best_ns(ch: Any) -> float:
        pub = ch.publish
        t, m1, m2 = 0.5, 1.5, 2.5
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                pub(t=t, motor1=m1, motor2=m2)
            best = min(best, time.perf_counter_ns() - t0)
        return best / calls

    off = device_agent.start(mon="0")
    disabled = best_ns(off.records("data", FIELDS))
    mon = device_agent.start(device_name("inproc"), mon="bridge=0")
    try:
        enabled = best_ns(mon.records("data", FIELDS))
    finally:
        mon.close()
    return {"disabled_publish_ns": disabled, "enabled_publish_ns": enabled}


# -- the run -------------------------------------------------------------------------------

def run(mode: str, measure: set[str], settle: bool = True, device_env: dict[str, str] | None = None) -> dict[str, Any]:
    cfg = dict(MODES[mode])
    DEVICE_ENV.clear()
    DEVICE_ENV.update(device_env or {})
    clock = Clock()
    win = cfg["window"]
    settler = Settler(cfg["settle_s"] if settle else 0.0, log)
    spells = {"waited_s": 0.0, "budget_s": cfg["spell_s"] if settle else 0.0, "set_aside": 0, "measured_in_spell": 0}
    per_round: list[dict[str, Any]] = []
    rtt: dict[str, list[float]] = {"command_rtt": [], "command_rtt_busy": []}   # samples, µs
    extra: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(label: str, fn: Callable[[], dict[str, Any]], into: dict[str, Any]) -> None:
        """Run one measurement; a failure is reported and the run goes on with the others."""
        if settle:  # what one kind of waiting used is gone from the other's budget
            settler.budget = min(cfg["settle_s"], cfg["wait_s"] - spells["waited_s"])
            spells["budget_s"] = min(cfg["spell_s"], cfg["wait_s"] - settler.waited)
        settler()
        try:
            into.update(fn())
        except Exception as exc:
            log(f"{label} failed:\n{traceback.format_exc()}")
            errors.setdefault(label, f"{type(exc).__name__}: {exc}")

    frames = f"{cfg['frame_windows']} × {cfg['frame_window']} s, each after {cfg['memcpy_s']} s of memcpy " \
             f"and {cfg['handoff_window']} s of the bare handoff"
    plan: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [   # label, what, measurement
        ("small", f"small records, publish() with a reader attached ({win} s)", lambda: measure_small(win)),
        ("mpqueue", f"multiprocessing.Queue, {MSG_BYTES} B messages ({win} s)", lambda: measure_mpqueue(win)),
        ("batched", f"publish_many of {BATCH}-record batches ({win} s)", lambda: measure_batched(win)),
        ("frame1mb", f"1mb frames, {frames}", lambda: measure_frames_windows("1mb", cfg, spells)),
        ("frame16mb", f"16mb frames, {frames}", lambda: measure_frames_windows("16mb", cfg, spells)),
        ("rtt", f"command round trip, {RTT_WARMUP} warm-up + {cfg['rtt_calls']} calls",
         lambda: measure_rtt(cfg["rtt_calls"], busy=False)),
        ("rtt_busy", f"command round trip with a busy device loop, {cfg['busy_calls']} calls",
         lambda: measure_rtt(cfg["busy_calls"], busy=True)),
    ]
    try:
        for r in range(cfg["rounds"]):
            fig: dict[str, Any] = {}
            for label, what, fn in plan:
                if label in measure:
                    log(f"round {r + 1}/{cfg['rounds']}: {what}")
                    attempt(label, fn, fig)
            for label in rtt:
                rtt[label] += fig.pop(f"{label}_samples_us", [])
            per_round.append(fig)
        if "publish_ns" in measure:
            log(f"publish() cost in this process, best of {cfg['ns_repeats']} × {cfg['ns_calls']} calls")
            attempt("publish_ns", lambda: measure_publish_ns(cfg["ns_calls"], cfg["ns_repeats"]), extra)
    finally:
        DEVICE_ENV.clear()
        removed = remove_segments(segments_prefix())
        if removed:
            log(f"removed {len(removed)} segment(s) left by a killed child: {removed}")

    rev = git_revision("device_agent")
    result: dict[str, Any] = {
        "bench": "ring", "quick": mode == "quick", **clock.machine(),
        "revision": rev["commit"] and rev["commit"] + ("+dirty" if rev["modified"] else ""),  # the commit measured
        "rounds": cfg["rounds"], "window_s": win, "loadavg_1m": clock.loadavg(),
    }
    if device_env:  # not the default set-up: say so in the result itself
        result["device_env"] = dict(device_env)
    result.update(clock.pressure())
    result["settle"] = settler.report()
    # the budgets as configured (attempt() lowered them as the other kind of waiting used its share)
    spells["budget_s"], result["settle"]["budget_s"] = (cfg["spell_s"], cfg["settle_s"]) if settle else (0.0, 0.0)
    result["wait_budget_s"] = cfg["wait_s"] if settle else 0.0  # for both together
    result["cross_core_spells"] = spells
    result.update(combine_rounds(per_round))
    for label, samples in rtt.items():
        if samples:
            result.update({f"{label}_p50_us": percentile(samples, 50), f"{label}_p99_us": percentile(samples, 99),
                           f"{label}_max_us": max(samples), f"{label}_calls": len(samples)})
    result.update(extra)
    if cfg["rounds"] > 1:
        result["per_round"] = {
            k: [fig[k] for fig in per_round]
            for k in ("small_publish_per_s", "mpqueue_per_s", "batched_records_per_s", "frame_1mb_gbps",
                      "memcpy_1mb_gbps", "frame_16mb_gbps", "memcpy_16mb_gbps")
            if all(k in fig for fig in per_round)
        }
    # throughput tests in which the writer or the reader had less than a core (not mpqueue: its
    # sides block on a full or empty queue by design)
    result["contended"] = sorted(
        key[: -len("_cpu_share")] for key, value in result.items()
        if key.endswith("_cpu_share") and not key.startswith("mpqueue") and min(value) < CONTENDED_SHARE
    )
    return finish(result, TARGETS, clock, segments_prefix(), errors=errors)


def combine_rounds(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per key over the rounds (medians, sums of counts, every window), and the ratios."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for fig in per_round for k in fig):
        values = [fig[key] for fig in per_round if key in fig]
        if all(isinstance(v, bool) for v in values):
            out[key] = all(values)
        elif key.endswith(("_windows", "_set_aside")):  # every window of every round
            out[key] = [v for vals in values for v in vals]
        elif all(isinstance(v, list) for v in values):  # [writer, reader] pairs
            out[key] = [statistics.median(column) for column in zip(*values)]
        elif key.endswith(("_missed", "_torn", "_frames_read", "_frames_published", "_reads")):
            out[key] = sum(values)
        else:
            out[key] = statistics.median(values)
    if "small_publish_per_s" in out and "mpqueue_per_s" in out:
        out["ratio_vs_mpqueue"] = out["small_publish_per_s"] / out["mpqueue_per_s"]
    if "frame_1mb_gbps" in out:
        out["frame_ratio_vs_memcpy"] = out["frame_1mb_gbps"] / out["memcpy_1mb_gbps"]
    if "frame_16mb_gbps" in out:
        out["frame16_ratio_vs_memcpy"] = out["frame_16mb_gbps"] / out["memcpy_16mb_gbps"]
    for size in ("1mb", "16mb"):  # how close the transport comes to the bare cross-core copy
        if f"frame_{size}_gbps" in out and f"handoff_{size}_gbps" in out:
            out[f"frame_{size}_vs_handoff"] = out[f"frame_{size}_gbps"] / out[f"handoff_{size}_gbps"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = arguments("bench.ring", __doc__, "one short round (about 25 s)", MEASUREMENTS)
    ap.add_argument("--device-env", action="append", default=[], metavar="NAME=VALUE",
                    help="add NAME=VALUE to the environment of the device (writer) processes only, as"
                         " when starting a device program with it; repeatable; reported as device_env")
    args = ap.parse_args(argv)
    device_env = {}
    for item in args.device_env:
        name, eq, value = item.partition("=")
        if not eq or not name or "\0" in item:
            ap.error(f"--device-env takes NAME=VALUE, got {item!r}")
        device_env[name] = value
    exit_on_sigterm()
    measure = only(ap, args.only, MEASUREMENTS)
    result = round_figures(run("quick" if args.quick else "full", measure, not args.no_settle, device_env))
    report(result, args.json, log, hide=("targets", "per_round"))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
