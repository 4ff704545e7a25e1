"""Soak benchmark: the demo device, ten Python clients and a dashboard tab for a long while,
and whether anything grows that should stay flat.

    python -m bench.soak [--minutes N | --quick] [--json] [--sample-every S] [--tab-every S]
                         [--clients N] [--client-rate HZ] [--command-every S]

Every ``--sample-every`` s (default 10) it samples the bridge's and the device's RSS and
descriptors, the device's /dev/shm segments, the page's JS heap after a forced GC and the
clients' counts, for N minutes (default 60; ``--quick``: 3, the first one warm-up) after
everything has started; the clients check every message's sequence numbers, the page
(bench/soak_page.js) clicks through the tabs. Figures: slopes per 10 minutes after the
warm-up, growths, and every error seen. Ctrl-C or SIGTERM stops it early, still printing
the figures (exit status 128 + the signal). Details: docs/performance.md, "Soak".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import math
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import wire
from bench.cdp import Browser
from bench.common import CHROMIUM, CHROMIUM_ARGS, Clock, arguments, exit_on_sigterm, finish, git_revision, growth_pct, \
    logger, report, require_browser, round_figures
from bench.procs import REPO, Child, DeviceProcess, Replies, descendants, end_group, fd_count, kill_descendants, \
    leftover_segments, process_table, remove_segments, rss_mb, run_role, serve, watchdog

DEVICE_SCRIPT = REPO / "examples" / "robot_arm.py"
SPECS = REPO / "specs"                       # the demo's dashboard (make demo runs it from REPO)
PAGE_JS = Path(__file__).resolve().parent / "soak_page.js"
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
    "bridge_rss_mb_per_10min": {"max": 1.0}, "device_rss_mb_per_10min": {"max": 1.0},
    "js_heap_growth_pct": {"max": 10.0}, "bridge_fds_growth": {"max": 0}, "device_fds_growth": {"max": 0},
    "shm_segments_growth": {"max": 0}, "errors": {"max": 0},
}
SERIES = ("bridge_rss_mb", "device_rss_mb", "js_heap_mb", "page_native_heap_mb", "bridge_fds", "device_fds",
          "shm_segments")


log = logger("bench.soak")


# -- the figures (pure) ------------------------------------------------------------------

def warmup_s(duration_s: float, quick: bool) -> float:
    """Seconds of warm-up: the first minute for --quick, else 20 % of the run or 2 minutes, the lesser."""
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
    """JS heap growth in %: bench.browser's start-to-end growth, each end the lowest sample of its window."""
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
    # no target: blink's own heap (DOM, canvas text caches), which the JS heap leaves out
    out["page_native_heap_growth_pct"] = heap_growth_pct([s["page_native_heap_mb"] for s in post
                                                          if s.get("page_native_heap_mb") is not None])
    return out



# -- the clients: python -m bench.soak --role clients JSON-ARGS --------------------------

class Counts:
    """Occurrences by kind, with the first few examples."""

    def __init__(self) -> None:
        self.by_kind: dict[str, int] = {}
        self.examples: list[str] = []

    def add(self, kind: str, text: str, n: int = 1) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        if len(self.examples) < ERROR_EXAMPLES:
            self.examples.append(f"{kind}: {text}"[:300])


class Tally:
    """What the clients of one process saw, summed over them (and per client for messages)."""

    def __init__(self) -> None:
        self.messages: collections.Counter[str] = collections.Counter()
        self.missed: collections.Counter[str] = collections.Counter()
        self.other_events: collections.Counter[str] = collections.Counter()
        self.kinds: dict[str, str] = {}       # channel -> records / frame / events
        self.per_client: list[int] = []
        self.errors = Counts()
        self.bytes = self.commands_ok = 0

    def report(self, connected: int) -> dict[str, Any]:
        return {"messages": self.messages, "bytes": self.bytes, "missed": self.missed, "kinds": self.kinds,
                "per_client": self.per_client, "errors": self.errors.by_kind, "examples": self.errors.examples,
                "commands_ok": self.commands_ok, "other_events": self.other_events, "connected": connected}


