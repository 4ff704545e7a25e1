"""Helpers for the fault tests (issue 11): a streaming device script, asyncio Socket.IO clients
on one event loop, a hand-made Socket.IO client whose reading can be paused, and the
accounting that proves every record was either delivered or counted as ``missed``, once.

Builds on tests/bridge_support.py (the ``mb`` harness: bridges, devices, teardown) and
tests/conftest.py (the guard: no process and no /dev/shm segment may outlive a test).

Public APIs only: python-socketio's ``AsyncClient`` (``on``, ``connect``, ``call``, ``emit``,
``get_sid``, ``connected``, ``disconnect``), websocket-client's ``WebSocket`` and bench/wire.py's
packets for the hand-made client; nothing private of python-socketio or python-engineio is
touched. The asyncio client hands each Engine.IO message to a task, and the tasks run in
arrival order without awaiting anything in between, so events are recorded in the order
they came.

    def test_x(mb, client_loop):
        name = mb.new_name()
        bridge = mb.serve(name)
        dev = start_device(mb, STREAM_DEVICE, name, "rate=1000")
        wait_attached(bridge.url, dev.pid)
        (c,) = client_loop.connect(bridge.url)
        client_loop.subscribe([c], ["rec"], rate=30)
        c.wait_for(lambda: len(c.data("rec")) > 3, what="data")
"""

from __future__ import annotations

import asyncio
import itertools
import concurrent.futures
import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pytest
import socketio
import websocket

from bench import wire
from bridge_support import BridgeHarness, BridgeURL, Device, children, cmdline
from conftest import START_TIMEOUT, TIMEOUT, wait_for
from device_agent.frames import BODY_HEADER
from device_agent.layout import HEADER_SIZE, channel_segment_name
from device_agent.shm import attach_segment, close_segment

# A device that streams, configured by key=value arguments after its name:
#   rate=R       records per second on channel "rec" (fields t f8, seq i8, gen i4);
#                0 declares no records channel. Row i has seq == i, the ring's own number,
#                and t == the device time of its batch.
#   period=P     seconds between publish_many batches (each carries what is due by then)
#   capacity=C   the ring's capacity
#   frame=RxC    a frame channel "big" (f4) of that shape; every element of frame k is k
#   frame_hz=F   frames per second; 0 = flat out (the loop spends nearly all its time
#                inside publish, filling a slot from a broadcast scalar)
#   gen=G        the device generation: state {"generation": G, "genG": true}; every record's gen = G
#   extra=1      also declare a records channel "extra" (a catalog that differs from gen 1)
# The streaming threads are named "records" and "frames" (thread_named finds them).
# It prints "ready" once the channels exist and streaming has begun; EOF on stdin or a line
# "quit" stops the streams and closes the monitor.
STREAM_DEVICE = r"""
import ctypes, sys, threading, time
import numpy as np
import device_agent

name = sys.argv[1]
opts = dict(a.split("=", 1) for a in sys.argv[2:])
rate = float(opts.get("rate", 0))
period = float(opts.get("period", 0.01))
capacity = int(opts.get("capacity", 65536))
frame_hz = float(opts.get("frame_hz", 30))
gen = int(opts.get("gen", 1))

mon = device_agent.start(name)
rec = mon.records("rec", {"t": "f8", "seq": "i8", "gen": "i4"}, capacity=capacity) if rate else None
big = None
if "frame" in opts:
    rows, cols = (int(x) for x in opts["frame"].split("x"))
    big = mon.frame("big", shape=(rows, cols), dtype="f4")
if opts.get("extra") == "1":
    mon.records("extra", {"t": "f8", "x": "f4"})
mon.state.update({"generation": gen, f"gen{gen}": True})
stop = threading.Event()


def name_thread(name):  # shows in /proc/PID/task/TID/comm, so a test can watch this thread
    try:
        ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def records_loop():
    name_thread("records")
    n, start = 0, time.monotonic()
    next_t = start
    most = max(1, capacity // 2)  # a catch-up batch never laps the ring by itself
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        if due > n:
            k = min(due - n, most)
            arr = np.zeros(k, rec.dtype)
            arr["seq"] = np.arange(n, n + k)
            arr["t"] = time.time()
            arr["gen"] = gen
            rec.publish_many(arr)
            n += k
        next_t += period
        now = time.monotonic()
        if next_t < now - period:  # fell behind: the next batch catches up, no burst of wakeups
            next_t = now
        stop.wait(max(0.0, next_t - now))


def frames_loop():
    name_thread("frames")
    k, step = 0, (1.0 / frame_hz if frame_hz else 0.0)
    next_t = time.monotonic()
    while not stop.is_set():
        k += 1
        big.publish(np.broadcast_to(np.float32(k), big.shape))
        if step:
            next_t += step
            now = time.monotonic()
            if next_t < now - step:
                next_t = now
            stop.wait(max(0.0, next_t - now))


threads = [threading.Thread(target=f, daemon=True) for f, on in ((records_loop, rec), (frames_loop, big)) if on]
for t in threads:
    t.start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
stop.set()
for t in threads:
    t.join()
mon.close()
print("closed", flush=True)
"""


