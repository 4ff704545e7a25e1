"""Helpers for the real-browser tests: Debian's chromium driven by Playwright (Python, sync API).

Builds on tests/conftest.py (``launch``, ``new_device_name``, the teardown guard that checks
for leftover processes and /dev/shm segments) and tests/bridge_support.py (``http``,
``parse_url``, ``wait_stderr``).

Fixtures:
    chromium        session-scoped Browser: /usr/bin/chromium headless with CHROMIUM_ARGS
                    (WebGL through SwiftShader, no GPU, no sandbox). Skips the browser
                    tests, with the reason, only when /usr/bin/chromium is absent.
    dashboards      ``dashboards.open(url)`` -> Dashboard: a page in a new browser context
                    (its own cookies/storage: a second "user"), waited until the page's
                    connection is "live". Contexts close at teardown.
    devices         ``devices.start(specs_dir, ...)`` -> LiveDevice: WAVE_DEVICE launched with
                    ``MON=port=...,token=...,specs=<dir>`` (it launches its bridge). Devices
                    still running at teardown are stopped gracefully, before the conftest
                    guard checks processes and segments.

Dashboard wraps a Playwright Page and reads the page's ``window.monbridge`` test hooks
(webui/src/hooks.js). Every wait is a ``page.wait_for_function`` with a generous deadline;
nothing sleeps to synchronise. Screenshots go to ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bridge_support import BridgeURL, http, parse_url
from conftest import REPO, START_TIMEOUT, DeviceProcess, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",
]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
STATIC = REPO / "bridge" / "static"
WAIT_MS = 45_000        # any single browser-side wait (2 busy cores, software WebGL)
VIEWPORT = {"width": 1280, "height": 800}


# -- the browser ----------------------------------------------------------------------------

_shared: dict[str, Any] = {"users": 0, "playwright": None, "browser": None}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """The one browser of the session.

    Each test module imports this fixture, so pytest may set it up once per module; they
    share one Playwright and one Browser (the sync API allows one Playwright per thread),
    closed when the last user is torn down.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package (apt-get install chromium) "
                    f"to run the browser tests; never `playwright install`")
    if not (STATIC / "app.js").exists() or not (STATIC / "index.html").exists():
        pytest.fail(f"the web UI is not built ({STATIC}/app.js missing): run `make js` first", pytrace=False)
    if _shared["browser"] is None:
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        try:
            _shared["browser"] = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        except BaseException:
            pw.stop()
            raise
        _shared["playwright"] = pw
    _shared["users"] += 1
    try:
        yield _shared["browser"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            browser, pw = _shared["browser"], _shared["playwright"]
            _shared["browser"] = _shared["playwright"] = None
            try:
                browser.close()
            finally:
                pw.stop()


# -- pages ------------------------------------------------------------------------------------

# JS helpers evaluated in the page. `id` is a view id.
_JS_VIEW = "(id) => { const v = window.monbridge.views[id]; return v ? {kind: v.kind, rows: v.rows(), updates: v.updates, error: v.error} : null; }"

# Count the canvas pixels that differ from its most common colour (the background). The
# drawing buffer is not preserved, so the view draws afresh and copies in one task (pixels()).
_JS_CANVAS_PIXELS = """(id) => {
  const v = window.monbridge.views[id];
  const img = v && v.pixels();
  if (!img) return null;
  const c = {width: img.width, height: img.height};
  const d = img.data;
  const counts = new Map();
  for (let i = 0; i < d.length; i += 4) {
    const key = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  let bg = 0, best = -1;
  for (const [k, n] of counts) if (n > best) { best = n; bg = k; }
  const br = bg >> 16, bgg = (bg >> 8) & 255, bb = bg & 255;
  let other = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - br) + Math.abs(d[i + 1] - bgg) + Math.abs(d[i + 2] - bb) > 24) other++;
  }
  return {width: c.width, height: c.height, background: [br, bgg, bb], other};
}"""

# Record every change of the banner's data-state (connecting, live, offline, disconnected...).
_JS_WATCH_BANNER = """() => {
  if (window.__bannerStates) return;
  const b = document.getElementById("mb-banner");
  window.__bannerStates = [b.dataset.state];
  new MutationObserver(() => {
    const s = b.dataset.state;
    if (window.__bannerStates[window.__bannerStates.length - 1] !== s) window.__bannerStates.push(s);
  }).observe(b, {attributes: true, attributeFilter: ["data-state"]});
}"""


class Dashboard:
    """One dashboard page (in its own browser context) and what the page reported."""

    def __init__(self, context: Any, page: Any, url: BridgeURL, label: str) -> None:
        self.context = context
        self.page = page
        self.url = url
        self.label = label
        self.page_errors: list[str] = []   # uncaught exceptions in the page
        self.console: list[str] = []       # console messages (warnings and errors), for reports
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None)

    # -- reading the hooks

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def connection(self) -> str:
        return self.js("() => window.monbridge.connection")

    def view(self, view_id: str) -> dict[str, Any] | None:
        """{kind, rows, updates, error} of a view as the page has it, or None."""
        return self.js(_JS_VIEW, view_id)

    def view_ids(self) -> list[str]:
        return self.js("() => Object.keys(window.monbridge.views)")

    def tab_ids(self) -> list[str]:
        """Ids of the tab buttons, in display order (Status included, last)."""
        return self.js("() => [...document.querySelectorAll('#mb-tabs .mb-tab')].map((t) => t.dataset.id)")

    def state(self) -> dict[str, Any]:
        return self.js("() => ({...window.monbridge.state})")

    def notices(self, view_id: str) -> list[str]:
        return self.js("(id) => [...document.querySelectorAll(`.mb-panel[data-id=\"${CSS.escape(id)}\"] .mb-notice`)]"
                       ".map((n) => n.textContent)", view_id)

    def canvas_pixels(self, view_id: str) -> dict[str, Any] | None:
        return self.js(_JS_CANVAS_PIXELS, view_id)

    def describe(self, view_id: str | None = None) -> str:
        """What the page knows, for assertion messages."""
        try:
            info = {"connection": self.connection(), "activeTab": self.js("() => window.monbridge.activeTab"),
                    "views": self.js("() => Object.fromEntries(Object.entries(window.monbridge.views).map("
                                     "([id, v]) => [id, {rows: v.rows(), updates: v.updates, error: v.error}]))")}
            if view_id is not None:
                info["notices"] = self.notices(view_id)
        except Exception as exc:  # the page may be gone
            info = {"unavailable": repr(exc)}
        info["page_errors"] = self.page_errors[-5:]
        info["console"] = self.console[-10:]
        return f"[{self.label}] " + json.dumps(info, default=str)

    # -- waiting

    def wait(self, expression: str, arg: Any = None, timeout_ms: int = WAIT_MS, what: str = "",
             view_id: str | None = None) -> Any:
        """``page.wait_for_function(expression, arg)``; on timeout fail with what the page knows."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            return self.page.wait_for_function(expression, arg=arg, timeout=timeout_ms, polling=50).json_value()
        except PlaywrightTimeout:
            raise AssertionError(f"timed out after {timeout_ms / 1000} s waiting for {what or expression}; "
                                 f"{self.describe(view_id)}") from None

    def wait_connection(self, state: str, timeout_ms: int = WAIT_MS) -> None:
        self.wait("(s) => window.monbridge && window.monbridge.connection === s", state, timeout_ms,
                  f"connection {state!r}")

    def wait_view(self, view_id: str, timeout_ms: int = WAIT_MS) -> dict[str, Any]:
        """Wait for the view to exist in the page (its file was listed) and its tab button."""
        self.wait("(id) => window.monbridge.views[id] && document.querySelector(`#mb-tabs .mb-tab[data-id=\"${CSS.escape(id)}\"]`)",
                  view_id, timeout_ms, f"view {view_id!r} and its tab", view_id)
        return self.view(view_id)

    def wait_view_gone(self, view_id: str, timeout_ms: int = WAIT_MS) -> None:
        self.wait("(id) => !(id in window.monbridge.views) && !document.querySelector(`#mb-tabs .mb-tab[data-id=\"${CSS.escape(id)}\"]`)"
                  " && !document.querySelector(`.mb-panel[data-id=\"${CSS.escape(id)}\"]`)",
                  view_id, timeout_ms, f"view {view_id!r}, its tab and panel to be removed")

    def open_tab(self, view_id: str) -> None:
        """Click the tab button (a user's way) and wait until it is the active tab."""
        self.page.locator(f'#mb-tabs .mb-tab[data-id="{view_id}"]').click()
        self.wait("(id) => window.monbridge.activeTab === id", view_id, what=f"tab {view_id!r} active", view_id=view_id)

    def wait_error(self, view_id: str, timeout_ms: int = WAIT_MS) -> str:
        return self.wait("(id) => { const v = window.monbridge.views[id]; return v && v.error; }", view_id,
                         timeout_ms, f"view {view_id!r} to show an error", view_id)

    def wait_no_error(self, view_id: str, timeout_ms: int = WAIT_MS) -> None:
        """The view exists without error and has finished mounting (a Vega view or a canvas)."""
        self.wait("(id) => { const v = window.monbridge.views[id]; if (!v || v.error) return false;"
                  " const p = document.querySelector(`.mb-panel[data-id=\"${CSS.escape(id)}\"]`);"
                  " return !!(p && p.querySelector('canvas')); }", view_id, timeout_ms,
                  f"view {view_id!r} mounted without error", view_id)

    def wait_rows_grow(self, view_id: str, timeout_ms: int = WAIT_MS) -> tuple[dict[str, Any], dict[str, Any]]:
        """Data arrives in the (visible) view: rows appear, then more changesets are applied.

        First rows() > 0; then, from that point, rows() grows or at least 3 more changesets
        with new data are applied (a full window keeps its row count roughly constant while
        data streams through it; a frame dataset is replaced whole). Returns both samples.
        """
        self.wait("(id) => { const v = window.monbridge.views[id]; return v && !v.error && v.rows() > 0 && v.updates > 0; }",
                  view_id, timeout_ms, f"rows in view {view_id!r}", view_id)
        first = self.view(view_id)
        self.wait("([id, r, u]) => { const v = window.monbridge.views[id]; return v && !v.error && v.rows() > 0"
                  " && (v.rows() > r || v.updates >= u + 3); }", [view_id, first["rows"], first["updates"]],
                  timeout_ms, f"more rows / changesets in view {view_id!r} after {first}", view_id)
        return first, self.view(view_id)

    def wait_scene_pixels(self, view_id: str, minimum: int = 200, timeout_ms: int = WAIT_MS) -> dict[str, Any]:
        """Wait until the scene's canvas has at least ``minimum`` pixels unlike its background."""
        return self.wait(f"([id, n]) => {{ const r = ({_JS_CANVAS_PIXELS})(id); return r && r.other >= n ? r : false; }}",
                         [view_id, minimum], timeout_ms, f"{minimum} non-background pixels in scene {view_id!r}",
                         view_id)

    def watch_banner(self) -> None:
        self.js(_JS_WATCH_BANNER)

    def banner_states(self) -> list[str]:
        return self.js("() => window.__bannerStates || []")

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")
        self.page.screenshot(path=str(path))
        return path


@dataclass
class Dashboards:
    browser: Any
    opened: list[Dashboard] = field(default_factory=list)

    def open(self, url: BridgeURL, fragment: str = "", label: str | None = None,
             wait_live: bool = True, query: str = "") -> Dashboard:
        """A new browser context (a separate user) with the dashboard at ``url`` (+ ``&query``,
        + ``#/id``)."""
        context = self.browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        dash = Dashboard(context, page, url, label or f"page{len(self.opened) + 1}")
        self.opened.append(dash)
        page.goto(url.url + (f"&{query}" if query else "") + fragment, wait_until="load")
        dash.wait("() => window.monbridge !== undefined", what="window.monbridge (the dashboard bundle ran)")
        dash.watch_banner()
        if wait_live:
            dash.wait_connection("live")
        return dash

    def close(self) -> None:
        for d in self.opened:
            try:
                d.context.close()
            except Exception:
                pass


@pytest.fixture
def dashboards(chromium: Any) -> Iterator[Dashboards]:
    d = Dashboards(chromium)
    yield d
    d.close()


# -- a small device with a temp specs dir -----------------------------------------------------

# Records channel `wave` (t, value) at ~100 Hz and `wave2` (t, value, seq) published right
# after it, frame channel `cloud` (2000 x 3 f4) at ~20 Hz,
# state `gain`, command set_gain(value: float), coalesced. Argument 1: its name. Prints
# "url <URL>" (mon.wait_url()) then "ready"; stops on EOF or "quit" on stdin, or on SIGTERM.
WAVE_DEVICE = r"""
import math, sys, threading, time
import numpy as np
import device_agent

name = sys.argv[1]
mon = device_agent.start(name)
wave = mon.records("wave", {"t": "f8", "value": "f4"}, capacity=8192)
wave2 = mon.records("wave2", {"t": "f8", "value": "f4", "seq": "i8"}, capacity=8192)
cloud = mon.frame("cloud", shape=(2000, 3), dtype="f4")
gain = 1.0
mon.state.update(gain=gain)


@mon.command(coalesce=True)
def set_gain(value: float) -> float:
    "Set the wave's amplitude."
    global gain
    gain = value
    mon.state.update(gain=value)
    return value


stop = threading.Event()
rng = np.random.default_rng(0)
ball = rng.normal(0.0, 1.0, (2000, 3)).astype("f4")
ball /= np.linalg.norm(ball, axis=1, keepdims=True)


def run():
    k, next_t = 0, time.monotonic()
    while not stop.is_set():
        now = time.time()
        wave.publish(t=now, value=gain * math.sin(2 * math.pi * now))
        wave2.publish(t=now, value=-gain * math.sin(2 * math.pi * now), seq=k)
        if k % 5 == 0:
            cloud.publish(ball * (0.8 + 0.2 * math.sin(now)), t=now)
        k += 1
        next_t += 0.01
        stop.wait(max(0.0, next_t - time.monotonic()))


thread = threading.Thread(target=run, daemon=True)
thread.start()
print("url", mon.wait_url(30), flush=True)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
stop.set()
thread.join()
mon.close()
"""

WAVE_SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
    "usermeta": {"title": "Wave", "order": 10, "window": {"seconds": 10}, "rate": 30, "max_points": 2000,
                 "controls": {"gain": {"command": "set_gain", "arg": "value", "state": "gain"}}},
    "width": "container", "height": 240, "autosize": {"type": "fit-x", "contains": "padding"},
    "data": {"name": "wave"},
    "params": [{"name": "gain", "value": 1.0, "bind": {"input": "range", "min": 0, "max": 5, "step": 0.1, "name": "gain"}}],
    "mark": "line",
    "encoding": {"x": {"field": "time", "type": "temporal"},
                 "y": {"field": "value", "type": "quantitative", "scale": {"domain": [-5, 5]}}},
}

