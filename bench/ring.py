"""Shared-memory transport benchmark: device_agent's rings and frame slots, side by side
with multiprocessing.Queue and a plain memcpy, measured in the same run.

    python -m bench.ring [--quick] [--json]

``--json`` prints exactly one JSON object on stdout; progress goes to stderr. ``--quick``
is one round of 1.5 s windows and three 1 s windows per frame size (about 25 s, at most
12 s more if it waits for other load to settle or for a slow cross-core spell to end);
the full run repeats every measurement over 5 rounds of 2.5 s windows and reports the
median of the rounds (about 2.5 min, at most 45 s more waiting).
The exit status is 1 if a measurement failed (its error is in ``errors``), else 0: a
missed target is reported in ``pass``, not in the exit status. ``--device-env NAME=VALUE``
starts the device (writer) processes with that added to their environment, as a user might
start a device program, and reports it as ``device_env``: e.g. glibc's non-temporal copy
threshold for large frames (docs/performance.md).

What is measured (see docs/performance.md for the figures and how to read them):

* small records: ``publish(t=..., motor1=..., motor2=...)`` in a device process while a
  reader process drains the ring with ``RecordsReader.read(cursor)`` as fast as it can;
  against a ``multiprocessing.Queue`` (spawn context) of 100-byte messages, producer
  process → consumer process, counted at the consumer.
* batched records: ``publish_many`` of 1000-record arrays, counted as delivered to a
  reader process.
* frames: 1 MB and 16 MB frames published as fast as possible while a reader process
  copies out every new frame with ``read_latest(after)``; against ``np.copyto`` of the
  same size into a SharedMemory buffer.
* command round trip: ``DeviceAttachment.call`` from this process to a device process
  whose default dispatcher thread runs the handler.
* ``publish()`` cost with MON off (the no-op monitor) and on, in this process.

Every child is started with the spawn context, synchronised over pipes, bounded by a
timeout and killed in a ``finally``; device names include this process's pid, and any
segment of ours still in /dev/shm at the end is removed (and reported).
"""

from __future__ import annotations

from bench.common import (Settler, cpu_stall_us, git_revision, judge, leftover_segments, percentile,
                          remove_segments, round_figures)

import argparse
import contextlib
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Iterator

import numpy as np

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
    "ratio_vs_mpqueue": {"min": 5.0},
    "batched_records_per_s": {"min": 5_000_000},
    "frame_ratio_vs_memcpy": {"min": 0.3},
    "frame16_ratio_vs_memcpy": {"min": 0.4},
    "command_rtt_p50_us": {"max": 200.0},
}

# window: seconds per throughput test; frame_window × frame_windows: the frame tests, each
# window after memcpy_s s of memcpy and between two handoff_window s probes of the bare
# cross-core copy (measure_frames_windows); rtt_calls / busy_calls: timed command round trips per round
# (idle / busy device loop); ns_calls × ns_repeats: in-process publish() timing; settle_s:
# total budget for waiting for quiet; spell_s: for waiting out slow cross-core spells; wait_s:
# for both together (so --quick stays under 40 s)
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

# environment added to every device (writer) process the run starts, and to nothing else: how
# a user would start their device program (--device-env; see docs/performance.md, 16 MB frames)
DEVICE_ENV: dict[str, str] = {}


