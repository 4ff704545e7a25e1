"""Helpers for the bridge integration tests: real device processes, real bridges, real clients.

Builds on tests/conftest.py: every process goes through its ``_guard`` (tagged environment,
killed and checked at teardown, /dev/shm checked for the device names it handed out).

    def test_x(mb):                                  # the ``mb`` fixture: a BridgeHarness
        dev = mb.device()                            # DEVICE script, MON=port=0: it launches its bridge
        with mb.client(dev.url) as c:                # a connected socketio.Client + recorder
            c.call("subscribe", {"channels": ["telemetry"]})
            dev.request("pub 10", "published")
            c.wait_for(lambda: c.records("telemetry"), what="data")

``mb.serve(name, ...)`` starts a bridge by hand (``python -m bridge serve``); ``mb.device(name,
mon="bridge=0")`` then starts a device without its own bridge.

Teardown (also after a failure): clients disconnect; devices get EOF on stdin (the script
returns, the monitor closes, a bridge it launched exits with it) and hand-started bridges
get SIGTERM; whatever has not exited within the deadline is killed with its session. The
conftest guard then checks that every tagged process is gone and that no
``/dev/shm/monbridge.<name>.*`` is left for any name the test used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import socketio

from conftest import START_TIMEOUT, TIMEOUT, DeviceProcess, wait_for

# A device with one channel of each kind and a command of each shape. Argument 1 is its
# name; further arguments: "manual" (dispatch="manual"), "cloud" (a 200 000 x 3 f4 frame),
# "pair" (a second records channel, "extra", like telemetry).
# It acts on lines from stdin and answers each with one line on stdout.
DEVICE = r"""
import atexit, json, sys, threading, time
import numpy as np
import device_agent

name = sys.argv[1]
opts = set(sys.argv[2:])
mon = device_agent.start(name, dispatch="manual" if "manual" in opts else "thread")
# the commands come first, the channels after them (below): a bridge that lists the
# channels (wait_attached) has the whole command catalog too

# Every command the bridge put in the queue, in the order the device took them: the
# ground truth for "nothing was enqueued" (a hook on this process's own queue reader).
taken = []
_inbox = mon._dispatcher.inbox
_get = _inbox.get
def _counting_get():
    raw = _get()
    if raw is not None:
        taken.append(json.loads(raw).get("name"))
    return raw
_inbox.get = _counting_get

@atexit.register   # runs before the monitor's close (atexit is last in, first out)
def _unhook():
    # the hook's view of the control segment must go before the monitor closes it, or the
    # segment's SharedMemory says at exit that it could not close ("exported pointers exist")
    global _inbox, _get
    _inbox = _get = None

received = []

@mon.command
def add(a: int, b: int = 1) -> int:
    "Add two integers."
    return a + b

@mon.command
def echo(value=None):
    return value

@mon.command(params={"value": {"type": "number", "minimum": 0, "maximum": 10}})
def set_speed(value):
    mon.state.update(speed=value)
    return value

@mon.command
def record(n: int):
    received.append(n)
    return n

@mon.command
def history():
    return received

@mon.command
def whoami(client):
    return client

@mon.command
def notify(text: str, client):
    log.publish({"text": text}, to=client["id"])
    return True

@mon.command
def nap(seconds: float):
    time.sleep(seconds)
    return seconds

@mon.command
def queue_log():
    return taken


telemetry = mon.records("telemetry", {"t": "f8", "seq": "i8", "value": "f4"}, capacity=65536)
img = mon.frame("img", shape=(48, 64), dtype="f4")
log = mon.events("log")
cloud = mon.frame("cloud", shape=(200_000, 3), dtype="f4") if "cloud" in opts else None
extra = mon.records("extra", {"t": "f8", "seq": "i8", "value": "f4"}, capacity=65536) if "pair" in opts else None
mon.state.update(mode="idle", speed=0.0)


def value_of(seq):
    return seq * 0.5 - 100.0          # exact in f4 for the counts used here


def publish(n):
    s0 = telemetry.count
    for s in range(s0, s0 + n):
        telemetry.publish(t=1000.0 + s * 0.001, seq=s, value=value_of(s))