def start_device(mb: BridgeHarness, source: str, name: str, *args: str) -> Device:
    """Start ``source`` as device ``name`` without a bridge of its own (MON=bridge=0), after its
    "ready" line; the harness closes its stdin at teardown."""
    dev = Device(mb.launch(source, name, *args, mon="bridge=0"), name, None)
    mb.devices.append(dev)
    return dev


# -- processes ---------------------------------------------------------------------------

def resource_tracker_of(pid: int) -> int:
    """The pid of ``pid``'s multiprocessing resource tracker (a child; it exists once the
    process created a segment, on Python < 3.13)."""
    def find() -> int | None:
        for child in children(pid):
            if b"resource_tracker" in cmdline(child):
                return child
        return None
    return wait_for(find, TIMEOUT, f"the resource tracker child of {pid}")


def all_stopped(pid: int) -> bool:
    """True once every thread of ``pid`` is in the stopped state (after SIGSTOP)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"T", b"t"):
            return False
    return True


def _runqueue_waits(threads: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """{(pid, tid): nanoseconds that thread has waited on a run queue so far}."""
    out = {}
    for pid, tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                out[(pid, tid)] = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def thread_named(pid: int, name: str) -> tuple[int, int]:
    """(pid, tid) of ``pid``'s thread called ``name`` (/proc/PID/task/TID/comm)."""
    def find() -> tuple[int, int] | None:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() == name:
                        return pid, int(tid)
            except OSError:
                continue
        return None
    return wait_for(find, TIMEOUT, f"thread {name!r} of process {pid}")


def rss_parts(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of ``pid`` in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class FrameProbe:
    """Reads a frame channel's header words and slot stamps straight from its segment.

    The layout (device_agent/frames.py): at HEADER_SIZE, u64 latest, nslots, frame_nbytes,
    slot_size; the slots start BODY_HEADER bytes later, each with its u64 stamp first —
    2k+1 while frame k is being written, 2k+2 once it is complete. Attaching never unlinks.
    """

    def __init__(self, device: str, channel: str) -> None:
        self.shm = attach_segment(channel_segment_name(device, channel))
        self.nslots, _, self.slot_size = struct.unpack_from("=3Q", self.shm.buf, HEADER_SIZE + 8)

    def latest(self) -> int:
        return struct.unpack_from("=Q", self.shm.buf, HEADER_SIZE)[0]

    def stamps(self) -> list[int]:
        first = HEADER_SIZE + BODY_HEADER
        return [struct.unpack_from("=Q", self.shm.buf, first + i * self.slot_size)[0] for i in range(self.nslots)]

    def frame_being_written(self) -> int | None:
        """k if some slot's stamp says frame k is half-written (2k+1), else None."""
        odd = [s for s in self.stamps() if s % 2]
        return (odd[0] - 1) // 2 if odd else None

    def close(self) -> None:
        close_segment(self.shm)


def freeze_mid_write(pid: int, probe: FrameProbe, attempts: int = 200) -> tuple[float, int]:
    """SIGSTOP ``pid`` at a moment its frame writer is half-way through a frame.

    Stops it, looks at the slot stamps, and if no frame is half-written lets it run for one
    more frame and tries again. Returns the monotonic time just before the SIGSTOP that
    caught it (the device runs no more after that) and k, the frame being written. The
    process stays stopped: SIGKILL it (or SIGCONT it).
    """
    for _ in range(attempts):
        before = probe.latest()
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: all_stopped(pid), TIMEOUT, f"process {pid} to stop")
        writing = probe.frame_being_written()
        if writing is not None:
            return stopped_at, writing
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: probe.latest() > before + 1, TIMEOUT, f"process {pid} to publish again")
    raise AssertionError(f"in {attempts} tries, process {pid} was never caught half-way through a frame")