@contextlib.contextmanager
def added_environment(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` added, put back as it was on exit (spawned children
    inherit the environment of the moment they start)."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log(message: str) -> None:
    print(f"bench.ring: {message}", file=sys.stderr, flush=True)


def device_name(kind: str) -> str:
    return f"bench-ring-{os.getpid()}-{kind}-{next(_names)}"


# ======================================================================================
# children (spawned; module-level so the spawn context can find them)
# ======================================================================================

def _child_main(role: str, kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    sys.stdout = sys.stderr  # stdout is reserved for the parent's JSON
    try:
        _ROLES[role](kind, name, params, conn, stop, extra)
    except BaseException:
        try:
            conn.send(("error", f"{role} {kind} (pid {os.getpid()}):\n{traceback.format_exc()}"))
        except Exception:
            pass
        raise SystemExit(1)
    finally:
        stop.value = 1
        conn.close()


class CpuShare:
    """CPU time this process used per second of wall time since it was made.

    Each side of a throughput test busy-loops, so a share near 1.0 means it had a core
    to itself; near 0.5 means it shared one (with its partner or with other load)."""

    def __init__(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def share(self) -> float:
        return (time.process_time() - self.cpu0) / max(1e-9, time.perf_counter() - self.wall0)


def _wait_for(conn: Any, what: str, timeout: float) -> None:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {what!r} from the parent in {timeout:.0f} s")
    msg = conn.recv()
    if msg != what:
        raise RuntimeError(f"expected {what!r} from the parent, got {msg!r}")


def _device(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    import device_agent

    timeout = params["timeout"]
    window = params.get("window", 0.0)
    _own_resource_tracker()
    mon = device_agent.start(name, mon="bridge=0")
    try:
        if kind in ("small", "rtt_busy"):
            ch = mon.records("data", FIELDS, capacity=params.get("capacity", RECORDS_CAPACITY))
        elif kind == "batched":
            ch = mon.records("data", FIELDS, capacity=params["capacity"])
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

        conn.send(("ready",))
        _wait_for(conn, "go", timeout)
        cpu = CpuShare()
        result: dict[str, Any] = {}
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
    shell has. Spawned children share their parent's tracker, which keeps one set of
    names for all of them: a reader sibling's ``attach_segment`` (register, then
    unregister) would delete the device's own registration, and the device's unlink
    would then make the tracker print KeyError tracebacks (see docs/performance.md)."""
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
    import resource

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
    from device_agent.attach import DeviceAttachment

    timeout = params["timeout"]
    _wait_for(conn, "attach", timeout)
    dev = DeviceAttachment(name)
    try:
        rd = dev.channel("data")
        conn.send(("ready",))
        _wait_for(conn, "go", timeout)
        cpu = CpuShare()
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
    import resource

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
    conn.send(("ready",))
    _wait_for(conn, "go", params["timeout"])
    cpu = CpuShare()
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
    conn.send(("ready",))
    _wait_for(conn, "go", params["timeout"])
    cpu = CpuShare()
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


def _handoff_writer(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    """The bare baseline for frames: copy into slot k % 3 of a plain SharedMemory buffer and
    bump a counter. No stamps, no pins, no API: only the cross-core copy itself."""
    from device_agent.shm import attach_segment  # maps it without the resource tracker

    shm = attach_segment(name)
    try:
        counter = np.ndarray((8,), np.int64, buffer=shm.buf)
        nbytes = params["nbytes"]
        slots = np.ndarray((FRAME_SLOTS, nbytes), np.uint8, buffer=shm.buf, offset=64)
        src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        conn.send(("ready",))
        _wait_for(conn, "go", params["timeout"])
        cpu = CpuShare()
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
    finally:
        del counter, slots
        shm.close()


def _handoff_reader(kind: str, name: str, params: dict[str, Any], conn: Any, stop: Any, extra: Any) -> None:
    from device_agent.shm import attach_segment  # maps it without the resource tracker

    shm = attach_segment(name)
    try:
        counter = np.ndarray((8,), np.int64, buffer=shm.buf)
        nbytes = params["nbytes"]
        slots = np.ndarray((FRAME_SLOTS, nbytes), np.uint8, buffer=shm.buf, offset=64)
        out = np.empty(nbytes, np.uint8)
        conn.send(("ready",))
        _wait_for(conn, "go", params["timeout"])
        cpu = CpuShare()
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
    finally:
        del counter, slots
        shm.close()


_ROLES: dict[str, Callable[..., None]] = {
    "device": _device, "reader": _reader, "qprod": _queue_producer, "qcons": _queue_consumer,
    "hwriter": _handoff_writer, "hreader": _handoff_reader,
}


# ======================================================================================
# the parent: spawning, supervising, measuring
# ======================================================================================

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

    def run_pair(self, consumer: int, producer: int) -> tuple[Any, Any]:
        """Wait until both are ready, start the consumer first, return (producer's, consumer's) result."""
        self.recv(consumer, "ready")
        self.recv(producer, "ready")
        self.send(consumer, "go")
        self.send(producer, "go")
        return self.recv(producer, "result"), self.recv(consumer, "result")

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.value = 1
        for proc, conn in self.procs:
            try:
                conn.send("exit")
            except (OSError, ValueError):
                pass
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
        rdr = ch.spawn("reader", kind, name, p)
        ch.recv(dev, "ready")
        ch.send(rdr, "attach")
        ch.recv(rdr, "ready")
        ch.send(rdr, "go")
        ch.send(dev, "go")
        wres = ch.recv(dev, "result")
        rres = ch.recv(rdr, "result")
    return wres, rres


def _records_accounting(kind: str, w: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """What a records test reports besides its rates: the reader's losses and reads, whether
    every record published was delivered or counted missed, and both sides' CPU."""
    return {
        f"{kind}_missed": r["missed"],
        f"{kind}_reads": r["reads"],
        f"{kind}_accounted": r["delivered"] + r["missed"] == w["count"] == w["published"],
        f"{kind}_cpu_share": [w["cpu_share"], r["cpu_share"]],
    }


def measure_small(window: float) -> dict[str, Any]:
    w, r = measure_pair("small", window, {"capacity": RECORDS_CAPACITY})
    return {
        "small_publish_per_s": w["published"] / w["elapsed"],
        "small_delivered_per_s": r["delivered"] / r["elapsed"],
        **_records_accounting("small", w, r),
    }


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
    return {
        "mpqueue_per_s": r["delivered"] / r["elapsed"],
        "mpqueue_put_per_s": w["published"] / w["elapsed"],
        "mpqueue_accounted": r["delivered"] == w["published"],
        "mpqueue_cpu_share": [w["cpu_share"], r["cpu_share"]],
    }


def measure_batched(window: float) -> dict[str, Any]:
    w, r = measure_pair("batched", window, {"capacity": BATCHED_CAPACITY})
    return {
        "batched_records_per_s": r["delivered"] / r["elapsed"],
        "batched_publish_records_per_s": w["published"] / w["elapsed"],
        **_records_accounting("batched", w, r),
    }


def measure_frames(size: str, window: float) -> dict[str, Any]:
    w, r = measure_pair(f"frame{size}", window)
    return {
        f"frame_{size}_gbps": r["bytes"] / r["elapsed"] / 1e9,
        f"frame_{size}_publish_gbps": w["published"] * w["nbytes"] / w["elapsed"] / 1e9,
        f"frame_{size}_frames_read": r["frames"],
        f"frame_{size}_frames_published": w["published"],
        f"frame_{size}_torn": r["torn"],
        f"frame_{size}_publish_us_p50": w["publish_us_p50"],  # one publish()
        f"frame_{size}_read_us_p50": r["copy_us_p50"],  # one successful read_latest()
        f"frame_{size}_read_us_mean": r["copy_s"] / max(1, r["frames"]) * 1e6,
        f"frame_{size}_reader_busy": r["copy_s"] / r["elapsed"],  # share of time spent copying
        f"frame_{size}_writer_faults_per_frame": w["minflt"] / max(1, w["published"]),
        f"frame_{size}_reader_faults_per_frame": r["minflt"] / max(1, r["frames"]),
        f"frame_{size}_cpu_share": [w["cpu_share"], r["cpu_share"]],
    }


def measure_frames_windows(size: str, cfg: dict[str, Any], spells: dict[str, Any]) -> dict[str, Any]:
    """``frame_windows`` frame measurements, each right after a memcpy and between two probes
    of the bare handoff, so every window is compared with what the machine did around it.

    On this VM the cross-core path sometimes runs 10-15× slower for 1-6 s at a time (about
    a sixth of the time, in clusters; docs/performance.md): a probe below SLOW_SPELL ×
    memcpy marks such a spell. A spell before a window is waited out; a window whose probe
    after it shows a spell began during it is set aside and measured again. Both cost time
    from ``spells["budget_s"]`` (for the whole run, reported); once it is spent, windows
    are kept whatever the probes say, and counted in ``spells["measured_in_spell"]``.
    Reported: the median kept window's frame figures, the median of each baseline over the
    kept windows, and every window, kept or set aside."""
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
            log(f"a slow spell during the {size} window (handoff {before:.1f} → {after:.1f} GB/s): measuring it again")
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
    """The same 1-writer/1-reader copy with no transport at all (see _handoff_writer).

    On this VM the cross-core path itself sometimes runs an order of magnitude slower
    for seconds at a time (the hypervisor's placement of the two vCPUs, seen with a
    25-line fork+mmap script as well); this figure, taken next to the frame figure,
    tells that apart from a slow transport."""
    from multiprocessing.shared_memory import SharedMemory

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
    from multiprocessing.shared_memory import SharedMemory

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
    from device_agent.attach import DeviceAttachment

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
    import device_agent

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


# ======================================================================================
# the run
# ======================================================================================

def revision() -> str | None:
    rev = git_revision("device_agent")
    return None if rev["commit"] is None else rev["commit"] + ("+dirty" if rev["modified"] else "")


def our_segments() -> str:
    """The prefix of the segments of every device this run names (device_name)."""
    return f"monbridge.bench-ring-{os.getpid()}-"


def run(mode: str, only: set[str], rounds: int | None = None, window: float | None = None,
        settle: bool = True, device_env: dict[str, str] | None = None) -> dict[str, Any]:
    cfg = dict(MODES[mode])
    DEVICE_ENV.clear()
    DEVICE_ENV.update(device_env or {})
    if rounds is not None:
        cfg["rounds"] = rounds
    if window is not None:
        cfg["window"] = cfg["frame_window"] = window
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    stall_before = cpu_stall_us()
    win = cfg["window"]
    settler = Settler(cfg["settle_s"] if settle else 0.0, log)
    spells = {"waited_s": 0.0, "budget_s": cfg["spell_s"] if settle else 0.0, "set_aside": 0, "measured_in_spell": 0}
    per_round: list[dict[str, Any]] = []
    rtt: list[float] = []
    rtt_busy: list[float] = []
    extra: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(label: str, measure: Callable[[], dict[str, Any]], into: dict[str, Any]) -> None:
        """Run one measurement; a failure is reported and the run goes on with the others."""
        if settle:  # what one kind of waiting used is gone from the other's budget
            settler.budget = min(cfg["settle_s"], cfg["wait_s"] - spells["waited_s"])
            spells["budget_s"] = min(cfg["spell_s"], cfg["wait_s"] - settler.waited)
        settler()
        try:
            into.update(measure())
        except Exception as exc:
            log(f"{label} failed:\n{traceback.format_exc()}")
            errors.setdefault(label, f"{type(exc).__name__}: {exc}")

    try:
        for r in range(cfg["rounds"]):
            fig: dict[str, Any] = {}
            tag = f"round {r + 1}/{cfg['rounds']}"
            if "small" in only:
                log(f"{tag}: small records, publish() with a reader attached ({win} s)")
                attempt("small", lambda: measure_small(win), fig)
            if "mpqueue" in only:
                log(f"{tag}: multiprocessing.Queue, {MSG_BYTES} B messages ({win} s)")
                attempt("mpqueue", lambda: measure_mpqueue(win), fig)
            if "batched" in only:
                log(f"{tag}: publish_many of {BATCH}-record batches ({win} s)")
                attempt("batched", lambda: measure_batched(win), fig)
            for size, label in (("1mb", "frame1mb"), ("16mb", "frame16mb")):
                if label in only:
                    log(f"{tag}: {size} frames, {cfg['frame_windows']} × {cfg['frame_window']} s, each after"
                        f" {cfg['memcpy_s']} s of memcpy and {cfg['handoff_window']} s of the bare handoff")
                    attempt(label, lambda size=size: measure_frames_windows(size, cfg, spells), fig)
            if "rtt" in only:
                log(f"{tag}: command round trip, {RTT_WARMUP} warm-up + {cfg['rtt_calls']} calls")
                got: dict[str, Any] = {}
                attempt("rtt", lambda: measure_rtt(cfg["rtt_calls"], busy=False), got)
                rtt += got.get("command_rtt_samples_us", [])
            if "rtt_busy" in only:
                log(f"{tag}: command round trip with a busy device loop, {cfg['busy_calls']} calls")
                got = {}
                attempt("rtt_busy", lambda: measure_rtt(cfg["busy_calls"], busy=True), got)
                rtt_busy += got.pop("command_rtt_busy_samples_us", [])
                fig.update(got)
            per_round.append(fig)
        if "publish_ns" in only:
            log(f"publish() cost in this process, best of {cfg['ns_repeats']} × {cfg['ns_calls']} calls")
            attempt("publish_ns", lambda: measure_publish_ns(cfg["ns_calls"], cfg["ns_repeats"]), extra)
    finally:
        DEVICE_ENV.clear()
        removed = remove_segments(our_segments())
        if removed:
            log(f"removed {len(removed)} segment(s) left by a killed child: {removed}")

    result: dict[str, Any] = {
        "bench": "ring",
        "quick": mode == "quick",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "revision": revision(),  # the commit, "+dirty" if device_agent/ differs from it
        "rounds": cfg["rounds"],
        "window_s": win,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
    }
    if device_env:  # not the default set-up: say so in the result itself
        result["device_env"] = dict(device_env)
    stall_after = cpu_stall_us()
    if stall_before is not None and stall_after is not None:
        # share of the run during which some runnable task waited for a CPU (Linux PSI);
        # the benchmark keeps at most two processes busy, so on 2 cores this is mostly
        # other load on the machine
        result["cpu_pressure_pct"] = 100 * (stall_after - stall_before) / 1e6 / (time.perf_counter() - started)
    result["settle"] = settler.report()
    # the budgets as configured (attempt() lowered them as the other kind of waiting used its share)
    spells["budget_s"], result["settle"]["budget_s"] = (cfg["spell_s"], cfg["settle_s"]) if settle else (0.0, 0.0)
    result["wait_budget_s"] = cfg["wait_s"] if settle else 0.0  # for both together
    result["cross_core_spells"] = spells
    keys = list(dict.fromkeys(k for fig in per_round for k in fig))
    for key in keys:
        values = [fig[key] for fig in per_round if key in fig]
        if all(isinstance(v, bool) for v in values):
            result[key] = all(values)
        elif key.endswith(("_windows", "_set_aside")):  # every window of every round
            result[key] = [v for vals in values for v in vals]
        elif all(isinstance(v, list) for v in values):  # [writer, reader] pairs
            result[key] = [statistics.median(column) for column in zip(*values)]
        elif key.endswith(("_missed", "_torn", "_frames_read", "_frames_published", "_reads")):
            result[key] = sum(values)
        else:
            result[key] = statistics.median(values)
    if "small_publish_per_s" in result and "mpqueue_per_s" in result:
        result["ratio_vs_mpqueue"] = result["small_publish_per_s"] / result["mpqueue_per_s"]
    if "frame_1mb_gbps" in result:
        result["frame_ratio_vs_memcpy"] = result["frame_1mb_gbps"] / result["memcpy_1mb_gbps"]
    if "frame_16mb_gbps" in result:
        result["frame16_ratio_vs_memcpy"] = result["frame_16mb_gbps"] / result["memcpy_16mb_gbps"]
    for size in ("1mb", "16mb"):  # how close the transport comes to the bare cross-core copy
        if f"frame_{size}_gbps" in result and f"handoff_{size}_gbps" in result:
            result[f"frame_{size}_vs_handoff"] = result[f"frame_{size}_gbps"] / result[f"handoff_{size}_gbps"]
    for label, samples in (("command_rtt", rtt), ("command_rtt_busy", rtt_busy)):
        if samples:
            s = sorted(samples)
            result[f"{label}_p50_us"] = percentile(s, 50)
            result[f"{label}_p99_us"] = percentile(s, 99)
            result[f"{label}_max_us"] = s[-1]
            result[f"{label}_calls"] = len(s)
    result.update(extra)
    if cfg["rounds"] > 1:
        result["per_round"] = {
            k: [fig[k] for fig in per_round]
            for k in ("small_publish_per_s", "mpqueue_per_s", "batched_records_per_s", "frame_1mb_gbps",
                      "memcpy_1mb_gbps", "frame_16mb_gbps", "memcpy_16mb_gbps")
            if all(k in fig for fig in per_round)
        }
    # throughput tests in which the writer or the reader had less than a core: their
    # figures say more about the other load on the machine than about the transport
    # (not mpqueue: its producer and consumer block on a full or empty queue by design)
    result["contended"] = sorted(
        key[: -len("_cpu_share")] for key, value in result.items()
        if key.endswith("_cpu_share") and not key.startswith("mpqueue") and min(value) < CONTENDED_SHARE
    )
    result["targets"] = TARGETS
    result["pass"] = judge(result, TARGETS)
    result["errors"] = errors
    result["leftover_segments"] = leftover_segments(our_segments())
    result["elapsed_s"] = time.perf_counter() - started
    return result


def probe_spells(seconds: float) -> dict[str, Any]:
    """How often, and for how long, this machine's cross-core copy is in a slow spell: memcpy
    (0.1 s) and the bare 1 MB handoff (0.3 s) back to back for ``seconds``."""
    probes: list[list[float]] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        memcpy = measure_memcpy("1mb", 0.1)["memcpy_1mb_gbps"]
        handoff = measure_handoff("1mb", 0.3)["handoff_1mb_gbps"]
        probes.append([time.perf_counter() - started, memcpy, handoff])
        log(f"{probes[-1][0]:6.1f} s  memcpy {memcpy:5.1f}  handoff {handoff:5.1f} GB/s"
            + ("  slow spell" if handoff < SLOW_SPELL * memcpy else ""))
    slow = [p[2] < SLOW_SPELL * p[1] for p in probes]
    runs = [len(list(group)) for is_slow, group in itertools.groupby(slow) if is_slow]
    return {"bench": "ring-spells", "seconds": seconds, "probes": len(probes), "slow_share": sum(slow) / len(slow),
            "slow_runs": len(runs), "longest_slow_run_probes": max(runs, default=0),
            "handoff_gbps_quartiles": statistics.quantiles([p[2] for p in probes], n=4),
            "probe_s_memcpy_handoff": probes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ring", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round (about 25 s)")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--window", type=float, help="override the seconds each throughput test runs")
    ap.add_argument("--no-settle", action="store_true",
                    help="do not wait for other load on the machine to settle before each measurement")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    ap.add_argument("--probe-spells", type=float, metavar="SECONDS",
                    help="a diagnostic instead: probe memcpy and the bare 1 MB handoff back to back for SECONDS")
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
    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C: children killed, segments removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.probe_spells is not None:
        if not args.probe_spells > 0:
            ap.error(f"--probe-spells takes a number of seconds above 0, got {args.probe_spells}")
        print(json.dumps(round_figures(probe_spells(args.probe_spells))))
        return 0
    only = set(MEASUREMENTS)
    if args.only:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = only - set(MEASUREMENTS)
        if unknown:
            ap.error(f"unknown measurement(s) {sorted(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    result = round_figures(run("quick" if args.quick else "full", only, args.rounds, args.window, not args.no_settle,
                               device_env))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key not in ("targets", "per_round"):
                print(f"{key:40} {value}")
    log(f"done in {result['elapsed_s']} s")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