def spike(n, at, height):
    s0 = telemetry.count
    arr = np.zeros(n, telemetry.dtype)
    arr["seq"] = np.arange(s0, s0 + n)
    arr["t"] = 1000.0 + arr["seq"] * 0.001
    arr["value"] = (arr["seq"] % 7).astype("f4")
    arr["value"][at] = height
    telemetry.publish_many(arr)


def bulk(n):
    s0 = telemetry.count
    arr = np.zeros(n, telemetry.dtype)
    arr["seq"] = np.arange(s0, s0 + n)
    arr["t"] = 1000.0 + arr["seq"] * 0.001
    arr["value"] = value_of(arr["seq"])
    telemetry.publish_many(arr)


def image(k):
    return (np.arange(48 * 64, dtype="f4").reshape(48, 64) + 1000.0 * k)


stop = threading.Event()

def stream_cloud(hz):
    buf = np.zeros(cloud.shape, cloud.dtype)
    period, k, next_t = 1.0 / hz, 0, time.monotonic()
    while not stop.is_set():
        k += 1
        buf[0, 0] = k
        cloud.publish(buf)
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_t = time.monotonic()

def stream_telemetry(hz):
    period, next_t = 1.0 / hz, time.monotonic()
    while not stop.is_set():
        publish(1)
        next_t += period
        stop.wait(max(0.0, next_t - time.monotonic()))


threads = []
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, rest = line.strip().partition(" ")
    if cmd == "pub":
        publish(int(rest))
        print("published", telemetry.count, flush=True)
    elif cmd == "pubpair":   # n records on telemetry, then as many on extra ("pair")
        for ch in (telemetry, extra):
            s0 = ch.count
            ch.publish_many(np.array([(1000.0 + s * 0.001, s, value_of(s)) for s in range(s0, s0 + int(rest))],
                                     ch.dtype))
        print("published", telemetry.count, extra.count, flush=True)
    elif cmd == "spike":
        n, at, height = rest.split()
        spike(int(n), int(at), float(height))
        print("published", telemetry.count, flush=True)
    elif cmd == "bulk":
        bulk(int(rest))
        print("published", telemetry.count, flush=True)
    elif cmd == "frame":
        for k in rest.split():
            img.publish(image(int(k)))
        print("framed", img.count, flush=True)
    elif cmd == "state":
        mon.state.update(json.loads(rest))
        print("stated", flush=True)
    elif cmd == "event":
        log.publish(json.loads(rest))
        print("evented", log.count, flush=True)
    elif cmd == "eventto":
        to, _, msg = rest.partition(" ")
        log.publish(json.loads(msg), to=to)
        print("evented", log.count, flush=True)
    elif cmd == "clients":
        print("clients", json.dumps(mon.clients), flush=True)
    elif cmd == "url":
        print("url", mon.wait_url(30), flush=True)
    elif cmd == "poll":
        print("polled", mon.poll(), flush=True)
    elif cmd == "cloud":
        threads.append(threading.Thread(target=stream_cloud, args=(float(rest),), daemon=True))
        threads[-1].start()
        print("clouding", flush=True)
    elif cmd == "stream":
        threads.append(threading.Thread(target=stream_telemetry, args=(float(rest),), daemon=True))
        threads[-1].start()
        print("streaming", flush=True)
    elif cmd == "close":
        stop.set()
        for t in threads:
            t.join()
        started = time.monotonic()
        mon.close()
        code = mon._bridge.returncode if mon._bridge is not None else None
        print("closed", code, round(time.monotonic() - started, 3), flush=True)
        break
stop.set()
"""

DASHBOARD_LINE = re.compile(r"monbridge: dashboard for '(?P<name>[^']+)' at (?P<url>\S+)")
SERVING_LINE = re.compile(r"monbridge: serving '(?P<name>[^']+)' at (?P<url>\S+)")


@dataclass(frozen=True)
class BridgeURL:
    url: str     # as printed: http://127.0.0.1:PORT/?token=TOKEN
    base: str    # http://127.0.0.1:PORT
    port: int
    token: str


def parse_url(url: str) -> BridgeURL:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname and parts.port, f"not a bridge URL: {url!r}"
    tokens = parse_qs(parts.query).get("token")
    assert tokens and len(tokens[0]) >= 8, f"no token in {url!r}"
    return BridgeURL(url, f"http://{parts.hostname}:{parts.port}", parts.port, tokens[0])


def wait_stderr(proc: DeviceProcess, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
    """Wait for a line on ``proc``'s stderr matching ``pattern``; fail early if it exits."""

    def find() -> re.Match[str] | None:
        for line in list(proc.stderr):
            m = pattern.search(line)
            if m:
                return m
        if proc.proc.poll() is not None and not proc._readers[1].is_alive():
            raise AssertionError(f"exited before printing {pattern.pattern!r}: {proc.describe()}")
        return None

    return wait_for(find, timeout, f"{pattern.pattern!r} on stderr of {proc.pid}", interval=0.01)


