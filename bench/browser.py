"""Browser benchmark: the demo device's dashboard in headless Chromium, every view drawing
at once, and how late, how smoothly and how leanly the pages show the data.

    python -m bench.browser [--quick] [--json] [--no-settle]

Measures display lag (device time → the animation frame that applied the data), arrival lag,
frame rates against an empty control page, the pages' JS heap after a forced GC, rows per
chart, what the bridge queued for each page, and CPU by process; a python-socketio reference
client subscribed like the pages gives the relay's own lag. The page side is
bench/browser_page.js. ``--quick``: 20 s after a 10 s warm-up (under 60 s in all); full: 60 s
after 15 s. The figures: docs/performance.md, "Browser".
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cdp import Browser
from bench.common import CHROMIUM, CHROMIUM_ARGS, Clock, Settler, arguments, dist, exit_on_sigterm, finish, \
    git_revision, growth_pct, logger, percentile, report, require_browser, round_figures
from bench.procs import REPO, Child, DeviceProcess, alive, cmdline, cpu_stall_us, descendants, http_json, \
    machine_jiffies, process_table, remove_segments

SPECS = Path(__file__).resolve().parent / "specs" / "vconcat"   # one page per view: four charts, the scene
PAGE_JS = Path(__file__).resolve().parent / "browser_page.js"
DEVICE_SCRIPT = REPO / "examples" / "robot_arm.py"
VIEWPORT = {"width": 1280, "height": 800}     # every page
VIEWS = ["joints4", "cloud"]
SCENE_ID = "cloud"
CHANNELS = ("joints", "cloud")
MAX_POINTS = 2000                # usermeta max_points of every chart view
START_TIMEOUT = 45.0             # device + bridge, or a page, on 2 busy cores
SAMPLE_S = 1.0                   # drain the pages and sample /proc this often
HEAP_BUCKET_S = 10.0             # heap trend: the lowest JSHeapUsedSize (no forced GC) per bucket
LONG_FRAME_MS = 50.0             # a frame interval this long is a visible stutter
CONTROL_HTML = ("<!doctype html><title>control: counts animation frames</title><body style='margin:0'><script>"
                "window.__frames=0;(function f(){window.__frames++;requestAnimationFrame(f);})();</script>")

TARGETS: dict[str, dict[str, float]] = {
    "display_lag_p50_ms": {"max": 40.0}, "display_lag_p99_ms": {"max": 100.0}, "js_heap_growth_pct": {"max": 10.0},
    "rows_per_chart_max": {"max": 1.25 * MAX_POINTS},   # ours: the rows of a chart stay near its budget
}

MODES = {
    "quick": dict(warm_s=10.0, window_s=20.0, settle_s=3.0),
    "full": dict(warm_s=15.0, window_s=60.0, settle_s=20.0),
}


log = logger("bench.browser")


# -- /proc -------------------------------------------------------------------------------

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
    return "network" if kind == "utility" and "NetworkService" in text else kind


def cpu_snapshot() -> dict[str, Any]:
    """CPU seconds of this process and all its descendants, the machine's jiffies and the CPU
    pressure total, now (processes that exit before the next snapshot are not counted)."""
    table = process_table()
    ours = descendants(os.getpid(), table) | {os.getpid()}
    return {"wall": time.perf_counter(), "pids": {pid: table[pid][1] for pid in ours if pid in table},
            "machine": machine_jiffies(), "stall": cpu_stall_us()}


def cpu_figures(a: dict[str, Any], b: dict[str, Any], roles: dict[int, str]) -> dict[str, Any]:
    """CPU % (of one core) per role over [a, b]; machine-wide figures in % of one core too (2 cores: at most 200)."""
    span = b["wall"] - a["wall"]
    by_role: dict[str, float] = collections.defaultdict(float)
    ours = 0.0
    for pid, cpu1 in b["pids"].items():
        if pid in a["pids"]:
            ours += cpu1 - a["pids"][pid]
            by_role[roles.get(pid, "other_ours")] += cpu1 - a["pids"][pid]
    out: dict[str, Any] = {k: 100 * v / span for k, v in sorted(by_role.items())}
    out["ours_cpu_pct"] = 100 * ours / span
    ncpu = os.cpu_count() or 1
    if a["machine"] and b["machine"]:
        busy, total, steal = (y - x for x, y in zip(a["machine"], b["machine"]))
        if total > 0:
            out["machine_cpu_pct"] = 100 * ncpu * busy / total
            out["other_cpu_pct"] = max(0.0, out["machine_cpu_pct"] - out["ours_cpu_pct"])
            out["steal_pct"] = 100 * ncpu * steal / total
    if a["stall"] is not None and b["stall"] is not None:
        out["cpu_pressure_pct"] = 100 * (b["stall"] - a["stall"]) / 1e6 / span
    return out


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
                if lport == port and rport:      # the bridge's end: sent, not yet acknowledged
                    out[rport] += tx
                elif rport == port:              # the browser's end: received, not yet read by chromium
                    out[lport] += rx
    except OSError:
        pass
    return dict(out)


# -- the run -----------------------------------------------------------------------------

@dataclass
class Page:
    """A dashboard page (or the control page: ``view`` None) and its renderer processes."""

    label: str
    view: str | None
    page: Any                                   # a bench.cdp.CdpPage
    renderers: set[int] = field(default_factory=set)


class Run:
    def __init__(self, mode: str, settle: bool) -> None:
        self.cfg = dict(MODES[mode])
        self.settler = Settler(self.cfg["settle_s"] if settle else 0.0, log)
        self.name = f"bench-browser-{os.getpid()}"
        self.token = secrets.token_urlsafe(16)
        self.device = DeviceProcess([sys.executable, str(DEVICE_SCRIPT)], self.name, START_TIMEOUT)
        self.browser: Any = None
        self.pages: list[Page] = []
        self.control: Page | None = None
        self.roles: dict[int, str] = {}
        self.client: Child | None = None
        self.sids: dict[str, str] = {}                 # bridge client id -> page label / "reference"
        self.arrival_memo: dict[tuple, float] = {}     # (page, channel, t) -> arrival wall ms
        self.problems: list[str] = []

    # -- setup ----------------------------------------------------------------------------

    def start(self) -> None:
        log(f"device {self.name!r}: examples/robot_arm.py with specs {SPECS.relative_to(REPO)}")
        url = self.device.start(f"port=0,specs={SPECS},name={self.name},token={self.token}")
        self.port = self.device.port
        log(f"dashboard at 127.0.0.1:{self.port} (bridge pid {self.device.bridge_pid})")
        self.browser = Browser(CHROMIUM, CHROMIUM_ARGS, START_TIMEOUT)
        log(f"chromium {self.browser.version}; opening {', '.join('#/' + v for v in VIEWS)} and a control page")
        for view in VIEWS:
            self.pages.append(self.open(view, url + "#/" + view))
        self.control = self.open(None, None)
        for p in self.pages:
            self.wait_view(p)
        # the reference client (bench.clients): one AsyncClient subscribed as the pages are
        budget = START_TIMEOUT + self.cfg["warm_s"] + self.cfg["window_s"] + 60
        self.client = Child.role("bench.clients", "clients", "reference client", {"timeout": budget}, log=log,
                                 call_timeout=START_TIMEOUT)
        self.client.recv()
        sid = self.client.call(op="connect", kind="sio", port=self.port, token=self.token)["sids"][0]
        self.client.call(op="subscribe", kind="sio", subscriptions=[
            {"channels": ["joints"], "rate": 30, "window": 10, "max_points": MAX_POINTS},
            {"channels": ["cloud"], "rate": 30}])
        self.sids[sid] = "reference"
        for p in self.pages:
            sid = p.page.evaluate("() => window.monbridge._internals && window.monbridge._internals.store.sid")
            if sid:
                self.sids[sid] = p.label

    def renderers(self) -> set[int]:
        return {pid for pid in descendants(os.getpid()) if chromium_kind(pid) == "renderer"}

    def open(self, view: str | None, url: str | None) -> Page:
        before = self.renderers()
        page = self.browser.new_page(VIEWPORT["width"], VIEWPORT["height"])
        p = Page(view or "control", view, page)
        if url is None:
            page.set_content(CONTROL_HTML)
        else:
            page.add_init_script(PAGE_JS.read_text())
            page.goto(url, timeout=START_TIMEOUT)
        page.cdp.send("Performance.enable")
        page.cdp.send("HeapProfiler.enable")
        p.renderers = self.renderers() - before   # the renderer that appeared for this page
        return p

    def wait_view(self, p: Page) -> None:
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
                               f"page: {json.dumps(state, default=str)[:2000]}\nerrors: {p.page.errors[-5:]}\n"
                               f"console: {p.page.console[-10:]}") from None
        if isinstance(res, str):
            raise RuntimeError(f"page {p.label}: view {p.view!r}: {res}")

    def assign_roles(self) -> None:
        """Name every process of ours for the CPU figures (anything else we started counts with us)."""
        table = process_table()
        ours = descendants(os.getpid(), table) | {os.getpid()}
        self.roles = {pid: "bench_cpu_pct" for pid in ours}
        self.roles.update({pid: "device_children_cpu_pct" for pid in descendants(self.device.proc.pid, table)})
        self.roles.update({pid: f"chromium_{kind}_cpu_pct" for pid in ours if (kind := chromium_kind(pid))})
        self.roles.update({self.device.proc.pid: "device_cpu_pct", self.device.bridge_pid: "bridge_cpu_pct",
                           self.client.pid: "reference_client_cpu_pct"})

    # -- measuring ------------------------------------------------------------------------

    def drain_all(self) -> list[dict[str, Any]]:
        return [{**p.page.evaluate("() => window.__bench.drain()"), "label": p.label} for p in self.pages]

    def heaps(self, gc: bool) -> list[float]:
        """JSHeapUsedSize of each dashboard page, MB (after a GC of every page if ``gc``)."""
        if gc:
            for p in self.pages + [self.control]:
                p.page.collect_garbage()
        return [p.page.js_heap_mb() for p in self.pages]

    def live_heaps(self) -> list[float]:
        """The heap after GC once Vega has dropped the items of removed rows it keeps until a
        mark has view.cleanThreshold of them (every chart updates at least once a second)."""
        for on, pause in ((True, 1.5), (False, 0.0)):
            for p in self.pages:
                p.page.evaluate("(on) => window.__bench.vegaClean(on)", on)
            time.sleep(pause)
        self.drain_all()
        return self.heaps(gc=True)

    def bridge_api(self, path: str, default: Any) -> Any:
        try:
            return http_json(self.port, path)
        except (OSError, ValueError):
            return default

    def clients(self) -> list[dict[str, Any]]:
        return self.bridge_api("/api/clients", {}).get("clients", [])

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
        log(f"measuring {cfg['window_s']:.0f} s; JS heap after GC (all, live): {[round(h, 1) for h in heap0 + live0]}")
        snap0 = cpu_snapshot()
        t0 = time.monotonic()
        w0 = time.time()
        samples: list[dict[str, Any]] = []
        heap_seen: list[tuple[float, float]] = []   # (s into the window, MB of all pages), no forced GC
        backlog: list[dict[int, int]] = []           # once a second: kernel bytes queued per connection
        queued: list[dict[str, Any]] = []            # once a second: the bridge's outbox per client (packets)
        while (now := time.monotonic()) < t0 + cfg["window_s"]:
            time.sleep(min(SAMPLE_S, t0 + cfg["window_s"] - now))
            samples.extend(self.drain_all())
            backlog.append(socket_backlog(self.port))
            queued.append({c["id"]: (c.get("queued") or 0, sorted(s["channel"] for s in c.get("subscriptions", [])))
                           for c in self.clients()})
            heap_seen.append((time.monotonic() - t0, sum(p.page.js_heap_mb() for p in self.pages)))
        snap1 = cpu_snapshot()
        span = time.monotonic() - t0
        w1 = time.time()
        frames1 = {p.label: p.page.evaluate("() => window.monbridge.frames") for p in self.pages}
        ctl1 = self.control.page.evaluate("() => window.__frames")
        clients1 = self.clients()
        stats = self.bridge_api("/api/stats", {})
        # the page's own ping round trips over its last ~10 s (webui/src/connection.js)
        pings = {p.label: p.page.evaluate("() => window.monbridge.latency()") for p in self.pages}
        samples.extend(self.drain_all())
        heap1 = self.heaps(gc=True)
        live1 = self.live_heaps()
        log(f"JS heap after GC (all, live), MB: {[round(h, 1) for h in heap1 + live1]}")
        # the heap's saw-tooth without forced GCs: its low point per bucket approximates what is live
        buckets: dict[int, float] = {}
        for at, mb in heap_seen:
            buckets[int(at // HEAP_BUCKET_S)] = min(mb, buckets.get(int(at // HEAP_BUCKET_S), math.inf))
        heap_trend = [[(k + 1) * HEAP_BUCKET_S, mb] for k, mb in sorted(buckets.items())]
        out = self.page_figures(samples, span, w0, w1)
        fps = {p.label: (frames1[p.label] - frames0[p.label]) / span for p in self.pages}
        out.update(ui_fps=min(fps.values()), ui_fps_by_page=fps, control_fps=(ctl1 - ctl0) / span)
        out.update(self.heap_figures(heap0, heap1, heap_trend))
        out.update(self.bridge_figures(clients0, clients1, stats, span))
        cpu = cpu_figures(snap0, snap1, self.roles)
        cpu["chromium_cpu_pct"] = sum(v for k, v in cpu.items() if k.startswith("chromium_"))
        cpu["renderer_cpu_by_page"] = self.renderer_cpu(snap0, snap1)
        out["window_cpu_pressure_pct"] = cpu.pop("cpu_pressure_pct", math.nan)
        out.update(cpu)
        device = stats.get("device") or {}
        out.update(reference_lag_ms=self.reference_lags(w0, w1), window_s=span, ping_rtt_ms_by_page=pings,
                   page_errors=[f"{p.label}: {e}" for p in self.pages for e in p.page.errors][:10],
                   device_status_at_end=device.get("status"),
                   connection_at_end={p.label: p.page.evaluate("() => monbridge.connection") for p in self.pages})
        if not out["display_lag_samples"]:
            # nothing reached any page during the window: say what the bridge and the device said
            self.problems.append("no data was applied by any page during the window; device status "
                                 f"{device.get('status')!r}; the device's and bridge's last output:\n"
                                 + self.device.output())
        out.update(js_heap_live_mb_start=sum(live0), js_heap_live_mb_end=sum(live1),
                   js_heap_live_growth_pct=growth_pct(sum(live0), sum(live1)),
                   js_heap_live_mb_by_page={p.label: [a, b] for p, a, b in zip(self.pages, live0, live1)},
                   vega_removed_items_mb_end=sum(heap1) - sum(live1))
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
            # CPU the GPU process spent per cloud frame drawn (it also composites: an upper bound)
            out["gpu_process_ms_per_cloud_frame"] = 10 * out["chromium_gpu_cpu_pct"] / cloud_fps
        out["notes"] = notes(out)
        return out

    def page_figures(self, samples: list[dict[str, Any]], span: float, w0: float, w1: float) -> dict[str, Any]:
        """What the pages recorded (bench/browser_page.js) in the window [w0, w1)."""
        lag: dict[str, list[float]] = collections.defaultdict(list)       # page/channel -> ms
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
        rows: dict[str, list[int]] = collections.defaultdict(list)       # page/view -> rows() once a second
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
                got = arrivals_by_t.get((ch, t)) or self.arrival_memo.get((label, ch, t))
                if got is not None:
                    page_part[f"{label}/{ch}"].append(wall - got)
            for ch_t, wall in arrivals_by_t.items():   # a message may be applied in the next drain
                self.arrival_memo[(label,) + ch_t] = wall
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
        chart_rows = [max(v) for k, v in rows.items() if not k.endswith("/" + SCENE_ID)]
        return {
            "display_lag_p50_ms": percentile(pooled, 50), "display_lag_p99_ms": percentile(pooled, 99),
            "display_lag_max_ms": max(pooled) if pooled else math.nan, "display_lag_samples": len(pooled),
            "display_lag_ms": {ch: dist(v) for ch, v in sorted(lag.items())},
            "arrival_lag_ms": {ch: dist(v) for ch, v in sorted(arrival.items())},
            "page_share_ms": {ch: dist(v) for ch, v in sorted(page_part.items())},
            "vega_done_lag_ms": dist(vega_done_lag), "vega_run_ms": dist(vega_visible),
            "vega_hidden_run_ms": dist(vega_hidden), "vega_hidden_runs_per_s": len(vega_hidden) / span,
            "scene_render_ms": dist(renders), "scene_gpu_busy_skips_per_s": gpu_waits / span,
            "frame_interval_p99_ms": {k: percentile(v, 99) for k, v in intervals.items()},
            "long_frames_per_s": {k: sum(1 for x in v if x > LONG_FRAME_MS) / span for k, v in intervals.items()},
            "longtask_ms_per_s": {k: v / span for k, v in longtask.items()},
            "cloud_frames_applied_per_s": applied_count.get("cloud", 0) / span,
            "joints_updates_applied_per_s": applied_count.get("joints", 0) / span,
            "messages_received_per_s": {ch: n / span for ch, n in sorted(received.items())},
            "received_mb_per_s": sum(received_bytes.values()) / span / 2**20,
            "rows_by_view": {k: {"min": min(v), "max": max(v), "last": v[-1]} for k, v in sorted(rows.items())},
            "rows_per_chart_max": max(chart_rows) if chart_rows else math.nan, "view_errors": sorted(errors),
        }

    def heap_figures(self, heap0: list[float], heap1: list[float], trend: list[list[float]]) -> dict[str, Any]:
        return {
            "js_heap_mb_start": sum(heap0), "js_heap_mb_end": sum(heap1),
            "js_heap_growth_pct": growth_pct(sum(heap0), sum(heap1)),
            "js_heap_mb_by_page": {p.label: [a, b] for p, a, b in zip(self.pages, heap0, heap1)},
            "js_heap_trend_mb": trend,   # [end of each 10 s of the window, lowest MB of all pages], no forced GC
        }

    def bridge_figures(self, clients0: dict[str, Any], clients1: list[dict[str, Any]], stats: dict[str, Any],
                       span: float) -> dict[str, Any]:
        """The bridge's side, per page (client): sent and skipped per subscription over the window."""
        per_client = {}
        for c in clients1:
            subs0 = {s["channel"]: s for s in clients0.get(c["id"], {}).get("subscriptions", [])}
            subs = {}
            for s in c.get("subscriptions", []):
                a = subs0.get(s["channel"], {"sent": 0, "skipped": 0})
                subs[s["channel"]] = {"rate": s.get("rate"), "sent_per_s": (s["sent"] - a["sent"]) / span,
                                      "skipped": s["skipped"] - a["skipped"]}
            per_client[self.sids.get(c["id"], c["id"])] = {"subscriptions": subs, "queued_at_end": c.get("queued")}
        chans = {c["name"]: c for c in stats.get("channels", [])}
        return {
            "bridge_clients": per_client,
            "bridge_skipped": sum(s["skipped"] for c in per_client.values() for s in c["subscriptions"].values()),
            "device_publish_per_s": {n: chans[n].get("publish_rate") for n in CHANNELS if n in chans},
            "bridge_relay_tick_ms": (stats.get("relay", {}).get("tick_seconds") or math.nan) * 1000,
        }

    def renderer_cpu(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        span = b["wall"] - a["wall"]
        out = {}
        for p in self.pages + [self.control]:
            used = [b["pids"][pid] - a["pids"][pid] for pid in p.renderers if pid in a["pids"] and pid in b["pids"]]
            if used:
                out[p.label] = 100 * max(used) / span
        return out

    def reference_lags(self, w0: float, w1: float) -> dict[str, Any]:
        if self.client is None:
            return {}
        try:
            lags = self.client.call(op="lags", kind="sio", t0=w0, t1=w1)["lags"]
        except (TimeoutError, RuntimeError) as exc:
            self.problems.append(f"no lags from the reference client: {exc}")
            return {}
        return {ch: dist(v) for ch, v in sorted(lags.items())}

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> list[str]:
        problems: list[str] = []
        if self.client is not None:
            self.client.stop()
        if self.browser is not None:
            try:
                self.browser.close()
            except Exception as exc:
                problems.append(f"closing chromium: {exc!r}")
        problems += self.device.stop()
        left = [pid for pid in descendants(os.getpid()) if chromium_kind(pid) and alive(pid)]
        if left:
            problems.append(f"chromium processes still running: {left}")
        return problems


def notes(out: dict[str, Any]) -> list[str]:
    """Plain-language flags for reading the figures (docs/performance.md explains them)."""
    found = []
    if out.get("other_cpu_pct", 0.0) > 25:
        found.append(f"other processes used {out['other_cpu_pct']:.0f}% of a core: figures measured under load")
    mean, peak = out.get("bridge_outbox_packets", {}).get(SCENE_ID, (0, 0))
    if peak >= 48:
        found.append(f"the cloud page drew {out['cloud_frames_applied_per_s']:.1f} of 30 frames/s; the bridge's "
                     f"outbox for it held {mean:.0f} packets on average (peak {peak}): frames waited in queues")
    for label, fps in out.get("ui_fps_by_page", {}).items():
        if fps < 0.5 * out.get("control_fps", 60):
            found.append(f"page {label} ran {fps:.0f} frames/s, the empty control page {out['control_fps']:.0f}: "
                         f"its main thread was busy or blocked")
    removed = out.get("vega_removed_items_mb_end", 0.0)
    if out.get("js_heap_growth_pct", 0) > 10 and removed > 0.5 * (out["js_heap_mb_end"] - out["js_heap_mb_start"]):
        found.append(f"{removed:.1f} MB of the heap at the end were Vega's removed items: see js_heap_live_growth_pct")
    return found


def run(mode: str, settle: bool = True) -> dict[str, Any]:
    require_browser("bench.browser")
    clock = Clock()
    r = Run(mode, settle)
    r.settler()
    stall0, t_run0 = cpu_stall_us(), time.perf_counter()
    clock.lap("settle")
    figures: dict[str, Any] = {}
    version = None
    try:
        r.start()
        version = r.browser.version
        clock.lap("start")
        figures = r.measure()
        clock.lap("warm_and_measure")
    finally:
        problems = r.problems + r.close()
        clock.lap("stop")
        removed = remove_segments(f"monbridge.{r.name}.")
        if removed:
            problems.append(f"removed {len(removed)} segment(s) the device left: {removed}")
        for p in problems:
            log(p)
    result: dict[str, Any] = {
        "bench": "browser", "quick": mode == "quick", "layout": SPECS.name, "views": VIEWS, "only": None,
        "diagnostics": None,
        "git": git_revision("bridge", "device_agent", "webui/src"), **clock.machine(),
        "chromium": version, "viewport": VIEWPORT, "warmup_s": r.cfg["warm_s"], "loadavg_1m": clock.loadavg(),
        # the share of the run (device start to stop) during which some task waited for a CPU
        **clock.pressure(since=t_run0, stall_before=stall0),
        **figures, "settle": r.settler.report(), "phase_s": clock.phases,
    }
    return finish(result, TARGETS, clock, "monbridge.bench-browser-", missing_fails=True, problems=problems)


def main(argv: list[str] | None = None) -> int:
    ap = arguments("bench.browser", __doc__, "10 s warm-up, 20 s window (under 60 s in all)")
    args = ap.parse_args(argv)
    exit_on_sigterm()   # the finally blocks stop the device, its bridge and chromium
    result = round_figures(run("quick" if args.quick else "full", not args.no_settle))
    report(result, args.json, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