class SequenceError(ValueError):
    """A message's sequence numbers disagree with its ``missed`` and the previous message."""


def check_message(msg: dict[str, Any], last_seq: dict[str, int]) -> tuple[str, int]:
    """Decode one ``data`` or ``event`` message and check its sequence numbers against the
    previous message on its channel (``last_seq``, updated). Returns (channel, bytes of
    binary data); raises SequenceError for numbers that do not follow on, another exception
    for a message that is not what docs/protocol.md says."""
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
    """``n`` python-socketio clients, each subscribed to every channel with flow control,
    checking every message and calling a command every ``command_every`` s."""
    # a Ctrl-C in the terminal reaches us too: the parent handles it and tells us to quit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = Replies()
    watchdog(args["timeout"], label="bench.soak clients")
    asyncio.run(clients_main(args, replies))


async def clients_main(args: dict[str, Any], replies: Replies) -> None:
    tally = Tally()
    closing = False
    clients: list[Any] = []
    sync_clients: list[Any] = []   # threaded socketio.Client (--sync-clients)
    tasks: list[asyncio.Task] = []

    class Counting(logging.Handler):
        """socketio/engineio client log records at WARNING and above are errors of the run."""

        def emit(self, record: logging.LogRecord) -> None:
            if not closing:
                tally.errors.add("client_log", record.getMessage())

    logger = logging.getLogger("bench.soak.clients")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(Counting())

    async def run_client(k: int) -> tuple[Any, list[str]]:
        sio = wire.async_client(logger=logger, engineio_logger=logger, handle_sigint=False,
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
                tally.errors.add("sequence" if isinstance(exc, SequenceError) else "decode", f"client {k}: {exc!r}")
                ch, nbytes = (msg.get("channel", "?") if isinstance(msg, dict) else "?"), 0
            tally.messages[ch] += 1
            if isinstance(msg, dict):
                tally.kinds.setdefault(ch, str(msg.get("kind")))
                tally.missed[ch] += msg.get("missed", 0)
            tally.bytes += nbytes
            tally.per_client[k] += 1
            if isinstance(msg, dict) and isinstance(msg.get("seq"), list):
                await sio.emit("consumed", {"channel": ch, "seq": msg["seq"][1]})

        async def on_bundle(msgs: Any) -> None:   # several records messages in one (protocol.md §4.9)
            tally.other_events.update(["bundle"])
            if not isinstance(msgs, list):
                tally.errors.add("decode", f"client {k}: a bundle that is not a list: {type(msgs).__name__}")
                return
            for msg in msgs:
                await on_message(msg)

        sio.on("data", on_message)
        sio.on("event", on_message)
        sio.on("bundle", on_bundle)
        for event in ("state", "device", "channels", "views"):
            sio.on(event, lambda *_, event=event: tally.other_events.update([event]))

        @sio.on("disconnect")
        async def on_disconnect(reason: Any = None) -> None:
            if not closing:
                tally.errors.add("disconnect", f"client {k}: {reason}")

        @sio.on("connect_error")
        async def on_connect_error(data: Any = None) -> None:
            tally.errors.add("connect_error", f"client {k}: {data}")

        await wire.connect(sio, args["port"], args["token"], timeout=20, bundle=True)   # the sync clients do not
        await asyncio.wait_for(got_hello.wait(), 20)
        channels = [c["name"] for c in hello.get("channels", [])]
        if not channels:
            raise RuntimeError(f"client {k}: the bridge lists no channels: {hello}")
        ack = await sio.call("subscribe", {"channels": channels, "rate": args["rate"], "in_flight": IN_FLIGHT},
                             timeout=20)
        if not ack.get("ok"):
            tally.errors.add("subscribe", f"client {k}: {ack}")
        return sio, channels

    async def commands(k: int, sio: Any) -> None:
        every = args["command_every"]
        await asyncio.sleep(every * (k + 1) / len(clients))   # spread over the period
        while not closing:
            try:
                answer = await wire.command(sio, COMMAND, timeout=15)
                if answer.get("ok"):
                    tally.commands_ok += 1
                else:
                    tally.errors.add("command", f"client {k}: {answer}")
            except Exception as exc:
                if not closing:
                    tally.errors.add("command", f"client {k}: {exc!r}")
            await asyncio.sleep(every)

    def run_sync_client(k: int) -> Any:
        """A threaded ``socketio.Client``: each message is checked on its own (its handlers
        run in a thread per message, so their order says nothing about the bridge's)."""
        import socketio

        sio = socketio.Client(reconnection=False, serializer="msgpack", logger=logger, engineio_logger=logger)

        def on_message(msg: Any) -> None:
            try:
                ch, nbytes = check_message(msg, {})
            except Exception as exc:
                tally.errors.add("decode", f"sync client {k}: {exc!r}")
                ch, nbytes = (msg.get("channel", "?") if isinstance(msg, dict) else "?"), 0
            tally.messages[ch] += 1
            tally.bytes += nbytes
            tally.per_client[k] += 1
            if isinstance(msg, dict) and isinstance(msg.get("seq"), list) and not closing:
                sio.emit("consumed", {"channel": ch, "seq": msg["seq"][1]})

        sio.on("data", on_message)
        sio.on("event", on_message)
        sio.on("disconnect", lambda *_: closing or tally.errors.add("disconnect", f"sync client {k}"))
        sio.connect(f"http://127.0.0.1:{args['port']}", auth={"token": args["token"]}, transports=["websocket"],
                    wait_timeout=20)
        ack = sio.call("subscribe", {"channels": args["channel_names"], "rate": args["rate"], "in_flight": IN_FLIGHT},
                       timeout=20)
        if not ack.get("ok"):
            tally.errors.add("subscribe", f"sync client {k}: {ack}")
        return sio

    async def op_connect(req: dict[str, Any]) -> dict[str, Any]:
        tally.per_client = [0] * (args["n"] + args.get("sync", 0))
        connected = await asyncio.gather(*(run_client(k) for k in range(args["n"])))
        clients.extend(sio for sio, _ in connected)
        if args.get("sync"):
            args["channel_names"] = connected[0][1]
            loop = asyncio.get_running_loop()
            sync_clients.extend(await asyncio.gather(*(loop.run_in_executor(None, run_sync_client, args["n"] + k)
                                                       for k in range(args["sync"]))))
        if args["command_every"] > 0:
            tasks.extend(asyncio.create_task(commands(k, c)) for k, c in enumerate(clients))
        return {"channels": connected[0][1] if connected else []}

    async def op_report(req: dict[str, Any]) -> dict[str, Any]:
        return tally.report(sum(1 for c in clients + sync_clients if c.connected))

    def on_task_error(loop: Any, context: dict[str, Any]) -> None:
        """An exception in a task nobody awaits, e.g. python-socketio failing to decode a packet."""
        if not closing:
            tally.errors.add("client_task", f"{context.get('message')}: {context.get('exception')!r}")

    asyncio.get_running_loop().set_exception_handler(on_task_error)
    replies.send(ok=True, ready=True, pid=os.getpid())
    try:
        await serve(replies, {"connect": op_connect, "report": op_report})
    finally:
        # what fails from here on (messages still queued for a client being disconnected) is not counted
        closing = True
        for t in tasks:
            t.cancel()

        async def leave(c: Any) -> None:
            # Exception, or CancelledError: e.g. engine.io's read loop cancelled under it
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(c.disconnect(), 3)

        await asyncio.gather(*(leave(c) for c in clients))
        for c in sync_clients:
            with contextlib.suppress(Exception):
                c.disconnect()


# -- the run -----------------------------------------------------------------------------

class ProcessGone(RuntimeError):
    """A process of the run died or stopped answering: the run ends early."""


class Soak:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.duration_s = opts.minutes * 60.0
        self.warm_s = warmup_s(self.duration_s, opts.quick)
        self.name = f"soak-{os.getpid()}"
        self.token = secrets.token_urlsafe(16)
        self.device = DeviceProcess([sys.executable, str(DEVICE_SCRIPT)], self.name, START_TIMEOUT,
                                    on_line=self.device_line)
        self.clients: Child | None = None
        self.browser = self.page = None   # bench.cdp.Browser and CdpPage
        self.samples: list[dict[str, Any]] = []
        self.errors = Counts()
        self.warnings = Counts()
        self.problems: list[str] = []
        self.tab_switches = 0
        self.tabs_seen: set[str] = set()
        self.client_report: dict[str, Any] = {}
        self.page_status: dict[str, Any] = {}
        self.counting_log = True
        self.stopped_by: str | None = None
        self.cpu0 = self.cpu1 = {}   # cpu_seconds() at the first and the last sample

    def device_line(self, line: str) -> None:
        """Every line of the device's and the bridge's output (a thread)."""
        m = BRIDGE_LOG_RE.search(line)
        bad = "Traceback" in line or (m and m.group(1) != "WARNING")
        if not self.counting_log:
            if bad:
                self.problems.append(f"after the run: {line[:300]}")
        elif bad:
            self.errors.add("bridge_log", line)
        elif m:
            self.warnings.add("bridge_log", line)

    def start(self) -> None:
        log(f"device {self.name!r}: examples/robot_arm.py with specs {SPECS.relative_to(REPO)}")
        url = self.device.start(f"port=0,name={self.name},specs={SPECS},token={self.token}")
        if self.device.bridge_pid is None:
            raise RuntimeError("the device started no bridge process (`bridge serve`) that could be found")
        log(f"dashboard at 127.0.0.1:{self.device.port}; bridge pid {self.device.bridge_pid}")
        opts = self.opts
        if opts.clients:
            args = {"port": self.device.port, "token": self.token, "n": opts.clients, "rate": opts.client_rate,
                    "sync": opts.sync_clients,
                    "command_every": opts.command_every, "timeout": self.duration_s + 300}
            self.clients = Child.role("bench.soak", "clients", "clients", args, log=log, call_timeout=START_TIMEOUT)
            self.clients.recv(START_TIMEOUT)
            channels = self.clients.call(START_TIMEOUT, op="connect")["channels"]
            sync = f" (and {opts.sync_clients} threaded ones)" if opts.sync_clients else ""
            log(f"{opts.clients} clients{sync} subscribed to {', '.join(channels)} at {opts.client_rate:g} Hz")
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
        log(f"chromium {self.browser.version}: {status['tabs']} tabs live; showing each once")
        # every view drawn once before the run: what a tab allocates when first shown is not growth
        for _ in range(status["tabs"]):
            self.page.evaluate("() => window.__soak.next()")
            time.sleep(min(PRIME_DWELL_S, self.opts.tab_every))

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
            s["page_native_heap_mb"] = self.page.native_heap_mb()
            self.page_status = self.page.evaluate("() => window.__soak.status()")
        except Exception as exc:
            raise ProcessGone(f"the page does not answer: {exc}") from None
        s["view_rows"] = {vid: v.get("rows") for vid, v in self.page_status.get("views", {}).items()}
        if self.page_status.get("connection") != "live":
            self.errors.add("page_not_live", f"at {t:.0f} s the page's connection was "
                                             f"{self.page_status.get('connection')!r}")
        if self.clients is not None:
            try:
                self.client_report = self.clients.call(30.0, op="report")
            except Exception as exc:
                raise ProcessGone(f"the clients process does not answer: {exc}") from None
            s["client_messages"] = sum(self.client_report["messages"].values())
            s["clients_connected"] = self.client_report["connected"]
            before = self.samples[-1].get("client_messages") if self.samples else None
            if before is not None and s["client_messages"] <= before:
                self.errors.add("clients_stalled", f"no message reached any client between "
                                                   f"{self.samples[-1]['t']:.0f} s and {t:.0f} s")
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
        errors = (sum(self.errors.by_kind.values()) + sum(self.client_report.get("errors", {}).values())
                  + len(self.page.errors) + sum(c.startswith("error:") for c in self.page.console))
        log(f"{s['t'] / 60:5.1f} min {'warm-up' if s['t'] < self.warm_s else 'measure'}: "
            f"bridge {s['bridge_rss_mb']:.1f} MB {s['bridge_fds']} fds, device {s['device_rss_mb']:.1f} MB "
            f"{s['device_fds']} fds, {s['shm_segments']} segments, JS heap {s['js_heap_mb']:.2f} MB "
            f"(native {s['page_native_heap_mb']:.1f}), "
            f"client messages {s.get('client_messages', 0)}, errors {errors}")

    def run(self) -> None:
        opts = self.opts
        log(f"sampling every {opts.sample_every:g} s for {opts.minutes:g} min (warm-up {self.warm_s:g} s)")
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
            self.problems += end_group(self.browser.proc.pid, "chromium's session")
        self.problems += self.device.stop()
        removed = remove_segments(f"monbridge.{self.name}.")
        if removed:
            self.problems.append(f"removed {len(removed)} segment(s) the device left: {removed}")
        self.problems += kill_descendants()

    def result(self) -> dict[str, Any]:
        out = figures(self.samples, self.warm_s)
        rep = self.client_report
        for kind, n in rep.get("errors", {}).items():
            self.errors.by_kind[f"client_{kind}"] = self.errors.by_kind.get(f"client_{kind}", 0) + n
        self.errors.examples.extend(rep.get("examples", [])[: max(0, ERROR_EXAMPLES - len(self.errors.examples))])
        if self.page is not None:
            if self.page.errors:
                self.errors.add("page_exception", self.page.errors[0], len(self.page.errors))
            console_errors = [c for c in self.page.console if c.startswith("error:")]
            if console_errors:
                self.errors.add("page_console_error", console_errors[0], len(console_errors))
            for c in self.page.console:
                if c.startswith("warning:"):
                    self.warnings.add("page_console", c)
        for vid, v in self.page_status.get("views", {}).items():
            if v.get("error"):
                self.errors.add("view_error", f"{vid}: {v['error']}")
        wanted = self.opts.clients + self.opts.sync_clients
        if self.clients is not None and rep and rep.get("connected") != wanted:
            self.errors.add("clients_not_connected", f"{rep.get('connected')} of {wanted} connected")
        out.update(errors=sum(self.errors.by_kind.values()), error_counts=dict(sorted(self.errors.by_kind.items())),
                   error_examples=self.errors.examples, warnings=dict(sorted(self.warnings.by_kind.items())),
                   warning_examples=self.warnings.examples)
        span = self.samples[-1]["t"] if self.samples else math.nan
        if rep:
            out.update(client_messages_by_channel=dict(sorted(rep["messages"].items())),
                       client_messages_per_s=sum(rep["messages"].values()) / span if span else math.nan,
                       client_mb_per_s=rep["bytes"] / 2**20 / span if span else math.nan,
                       client_messages_min_per_client=min(rep["per_client"]) if rep["per_client"] else 0,
                       missed_by_channel=dict(sorted(rep["missed"].items())),
                       # records and events the clients will never get (frames' missed is downsampling)
                       records_missed=sum(n for ch, n in rep["missed"].items()
                                          if rep["kinds"].get(ch) in ("records", "events")),
                       commands_ok=rep["commands_ok"],
                       client_bundles=rep["other_events"].get("bundle", 0))   # the AsyncClients' (protocol.md §4.9)
        span_cpu = self.cpu1.get("wall", 0.0) - self.cpu0.get("wall", 0.0)
        if span_cpu > 0:   # % of one core over the samples (chromium: its processes alive at both ends)
            out["cpu_pct"] = {role: max(0.0, 100 * (self.cpu1[role] - self.cpu0[role]) / span_cpu)
                              for role in self.cpu0 if role != "wall" and role in self.cpu1}
        out.update(tab_switches=self.tab_switches, tabs_shown=sorted(self.tabs_seen),
                   page_views_at_end=self.page_status.get("views", {}))
        return out


def run(opts: argparse.Namespace) -> tuple[dict[str, Any], int]:
    require_browser("bench.soak")
    clock = Clock()
    soak = Soak(opts)
    code = 0
    chromium = None
    try:
        try:
            soak.start()
            chromium = soak.browser.version
            soak.run()
        except ProcessGone as exc:
            soak.errors.add("process_gone", str(exc))
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
        "bench": "soak", "quick": opts.quick, "minutes": opts.minutes,
        "git": git_revision("bridge", "device_agent", "webui/src", "examples/robot_arm.py", "specs"),
        **clock.machine(), "chromium": chromium, "device": soak.name, "clients": opts.clients,
        "sync_clients": opts.sync_clients, "client_rate_hz": opts.client_rate, "command_every_s": opts.command_every,
        "sample_every_s": opts.sample_every, "tab_every_s": opts.tab_every, "warmup_s": soak.warm_s,
        "loadavg_1m": clock.loadavg(), "stopped_by": soak.stopped_by, **soak.result(),
        "duration_s": soak.samples[-1]["t"] if soak.samples else 0.0,
        "series": {key: [s.get(key) for s in soak.samples] for key in ("t",) + SERIES},
    }
    views = sorted({vid for s in soak.samples for vid in s.get("view_rows", {})})
    result["series"]["view_rows"] = {vid: [s.get("view_rows", {}).get(vid) for s in soak.samples] for vid in views}
    # times each chart was embedded: webui/src/vlview.js makes it anew after many rows
    result["view_embeds_end"] = {vid: v.get("embeds") for vid, v in soak.page_status.get("views", {}).items()
                                 if v.get("kind") == "vega-lite"}
    return finish(result, TARGETS, clock, f"monbridge.{soak.name}.", missing_fails=True, problems=soak.problems), code


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
    if run_role(argv, {"clients": role_clients}):
        return 0
    ap = arguments("bench.soak", __doc__, quick=None, settle=False)
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=number_arg(float), default=None,
                        help=f"how long to sample (default {DEFAULT_MINUTES:g}; a fraction is fine)")
    length.add_argument("--quick", action="store_true", help=f"{QUICK_MINUTES:g} minutes, the first one warm-up")
    ap.add_argument("--sample-every", type=number_arg(float), default=10.0, metavar="S",
                    help="seconds between samples (default 10)")
    ap.add_argument("--tab-every", type=number_arg(float), default=12.0, metavar="S",
                    help="seconds between tab switches in the page (default 12)")
    ap.add_argument("--clients", type=number_arg(int, 0, inclusive=True), default=10, metavar="N",
                    help="python-socketio clients (default 10)")
    ap.add_argument("--sync-clients", type=number_arg(int, 0, inclusive=True), default=0, metavar="N",
                    help="threaded socketio.Client clients besides --clients' AsyncClients (default 0); "
                         "they check every message's decoding, not its order (the threaded client "
                         "handles each message in a thread of its own)")
    ap.add_argument("--client-rate", type=number_arg(float, 0.1, inclusive=True), default=10.0, metavar="HZ",
                    help="the clients' subscription rate (default 10; the bridge caps it at 60)")
    ap.add_argument("--command-every", type=number_arg(float, 0, inclusive=True), default=5.0, metavar="S",
                    help=f"seconds between {COMMAND} commands of each client (default 5; 0: none)")
    opts = ap.parse_args(argv)
    if opts.minutes is None:
        opts.minutes = QUICK_MINUTES if opts.quick else DEFAULT_MINUTES
    if opts.sync_clients and not opts.clients:
        ap.error("--sync-clients needs at least one of --clients (they learn the channels)")
    if opts.minutes * 60 < 2 * opts.sample_every:
        ap.error(f"--minutes {opts.minutes:g} is shorter than two samples of --sample-every {opts.sample_every:g} s")
    exit_on_sigterm()   # unwind like Ctrl-C: clients, chromium, device, segments
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started with SIGINT ignored (a background job)
    result, code = run(opts)
    result = round_figures(result)
    report(result, opts.json, log, hide=("targets", "series"),
           done=": " + ("pass" if all(result["pass"].values()) else
                        "FAIL: " + ", ".join(k for k, v in result["pass"].items() if not v)))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