# -- processes ---------------------------------------------------------------------------

@dataclass
class Device:
    """A DEVICE process; ``url`` is set when MON made it launch a bridge."""

    proc: DeviceProcess
    name: str
    url: BridgeURL | None

    def request(self, line: str, answer: str, timeout: float = TIMEOUT) -> str:
        return self.proc.request(line, answer, timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def bridge_pid(self) -> int:
        """The pid of the bridge this device launched (its child running ``-m bridge``)."""
        def find() -> int | None:
            for pid in children(self.pid):
                if b"bridge\0serve" in cmdline(pid):
                    return pid
            return None
        return wait_for(find, TIMEOUT, f"the bridge child of {self.pid}")


@dataclass
class Bridge:
    """A bridge started by hand: ``python -m bridge serve --attach NAME --port 0 ...``."""

    proc: DeviceProcess
    name: str
    url: BridgeURL

    @property
    def pid(self) -> int:
        return self.proc.pid

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM and wait for it (and its children) to exit; return its exit code."""
        if self.proc.proc.poll() is None:
            self.proc.proc.send_signal(signal.SIGTERM)
        return self.proc.wait_gone(timeout)


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in (b"Z", b"X"):
            out.append(int(entry))
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


# -- clients -----------------------------------------------------------------------------

class _ClientLoop:
    """One asyncio event loop on a daemon thread, shared by every Client of this process."""

    _loop: asyncio.AbstractEventLoop | None = None
    _guard = threading.Lock()

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._guard:
            if cls._loop is None:
                cls._loop = asyncio.new_event_loop()
                threading.Thread(target=cls._loop.run_forever, name="test-clients", daemon=True).start()
            return cls._loop

    @classmethod
    def run(cls, coro: Any, timeout: float) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, cls.get())
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"the client loop did not finish within {timeout} s") from None


class Client:
    """A python-socketio AsyncClient (msgpack, as the bridge speaks it) that records every
    event it receives, in order, driven from the test's thread.

    Its handlers run on the shared loop's thread and never await, so events are recorded
    in the order they arrived. ``call("command", payload)`` and ``fire("command", ...)`` add
    an ``id`` and wait for the ``result`` event that answers it (docs/protocol.md §3), so a
    test reads a command's answer as it reads any other event's ack.
    """

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, serializer="msgpack")
        self.events: list[tuple[str, Any, float]] = []   # (event, data, time.monotonic())
        self.connect_errors: list[Any] = []
        self.closing = False
        self._cond = threading.Condition()
        self._changes = 0   # bumped (under _cond) whenever an event or an answer is recorded
        self._command_ids = itertools.count(1)
        self._answers: dict[Any, Callable[[Any], None]] = {}  # command id -> what to do with its result

        @self.sio.on("*")
        def _any(event: str, *args: Any) -> None:
            data = args[0] if args else None
            if event == "result" and isinstance(data, dict) and data.get("id") in self._answers:
                # the answer as the HTTP API gives it: without the id and the device it names
                self._answers.pop(data["id"])({k: v for k, v in data.items() if k not in ("id", "device")})
            self._record(event, data)

        @self.sio.on("connect_error")
        def _refused(data: Any = None) -> None:
            with self._cond:
                self.connect_errors.append(data)
                self._changes += 1
                self._cond.notify_all()

    def _record(self, event: str, data: Any) -> None:
        with self._cond:
            self.events.append((event, data, time.monotonic()))
            self._changes += 1
            self._cond.notify_all()

    # -- reading what arrived

    def of(self, event: str, since: int = 0) -> list[Any]:
        with self._cond:
            return [d for e, d, _ in self.events[since:] if e == event]

    def mark(self) -> int:
        """An index into ``events``: pass it as ``since`` to look only at what came later."""
        with self._cond:
            return len(self.events)

    def data(self, channel: str, since: int = 0) -> list[dict[str, Any]]:
        return [d for d in self.of("data", since) if d.get("channel") == channel]

    def records(self, channel: str, since: int = 0) -> list[dict[str, Any]]:
        return [d for d in self.data(channel, since) if d.get("kind") == "records"]

    @property
    def connected(self) -> bool:
        return self.sio.connected

    def close(self) -> None:
        self.closing = True
        if self.sio.connected:
            _ClientLoop.run(self.sio.disconnect(), TIMEOUT)

    @property
    def hello(self) -> dict[str, Any]:
        return self.wait_event("hello")

    @property
    def sid(self) -> str:
        return self.sio.get_sid()

    # -- waiting

    def wait_for(self, predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
        """Re-check ``predicate`` whenever an event arrives; return its first truthy value."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                changes = self._changes
            # not under the lock: the predicate may talk to the bridge, and the answers it
            # waits for are recorded by the client's loop, which takes the lock
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e for e, _, _ in self.events[-20:]]
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}; "
                                     f"last events: {seen}")
            with self._cond:
                if self._changes == changes:
                    self._cond.wait(min(left, 0.25))

    def wait_event(self, event: str, predicate: Callable[[Any], Any] = lambda d: True, since: int = 0,
                   timeout: float = TIMEOUT) -> Any:
        """The first ``event`` (at index >= ``since``) whose data satisfies ``predicate``."""
        def find() -> Any:
            for d in self.of(event, since):
                if predicate(d):
                    return d if d is not None else True
            return None
        return self.wait_for(find, timeout, f"event {event!r}")

    # -- talking

    def connect(self, url: str, auth: Any, headers: dict[str, str], timeout: float) -> None:
        _ClientLoop.run(self.sio.connect(url, auth=auth, headers=headers, transports=["websocket"],
                                         wait_timeout=timeout), timeout + 5)

    def emit(self, event: str, data: Any = None) -> None:
        """Send without asking for an acknowledgement."""
        _ClientLoop.run(self.sio.emit(event, data), TIMEOUT)

    def call(self, event: str, data: Any = None, timeout: float = TIMEOUT) -> Any:
        """Send and return the acknowledgement; for "command", the ``result`` event's answer."""
        if event == "command":
            box: list[Any] = []
            self.fire(event, data, box)
            return self.wait_for(lambda: box, timeout, f"the answer to {data!r}")[0][1]
        return _ClientLoop.run(self.sio.call(event, data, timeout=timeout), timeout + 5)

    def subscribe(self, *channels: str, **options: Any) -> dict[str, Any]:
        ack = self.call("subscribe", {"channels": list(channels), **options})
        assert ack.get("ok"), ack
        return ack

    def command(self, name: str, timeout: float = TIMEOUT, **args: Any) -> dict[str, Any]:
        return self.call("command", {"name": name, "args": args}, timeout=timeout)

    def fire(self, event: str, data: Any, acks: list[tuple[Any, Any]], key: Any = None) -> None:
        """Emit without waiting; ``(key, answer)`` is appended to ``acks`` when it comes (for
        "command", the ``result`` event with the id this adds to ``data``)."""
        def got(answer: Any) -> None:
            with self._cond:
                acks.append((key, answer))
                self._changes += 1
                self._cond.notify_all()
        if event == "command":  # a payload that is not an object is answered with the id null
            command_id = next(self._command_ids) if isinstance(data, dict) else None
            self._answers[command_id] = got
            _ClientLoop.run(self.sio.emit(event, {**data, "id": command_id} if isinstance(data, dict) else data),
                            TIMEOUT)
        else:
            _ClientLoop.run(self.sio.emit(event, data, callback=lambda *ack: got(ack[0] if ack else None)), TIMEOUT)


