"""Browser benchmark: the demo device's dashboard in headless Chromium, every view drawing
at once, and how late, how smoothly and how leanly the pages show the data.

    python -m bench.browser [--quick] [--json] [--layout vconcat|pages]

``--json`` prints exactly one JSON object on stdout; progress goes to stderr. ``--quick``
measures 20 s after a 10 s warm-up (about 45 s in all, under 60 s); the full run measures
60 s after a 15 s warm-up (about 1.5 min). Diagnostics (not part of the figures of record):
``--only VIEW,..``, ``--viewport WxH``, ``--cloud-rate HZ``, ``--vega-clean-threshold N``,
``--webgl-no-aa``, ``--webgl-no-preserve``, ``--no-reference``, ``--no-settle``.

What runs (all on 127.0.0.1, every process stopped in a ``finally``):

* the demo device, ``examples/robot_arm.py`` unchanged, with ``MON=port=0,specs=bench/specs/
  LAYOUT,name=bench-browser-PID,token=...``; it starts its bridge (60 Hz relay, eventlet),
  which exits with it. The script names itself (``start(name="robot_arm")``, which MON's
  ``name`` does not override), so it runs under ``python -m bench.browser --role device`` with
  that name replaced: a robot_arm run by anyone else on the machine does not collide.
  ``joints``: 1 kHz records (t + 9 f4); ``cloud``: a 20,000×6 f4 frame at 30 Hz (480 KB per
  frame, 14 MB/s).
* Debian's ``/usr/bin/chromium`` driven over the DevTools protocol by ``bench/cdp.py``
  (headless, SwiftShader GL; not Playwright, which has chromium copy every WebSocket frame
  to its driver — see that module), one window and browser context per page (each its own
  renderer process and Socket.IO client), 1280×800:
  - layout ``vconcat`` (default): page ``joints4`` shows one Vega-Lite view of four vconcat'd
    line charts (j1, j2, i1, temp1) over one ``joints`` dataset (usermeta: 10 s window, 30 Hz,
    max_points 2000, so each chart draws about 2000 points); page ``cloud`` shows the
    three.js scene with the 20,000-point cloud at 30 Hz. The dashboard draws only its visible
    tab, so two pages are the fewest that draw everything at once, and a vconcat is how one
    tab shows several charts. Each page also holds the other view hidden, as any dashboard
    does: the cloud page's hidden chart view applies its data about once a second, the chart
    page's hidden scene is unsubscribed.
  - layout ``pages``: four one-chart views (``joints-FIELD.vl.json``, each with its own 2000-row
    dataset) and the scene, one page each: five pages, each holding the four other views
    hidden (three hidden chart views per page applying data once a second).
  - a control page (an empty page counting animation frames) beside them: the frame rate the
    browser gives a page that has nothing to do, under the same load.
* the reference client: python-socketio (asyncio) in its own process, subscribed exactly as
  the pages are, only noting when each message arrives: the relay's own lag, side by side.

What is measured (after the warm-up, which fills the 10 s windows and the cloud):

* display lag: an init script wraps the page's ``window.monbridge.applied`` (webui/src/hooks.js)
  and records every ``lastApplied[CHANNEL]`` update: ``at`` (Date.now() in the animation frame
  that applied the data) − the device time ``t`` of the newest record or frame applied. From
  the same script: arrival lag (device time → the page's socket handler, ``socket.onAny``),
  the page's share (arrival → applied, matched by ``t``), the time Vega's ``runAsync``
  finished drawing a chart update, Vega ``runAsync`` and three.js ``render()`` durations,
  frame intervals and long tasks (PerformanceObserver).
* ui_fps: animation frames per second of each page (``monbridge.frames``).
* JS heap: CDP ``Performance.getMetrics`` JSHeapUsedSize of every page after a forced GC (CDP
  ``HeapProfiler.collectGarbage``) at the start and the end of the window; and the same once
  Vega has dropped the scenegraph items of removed rows it keeps until a mark holds
  view.cleanThreshold of them (64, set by the page) (``js_heap_live_*``; view.cleanThreshold
  set to 0 for 1.5 s, then restored).
* rows in every view once a second; changesets and cloud frames applied per second; the
  pages' own ping round trips (``monbridge.latency()``); per client what the bridge sent,
  skipped and held in its outbox (/api/clients, once a second); bytes waiting in kernel
  socket buffers on each connection (/proc/net/tcp).
* CPU from /proc over the window: chromium by process type (renderer, gpu, network,
  browser) and each page's renderer, bridge, device, reference client, this process; the machine (/proc/stat), what other processes used (machine − ours),
  VM steal, and ``cpu_pressure_pct`` (/proc/pressure/cpu) for the window and the whole run.
"""

from __future__ import annotations

from bench.common import (CHROMIUM, CHROMIUM_ARGS, DeviceProcess, Settler, alive, cmdline, cpu_stall_us,
                          descendants, git_revision, growth_pct, judge, leftover_segments, percentile,
                          process_table, remove_segments, round_figures)

import argparse
import collections
import json
import math
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "specs"
DEVICE_SCRIPT = REPO / "examples" / "robot_arm.py"
STATIC = REPO / "webui" / "static"
VIEWPORT = {"width": 1280, "height": 800}     # every page (--viewport changes it, a diagnostic)
LAYOUTS = {
    # layout: (specs subdirectory, view ids shown, one page each)
    "vconcat": ("vconcat", ["joints4", "cloud"]),
    "pages": ("pages", ["joints-j1", "joints-j2", "joints-i1", "joints-temp1", "cloud"]),
}
SCENE_ID = "cloud"
CHANNELS = ("joints", "cloud")
MAX_POINTS = 2000                # usermeta max_points of every chart view
START_TIMEOUT = 45.0             # device + bridge, or a page, on 2 busy cores
SAMPLE_S = 1.0                   # drain the pages and sample /proc this often
HEAP_BUCKET_S = 10.0             # heap trend: the lowest JSHeapUsedSize (no forced GC) per bucket
LONG_FRAME_MS = 50.0             # a frame interval this long is a visible stutter

TARGETS: dict[str, dict[str, float]] = {
    "display_lag_p50_ms": {"max": 40.0},
    "display_lag_p99_ms": {"max": 100.0},
    "js_heap_growth_pct": {"max": 10.0},
    # a bound of our own: the rows a chart holds stay near its max_points budget (+25 %)
    "rows_per_chart_max": {"max": 1.25 * MAX_POINTS},
}