# -- what a client received ----------------------------------------------------------------

@dataclass
class Data:
    """A ``data`` message, reduced to what the checks need (the payload bytes are dropped)."""

    channel: str
    kind: str
    seq0: int
    seq1: int
    missed: int
    count: int
    decimated: bool
    t: float | None
    arrival: float                       # time.monotonic() when the client handled it
    nbytes: int                          # size of the binary data (msgpack bin)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # records: seq and gen
    uniform: bool | None = None          # frame: every element equal
    value: float | None = None           # frame: the first element
    shape_ok: bool | None = None         # frame: the data holds exactly shape x dtype

    @property
    def span(self) -> int:
        return self.seq1 - self.seq0 + 1


KEEP_COLUMNS = ("seq", "gen")


def summarize(msg: dict[str, Any], arrival: float) -> Data:
    data = msg.get("data")
    assert isinstance(data, bytes), f"data of {msg.get('channel')!r} is {type(data).__name__}, not bytes"
    d = Data(msg["channel"], msg["kind"], msg["seq"][0], msg["seq"][1], msg["missed"], msg.get("count", 1),
             bool(msg.get("decimated", False)), msg.get("t"), arrival, len(data))
    if msg["kind"] == "records":
        for f in msg["fields"]:
            if f["name"] in KEEP_COLUMNS and not f["shape"]:
                dtype = np.dtype("<" + f["dtype"])
                d.columns[f["name"]] = np.frombuffer(data, dtype, count=f["nbytes"] // dtype.itemsize,
                                                     offset=f["offset"]).copy()
    elif msg["kind"] == "frame":
        dtype = np.dtype("<" + msg["dtype"])
        arr = np.frombuffer(data, dtype)
        d.shape_ok = arr.size == int(np.prod(msg["shape"]))
        d.uniform = bool(arr.size and arr.min() == arr.max())
        d.value = float(arr[0]) if arr.size else None
    return d


