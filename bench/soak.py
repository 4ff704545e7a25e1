"""Soak benchmark: the demo device, ten Python clients and a dashboard tab for a long while,
and whether anything grows that should stay flat.

    python -m bench.soak [--minutes N | --quick] [--json]

``--json`` prints exactly one JSON object on stdout; progress goes to stderr, one line per
sample. The run samples for N minutes (default 60; ``--quick``: 3) after everything has
started and the page has shown each tab once (about 30 s), then stops by itself; Ctrl-C or
SIGTERM stops it early, still printing the figures of what was sampled (exit status 128 + the
signal). For tests and diagnostics:
``--sample-every S`` (default 10), ``--tab-every S``, ``--clients N``, ``--client-rate HZ``,
``--command-every S``.

What runs (all on 127.0.0.1; every process it started is stopped in a ``finally``, by pid or
by the device's process group, and the device's /dev/shm segments are removed if it left any):

* the demo device, ``examples/robot_arm.py`` unchanged, at its normal rates (joints 1 kHz,
  pose 60 Hz, cloud 20,000×6 f4 at 30 Hz, camera 240×320×3 at 15 Hz, loop 10 Hz, log events),
  with ``MON=port=0,name=soak-PID,specs=specs,token=...`` in a session of its own; it starts
  its bridge (60 Hz relay, eventlet), which exits with it.
* one client process (``--role clients``) with 10 python-socketio ``AsyncClient`` s (websocket,
  no size limit on messages), each subscribed to every channel the bridge lists in ``hello``
  at ``--client-rate`` Hz (default 10) with ``in_flight: 2``, confirming every message with
  ``consumed`` as the dashboard does, and calling the ``take_picture`` command every
  ``--command-every`` s (default 5; it logs a line, so the events channel carries data too).
  Each client decodes every message (records columns, frames, events) and checks its sequence
  numbers against ``missed`` (docs/protocol.md §4.3–4.5).
* Debian's chromium, driven over the DevTools protocol (``bench/cdp.py``), one page on the
  dashboard URL (``?token=``); ``bench/soak_page.js`` clicks the next tab button (Status
  included) every ``--tab-every`` s (default 12), after showing each tab for 2 s before the
  run (what a view allocates when first shown is not growth).

Every ``--sample-every`` s: bridge and device RSS (/proc/PID/status VmRSS) and open file
descriptors (/proc/PID/fd), the device's /dev/shm entries (``monbridge.NAME.*``), the page's
JS heap (CDP ``Performance.getMetrics`` JSHeapUsedSize, right after a forced GC, CDP
``HeapProfiler.collectGarbage``), the page's connection and the rows each view holds, and the
clients' counts. Every series is in the JSON (``series``), as is the CPU each part used
(``cpu_pct``, % of one core).

Figures, over the samples after the warm-up (the first 20 % of the run or 2 minutes,
whichever is less; ``--quick``: the first minute):

* ``*_per_10min``: the least-squares slope of each series, per 10 minutes (MB for RSS and
  heap, a count for descriptors and segments);
* ``js_heap_growth_pct``: bench.browser's definition (growth of the heap after a forced GC,
  start to end of the measured window), with each end the lowest sample of a window of the
  run (a tenth of the samples, at least 3), so that the tab shown at one moment does not
  decide it;
* ``*_growth`` for descriptors and segments: lowest count of the last window − lowest of the
  first (a descriptor open for a moment does not count; one that stays open does);
* ``errors`` (by kind in ``error_counts``, the first few in ``error_examples``): client
  disconnects, connection errors, undecodable messages, sequence numbers that disagree with
  ``missed``, refused subscriptions, failed commands, socketio/engineio client log records at
  WARNING or above and exceptions in their tasks, a sample in which no client got anything,
  page exceptions and console errors, samples with the page not live, views in error, bridge
  log lines at ERROR or a traceback, a process that died or stopped answering. Bridge log
  WARNING lines and console warnings are ``warnings``, not errors;
* ``missed_by_channel``: the sum of every message's ``missed``, over all clients. For records
  and events channels these are items lost (their total: ``records_missed``); for frames,
  frames published between two sent (at a subscription rate below the publish rate that is
  downsampling, not loss).
"""

from __future__ import annotations

from bench.common import (CHROMIUM, CHROMIUM_ARGS, Child, DeviceProcess, Replies, alive, cmdline, descendants,
                          fd_count, git_revision, group_members, growth_pct, judge, leftover_segments,
                          process_table, remove_segments, round_figures, rss_mb, watchdog)