# Only the points: no grid or axes, so any non-background pixel is drawn from data.
CLOUD_SCENE = {
    "title": "Cloud", "order": 20, "background": "#000000",
    "camera": {"position": [2.5, 2.0, 2.5], "target": [0, 0, 0]},
    "objects": [{"type": "points", "channel": "cloud", "size": 0.06, "color": "#ffcc33"}],
}


def write_spec(directory: Path, filename: str, content: Any) -> Path:
    """Write a view file atomically (a temp name the bridge ignores, then rename)."""
    path = directory / filename
    tmp = directory / f".{filename}.tmp"
    tmp.write_text(content if isinstance(content, str) else json.dumps(content, indent=1))
    os.replace(tmp, path)
    return path


@dataclass
class LiveDevice:
    proc: DeviceProcess
    name: str
    url: BridgeURL
    specs: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def api(self, path: str) -> Any:
        status, _, body = http(self.url, path)
        assert status == 200, (path, status, body)
        return body

    def terminate(self) -> int:
        """SIGTERM the device (its bridge exits with it); wait for both; return the exit code."""
        if self.proc.proc.poll() is None:
            self.proc.proc.send_signal(signal.SIGTERM)
        return self.proc.wait_gone(START_TIMEOUT)


@dataclass
class Devices:
    launch: Callable[..., DeviceProcess]
    new_name: Callable[[], str]
    started: list[LiveDevice] = field(default_factory=list)

    def start(self, specs: Path, name: str | None = None, port: int = 0, token: str | None = None) -> LiveDevice:
        """WAVE_DEVICE with MON=port=<port>,token=<token>,specs=<specs>; waits for its URL."""
        name = name or self.new_name()
        token = token or secrets.token_urlsafe(12)
        proc = self.launch(WAVE_DEVICE, name, mon=f"port={port},token={token},specs={specs}", ready=None)
        url = proc.expect("url", START_TIMEOUT)
        assert url != "None", f"the device printed no bridge URL: {proc.describe()}"
        proc.expect("ready", START_TIMEOUT)
        dev = LiveDevice(proc, name, parse_url(url), specs)
        assert dev.url.token == token and (port == 0 or dev.url.port == port), url
        self.started.append(dev)
        return dev

    def stop_all(self) -> list[str]:
        """Gracefully stop what still runs (EOF on stdin), kill stragglers; return problems.

        A device stopped here must exit with 0; no device (nor the bridge it launched, which
        shares its stderr) may have printed a traceback.
        """
        problems = []
        running = [d for d in self.started if d.proc.proc.poll() is None]
        for dev in running:
            try:
                dev.proc.proc.stdin.close()
            except OSError:
                pass
        for dev in self.started:
            try:
                code = dev.proc.wait_gone(START_TIMEOUT)
            except AssertionError as exc:
                problems.append(str(exc))
                dev.proc.kill_group()
                try:
                    dev.proc.proc.wait(START_TIMEOUT)
                except Exception:
                    pass
                continue
            if dev in running and code != 0:
                problems.append(f"device {dev.pid} exited with {code} on EOF: {dev.proc.describe()}")
            if "Traceback" in "".join(dev.proc.stderr):
                problems.append(f"device {dev.pid} or its bridge printed a traceback: {dev.proc.describe()}")
        return problems


@pytest.fixture
def devices(launch: Callable[..., DeviceProcess], new_device_name: Callable[[], str]) -> Iterator[Devices]:
    d = Devices(launch, new_device_name)
    yield d
    problems = d.stop_all()   # then conftest's guard: stray processes, /dev/shm leftovers
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def specs_dir(tmp_path: Path) -> Path:
    """A temp specs dir holding wave.vl.json and cloud.scene.json."""
    d = tmp_path / "specs"
    d.mkdir()
    write_spec(d, "wave.vl.json", WAVE_SPEC)
    write_spec(d, "cloud.scene.json", CLOUD_SCENE)
    return d


def state_value(dev: LiveDevice, key: str) -> Any:
    return dev.api("/api/state")["values"].get(key)


def wait_state(dev: LiveDevice, key: str, value: Any, timeout: float = 30.0) -> None:
    """Poll GET /api/state until ``key`` equals ``value``."""
    wait_for(lambda: state_value(dev, key) == value, timeout,
             f"GET /api/state: {key} == {value!r} (now {state_value(dev, key)!r})", interval=0.05)