def connect(url: BridgeURL | str, token: str | None | bool = True, timeout: float = TIMEOUT,
            headers: dict[str, str] | None = None, bundle: Any = None) -> Client:
    """Connect a websocket client. ``token``: True = the URL's, None/False = none, else that
    string; ``bundle``: the auth's ``bundle`` value, left out when None."""
    url = parse_url(url) if isinstance(url, str) else url
    presented = url.token if token is True else (token or None)
    auth = {"token": presented} if presented else {}
    if bundle is not None:
        auth["bundle"] = bundle
    client = Client()
    client.connect(url.base, auth or None, headers or {}, timeout)
    client.wait_event("hello", timeout=timeout)
    return client


# -- decoding ----------------------------------------------------------------------------

def decode_records(msg: dict[str, Any]) -> dict[str, np.ndarray]:
    """A ``data`` message of kind records → {field: array}; checks the payload is binary."""
    out = {}
    data = msg["data"]
    assert isinstance(data, bytes), f"records data is {type(data).__name__}, not bytes"
    for f in msg["fields"]:
        assert f["offset"] % 8 == 0, f"column {f['name']!r} starts at {f['offset']}, not 8-aligned"
        col = data[f["offset"] : f["offset"] + f["nbytes"]]
        arr = np.frombuffer(col, dtype=np.dtype(f["dtype"]).newbyteorder("<"))
        out[f["name"]] = arr.reshape((-1, *f["shape"]))
    for name, arr in out.items():
        assert len(arr) == msg["count"], f"column {name!r} has {len(arr)} rows, count says {msg['count']}"
    return out