import argparse
import json
import math
import os
import platform
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEVICE_SCRIPT = REPO / "examples" / "robot_arm.py"
SPECS = REPO / "specs"                       # the demo's dashboard (make demo runs it from REPO)
PAGE_JS = Path(__file__).resolve().parent / "soak_page.js"
STATIC = REPO / "webui" / "static"
START_TIMEOUT = 45.0                         # device + bridge, chromium, the page, on 2 busy cores
VIEWPORT = (1280, 800)
DEFAULT_MINUTES = 60.0
QUICK_MINUTES = 3.0
QUICK_WARMUP_S = 60.0
WARMUP_SHARE, WARMUP_MAX_S = 0.2, 120.0      # the warm-up: 20 % of the run or 2 minutes, the lesser
WINDOW_SHARE, WINDOW_MIN = 0.1, 3            # growth windows: a tenth of the samples, at least 3
IN_FLIGHT = 2                                # as the dashboard (webui/src/subscriptions.js)
COMMAND = "take_picture"                     # harmless: counts, and logs a line on the log channel
BRIDGE_LOG_RE = re.compile(r" monbridge (WARNING|ERROR|CRITICAL) ")
ERROR_EXAMPLES = 10
PRIME_DWELL_S = 2.0                          # before the run, each tab is shown this long

TARGETS: dict[str, dict[str, float]] = {
    "bridge_rss_mb_per_10min": {"max": 1.0},
    "device_rss_mb_per_10min": {"max": 1.0},
    "js_heap_growth_pct": {"max": 10.0},
    "bridge_fds_growth": {"max": 0},
    "device_fds_growth": {"max": 0},
    "shm_segments_growth": {"max": 0},
    "errors": {"max": 0},
}
SERIES = ("bridge_rss_mb", "device_rss_mb", "js_heap_mb", "bridge_fds", "device_fds", "shm_segments")


def log(message: str) -> None:
    print(f"bench.soak: {message}", file=sys.stderr, flush=True)


# ======================================================================================
# the figures (pure)
# ======================================================================================

def warmup_s(duration_s: float, quick: bool) -> float:
    """Seconds of the run that are warm-up: the first minute for --quick, else 20 % of the run
    or 2 minutes, whichever is less."""
    return QUICK_WARMUP_S if quick else min(WARMUP_SHARE * duration_s, WARMUP_MAX_S)


def after_warmup(samples: list[dict[str, Any]], warm_s: float) -> list[dict[str, Any]]:
    """The samples taken at or after ``warm_s`` seconds (``t``) into the run."""
    return [s for s in samples if s["t"] >= warm_s]


def slope_per_10min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per 10 minutes; NaN with fewer than two
    distinct times or a missing value."""
    pairs = [(t, y) for t, y in zip(ts, ys) if y is not None and not math.isnan(y)]
    if len(pairs) < 2 or len(pairs) < len(ts):
        return math.nan
    n = len(pairs)
    mt = sum(t for t, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    var = sum((t - mt) ** 2 for t, _ in pairs)
    if var == 0:
        return math.nan
    return 600.0 * sum((t - mt) * (y - my) for t, y in pairs) / var


def window_len(n: int) -> int:
    """Samples in each growth window: a tenth of ``n``, at least 3, at most ``n``."""
    return min(n, max(WINDOW_MIN, math.ceil(WINDOW_SHARE * n)))


def window_mins(values: list[float]) -> tuple[float, float]:
    """(lowest of the first window, lowest of the last window); NaN for no values."""
    if not values:
        return math.nan, math.nan
    w = window_len(len(values))
    return min(values[:w]), min(values[-w:])


def heap_growth_pct(heaps: list[float]) -> float:
    """JS heap growth in %: bench.browser's start-to-end growth, each end the lowest
    sample of its window."""
    first, last = window_mins(heaps)
    return growth_pct(first, last) if not math.isnan(first) else math.nan


def figures(samples: list[dict[str, Any]], warm_s: float) -> dict[str, Any]:
    """Slopes, growths and start/end values of every series over the samples after the warm-up."""
    post = after_warmup(samples, warm_s)
    ts = [s["t"] for s in post]
    out: dict[str, Any] = {"samples": len(samples), "samples_after_warmup": len(post)}
    for key in SERIES:
        ys = [s.get(key) for s in post]
        out[f"{key}_per_10min"] = slope_per_10min(ts, ys)
        first, last = window_mins([y for y in ys if y is not None])
        out[f"{key}_window_min"] = [first, last]
        if not key.endswith("_mb"):          # counts: descriptors, segments
            out[f"{key}_growth"] = last - first
    out["js_heap_growth_pct"] = heap_growth_pct([s["js_heap_mb"] for s in post if s.get("js_heap_mb") is not None])
    return out


# ======================================================================================
# the clients: python -m bench.soak --role clients JSON-ARGS
# ======================================================================================

class Tally:
    """What the clients of one process saw, summed over them (and per client for messages)."""

    def __init__(self) -> None:
        self.messages: dict[str, int] = {}
        self.bytes = 0
        self.missed: dict[str, int] = {}
        self.kinds: dict[str, str] = {}       # channel -> records / frame / events
        self.per_client: list[int] = []
        self.errors: dict[str, int] = {}
        self.examples: list[str] = []
        self.commands_ok = 0
        self.other_events: dict[str, int] = {}

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.examples) < ERROR_EXAMPLES:
            self.examples.append(f"{kind}: {text}"[:300])

    def report(self, connected: int) -> dict[str, Any]:
        return {"messages": self.messages, "bytes": self.bytes, "missed": self.missed, "kinds": self.kinds,
                "per_client": self.per_client,
                "errors": self.errors, "examples": self.examples, "commands_ok": self.commands_ok,
                "other_events": self.other_events, "connected": connected}


class SequenceError(ValueError):
    """A message's sequence numbers disagree with its ``missed`` and the previous message."""