class Recorder:
    """One python-socketio AsyncClient and every event it received, in order, with the
    monotonic time it was handled. ``data`` messages are kept as ``Data`` summaries.

    ``confirm``: channels whose data messages are answered with ``consumed`` at once (as the
    dashboard does with in_flight); change it from the test thread at any time.
    """

    def __init__(self, hub: "ClientLoop") -> None:
        self.hub = hub
        self.sio = socketio.AsyncClient(reconnection=False, serializer="msgpack",
                                        websocket_extra_options={"max_msg_size": 0})
        self.events: list[tuple[str, Any, float]] = []
        self.connects = 0
        self.disconnects = 0
        self.confirm: set[str] = set()
        self.subscribed: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._answers: dict[int, asyncio.Future] = {}  # command id -> the future its 'result' completes
        self._command_ids = itertools.count(1)
        self.sio.on("*", self._on_event)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)

    # handlers: run on the loop thread, never await, so messages are handled in arrival order
    def _on_event(self, event: str, data: Any = None, *_: Any) -> None:
        now = time.monotonic()
        if event == "result" and isinstance(data, dict):
            answer = self._answers.pop(data.get("id"), None)
            if answer is not None and not answer.done():
                answer.set_result({k: v for k, v in data.items() if k != "id"})
        if event == "data" and isinstance(data, dict):
            try:
                data = summarize(data, now)
            except Exception as exc:  # recorded, and fails the test's next check
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            if data.channel in self.confirm:
                task = asyncio.get_running_loop().create_task(
                    self.sio.emit("consumed", {"channel": data.channel, "seq": data.seq1}))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        with self._lock:
            self.events.append((event, data, now))

    async def command(self, payload: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Send a command (adding an ``id``) and return the answer its ``result`` event carries."""
        command_id = next(self._command_ids)
        answer = self._answers[command_id] = asyncio.get_running_loop().create_future()
        await self.sio.emit("command", {**payload, "id": command_id})
        try:
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._answers.pop(command_id, None)

    def _on_connect(self) -> None:
        self.connects += 1

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    # reading
    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def of(self, event: str, since: int = 0) -> list[Any]:
        with self._lock:
            return [d for e, d, _ in self.events[since:] if e == event]

    def timed(self, event: str, since: int = 0) -> list[tuple[Any, float]]:
        with self._lock:
            return [(d, t) for e, d, t in self.events[since:] if e == event]

    def data(self, channel: str, since: int = 0) -> list[Data]:
        return [d for d in self.of("data", since) if d.channel == channel]

    def since(self, mark: int) -> list[tuple[str, Any]]:
        """(event, data) of everything received from index ``mark`` on, in order."""
        with self._lock:
            return [(e, d) for e, d, _ in self.events[mark:]]

    @property
    def sid(self) -> str:
        return self.sio.get_sid()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
        def check() -> Any:
            assert not self.errors, f"the client could not read a message: {self.errors[:3]}"
            return predicate()
        return wait_for(check, timeout, what)

    def wait_event(self, event: str, predicate: Callable[[Any], Any] = lambda d: True, since: int = 0,
                   timeout: float = TIMEOUT) -> tuple[Any, float]:
        """The first ``event`` at index >= ``since`` whose data satisfies ``predicate``, and when."""
        def find() -> tuple[Any, float] | None:
            return next(((d, t) for d, t in self.timed(event, since) if predicate(d)), None)
        return self.wait_for(find, timeout, f"event {event!r}")


class ClientLoop:
    """Any number of Recorders on one asyncio event loop, run by one daemon thread.

    A canary task wakes every CANARY_PERIOD and notes when it ran and, for the threads
    passed to ``watch``, how long each has so far waited on a run queue
    (/proc/PID/task/TID/schedstat, 2nd field: runnable, but another process had the CPU).
    ``starved(a, b)`` then says how much of [a, b] the test process itself or a watched
    thread spent waiting for a CPU: on 2 busy cores, time that says nothing about the code
    under test. Watch the threads that do the work (the bridge's main thread, where
    eventlet runs everything; a device's publishing thread), not every thread: each
    wake-up of an idle thread waits a little, and those waits excuse nothing.
    """

    CANARY_PERIOD = 0.005
    STARVED_SHARE = 0.5

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fault-clients", daemon=True)
        self.thread.start()
        self.recorders: list[Recorder] = []
        self.watched: list[tuple[int, int]] = []
        self.samples: list[tuple[float, dict[tuple[int, int], int]]] = []  # (when, {(pid, tid): wait ns})
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._canary()))

    def watch(self, *threads: tuple[int, int]) -> None:
        """Sample these (pid, tid) threads' run-queue waits from now on."""
        self.watched = list(threads)

    async def _canary(self) -> None:
        while True:
            self.samples.append((time.monotonic(), _runqueue_waits(self.watched)))
            await asyncio.sleep(self.CANARY_PERIOD)

    def starved(self, a: float, b: float, this_process: bool = True) -> float:
        """Seconds of [a, b] during which this event loop did not run (``this_process``) or a
        watched process waited for a CPU. Per interval between two canary wakes, the longest
        of those; summed over the intervals (pro rata where they stick out of [a, b]). An
        interval in which a watched thread waited less than STARVED_SHARE of it counts as
        not starved: the few ms any busy thread waits now and then excuse nothing."""
        samples = self.samples[:]
        total = 0.0
        for (t0, w0), (t1, w1) in zip(samples, samples[1:]):
            lo, hi = max(t0, a), min(t1, b)
            if hi <= lo:
                continue
            span = t1 - t0
            worst = max(0.0, span - self.CANARY_PERIOD) if this_process else 0.0
            for key, wait in w1.items():
                if key in w0 and (waited := (wait - w0[key]) / 1e9) >= self.STARVED_SHARE * span:
                    worst = max(worst, waited)
            total += min(worst, span) * (hi - lo) / span
        return total

    def run(self, make: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
        """Run the coroutine ``make()`` on the loop and wait for its result."""
        async def wrapped() -> Any:
            return await make()
        fut = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"the client loop did not finish {make} within {timeout} s") from None

    def connect(self, url: BridgeURL, count: int = 1) -> list[Recorder]:
        """Connect ``count`` clients with the URL's token (websocket transport); each has had
        its ``hello`` before this returns."""
        recs = [Recorder(self) for _ in range(count)]
        self.recorders.extend(recs)

        async def all_of_them() -> None:
            await asyncio.gather(*(r.sio.connect(url.base, auth={"token": url.token}, transports=["websocket"],
                                                 wait_timeout=START_TIMEOUT) for r in recs))
        self.run(all_of_them, START_TIMEOUT + 5)
        for r in recs:
            r.wait_event("hello")
        return recs

    def call(self, rec: Recorder, event: str, data: Any, timeout: float = TIMEOUT) -> Any:
        """The acknowledgement of ``event``; for "command", the answer of its ``result`` event."""
        if event == "command":
            return self.run(lambda: rec.command(data, timeout), timeout + 5)
        return self.run(lambda: rec.sio.call(event, data, timeout=timeout), timeout + 5)

    def subscribe(self, recs: Iterable[Recorder], channels: list[str], **options: Any) -> list[dict[str, Any]]:
        """Subscribe every client in ``recs`` (concurrently); check and return the acks."""
        recs = list(recs)

        async def all_of_them() -> list[Any]:
            return await asyncio.gather(*(r.sio.call("subscribe", {"channels": channels, **options},
                                                     timeout=TIMEOUT) for r in recs))
        acks = self.run(all_of_them, TIMEOUT + 5)
        for ack in acks:
            assert isinstance(ack, dict) and ack.get("ok"), ack
        for r in recs:
            r.subscribed.update(channels)
        return acks

    def close(self) -> None:
        async def shut() -> None:
            # unsubscribe first: a client disconnected half-way through a binary packet hands
            # the rest of it to the packet decoder, which logs a ValueError per attachment.
            # Everything sent before the unsubscribe's ack has been handled once it arrives.
            live = [r for r in self.recorders if r.sio.connected and r.subscribed]
            await asyncio.gather(*(r.sio.call("unsubscribe", {"channels": sorted(r.subscribed)}, timeout=5)
                                   for r in live), return_exceptions=True)
            await asyncio.gather(*(r.sio.disconnect() for r in self.recorders if r.sio.connected),
                                 return_exceptions=True)
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
        try:
            self.run(lambda: shut(), TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture
def client_loop(mb: BridgeHarness):
    """A ClientLoop whose clients disconnect before the harness stops bridges and devices."""
    hub = ClientLoop()
    try:
        yield hub
    finally:
        hub.close()


# -- a Socket.IO client by hand, whose reading can be paused ------------------------------

class RawClient:
    """Engine.IO v4 / Socket.IO v5 by hand over websocket-client, with bench/wire.py's msgpack
    packets (one map per binary frame), read by a thread that can be told to stop
    reading (``pause``) and to go on (``resume``).

    The receive buffer is set small before connecting, so what the client does not read
    piles up on the bridge's side at once. While reading, it answers Engine.IO pings ("2"
    → "3"); while paused it answers nothing (the bridge's ping timeout is 10 + 10 s).
    """

    def __init__(self, url: BridgeURL, rcvbuf: int = 4096) -> None:
        ws_url = url.base.replace("http://", "ws://", 1) + wire.EIO_PATH
        self.ws = websocket.create_connection(ws_url, timeout=TIMEOUT, enable_multithread=True,
                                              sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf),))
        self.decoder = wire.Decoder()
        kind, self.handshake = self.decoder.feed(*self.ws.recv_data()) or (None, None)
        assert kind == "open", kind
        self.events: list[tuple[str, Any, float]] = []
        self.acks: dict[int, Any] = {}
        self.errors: list[str] = []
        self.closed = False
        self.pings = 0
        self._ids = iter(range(1, 1 << 30))
        self._lock = threading.Lock()
        self._reading = threading.Event()
        self._reading.set()
        self._idle = threading.Event()   # set by the reader while it is paused
        self._stop = False
        self._send(wire.encode_connect({"token": url.token}))
        # the bridge sends hello and state before the CONNECT packet: handle until it
        deadline = time.monotonic() + TIMEOUT
        while not any(e == "connect" for e, _, _ in self.events):
            assert time.monotonic() < deadline, f"no CONNECT packet; got {[e for e, _, _ in self.events]}"
            self._handle(*self.ws.recv_data())
        self.sid = next(d for e, d, _ in self.events if e == "connect")["sid"]
        self._thread = threading.Thread(target=self._read_loop, name="raw-client", daemon=True)
        self._thread.start()

    def _send(self, frames: list[wire.Frame]) -> None:
        for opcode, payload in frames:
            self.ws.send(payload, opcode)

    def _read_loop(self) -> None:
        try:
            while not self._stop:
                if not self._reading.is_set():
                    self._idle.set()
                    self._reading.wait(0.1)
                    continue
                self._idle.clear()
                # websocket-client reads exactly one frame's bytes, so select() on the socket
                # says truly whether the next message has begun to arrive
                ready, _, _ = select.select([self.ws.sock], [], [], 0.1)
                if ready:
                    self._handle(*self.ws.recv_data())
        except websocket.WebSocketConnectionClosedException:
            self.closed = True
        except Exception as exc:
            if not self._stop:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.closed = True

    def _handle(self, opcode: int, payload: bytes) -> None:
        now = time.monotonic()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = True
            return
        packet = self.decoder.feed(opcode, payload)
        if packet is None:
            return
        kind, body = packet
        if kind == "ping":
            self.pings += 1
            self._send(wire.encode_pong())
        elif kind == "event":
            self._record(body, now)
        elif kind == "ack":
            with self._lock:
                self.acks[body[0]] = body[1]
        elif kind in ("connect", "disconnect", "connect_error"):
            with self._lock:
                self.events.append((kind, body, now))

    def _record(self, packet: list[Any], now: float) -> None:
        event, data = packet[0], packet[1] if len(packet) > 1 else None
        if event == "data" and isinstance(data, dict):
            data = summarize(data, now)
        with self._lock:
            self.events.append((event, data, now))

    def call(self, event: str, data: Any, timeout: float = TIMEOUT) -> Any:
        ack_id = next(self._ids)
        self._send(wire.encode_event(event, data, ack_id))
        return wait_for(lambda: self.acks.get(ack_id), timeout, f"the ack of {event!r}")

    def pause(self) -> None:
        """Stop reading; returns once the reader is idle (it finishes the message it is in)."""
        self._reading.clear()
        wait_for(self._idle.is_set, TIMEOUT, "the raw client's reader to pause")

    def resume(self) -> None:
        self._reading.set()

    def data(self, channel: str) -> list[Data]:
        with self._lock:
            return [d for e, d, _ in self.events if e == "data" and d.channel == channel]

    def close(self) -> None:
        self._stop = True
        self._reading.set()
        self._thread.join(TIMEOUT)
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


# -- accounting ---------------------------------------------------------------------------

@dataclass
class Ledger:
    start: int      # the ring position the subscription started from (first seq - its missed)
    last: int       # the last seq covered
    covered: int    # records in the messages' seq ranges
    missed: int     # records counted as missed
    rows: int       # rows actually sent (== covered unless decimated)

    def __str__(self) -> str:
        return (f"seq {self.start}..{self.last}: {self.covered} covered by messages + {self.missed} missed "
                f"= {self.covered + self.missed} of {self.last + 1 - self.start}; {self.rows} rows sent")


def account_records(msgs: list[Data], what: str, budget: int | None = None) -> Ledger:
    """Check a subscriber's records messages on one channel, in arrival order.

    Each message's ``seq`` range (empty in a message that only carries a missed count)
    follows the previous one after exactly ``missed`` records;
    its ``seq`` column holds exactly the records of that range (every one of them, unless
    ``decimated``: then a strictly increasing subset, at most ``budget`` rows, that keeps
    the first and the last). So every record from the subscription's start to the last one
    is delivered or counted as missed, and none twice.
    """
    assert msgs, f"{what}: no records messages"
    problems = []
    for prev, m in zip(msgs, msgs[1:]):
        if m.seq0 != prev.seq1 + 1 + m.missed:
            problems.append(f"after seq {prev.seq1} came {m.seq0}..{m.seq1} with missed={m.missed}")
    for m in msgs:
        seq = m.columns.get("seq")
        # seq1 == seq0 - 1: a message without rows, carrying only a missed count (relay.flush_missed)
        if m.seq1 < m.seq0 - 1 or m.missed < 0 or seq is None or len(seq) != m.count:
            problems.append(f"message {m.seq0}..{m.seq1} (missed {m.missed}, count {m.count}) is malformed")
            continue
        if not m.decimated:
            if m.count != m.span or not np.array_equal(seq, np.arange(m.seq0, m.seq1 + 1)):
                problems.append(f"message {m.seq0}..{m.seq1} holds rows {seq[:3]}..{seq[-3:]} ({m.count} rows)")
        else:
            ok = (seq[0] == m.seq0 and seq[-1] == m.seq1 and np.all(np.diff(seq) > 0)
                  and (budget is None or m.count <= budget))
            if not ok:
                problems.append(f"decimated message {m.seq0}..{m.seq1} holds {m.count} rows {seq[:3]}..{seq[-3:]}")
    assert not problems, f"{what}: {len(problems)} problems, e.g. {problems[:5]}"
    ledger = Ledger(msgs[0].seq0 - msgs[0].missed, msgs[-1].seq1, sum(m.span for m in msgs),
                    sum(m.missed for m in msgs), sum(m.count for m in msgs))
    assert ledger.start + ledger.covered + ledger.missed == ledger.last + 1, f"{what}: {ledger}"
    return ledger


def account_frames(msgs: list[Data], what: str) -> None:
    """Frames: never torn (every element equal to the frame's own number k), in order, and
    ``missed`` exactly the frames published between two that were sent."""
    assert msgs, f"{what}: no frames"
    torn = [(m.seq0, m.value) for m in msgs if not (m.shape_ok and m.uniform and m.value == m.seq0)]
    assert not torn, f"{what}: {len(torn)} of {len(msgs)} frames torn or not frame k's data: {torn[:5]}"
    wrong = [(p.seq0, m.seq0, m.missed) for p, m in zip(msgs, msgs[1:]) if m.seq0 != p.seq0 + 1 + m.missed]
    assert not wrong, f"{what}: frame numbers and missed counts disagree (previous, next, missed): {wrong[:5]}"


def gap_stats(times: list[float]) -> dict[str, float]:
    """Gaps between consecutive arrival times, in ms: p50, p95, p99, max."""
    gaps = np.diff(np.asarray(times)) * 1000.0
    if not len(gaps):
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(gaps), "p50": float(np.percentile(gaps, 50)), "p95": float(np.percentile(gaps, 95)),
            "p99": float(np.percentile(gaps, 99)), "max": float(gaps.max())}