def concat_records(msgs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    decoded = [decode_records(m) for m in msgs]
    return {k: np.concatenate([d[k] for d in decoded]) for k in decoded[0]} if decoded else {}


def decode_frame(msg: dict[str, Any]) -> np.ndarray:
    assert isinstance(msg["data"], bytes), f"frame data is {type(msg['data']).__name__}, not bytes"
    return np.frombuffer(msg["data"], dtype=np.dtype(msg["dtype"]).newbyteorder("<")).reshape(msg["shape"])


def image(k: int) -> np.ndarray:
    """The frame DEVICE publishes on ``img`` for ``frame k``."""
    return np.arange(48 * 64, dtype="f4").reshape(48, 64) + 1000.0 * k


def value_of(seq: np.ndarray | int) -> Any:
    """The ``value`` DEVICE publishes with record ``seq`` (``pub N``)."""
    return np.asarray(seq) * 0.5 - 100.0


def http(url: BridgeURL, path: str, method: str = "GET", token: str | None | bool = True,
         body: Any = None, data: bytes | None = None, timeout: float = TIMEOUT) -> tuple[int, str, Any]:
    """One HTTP request to the bridge: (status, content type, JSON or text).

    ``token``: True sends the URL's as ``Authorization: Bearer``, a string sends that, None none.
    ``body`` is sent as JSON; ``data`` as raw bytes with a JSON content type.
    """
    headers = {}
    presented = url.token if token is True else (token or None)
    if presented:
        headers["Authorization"] = f"Bearer {presented}"
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url.base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, raw = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, raw = exc.code, exc.headers.get("Content-Type", ""), exc.read()
    text = raw.decode()
    return status, ctype, json.loads(text) if ctype.startswith("application/json") else text


def wait_attached(url: BridgeURL, pid: int | None = None, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Wait until the bridge reports an online device (with ``pid``, if given) and its channels
    (DEVICE declares its commands first, so then its command catalog too)."""
    def ready() -> dict[str, Any] | None:
        _, _, health = http(url, "/api/health")
        dev = health["device"]
        if dev["status"] != "online" or (pid is not None and dev["pid"] != pid):
            return None
        _, _, channels = http(url, "/api/channels")
        return channels if channels["channels"] else None
    return wait_for(ready, timeout, f"the bridge at {url.base} to attach", interval=0.02)


def wait_devices(url: BridgeURL, pids: dict[str, int], timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Wait until the bridge serves each device of ``pids`` (name -> pid) online, with its channels."""
    def ready() -> dict[str, Any] | None:
        _, _, health = http(url, "/api/health")
        online = {d["name"]: d["pid"] for d in health["devices"] if d["status"] == "online"}
        if any(online.get(name) != pid for name, pid in pids.items()):
            return None
        _, _, channels = http(url, "/api/channels")
        listed = {d["name"]: d["channels"] for d in channels["devices"]}
        return channels if all(listed.get(name) for name in pids) else None
    return wait_for(ready, timeout, f"the bridge at {url.base} to serve {', '.join(pids)}", interval=0.02)


def check_error(ack: dict[str, Any], code: str, *words: str) -> str:
    """Assert ``ack`` is an error with ``code`` whose message contains every one of ``words``."""
    assert isinstance(ack, dict) and ack.get("ok") is False, ack
    err = ack["error"]
    assert err["code"] == code, ack
    message = err["message"]
    assert isinstance(message, str) and message, ack
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    return message


# -- the harness -------------------------------------------------------------------------

@dataclass
class BridgeHarness:
    guard: Any                      # conftest's _Guard
    launch: Callable[..., DeviceProcess]
    new_name: Callable[[], str]
    devices: list[Device] = field(default_factory=list)
    bridges: list[Bridge] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    others: list[DeviceProcess] = field(default_factory=list)

    def device(self, name: str | None = None, *args: str, mon: str = "port=0",
               env: dict[str, str] | None = None, wait_url: bool | None = None) -> Device:
        """Start DEVICE as ``name`` (default: a fresh unique name) with ``MON=mon``.

        Unless MON says bridge=0, waits for the device's "dashboard ... at URL" line.
        """
        name = name or self.new_name()
        proc = self.launch(DEVICE, name, *args, mon=mon, env=env)
        dev = Device(proc, name, None)
        self.devices.append(dev)
        if wait_url if wait_url is not None else "bridge=0" not in mon:
            m = wait_stderr(proc, DASHBOARD_LINE)
            assert m["name"] == name, m.group(0)
            dev.url = parse_url(m["url"])
        return dev

    def serve(self, name: str, *args: str, port: str = "0", expect_url: bool = True) -> Bridge | DeviceProcess:
        """Start ``python -m bridge serve --attach name --port 0 *args`` and wait for its URL."""
        env, tag = self.guard.env(None, None)
        env.pop("MONBRIDGE_TOKEN", None)  # else it would be the bridge's token
        argv = [sys.executable, "-m", "bridge", "serve", "--attach", name, "--port", port, *args]
        proc = DeviceProcess(argv, env, self.guard.tmp_path, tag)
        self.guard.procs.append(proc)
        if not expect_url:
            self.others.append(proc)
            return proc
        line = proc.expect("monbridge: serving", START_TIMEOUT)
        m = SERVING_LINE.search("monbridge: serving " + line)
        assert m and m["name"] == name, line
        bridge = Bridge(proc, name, parse_url(m["url"]))
        self.bridges.append(bridge)
        return bridge

    def serve_devices(self, attach: str, *args: str) -> Bridge:
        """Start ``python -m bridge serve --attach ATTACH --port 0 *args`` for several devices
        (``a,b`` or ``all``) and wait for its URL."""
        proc = self.serve(attach, *args, expect_url=False)
        line = proc.expect("monbridge: serving", START_TIMEOUT)
        m = re.search(r" at (\S+)", line)
        assert m, line
        return Bridge(proc, attach, parse_url(m[1]))   # stopped at teardown as one of ``others``

    def client(self, url: BridgeURL | str, token: str | None | bool = True,
               headers: dict[str, str] | None = None, bundle: Any = None) -> Client:
        c = connect(url, token, headers=headers, bundle=bundle)
        self.clients.append(c)
        return c

    @contextlib.contextmanager
    def connected(self, url: BridgeURL | str, token: str | None | bool = True) -> Iterator[Client]:
        """A connected client, disconnected when the block ends (or at teardown)."""
        c = self.client(url, token)
        try:
            yield c
        finally:
            c.close()

    def teardown(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.close()
        for dev in self.devices:
            p = dev.proc
            if p.proc.poll() is None and p.proc.stdin and not p.proc.stdin.closed:
                with contextlib.suppress(OSError):
                    p.proc.stdin.close()
        for p in [b.proc for b in self.bridges] + self.others:
            if p.proc.poll() is None:
                with contextlib.suppress(OSError):
                    p.proc.send_signal(signal.SIGTERM)
        for p in [d.proc for d in self.devices] + [b.proc for b in self.bridges] + self.others:
            try:
                p.wait_gone(TIMEOUT)
            except AssertionError:
                p.kill_group()
                with contextlib.suppress(Exception):
                    p.proc.wait(TIMEOUT)


@pytest.fixture
def mb(_guard: Any, launch: Callable[..., DeviceProcess], new_device_name: Callable[[], str]) -> Iterator[BridgeHarness]:
    harness = BridgeHarness(_guard, launch, new_device_name)
    yield harness
    harness.teardown()  # then the guard's: stray processes, /dev/shm leftovers