def check_message(msg: dict[str, Any], last_seq: dict[str, int]) -> tuple[str, int]:
    """Decode one ``data`` or ``event`` message and check its sequence numbers against the
    previous message on its channel (``last_seq``, updated). Returns (channel, bytes of
    binary data); raises SequenceError for numbers that do not follow on, another exception
    for a message that is not what docs/protocol.md says."""
    import numpy as np

    ch, kind, seq, missed = msg["channel"], msg["kind"], msg["seq"], msg["missed"]
    if not (isinstance(missed, int) and missed >= 0 and len(seq) == 2 and seq[0] <= seq[1]):
        raise ValueError(f"{ch}: bad seq {seq} / missed {missed}")
    nbytes = 0
    if kind == "records":
        data = msg["data"]
        nbytes = len(data)
        for f in msg["fields"]:
            dtype = np.dtype("<" + f["dtype"])
            if f["offset"] % 8 or f["offset"] + f["nbytes"] > len(data):
                raise ValueError(f"{ch}: field {f['name']} at {f['offset']}+{f['nbytes']} of {len(data)} bytes")
            col = np.frombuffer(data, dtype, count=f["nbytes"] // dtype.itemsize, offset=f["offset"])
            col.reshape(msg["count"], *f["shape"])
        expected = seq[1] - seq[0] + 1
        if msg["count"] > expected or (not msg["decimated"] and msg["count"] != expected):
            raise ValueError(f"{ch}: {msg['count']} rows for seq {seq} (decimated {msg['decimated']})")
        # the next message's seq[0] = the previous last + 1 + its own missed (§4.3)
        prev = last_seq.get(ch)
        if prev is not None and seq[0] != prev + 1 + missed:
            raise SequenceError(f"{ch}: seq {seq} missed {missed} after last {prev}")
    elif kind == "frame":
        data = msg["data"]
        nbytes = len(data)
        np.frombuffer(data, "<" + msg["dtype"]).reshape(msg["shape"])
        # missed = frames published since the last one sent to this client (§4.4)
        if seq[0] != seq[1]:
            raise ValueError(f"{ch}: a frame with seq {seq}")
        prev = last_seq.get(ch)
        if prev is not None and seq[0] - prev - 1 != missed:
            raise SequenceError(f"{ch}: frame seq {seq} missed {missed} after frame {prev}")
    elif kind == "events":
        events = msg["events"]
        if not events or [e["seq"] for e in events] != sorted(e["seq"] for e in events) \
                or events[0]["seq"] != seq[0] or events[-1]["seq"] != seq[1]:
            raise ValueError(f"{ch}: events {[e.get('seq') for e in events]} for seq {seq}")
        prev = last_seq.get(ch)
        if prev is not None and seq[0] != prev + 1 + missed:
            raise SequenceError(f"{ch}: events seq {seq} missed {missed} after last {prev}")
    else:
        raise ValueError(f"{ch}: unknown kind {kind!r}")
    last_seq[ch] = seq[1]
    return ch, nbytes


def role_clients(args: dict[str, Any]) -> None:
    import asyncio

    # a Ctrl-C in the terminal reaches us too: the parent handles it and tells us to quit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = Replies()
    watchdog(args["timeout"], label="bench.soak clients")
    asyncio.run(_clients_main(args, replies))


async def _clients_main(args: dict[str, Any], replies: Replies) -> None:
    import asyncio
    import logging

    import socketio

    tally = Tally()

    class Counting(logging.Handler):
        """socketio/engineio client log records at WARNING and above are errors of the run."""

        def emit(self, record: logging.LogRecord) -> None:
            if not closing:
                tally.error("client_log", record.getMessage())

    logger = logging.getLogger("bench.soak.clients")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(Counting())
    closing = False
    clients: list[Any] = []

    def counter(event: str) -> Any:
        async def on_event(msg: Any = None) -> None:
            tally.other_events[event] = tally.other_events.get(event, 0) + 1
        return on_event

    async def run_client(k: int) -> tuple[Any, list[str]]:
        sio = socketio.AsyncClient(reconnection=False, logger=logger, engineio_logger=logger, handle_sigint=False,
                                   websocket_extra_options={"max_msg_size": 0})
        hello: dict[str, Any] = {}
        got_hello = asyncio.Event()
        last_seq: dict[str, int] = {}

        @sio.on("hello")
        async def on_hello(msg: dict[str, Any]) -> None:
            hello.update(msg)
            got_hello.set()

        async def on_message(msg: Any) -> None:
            try:
                ch, nbytes = check_message(msg, last_seq)
            except Exception as exc:
                tally.error("sequence" if isinstance(exc, SequenceError) else "decode", f"client {k}: {exc!r}")
                ch, nbytes = (msg.get("channel", "?") if isinstance(msg, dict) else "?"), 0
            tally.messages[ch] = tally.messages.get(ch, 0) + 1
            if isinstance(msg, dict) and ch not in tally.kinds:
                tally.kinds[ch] = str(msg.get("kind"))
            tally.missed[ch] = tally.missed.get(ch, 0) + (msg.get("missed", 0) if isinstance(msg, dict) else 0)
            tally.bytes += nbytes
            tally.per_client[k] += 1
            if isinstance(msg, dict) and isinstance(msg.get("seq"), list):
                await sio.emit("consumed", {"channel": ch, "seq": msg["seq"][1]})

        sio.on("data", on_message)
        sio.on("event", on_message)
        for event in ("state", "device", "channels", "views"):
            sio.on(event, counter(event))

        @sio.on("disconnect")
        async def on_disconnect(reason: Any = None) -> None:
            if not closing:
                tally.error("disconnect", f"client {k}: {reason}")

        @sio.on("connect_error")
        async def on_connect_error(data: Any = None) -> None:
            tally.error("connect_error", f"client {k}: {data}")

        await sio.connect(f"http://127.0.0.1:{args['port']}", transports=["websocket"],
                          auth={"token": args["token"]}, wait_timeout=20)
        await asyncio.wait_for(got_hello.wait(), 20)
        channels = [c["name"] for c in hello.get("channels", [])]
        if not channels:
            raise RuntimeError(f"client {k}: the bridge lists no channels: {hello}")
        ack = await sio.call("subscribe", {"channels": channels, "rate": args["rate"], "in_flight": IN_FLIGHT},
                             timeout=20)
        if not ack.get("ok"):
            tally.error("subscribe", f"client {k}: {ack}")
        return sio, channels

    async def commands(k: int, sio: Any) -> None:
        every = args["command_every"]
        await asyncio.sleep(every * (k + 1) / len(clients))   # spread over the period
        while not closing:
            try:
                ack = await sio.call("command", {"name": COMMAND}, timeout=15)
                if ack.get("ok"):
                    tally.commands_ok += 1
                else:
                    tally.error("command", f"client {k}: {ack}")
            except Exception as exc:
                if not closing:
                    tally.error("command", f"client {k}: {exc!r}")
            await asyncio.sleep(every)

    loop = asyncio.get_running_loop()

    def on_task_error(loop: Any, context: dict[str, Any]) -> None:
        """An exception in a task nobody awaits, e.g. python-socketio failing to decode a packet."""
        if not closing:
            tally.error("client_task", f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(on_task_error)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: list[asyncio.Task] = []
    replies.send(ok=True, ready=True, pid=os.getpid())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                break
            try:
                if op == "connect":
                    tally.per_client = [0] * args["n"]
                    connected = await asyncio.gather(*(run_client(k) for k in range(args["n"])))
                    clients.extend(sio for sio, _ in connected)
                    if args["command_every"] > 0:
                        tasks.extend(asyncio.create_task(commands(k, c)) for k, c in enumerate(clients))
                    replies.send(ok=True, channels=connected[0][1] if connected else [])
                elif op == "report":
                    replies.send(ok=True, **tally.report(sum(1 for c in clients if c.connected)))
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception:
                import traceback

                replies.send(ok=False, error=traceback.format_exc())
    finally:
        # what fails from here on (messages still queued for a client being disconnected) is not counted
        closing = True
        for t in tasks:
            t.cancel()

        async def leave(c: Any) -> None:
            try:
                await asyncio.wait_for(c.disconnect(), 3)
            except (Exception, asyncio.CancelledError):  # e.g. engine.io's read loop cancelled under it
                pass

        await asyncio.gather(*(leave(c) for c in clients))


# ======================================================================================
# the run
# ======================================================================================

class Soak:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.duration_s = opts.minutes * 60.0
        self.warm_s = warmup_s(self.duration_s, opts.quick)
        self.name = f"soak-{os.getpid()}"
        self.token = secrets.token_urlsafe(16)
        self.port = 0
        self.device = DeviceProcess([sys.executable, str(DEVICE_SCRIPT)], self.name, START_TIMEOUT,
                                    on_line=self._device_line)
        self.clients: Child | None = None
        self.browser: Any = None
        self.page: Any = None
        self.samples: list[dict[str, Any]] = []
        self.errors: dict[str, int] = {}
        self.examples: list[str] = []
        self.warnings: dict[str, int] = {}
        self.warning_examples: list[str] = []
        self.problems: list[str] = []
        self.tab_switches = 0
        self.tabs_seen: set[str] = set()
        self.client_report: dict[str, Any] = {}
        self.page_status: dict[str, Any] = {}
        self.counting_log = True
        self.stopped_by: str | None = None
        self.cpu0: dict[str, float] = {}
        self.cpu1: dict[str, float] = {}

    # -- bookkeeping ---------------------------------------------------------------------

    def error(self, kind: str, text: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n
        if len(self.examples) < ERROR_EXAMPLES:
            self.examples.append(f"{kind}: {text}"[:300])

    def warning(self, kind: str, text: str) -> None:
        self.warnings[kind] = self.warnings.get(kind, 0) + 1
        if len(self.warning_examples) < ERROR_EXAMPLES:
            self.warning_examples.append(f"{kind}: {text}"[:300])

    def _device_line(self, line: str) -> None:
        """Every line of the device's and the bridge's output (a thread)."""
        m = BRIDGE_LOG_RE.search(line)
        if not self.counting_log:
            if "Traceback" in line or (m and m.group(1) != "WARNING"):
                self.problems.append(f"after the run: {line[:300]}")
            return
        if "Traceback" in line or (m and m.group(1) != "WARNING"):
            self.error("bridge_log", line)
        elif m:
            self.warning("bridge_log", line)

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        from bench.cdp import Browser

        mon = f"port=0,name={self.name},specs={SPECS},token={self.token}"
        log(f"device {self.name!r}: examples/robot_arm.py with specs {SPECS.relative_to(REPO)}")
        url = self.device.start(mon)
        if self.device.bridge_pid is None:
            raise RuntimeError("the device started no bridge process (`bridge serve`) that could be found")
        self.port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        log(f"dashboard at 127.0.0.1:{self.port}; device pid {self.device.proc.pid}, "
            f"bridge pid {self.device.bridge_pid}")
        opts = self.opts
        if opts.clients:
            env = {k: v for k, v in os.environ.items() if k != "MON"}
            args = {"port": self.port, "token": self.token, "n": opts.clients, "rate": opts.client_rate,
                    "command_every": opts.command_every, "timeout": self.duration_s + 300}
            self.clients = Child("clients", [sys.executable, "-m", "bench.soak", "--role", "clients", json.dumps(args)],
                                 env, log=log, call_timeout=START_TIMEOUT)
            self.clients.recv(START_TIMEOUT)
            channels = self.clients.call(START_TIMEOUT, op="connect")["channels"]
            log(f"{opts.clients} python-socketio clients subscribed to {', '.join(channels)} "
                f"at {opts.client_rate:g} Hz")
        # in a session of its own, as the device: a Ctrl-C in the terminal is ours to handle, in order
        self.browser = Browser(CHROMIUM, CHROMIUM_ARGS, START_TIMEOUT, new_session=True)
        self.page = self.browser.new_page(*VIEWPORT)
        self.page.add_init_script(PAGE_JS.read_text())
        self.page.goto(url, timeout=START_TIMEOUT)
        for domain in ("Performance.enable", "HeapProfiler.enable"):
            self.page.cdp.send(domain)
        try:
            self.page.wait_for_function("() => window.__soak.ready()", timeout=START_TIMEOUT, polling=0.2)
        except Exception as exc:
            raise RuntimeError(f"the dashboard page did not go live: {exc}; errors {self.page.errors[-3:]}, "
                               f"console {self.page.console[-5:]}") from None
        status = self.page.evaluate("() => window.__soak.status()")
        log(f"chromium {self.browser.version}: dashboard live with {status['tabs']} tabs "
            f"({', '.join(status['views'])} + status); showing each once")
        # every view drawn once before the run: what a tab allocates when first shown is not growth
        dwell = min(PRIME_DWELL_S, self.opts.tab_every)
        for _ in range(status["tabs"]):
            self.page.evaluate("() => window.__soak.next()")
            time.sleep(dwell)

    # -- sampling ------------------------------------------------------------------------

    def sample(self, t: float) -> dict[str, Any]:
        s: dict[str, Any] = {"t": t}
        for role, pid in (("bridge", self.device.bridge_pid), ("device", self.device.proc.pid)):
            try:
                s[f"{role}_rss_mb"] = rss_mb(pid)
                s[f"{role}_fds"] = fd_count(pid)
            except (OSError, RuntimeError):   # gone, or a zombie (no VmRSS)
                raise ProcessGone(f"the {role} (pid {pid}) is gone") from None
        s["shm_segments"] = len(leftover_segments(f"monbridge.{self.name}."))
        s["js_heap_mb"] = None
        try:
            self.page.collect_garbage()
            s["js_heap_mb"] = self.page.js_heap_mb()
            self.page_status = self.page.evaluate("() => window.__soak.status()")
        except Exception as exc:
            raise ProcessGone(f"the page does not answer: {exc}") from None
        s["view_rows"] = {vid: v.get("rows") for vid, v in self.page_status.get("views", {}).items()}
        if self.page_status.get("connection") != "live":
            self.error("page_not_live",
                       f"at {t:.0f} s the page's connection was {self.page_status.get('connection')!r}")
        if self.clients is not None:
            try:
                self.client_report = self.clients.call(30.0, op="report")
            except Exception as exc:
                raise ProcessGone(f"the clients process does not answer: {exc}") from None
            s["client_messages"] = sum(self.client_report["messages"].values())
            s["clients_connected"] = self.client_report["connected"]
            before = self.samples[-1].get("client_messages") if self.samples else None
            if before is not None and s["client_messages"] <= before:
                self.error("clients_stalled", f"no message reached any client between {self.samples[-1]['t']:.0f} s"
                                              f" and {t:.0f} s")
        return s

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the bridge, the device, the clients process and chromium (all
        its processes alive now), and the monotonic time."""
        table = process_table()
        roles = {"bridge": [self.device.bridge_pid], "device": [self.device.proc.pid]}
        if self.clients is not None:
            roles["clients"] = [self.clients.pid]
        if self.browser is not None:
            roles["chromium"] = [self.browser.proc.pid, *descendants(self.browser.proc.pid, table)]
        out = {role: sum(table[p][1] for p in pids if p in table) for role, pids in roles.items()}
        out["wall"] = time.monotonic()
        return out

    def progress(self, s: dict[str, Any]) -> None:
        errors = (sum(self.errors.values()) + sum(self.client_report.get("errors", {}).values())
                  + len(self.page.errors) + sum(c.startswith("error:") for c in self.page.console))
        phase = "warm-up" if s["t"] < self.warm_s else "measure"
        log(f"{s['t'] / 60:5.1f} min {phase}: bridge {s['bridge_rss_mb']:.1f} MB {s['bridge_fds']} fds, "
            f"device {s['device_rss_mb']:.1f} MB {s['device_fds']} fds, {s['shm_segments']} segments, "
            f"JS heap {s['js_heap_mb']:.2f} MB, tab {self.page_status.get('active')!r}, "
            f"client messages {s.get('client_messages', 0)}, errors {errors}")

    def run(self) -> None:
        opts = self.opts
        log(f"sampling every {opts.sample_every:g} s for {opts.minutes:g} min (warm-up {self.warm_s:g} s); "
            f"next tab every {opts.tab_every:g} s")
        t0 = time.monotonic()
        next_sample, next_tab = 0.0, opts.tab_every
        while True:
            now = time.monotonic() - t0
            if now >= next_sample:
                s = self.sample(round(now, 3))
                self.samples.append(s)
                self.progress(s)
                if len(self.samples) == 1:
                    self.cpu0 = self.cpu_seconds()
                self.cpu1 = self.cpu_seconds()
                if next_sample >= self.duration_s:
                    break
                next_sample = min(next_sample + opts.sample_every, self.duration_s)
            elif now >= next_tab:
                tab = self.page.evaluate("() => window.__soak.next()")
                if tab is not None:
                    self.tab_switches += 1
                    self.tabs_seen.add(tab)
                next_tab += opts.tab_every
            time.sleep(max(0.0, min(next_sample, next_tab) - (time.monotonic() - t0)))

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        self.counting_log = False
        if self.clients is not None:
            try:
                self.clients.stop(grace=10.0)
            except Exception as exc:
                self.problems.append(f"stopping the clients: {exc!r}")
        if self.browser is not None:
            try:
                self.browser.close()
            except Exception as exc:
                self.problems.append(f"closing chromium: {exc!r}")
            pgid = self.browser.proc.pid   # its session: chromium's processes not yet gone with it
            deadline = time.monotonic() + 5
            while any(alive(p) for p in group_members(pgid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = [p for p in group_members(pgid) if alive(p)]
            if left:
                self.problems.append(f"chromium processes still running after it closed (killed): {left}")
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.problems.extend(self.device.stop())
        removed = remove_segments(f"monbridge.{self.name}.")
        if removed:
            self.problems.append(f"removed {len(removed)} segment(s) the device left: {removed}")
        left = [pid for pid in descendants(os.getpid(), process_table()) if alive(pid)]
        for pid in left:
            self.problems.append(f"still running after the run (killed): {pid} {' '.join(cmdline(pid))[:80]}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def result(self) -> dict[str, Any]:
        out = figures(self.samples, self.warm_s)
        rep = self.client_report
        for kind, n in rep.get("errors", {}).items():
            self.errors[f"client_{kind}"] = self.errors.get(f"client_{kind}", 0) + n
        self.examples.extend(rep.get("examples", [])[: max(0, ERROR_EXAMPLES - len(self.examples))])
        if self.page is not None:
            if self.page.errors:
                self.error("page_exception", self.page.errors[0], len(self.page.errors))
            console_errors = [c for c in self.page.console if c.startswith("error:")]
            if console_errors:
                self.error("page_console_error", console_errors[0], len(console_errors))
            for c in self.page.console:
                if c.startswith("warning:"):
                    self.warning("page_console", c)
        for vid, v in self.page_status.get("views", {}).items():
            if v.get("error"):
                self.error("view_error", f"{vid}: {v['error']}")
        if self.clients is not None and rep and rep.get("connected") != self.opts.clients:
            self.error("clients_not_connected", f"{rep.get('connected')} of {self.opts.clients} connected at the end")
        out["errors"] = sum(self.errors.values())
        out["error_counts"] = dict(sorted(self.errors.items()))
        out["error_examples"] = self.examples
        out["warnings"] = dict(sorted(self.warnings.items()))
        out["warning_examples"] = self.warning_examples
        span = self.samples[-1]["t"] if self.samples else math.nan
        if rep:
            out["client_messages_by_channel"] = dict(sorted(rep["messages"].items()))
            out["client_messages_per_s"] = sum(rep["messages"].values()) / span if span else math.nan
            out["client_mb_per_s"] = rep["bytes"] / 2**20 / span if span else math.nan
            out["client_messages_min_per_client"] = min(rep["per_client"]) if rep["per_client"] else 0
            out["missed_by_channel"] = dict(sorted(rep["missed"].items()))
            # records and events the clients will never get (frames' missed is downsampling)
            out["records_missed"] = sum(n for ch, n in rep["missed"].items()
                                        if rep["kinds"].get(ch) in ("records", "events"))
            out["commands_ok"] = rep["commands_ok"]
        span_cpu = self.cpu1.get("wall", 0.0) - self.cpu0.get("wall", 0.0)
        if span_cpu > 0:   # % of one core over the samples (chromium: its processes alive at both ends)
            out["cpu_pct"] = {role: max(0.0, 100 * (self.cpu1[role] - self.cpu0[role]) / span_cpu)
                              for role in self.cpu0 if role != "wall" and role in self.cpu1}
        out["tab_switches"] = self.tab_switches
        out["tabs_shown"] = sorted(self.tabs_seen)
        out["page_views_at_end"] = self.page_status.get("views", {})
        return out


class ProcessGone(RuntimeError):
    """A process of the run died or stopped answering: the run ends early."""


def run(opts: argparse.Namespace) -> tuple[dict[str, Any], int]:
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"bench.soak: {CHROMIUM} not found: install Debian's chromium package")
    if not (STATIC / "app.js").exists():
        raise SystemExit("bench.soak: the web UI is not built (webui/static/app.js missing): run `make js`")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    soak = Soak(opts)
    code = 0
    chromium = None
    try:
        try:
            soak.start()
            chromium = soak.browser.version
            soak.run()
        except ProcessGone as exc:
            soak.error("process_gone", str(exc))
            log(f"ending early: {exc}")
            code = 1
        except KeyboardInterrupt:
            soak.stopped_by, code = "SIGINT", 128 + signal.SIGINT
        except SystemExit as exc:
            if not isinstance(exc.code, int) or exc.code < 128:
                raise
            soak.stopped_by, code = signal.Signals(exc.code - 128).name, exc.code
        if soak.stopped_by:
            log(f"stopped by {soak.stopped_by} after {len(soak.samples)} samples; cleaning up")
    finally:
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            soak.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for p in soak.problems:
            log(p)
    result: dict[str, Any] = {
        "bench": "soak",
        "quick": opts.quick,
        "minutes": opts.minutes,
        "git": git_revision("bridge", "device_agent", "webui/src", "examples/robot_arm.py", "specs"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "chromium": chromium,
        "device": soak.name,
        "clients": opts.clients,
        "client_rate_hz": opts.client_rate,
        "command_every_s": opts.command_every,
        "sample_every_s": opts.sample_every,
        "tab_every_s": opts.tab_every,
        "warmup_s": soak.warm_s,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "stopped_by": soak.stopped_by,
    }
    result.update(soak.result())
    result["duration_s"] = soak.samples[-1]["t"] if soak.samples else 0.0
    result["series"] = {key: [s.get(key) for s in soak.samples] for key in ("t",) + SERIES}
    views = sorted({vid for s in soak.samples for vid in s.get("view_rows", {})})
    result["series"]["view_rows"] = {vid: [s.get("view_rows", {}).get(vid) for s in soak.samples] for vid in views}
    result["targets"] = TARGETS
    result["pass"] = judge(result, TARGETS, missing_fails=True)
    result["problems"] = soak.problems
    result["leftover_segments"] = leftover_segments(f"monbridge.{soak.name}.")
    result["elapsed_s"] = time.perf_counter() - started
    return result, code


def number_arg(kind: type, minimum: float = 0.0, inclusive: bool = False) -> Any:
    """An argparse ``type``: a finite ``kind`` (int or float) above ``minimum`` (or equal to it,
    ``inclusive``); anything else is an error that says what was wrong (exit status 2)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < minimum if inclusive else value <= minimum:
            raise argparse.ArgumentTypeError(
                f"must be {'at least' if inclusive else 'more than'} {minimum:g}, got {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--role", "clients"]:
        role_clients(json.loads(argv[2]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=number_arg(float), default=None,
                        help=f"how long to sample (default {DEFAULT_MINUTES:g}; a fraction is fine)")
    length.add_argument("--quick", action="store_true", help=f"{QUICK_MINUTES:g} minutes, the first one warm-up")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ap.add_argument("--sample-every", type=number_arg(float), default=10.0, metavar="S",
                    help="seconds between samples (default 10)")
    ap.add_argument("--tab-every", type=number_arg(float), default=12.0, metavar="S",
                    help="seconds between tab switches in the page (default 12)")
    ap.add_argument("--clients", type=number_arg(int, 0, inclusive=True), default=10, metavar="N",
                    help="python-socketio clients (default 10)")
    ap.add_argument("--client-rate", type=number_arg(float, 0.1, inclusive=True), default=10.0, metavar="HZ",
                    help="the clients' subscription rate (default 10; the bridge caps it at 60)")
    ap.add_argument("--command-every", type=number_arg(float, 0, inclusive=True), default=5.0, metavar="S",
                    help=f"seconds between {COMMAND} commands of each client (default 5; 0: none)")
    opts = ap.parse_args(argv)
    if opts.minutes is None:
        opts.minutes = QUICK_MINUTES if opts.quick else DEFAULT_MINUTES
    if opts.minutes * 60 < 2 * opts.sample_every:
        ap.error(f"--minutes {opts.minutes:g} is shorter than two samples of --sample-every {opts.sample_every:g} s")

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)   # unwind like Ctrl-C: clients, chromium, device, segments
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started with SIGINT ignored (a background job)
    result, code = run(opts)
    result = round_figures(result)
    if opts.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key not in ("targets", "series"):
                print(f"{key:32} {value}")
    log(f"done in {result['elapsed_s']} s: " + ("pass" if all(result["pass"].values()) else
                                               "FAIL: " + ", ".join(k for k, v in result["pass"].items() if not v)))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