MODES = {
    "quick": dict(warm_s=10.0, window_s=20.0, settle_s=3.0),
    "full": dict(warm_s=15.0, window_s=60.0, settle_s=20.0),
}


def log(message: str) -> None:
    print(f"bench.browser: {message}", file=sys.stderr, flush=True)


# ======================================================================================
# the page side: an init script, run in every page before the dashboard's bundle
# ======================================================================================

INIT_JS = r"""
(() => {
  const cfg = window.__benchCfg || {};   // diagnostics only: {vegaCleanThreshold, webglAttrs}
  if (cfg.webglAttrs) {
    const getContext = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (type, attrs) {
      if (/^webgl/.test(type)) attrs = { ...(attrs || {}), ...cfg.webglAttrs };
      return getContext.call(this, type, attrs);
    };
  }
  const wall = () => performance.timeOrigin + performance.now();   // ms, Unix epoch, sub-ms
  const B = window.__bench = {
    applied: [],    // [channel, t (s), at (ms: lastApplied.at), wall ms now]
    arrivals: [],   // [channel, t (s), wall ms, bytes]
    runs: [],       // [view id, visible 0/1, newest t applied (s) or null, run start wall ms, duration ms]
    renders: [],    // three.js render() durations, ms
    intervals: [],  // animation frame intervals, ms
    longtask: 0,    // ms of main-thread tasks over 50 ms (PerformanceObserver "longtask")
    gpuWaits: 0,    // scene frames skipped because the GPU process had not finished the last one
    just: null,     // t values applied during the current VegaLiteView.frame() call
    patched: new WeakSet(),
    hooks: null,
  };
  Object.defineProperty(window, "monbridge", {
    configurable: true, enumerable: true,
    get() { return B.hooks; },
    set(h) { B.hooks = h; instrument(h); },
  });
  function instrument(h) {
    const applied = h.applied;
    h.applied = (channel, t) => {
      applied(channel, t);
      const la = h.lastApplied[channel];
      if (la && la.t === t) B.applied.push([channel, t, la.at, wall()]);
      if (B.just && typeof t === "number") B.just.push(t);
    };
    const conn = h._internals && h._internals.conn;
    if (conn && conn.socket && typeof conn.socket.onAny === "function") {
      conn.socket.onAny((event, msg) => {   // runs before the dashboard's own handlers
        if (event === "data" && msg && typeof msg.t === "number") {
          B.arrivals.push([msg.channel, msg.t, wall(), msg.data && msg.data.byteLength || 0]);
        }
      });
    }
  }
  function patchViews() {
    const tabs = B.hooks && B.hooks._internals && B.hooks._internals.tabs;
    if (!tabs) return;
    for (const [id, v] of Object.entries(tabs.views())) {
      if (!v || B.patched.has(v)) continue;
      if (v.kind === "vega-lite" && v.result && v.result.view) {
        const view = v.result.view;
        if (typeof cfg.vegaCleanThreshold === "number") view.cleanThreshold = cfg.vegaCleanThreshold;
        const run = view.runAsync.bind(view);
        view.runAsync = (...args) => {
          const visible = tabs.active === id && !document.hidden ? 1 : 0;
          const ts = B.just || [];
          const newest = ts.length ? Math.max(...ts) : null;
          const start = wall(), p0 = performance.now();
          return run(...args).then((r) => {
            B.runs.push([id, visible, newest, start, performance.now() - p0]);
            return r;
          });
        };
        const frame = v.frame.bind(v);
        v.frame = (visible) => {
          B.just = [];
          try { frame(visible); } finally { B.just = null; }
        };
        B.patched.add(v);
      } else if (v.kind === "scene" && v.renderer) {
        const r = v.renderer, render = r.render.bind(r);
        r.render = (scene, camera) => {
          const p0 = performance.now();
          render(scene, camera);
          B.renders.push(performance.now() - p0);
        };
        if (typeof v._gpuIdle === "function") {
          const idle = v._gpuIdle.bind(v);
          v._gpuIdle = () => { const ok = idle(); if (!ok) B.gpuWaits++; return ok; };
        }
        B.patched.add(v);
      }
    }
  }
  let last = null;
  function tick(now) {
    if (last !== null) B.intervals.push(now - last);
    last = now;
    patchViews();
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) B.longtask += e.duration;
    }).observe({ type: "longtask", buffered: false });
  } catch (e) { /* no longtask support: longtask stays 0 */ }
  // Vega keeps the scenegraph items of removed rows until a mark has more than
  // view.cleanThreshold of them (the page sets 64; Vega's default is 1e4). on: drop them
  // at the next update; off: back to what the page had.
  B.vegaClean = (on) => {
    const tabs = B.hooks && B.hooks._internals && B.hooks._internals.tabs;
    let n = 0;
    if (tabs) for (const v of Object.values(tabs.views())) {
      const view = v && v.result && v.result.view;
      if (!view) continue;
      if (on) {
        if (!("__benchSavedClean" in view)) view.__benchSavedClean = view.cleanThreshold;
        view.cleanThreshold = 0;
      } else if ("__benchSavedClean" in view) {  // back to what the page set (vlview.js)
        view.cleanThreshold = view.__benchSavedClean;
        delete view.__benchSavedClean;
      }
      n++;
    }
    return n;
  };
  // Everything recorded since the last call, plus what the hooks say now (all views).
  B.drain = () => {
    const h = B.hooks;
    const out = {
      applied: B.applied, arrivals: B.arrivals, runs: B.runs, renders: B.renders, intervals: B.intervals,
      longtask: B.longtask, gpuWaits: B.gpuWaits, wall: wall(),
      frames: h ? h.frames : 0, connection: h ? h.connection : null, active: h ? h.activeTab : null,
      hidden: document.hidden, views: {},
    };
    B.applied = []; B.arrivals = []; B.runs = []; B.renders = []; B.intervals = [];
    B.longtask = 0; B.gpuWaits = 0;
    if (h) for (const [id, v] of Object.entries(h.views)) {
      out.views[id] = { kind: v.kind, rows: v.rows(), updates: v.updates, error: v.error };
    }
    return out;
  };
})();
"""

# The control page: nothing but an animation-frame counter.
CONTROL_HTML = ("<!doctype html><title>control</title><body style='margin:0;background:#fff'><script>"
                "window.__frames=0;(function f(){window.__frames++;requestAnimationFrame(f);})();</script>")


# ======================================================================================
# /proc
# ======================================================================================

def chromium_kind(pid: int) -> str | None:
    """browser / renderer / gpu / network / utility / zygote for a chromium process, else None.
    Chromium's children rewrite their argv into one space-separated string."""
    argv = cmdline(pid)
    if not argv or "chrom" not in os.path.basename(argv[0].split(" ", 1)[0]):
        return None
    text = " ".join(argv)
    m = re.search(r"--type=(\S+)", text)
    if not m:
        return "browser"
    kind = m.group(1).replace("-process", "")
    if kind == "utility" and "NetworkService" in text:
        return "network"
    return kind


def machine_jiffies() -> tuple[int, int, int] | None:
    """(busy, total, steal) jiffies of all CPUs from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    steal = parts[7] if len(parts) > 7 else 0
    total = sum(parts[:8])
    return total - idle - steal, total, steal


class CpuMeter:
    """Snapshots of the CPU seconds of this process and all its descendants, the machine's
    jiffies and the CPU pressure total (processes that exit in between are not counted)."""

    def __init__(self, me: int) -> None:
        self.me = me

    def snapshot(self) -> dict[str, Any]:
        table = process_table()
        ours = descendants(self.me, table) | {self.me}
        per_pid = {pid: table[pid][1] for pid in ours if pid in table}
        return {"wall": time.perf_counter(), "pids": per_pid, "machine": machine_jiffies(), "stall": cpu_stall_us()}


def cpu_figures(a: dict[str, Any], b: dict[str, Any], roles: dict[int, str]) -> dict[str, Any]:
    """CPU % (of one core) per role over [a, b]; machine-wide figures in % of all cores."""
    span = b["wall"] - a["wall"]
    by_role: dict[str, float] = collections.defaultdict(float)
    ours = 0.0
    for pid, cpu1 in b["pids"].items():
        cpu0 = a["pids"].get(pid)
        if cpu0 is None:
            continue
        d = cpu1 - cpu0
        ours += d
        by_role[roles.get(pid, "other_ours")] += d
    out: dict[str, Any] = {k: 100 * v / span for k, v in sorted(by_role.items())}
    out["ours_cpu_pct"] = 100 * ours / span
    ncpu = os.cpu_count() or 1
    if a["machine"] and b["machine"]:
        busy = b["machine"][0] - a["machine"][0]
        total = b["machine"][1] - a["machine"][1]
        steal = b["machine"][2] - a["machine"][2]
        if total > 0:
            # percentages of one core, like the per-process figures (2 cores: at most 200)
            out["machine_cpu_pct"] = 100 * ncpu * busy / total
            out["other_cpu_pct"] = max(0.0, out["machine_cpu_pct"] - out["ours_cpu_pct"])
            out["steal_pct"] = 100 * ncpu * steal / total
    if a["stall"] is not None and b["stall"] is not None:
        out["cpu_pressure_pct"] = 100 * (b["stall"] - a["stall"]) / 1e6 / span
    return out


# ======================================================================================
# the device (and its bridge)
# ======================================================================================

class Device(DeviceProcess):
    """examples/robot_arm.py (run as ``--role device`` under the run's name) with MON=...;
    it launches its bridge, which exits with it."""

    def __init__(self, specs: Path, name: str, token: str) -> None:
        super().__init__([sys.executable, "-m", "bench.browser", "--role", "device", name], name, START_TIMEOUT)
        self.specs = specs
        self.token = token

    def start(self) -> str:  # type: ignore[override]
        return super().start(f"port=0,specs={self.specs},name={self.name},token={self.token}")


def role_device(name: str) -> None:
    """Run examples/robot_arm.py unchanged, as ``python examples/robot_arm.py`` would, except
    that its ``device_agent.start(name="robot_arm")`` gets ``name``: the script names itself,
    which MON=name= cannot override, and another robot_arm on the machine (a test, a demo)
    would make it refuse to start."""
    import runpy

    import device_agent

    start = device_agent.start

    def start_named(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("name", None)
        return start(name, *args[1:], **kwargs)

    device_agent.start = start_named
    sys.argv = [str(DEVICE_SCRIPT)]
    runpy.run_path(str(DEVICE_SCRIPT), run_name="__main__")


def role_client(port: int, token: str, timeout: float) -> None:
    """The reference client: python-socketio (asyncio), websocket, subscribed exactly as the
    pages are (joints: 30 Hz, 10 s window, 2000 points; cloud: 30 Hz), doing nothing but
    noting when each message arrived. stdin: ``report T0 T1`` -> one JSON line of lags;
    EOF ends it."""
    import asyncio

    import socketio

    out = sys.stdout
    sys.stdout = sys.stderr
    threading.Thread(target=lambda: (time.sleep(timeout), os._exit(3)), daemon=True).start()
    got: list[tuple[float, str, float]] = []

    def reports() -> None:  # a thread: the event loop only receives
        for line in sys.stdin:
            parts = line.split()
            if parts[:1] == ["report"]:
                t0, t1 = float(parts[1]), float(parts[2])
                taken = got[:]
                del got[: len(taken)]
                lags: dict[str, list[float]] = collections.defaultdict(list)
                for now, ch, t in taken:
                    if t0 <= now < t1:
                        lags[ch].append(round((now - t) * 1000, 3))
                out.write(json.dumps({"ok": True, "lags": lags}) + "\n")
                out.flush()
        os._exit(0)

    async def main() -> None:
        sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)

        @sio.on("data")
        async def on_data(msg: dict[str, Any]) -> None:
            if isinstance(msg.get("t"), (int, float)):
                got.append((time.time(), msg["channel"], msg["t"]))

        await sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"], auth={"token": token},
                          wait_timeout=20)
        acks = [await sio.call("subscribe", {"channels": ["joints"], "rate": 30, "window": 10,
                                             "max_points": MAX_POINTS}, timeout=20),
                await sio.call("subscribe", {"channels": ["cloud"], "rate": 30}, timeout=20)]
        out.write(json.dumps({"ok": all(a.get("ok") for a in acks), "acks": acks, "sid": sio.get_sid()}) + "\n")
        out.flush()
        threading.Thread(target=reports, daemon=True).start()
        await sio.wait()

    asyncio.run(main())


def socket_backlog(port: int) -> dict[int, int]:
    """Bytes waiting in the kernel on each loopback TCP connection to the bridge's port:
    the bridge's send queue plus the browser's receive queue, keyed by the client's port."""
    out: dict[int, int] = collections.defaultdict(int)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, remote, state, queues = parts[1], parts[2], parts[3], parts[4]
                if state != "01":                # ESTABLISHED only
                    continue
                lport, rport = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
                tx, rx = (int(x, 16) for x in queues.split(":"))
                if lport == port and rport:      # the bridge's end: what it sent that is not yet acknowledged
                    out[rport] += tx
                elif rport == port:              # the browser's end: received, not yet read by chromium
                    out[lport] += rx
    except OSError:
        pass
    return dict(out)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """One line of a child's stdout, or "" after ``timeout`` s (or if it exited)."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


# ======================================================================================
# statistics
# ======================================================================================

def dist(values: list[float]) -> dict[str, Any]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else math.nan, "n": len(values)}


# ======================================================================================
# the run
# ======================================================================================

class Page:
    def __init__(self, label: str, view: str | None, page: Any) -> None:
        self.label = label
        self.view = view          # the view shown (None: the control page)
        self.page = page          # a bench.cdp.CdpPage
        self.cdp = page.cdp
        self.renderers: set[int] = set()
        self.errors: list[str] = page.errors      # uncaught exceptions, filled as they happen
        self.console: list[str] = page.console    # console errors and warnings

    def heap_mb(self) -> float:
        return self.page.js_heap_mb()

    def gc(self) -> None:
        self.page.collect_garbage()


class Run:
    def __init__(self, mode: str, layout: str, settle: bool, only: list[str] | None = None) -> None:
        self.cfg = dict(MODES[mode])
        self.mode = mode
        self.layout = layout
        self.settler = Settler(self.cfg["settle_s"] if settle else 0.0, log)
        self.name = f"bench-browser-{os.getpid()}"
        self.token = secrets.token_urlsafe(16)
        subdir, self.views = LAYOUTS[layout]
        if only:
            self.views = [v for v in self.views if v in only]
        self.specs = SPECS / subdir
        self.device = Device(self.specs, self.name, self.token)
        self.browser: Any = None
        self.pages: list[Page] = []
        self.control: Page | None = None
        self.meter = CpuMeter(os.getpid())
        self.roles: dict[int, str] = {}
        self.port = 0
        self.viewport = dict(VIEWPORT)
        self.reference = True                          # the python-socketio reference client
        self.client: subprocess.Popen | None = None
        self.sids: dict[str, str] = {}                 # bridge client id -> page label / "reference"
        self.page_cfg: dict[str, Any] = {}            # diagnostics for the init script
        self.tmp_specs: str | None = None
        self._arrival_memo: dict[tuple, float] = {}   # (page, channel, t) -> arrival wall ms
        self.problems: list[str] = []

    # -- setup ------------------------------------------------------------------------

    def use_cloud_rate(self, hz: float) -> None:
        """A diagnostic: the layout's specs in a temporary directory, the scene at ``hz``."""
        import shutil
        import tempfile

        self.tmp_specs = tempfile.mkdtemp(prefix="bench-browser-specs-")
        for f in self.specs.iterdir():
            shutil.copy(f, self.tmp_specs)
        scene = Path(self.tmp_specs) / f"{SCENE_ID}.scene.json"
        spec = json.loads(scene.read_text())
        spec["rate"] = hz
        scene.write_text(json.dumps(spec))
        self.specs = Path(self.tmp_specs)
        self.device.specs = self.specs

    def start(self) -> None:
        where = self.specs.relative_to(REPO) if self.specs.is_relative_to(REPO) else self.specs
        log(f"device {self.name!r}: examples/robot_arm.py with specs {where}")
        url = self.device.start()
        self.url = url
        self.port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        log(f"dashboard at 127.0.0.1:{self.port} (bridge pid {self.device.bridge_pid})")
        from bench.cdp import Browser

        self.browser = Browser(CHROMIUM, CHROMIUM_ARGS, START_TIMEOUT)
        log(f"chromium {self.browser.version}; opening {len(self.views)} dashboard page(s): "
            f"{', '.join('#/' + v for v in self.views)} + a control page")
        for view in self.views:
            self.pages.append(self._open(view, url + "#/" + view))
        self.control = self._open(None, None)
        for p in self.pages:
            self._wait_view(p)
        if self.reference:
            env = {k: v for k, v in os.environ.items() if k != "MON"}
            budget = START_TIMEOUT + self.cfg["warm_s"] + self.cfg["window_s"] + 60
            self.client = subprocess.Popen([sys.executable, "-m", "bench.browser", "--role", "client", str(self.port),
                                            self.token, str(budget)], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True, bufsize=1)
            hello = json.loads(_readline(self.client, START_TIMEOUT) or "{}")
            if not hello.get("ok"):
                raise RuntimeError(f"the reference client could not subscribe: {hello}")
            self.sids[hello["sid"]] = "reference"
        for p in self.pages:
            sid = p.page.evaluate("() => window.monbridge._internals && window.monbridge._internals.store.sid")
            if sid:
                self.sids[sid] = p.label

    def _renderers(self) -> set[int]:
        table = process_table()
        return {pid for pid in descendants(os.getpid(), table) if chromium_kind(pid) == "renderer"}

    def _open(self, view: str | None, url: str | None) -> Page:
        before = self._renderers()
        page = self.browser.new_page(self.viewport["width"], self.viewport["height"])
        p = Page(view or "control", view, page)
        if url is None:
            page.set_content(CONTROL_HTML)
        else:
            page.add_init_script(f"window.__benchCfg = {json.dumps(self.page_cfg)};\n" + INIT_JS)
            page.goto(url, timeout=START_TIMEOUT)
        p.cdp.send("Performance.enable")
        p.cdp.send("HeapProfiler.enable")
        # the renderer that appeared for this page (chromium may keep a spare one ready:
        # the page's own renderer is the one that has run the most since)
        p.renderers = self._renderers() - before
        return p

    def _wait_view(self, p: Page) -> None:
        expr = """(id) => {
          const h = window.monbridge; if (!h || h.connection !== "live") return false;
          const v = h.views[id]; if (!v) return false;
          if (v.error) return "error: " + v.error;
          return h.activeTab === id && v.updates > 2 && v.rows() > 0;
        }"""
        try:
            res = p.page.wait_for_function(expr, arg=p.view, timeout=START_TIMEOUT, polling=0.1)
        except Exception as exc:
            state = p.page.evaluate("() => window.__bench && window.__bench.drain()")
            raise RuntimeError(f"page {p.label}: view {p.view!r} did not start showing data: {exc}\n"
                               f"page: {json.dumps(state, default=str)[:2000]}\nerrors: {p.errors[-5:]}\n"
                               f"console: {p.console[-10:]}") from None
        if isinstance(res, str):
            raise RuntimeError(f"page {p.label}: view {p.view!r}: {res}")

    def assign_roles(self) -> None:
        """Name every process of ours for the CPU figures."""
        table = process_table()
        me = os.getpid()
        roles = {me: "bench_cpu_pct"}
        device = self.device.proc.pid if self.device.proc else None
        for pid in descendants(me, table):
            kind = chromium_kind(pid)
            if pid == device:
                roles[pid] = "device_cpu_pct"
            elif pid == self.device.bridge_pid:
                roles[pid] = "bridge_cpu_pct"
            elif kind is not None:
                roles[pid] = f"chromium_{kind.replace('-process', '')}_cpu_pct"
            elif self.client is not None and pid == self.client.pid:
                roles[pid] = "reference_client_cpu_pct"
            elif device is not None and pid in descendants(device, table):
                roles[pid] = "device_children_cpu_pct"
            else:
                roles[pid] = "bench_cpu_pct"   # anything else we started counts with us
        self.roles = roles

    # -- measuring ----------------------------------------------------------------------

    def drain_all(self) -> list[dict[str, Any]]:
        out = []
        for p in self.pages:
            d = p.page.evaluate("() => window.__bench.drain()")
            d["label"] = p.label
            out.append(d)
        return out

    def heaps(self, gc: bool) -> list[float]:
        if gc:
            for p in self.pages + [self.control]:
                p.gc()
        return [p.heap_mb() for p in self.pages]

    def live_heaps(self) -> list[float]:
        """The heap after GC once Vega has dropped the items of removed rows it keeps until
        a mark has view.cleanThreshold of them (every chart updates at least once a second meanwhile)."""
        for p in self.pages:
            p.page.evaluate("() => window.__bench.vegaClean(true)")
        time.sleep(1.5)
        for p in self.pages:
            p.page.evaluate("() => window.__bench.vegaClean(false)")
        self.drain_all()
        return self.heaps(gc=True)

    def clients(self) -> list[dict[str, Any]]:
        try:
            return http_json(f"http://127.0.0.1:{self.port}/api/clients")["clients"]
        except (OSError, ValueError, KeyError):
            return []

    def stats(self) -> dict[str, Any]:
        try:
            return http_json(f"http://127.0.0.1:{self.port}/api/stats")
        except (OSError, ValueError):
            return {}

    def measure(self) -> dict[str, Any]:
        cfg = self.cfg
        log(f"warm-up {cfg['warm_s']:.0f} s (fills the 10 s chart windows and the cloud)")
        t_end = time.monotonic() + cfg["warm_s"]
        while time.monotonic() < t_end:
            time.sleep(min(SAMPLE_S, max(0.0, t_end - time.monotonic())))
            self.drain_all()                       # keep the page-side arrays short
        self.drain_all()
        heap0 = self.heaps(gc=True)
        live0 = self.live_heaps()
        self.drain_all()                            # what the GC pause delayed is not measured
        self.assign_roles()
        clients0 = {c["id"]: c for c in self.clients()}
        frames0 = {p.label: p.page.evaluate("() => window.monbridge.frames") for p in self.pages}
        ctl0 = self.control.page.evaluate("() => window.__frames")
        log(f"measuring {cfg['window_s']:.0f} s; JS heap after GC: "
            + ", ".join(f"{p.label} {h:.1f} MB" for p, h in zip(self.pages, heap0))
            + "; without Vega's removed items: " + ", ".join(f"{h:.1f} MB" for h in live0))
        snap0 = self.meter.snapshot()
        t0 = time.monotonic()
        w0 = time.time()
        samples: list[dict[str, Any]] = []
        heap_seen: list[tuple[float, float]] = []   # (s into the window, MB of all pages), no forced GC
        backlog: list[dict[int, int]] = []           # once a second: kernel bytes queued per connection
        queued: list[dict[str, Any]] = []            # once a second: the bridge's outbox per client (packets)
        while True:
            now = time.monotonic()
            if now >= t0 + cfg["window_s"]:
                break
            time.sleep(min(SAMPLE_S, t0 + cfg["window_s"] - now))
            samples.extend(self.drain_all())
            backlog.append(socket_backlog(self.port))
            queued.append({c["id"]: (c.get("queued") or 0, sorted(s["channel"] for s in c.get("subscriptions", [])))
                           for c in self.clients()})
            heap_seen.append((time.monotonic() - t0, sum(p.heap_mb() for p in self.pages)))
        snap1 = self.meter.snapshot()
        span = time.monotonic() - t0
        w1 = time.time()
        frames1 = {p.label: p.page.evaluate("() => window.monbridge.frames") for p in self.pages}
        ctl1 = self.control.page.evaluate("() => window.__frames")
        clients1 = self.clients()
        stats = self.stats()
        # the page's own ping round trips over the last ~10 s (webui/src/connection.js): what a
        # command or its acknowledgement waits on this page's socket
        pings = {p.label: p.page.evaluate("() => window.monbridge.latency()") for p in self.pages}
        samples.extend(self.drain_all())
        heap1 = self.heaps(gc=True)
        live1 = self.live_heaps()
        log("JS heap after GC: " + ", ".join(f"{p.label} {h:.1f} MB" for p, h in zip(self.pages, heap1))
            + "; without Vega's removed items: " + ", ".join(f"{h:.1f} MB" for h in live1))
        # the heap's saw-tooth without forced GCs: its low point per bucket approximates what is live
        buckets: dict[int, float] = {}
        for at, mb in heap_seen:
            k = int(at // HEAP_BUCKET_S)
            buckets[k] = min(mb, buckets.get(k, math.inf))
        heap_trend = [[(k + 1) * HEAP_BUCKET_S, mb] for k, mb in sorted(buckets.items())]
        out = self.figures(samples, span, w0, w1, heap0, heap1, heap_trend, frames0, frames1, ctl1 - ctl0,
                           clients0, clients1, stats, snap0, snap1)
        out["ping_rtt_ms_by_page"] = pings
        device = stats.get("device") or {}
        out["device_status_at_end"] = device.get("status")
        out["connection_at_end"] = {p.label: p.page.evaluate("() => window.monbridge.connection") for p in self.pages}
        if not out["display_lag_samples"]:
            # nothing reached any page during the window: say what the bridge and the device said
            self.problems.append("no data was applied by any page during the window; device status "
                                 f"{device.get('status')!r}; the device's and bridge's last output:\n"
                                 + self.device.output())
        out["js_heap_live_mb_start"] = sum(live0)
        out["js_heap_live_mb_end"] = sum(live1)
        out["js_heap_live_growth_pct"] = growth_pct(sum(live0), sum(live1))
        out["js_heap_live_mb_by_page"] = {p.label: [a, b] for p, a, b in zip(self.pages, live0, live1)}
        out["vega_removed_items_mb_end"] = sum(heap1) - sum(live1)
        conns: dict[int, list[int]] = collections.defaultdict(list)
        for b in backlog:
            for port, n in b.items():
                conns[port].append(n)
        # per connection (one per page), largest first: MB waiting in TCP buffers, mean and max
        out["socket_backlog_mb"] = sorted(([statistics.mean(v) / 2**20, max(v) / 2**20] for v in conns.values()
                                           if len(v) * 2 >= len(backlog) and max(v) > 0), key=lambda x: -x[1])
        outbox: dict[str, list[int]] = collections.defaultdict(list)
        for q in queued:
            for cid, (n, chans) in q.items():
                outbox[self.sids.get(cid, "+".join(chans))].append(n)
        # per client (page label, "reference"): Engine.IO packets waiting in the bridge's outbox, mean and max
        out["bridge_outbox_packets"] = {k: [statistics.mean(v), max(v)] for k, v in sorted(outbox.items())}
        cloud_fps = out["cloud_frames_applied_per_s"]
        if cloud_fps > 0 and "chromium_gpu_cpu_pct" in out:
            # CPU the GPU process (SwiftShader) spent per cloud frame drawn; it also composites
            # every page, so this is an upper bound
            out["gpu_process_ms_per_cloud_frame"] = 10 * out["chromium_gpu_cpu_pct"] / cloud_fps
        out["notes"] = self.notes(out)
        return out

    def notes(self, out: dict[str, Any]) -> list[str]:
        """Plain-language flags for reading the figures (docs/performance.md explains them)."""
        notes = []
        other = out.get("other_cpu_pct", 0.0)
        if other > 25:
            notes.append(f"other processes used {other:.0f}% of a core on average during the window "
                         f"(machine {out.get('machine_cpu_pct', 0):.0f}% of 200%): figures measured under load")
        for label, (mean, peak) in out.get("bridge_outbox_packets", {}).items():
            if label == SCENE_ID and peak >= 48:
                arr = out.get("arrival_lag_ms", {}).get(f"{SCENE_ID}/cloud", {}).get("p50", math.nan)
                kernel = max((b[0] for b in out.get("socket_backlog_mb", [])), default=0.0)
                notes.append(f"the cloud page drew {out['cloud_frames_applied_per_s']:.1f} of 30 frames/s; the bridge's "
                             f"outbox for it held {mean:.0f} packets on average (peak {peak}; it skips a client above 64) "
                             f"and the kernel up to {kernel:.1f} MB on average: frames waited in queues "
                             f"(arrival lag p50 {arr:.0f} ms)")
        for label, fps in out.get("ui_fps_by_page", {}).items():
            if fps < 0.5 * out.get("control_fps", 60):
                notes.append(f"page {label} ran {fps:.0f} frames/s while the empty control page ran "
                             f"{out.get('control_fps', 0):.0f}: its main thread was busy or blocked "
                             f"({out.get('longtask_ms_per_s', {}).get(label, 0):.0f} ms/s in long tasks)")
        removed = out.get("vega_removed_items_mb_end", 0.0)
        if out.get("js_heap_growth_pct", 0) > 10 and removed > 0.5 * (out["js_heap_mb_end"] - out["js_heap_mb_start"]):
            notes.append(f"{removed:.1f} MB of the heap at the end were scenegraph items of removed rows that Vega "
                         f"keeps until a mark has view.cleanThreshold of them; see js_heap_live_growth_pct")
        return notes

    def figures(self, samples: list[dict[str, Any]], span: float, w0: float, w1: float, heap0: list[float],
                heap1: list[float], heap_trend: list[list[float]], frames0: dict[str, int], frames1: dict[str, int],
                control_frames: int, clients0: dict[str, Any], clients1: list[dict[str, Any]], stats: dict[str, Any],
                snap0: dict[str, Any], snap1: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # -- display lag: lastApplied updates in the window (applied frame − device time)
        lag: dict[str, list[float]] = collections.defaultdict(list)
        arrival: dict[str, list[float]] = collections.defaultdict(list)
        page_part: dict[str, list[float]] = collections.defaultdict(list)
        vega_visible: list[float] = []
        vega_hidden: list[float] = []
        vega_done_lag: list[float] = []
        renders: list[float] = []
        intervals: dict[str, list[float]] = collections.defaultdict(list)
        longtask: dict[str, float] = collections.defaultdict(float)
        gpu_waits = 0
        applied_count: dict[str, int] = collections.defaultdict(int)
        received: dict[str, int] = collections.defaultdict(int)
        received_bytes: dict[str, int] = collections.defaultdict(int)
        rows: dict[str, list[int]] = collections.defaultdict(list)       # (page, view) -> rows() once a second
        errors: set[str] = set()
        ms0, ms1 = w0 * 1000, w1 * 1000
        for s in samples:
            label = s["label"]
            arrivals_by_t: dict[tuple[str, float], float] = {}
            for ch, t, wall, nbytes in s["arrivals"]:
                if ms0 <= wall < ms1:
                    arrival[f"{label}/{ch}"].append(wall - t * 1000)
                    received[ch] += 1
                    received_bytes[ch] += nbytes
                arrivals_by_t[(ch, t)] = wall
            for ch, t, at, wall in s["applied"]:
                if not ms0 <= at < ms1 or not isinstance(t, (int, float)):
                    continue
                lag[f"{label}/{ch}"].append(at - t * 1000)
                applied_count[ch] += 1
                got = arrivals_by_t.get((ch, t)) or self._arrival_memo.get((label, ch, t))
                if got is not None:
                    page_part[f"{label}/{ch}"].append(wall - got)
            for ch_t, wall in arrivals_by_t.items():   # a message may be applied in the next drain
                self._arrival_memo[(label,) + ch_t] = wall
            for view_id, visible, newest, start, dur in s["runs"]:
                if not ms0 <= start < ms1:
                    continue
                (vega_visible if visible else vega_hidden).append(dur)
                if visible and newest is not None:
                    vega_done_lag.append(start + dur - newest * 1000)
            renders.extend(s["renders"])
            intervals[label].extend(s["intervals"])
            longtask[label] += s["longtask"]
            gpu_waits += s["gpuWaits"]
            for view_id, v in s["views"].items():
                rows[f"{label}/{view_id}"].append(v["rows"])
                if v["error"]:
                    errors.add(f"{label}/{view_id}: {v['error']}")
        pooled = [x for ch in lag for x in lag[ch]]
        out["display_lag_p50_ms"] = percentile(pooled, 50)
        out["display_lag_p99_ms"] = percentile(pooled, 99)
        out["display_lag_max_ms"] = max(pooled) if pooled else math.nan
        out["display_lag_samples"] = len(pooled)
        out["display_lag_ms"] = {ch: dist(v) for ch, v in sorted(lag.items())}
        out["arrival_lag_ms"] = {ch: dist(v) for ch, v in sorted(arrival.items())}
        out["page_share_ms"] = {ch: dist(v) for ch, v in sorted(page_part.items())}
        out["vega_done_lag_ms"] = dist(vega_done_lag)
        out["vega_run_ms"] = dist(vega_visible)
        out["vega_hidden_run_ms"] = dist(vega_hidden)
        out["vega_hidden_runs_per_s"] = len(vega_hidden) / span
        out["scene_render_ms"] = dist(renders)
        out["scene_gpu_busy_skips_per_s"] = gpu_waits / span
        # -- frames
        fps = {p.label: (frames1[p.label] - frames0[p.label]) / span for p in self.pages}
        out["ui_fps"] = min(fps.values())
        out["ui_fps_by_page"] = fps
        out["control_fps"] = control_frames / span
        out["frame_interval_p99_ms"] = {k: percentile(v, 99) for k, v in intervals.items()}
        out["long_frames_per_s"] = {k: sum(1 for x in v if x > LONG_FRAME_MS) / span for k, v in intervals.items()}
        out["longtask_ms_per_s"] = {k: v / span for k, v in longtask.items()}
        # -- data applied / received
        out["cloud_frames_applied_per_s"] = applied_count.get("cloud", 0) / span
        out["joints_updates_applied_per_s"] = applied_count.get("joints", 0) / span
        out["messages_received_per_s"] = {ch: n / span for ch, n in sorted(received.items())}
        out["received_mb_per_s"] = sum(received_bytes.values()) / span / 2**20
        # -- rows
        out["rows_by_view"] = {k: {"min": min(v), "max": max(v), "last": v[-1]} for k, v in sorted(rows.items())}
        chart_rows = [max(v) for k, v in rows.items() if not k.endswith("/" + SCENE_ID)]
        out["rows_per_chart_max"] = max(chart_rows) if chart_rows else math.nan
        # -- JS heap
        out["js_heap_mb_start"] = sum(heap0)
        out["js_heap_mb_end"] = sum(heap1)
        out["js_heap_growth_pct"] = growth_pct(sum(heap0), sum(heap1))
        out["js_heap_mb_by_page"] = {p.label: [a, b] for p, a, b in zip(self.pages, heap0, heap1)}
        out["js_heap_trend_mb"] = heap_trend   # [end of each 10 s of the window, lowest MB of all pages seen], no forced GC
        # -- the bridge's side, per page (client)
        per_client = {}
        for c in clients1:
            c0 = clients0.get(c["id"], {})
            subs0 = {s["channel"]: s for s in c0.get("subscriptions", [])}
            subs = {}
            for s in c.get("subscriptions", []):
                a = subs0.get(s["channel"], {"sent": 0, "skipped": 0})
                subs[s["channel"]] = {"rate": s.get("rate"), "sent_per_s": (s["sent"] - a["sent"]) / span,
                                      "skipped": s["skipped"] - a["skipped"]}
            per_client[self.sids.get(c["id"], c["id"])] = {"subscriptions": subs, "queued_at_end": c.get("queued")}
        out["bridge_clients"] = per_client
        out["bridge_skipped"] = sum(s["skipped"] for c in per_client.values() for s in c["subscriptions"].values())
        chans = {c["name"]: c for c in stats.get("channels", [])}
        out["device_publish_per_s"] = {n: chans[n].get("publish_rate") for n in CHANNELS if n in chans}
        out["bridge_relay_tick_ms"] = (stats.get("relay", {}).get("tick_seconds") or math.nan) * 1000
        # -- CPU
        cpu = cpu_figures(snap0, snap1, self.roles)
        cpu["chromium_cpu_pct"] = sum(v for k, v in cpu.items() if k.startswith("chromium_"))
        cpu["renderer_cpu_by_page"] = self._renderer_cpu(snap0, snap1)
        out["window_cpu_pressure_pct"] = cpu.pop("cpu_pressure_pct", math.nan)
        out.update(cpu)
        out["reference_lag_ms"] = self.reference_lags(w0, w1)
        out["view_errors"] = sorted(errors)
        out["page_errors"] = [f"{p.label}: {e}" for p in self.pages for e in p.errors][:10]
        out["window_s"] = span
        return out

    def _renderer_cpu(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        span = b["wall"] - a["wall"]
        out = {}
        for p in self.pages + [self.control]:
            used = [b["pids"][pid] - a["pids"][pid] for pid in p.renderers if pid in a["pids"] and pid in b["pids"]]
            if used:
                out[p.label] = 100 * max(used) / span
        return out

    # -- teardown -----------------------------------------------------------------------

    def reference_lags(self, w0: float, w1: float) -> dict[str, Any]:
        if self.client is None:
            return {}
        self.client.stdin.write(f"report {w0} {w1}\n")
        self.client.stdin.flush()
        reply = json.loads(_readline(self.client, 20.0) or "{}")
        return {ch: dist(v) for ch, v in sorted(reply.get("lags", {}).items())}

    def close(self) -> list[str]:
        problems: list[str] = []
        if self.client is not None:
            try:
                self.client.stdin.close()
                self.client.wait(5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.client.kill()
                self.client.wait(5)
        if self.browser is not None:
            try:
                self.browser.close()
            except Exception as exc:
                problems.append(f"closing chromium: {exc!r}")
        problems += self.device.stop()
        if self.tmp_specs:
            import shutil

            shutil.rmtree(self.tmp_specs, ignore_errors=True)
        left = [pid for pid in descendants(os.getpid(), process_table()) if chromium_kind(pid) and alive(pid)]
        if left:
            problems.append(f"chromium processes still running: {left}")
        return problems


def run(mode: str, layout: str, settle: bool = True, only: list[str] | None = None,
        viewport: dict[str, int] | None = None, diag: dict[str, Any] | None = None) -> dict[str, Any]:
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"bench.browser: {CHROMIUM} not found: install Debian's chromium package "
                         f"(the benchmark drives it directly, over the DevTools protocol)")
    if not (STATIC / "app.js").exists():
        raise SystemExit("bench.browser: the web UI is not built (webui/static/app.js missing): run `make js`")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    r = Run(mode, layout, settle, only)
    if viewport:
        r.viewport = viewport
    diag = {k: v for k, v in (diag or {}).items() if v is not None and v is not False}
    if diag.get("no_reference"):
        r.reference = False
    if "cloud_rate" in diag:
        r.use_cloud_rate(diag["cloud_rate"])
    if "vega_clean_threshold" in diag:
        r.page_cfg["vegaCleanThreshold"] = diag["vega_clean_threshold"]
    attrs = {}
    if diag.get("webgl_no_aa"):
        attrs["antialias"] = False
    if diag.get("webgl_no_preserve"):
        attrs["preserveDrawingBuffer"] = False
    if attrs:
        r.page_cfg["webglAttrs"] = attrs
    r.settler()
    stall0 = cpu_stall_us()
    t_run0 = time.perf_counter()
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    lap("settle")
    figures: dict[str, Any] = {}
    version = None
    try:
        r.start()
        version = r.browser.version
        lap("start")
        figures = r.measure()
        lap("warm_and_measure")
    finally:
        problems = r.problems + r.close()
        lap("stop")
        removed = remove_segments(f"monbridge.{r.name}.")
        if removed:
            problems.append(f"removed {len(removed)} segment(s) the device left: {removed}")
        for p in problems:
            log(p)
    stall1 = cpu_stall_us()
    result: dict[str, Any] = {
        "bench": "browser",
        "quick": mode == "quick",
        "layout": layout,
        "views": r.views,
        "only": only or None,
        "diagnostics": diag or None,
        "git": git_revision("bridge", "device_agent", "webui/src"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "chromium": version,
        "viewport": r.viewport,
        "warmup_s": r.cfg["warm_s"],
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if stall0 is not None and stall1 is not None:
        # share of the run (device start to stop) during which some task waited for a CPU
        result["cpu_pressure_pct"] = 100 * (stall1 - stall0) / 1e6 / (time.perf_counter() - t_run0)
    result.update(figures)
    result["settle"] = r.settler.report()
    result["phase_s"] = phases
    result["targets"] = TARGETS
    result["pass"] = judge(result, TARGETS, missing_fails=True)
    result["problems"] = problems
    result["leftover_segments"] = leftover_segments("monbridge.bench-browser-")
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--role", "device"]:
        role_device(argv[2])
        return 0
    if argv[:2] == ["--role", "client"]:
        role_client(int(argv[2]), argv[3], float(argv[4]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s warm-up, 20 s window (under 60 s in all)")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="vconcat",
                    help="vconcat (default): the four charts in one view + the scene, two pages; "
                         "pages: one page per view, five pages")
    ap.add_argument("--only", help="a diagnostic: open pages for these views of the layout only (comma-separated ids)")
    ap.add_argument("--viewport", help="a diagnostic: WIDTHxHEIGHT of every page (default 1280x800)")
    ap.add_argument("--cloud-rate", type=float, help="a diagnostic: the scene's subscription rate (Hz; default 30)")
    ap.add_argument("--vega-clean-threshold", type=int,
                    help="a diagnostic: set every Vega view's cleanThreshold (Vega's default 10000)")
    ap.add_argument("--webgl-no-aa", action="store_true", help="a diagnostic: WebGL contexts without antialiasing")
    ap.add_argument("--webgl-no-preserve", action="store_true",
                    help="a diagnostic: WebGL contexts without preserveDrawingBuffer")
    ap.add_argument("--no-reference", action="store_true",
                    help="no python-socketio reference client beside the pages")
    ap.add_argument("--no-settle", action="store_true", help="do not wait for other load to settle first")
    args = ap.parse_args(argv)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(f"bench.browser: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)  # run the finally blocks: device, bridge, chromium
    only = [v.strip() for v in args.only.split(",") if v.strip()] if args.only else None
    if only:
        unknown = set(only) - set(LAYOUTS[args.layout][1])
        if unknown:
            ap.error(f"--only: {sorted(unknown)} are not views of layout {args.layout} ({', '.join(LAYOUTS[args.layout][1])})")
    viewport = None
    if args.viewport:
        m = re.fullmatch(r"(\d+)x(\d+)", args.viewport)
        if not m:
            ap.error("--viewport: WIDTHxHEIGHT, e.g. 640x400")
        viewport = {"width": int(m.group(1)), "height": int(m.group(2))}
    diag = {"cloud_rate": args.cloud_rate, "vega_clean_threshold": args.vega_clean_threshold,
            "webgl_no_aa": args.webgl_no_aa, "webgl_no_preserve": args.webgl_no_preserve, "viewport": args.viewport, "no_reference": args.no_reference}
    result = round_figures(run("quick" if args.quick else "full", args.layout, not args.no_settle, only, viewport, diag))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key not in ("targets",):
                print(f"{key:32} {value}")
    log(f"done in {result['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
