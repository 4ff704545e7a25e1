"""The dashboard in chromium when things go wrong: a spec whose ``data.url`` cannot be loaded,
markup in everything a spec file, the device or another client supplies, and a device that is
killed and restarted under the same name beneath an open page (a bridge started by hand).

Each test starts a bridge by hand (``mb.serve(name, "--specs", DIR)``) and its device with
``MON=bridge=0``; the conftest guard checks that no process and no /dev/shm segment is left.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from bridge_support import BridgeURL, Device, http, mb, wait_attached  # noqa: F401  (mb: fixture)
from browser_support import (  # noqa: F401  (chromium, dashboards: fixtures)
    VIEWPORT,
    WAIT_MS,
    Dashboard,
    Dashboards,
    chromium,
    dashboards,
    write_spec,
)
from conftest import segments_of, wait_for

# A line chart of the DEVICE's `telemetry` channel (t = 1000 + seq / 1000, so device time
# starts again at 1000 when the device restarts).
TELEMETRY_SPEC = {
    "usermeta": {"title": "Telemetry", "order": 1, "window": {"seconds": 5}, "rate": 30},
    "width": "container", "height": 200, "autosize": {"type": "fit-x", "contains": "padding"},
    "data": {"name": "telemetry"},
    "mark": "line",
    "encoding": {"x": {"field": "t", "type": "quantitative", "scale": {"zero": False}},
                 "y": {"field": "value", "type": "quantitative"}},
}


def url_spec(url: str, fmt: dict[str, Any] | None = None) -> dict[str, Any]:
    """A bar chart of a dataset loaded from ``url`` (no channel)."""
    data: dict[str, Any] = {"url": url}
    if fmt:
        data["format"] = fmt
    return {"data": data, "mark": "bar",
            "encoding": {"x": {"field": "a", "type": "nominal"}, "y": {"field": "b", "type": "quantitative"}}}


def start(mb, specs: Path, *bridge_args: str) -> tuple[Any, Device]:
    """A bridge started by hand on ``specs`` and a DEVICE (MON=bridge=0) it has attached to."""
    name = mb.new_name()
    bridge = mb.serve(name, "--specs", str(specs), *bridge_args)
    dev = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, dev.pid)
    return bridge, dev


def open_tab(dash: Dashboard, view_id: str) -> None:
    """Click a tab whose id may hold any character (Dashboard.open_tab puts it in a selector)."""
    dash.js("(id) => document.querySelector(`#mb-tabs .mb-tab[data-id=\"${CSS.escape(id)}\"]`).click()", view_id)
    dash.wait("(id) => window.monbridge.activeTab === id", view_id, what=f"tab {view_id!r} active", view_id=view_id)


def shown_error(dash: Dashboard, view_id: str) -> str | None:
    """The text of the view's error box if it is visible (its tab must be open), else None."""
    return dash.js("(id) => { const p = document.querySelector(`.mb-panel[data-id=\"${CSS.escape(id)}\"]`);"
                   " const e = p && p.querySelector('.mb-view-error');"
                   " return e && !e.hidden && e.offsetHeight > 0 ? e.textContent : null; }", view_id)


# -- A: data.url that cannot be loaded ------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_data_url_that_cannot_be_loaded_says_so_in_its_tab(mb, dashboards: Dashboards, tmp_path: Path):
    # a port that refuses connections: bound for the whole test, never listening
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/data.json"
        specs = tmp_path / "specs"
        specs.mkdir()
        write_spec(specs, "telemetry.vl.json", TELEMETRY_SPEC)
        write_spec(specs, "missing.vl.json", url_spec("no-such-data.json"))              # the bridge: 404
        write_spec(specs, "notjson.vl.json", url_spec("static/app.css", {"type": "json"}))  # 200, CSS
        write_spec(specs, "unreachable.vl.json", url_spec(dead))
        bridge, dev = start(mb, specs)
        dev.request("stream 100", "streaming")
        dash = dashboards.open(bridge.url, "#/telemetry")
        base = bridge.url.base
        expected = {
            "missing": [f"data.url 'no-such-data.json' ({base}/no-such-data.json) could not be loaded", "HTTP 404"],
            "notjson": [f"data.url 'static/app.css' ({base}/static/app.css) was loaded but could not be read",
                        "JSON"],
            "unreachable": [f"data.url '{dead}' could not be loaded: no response"],
        }
        for vid, words in expected.items():
            message = dash.wait_error(vid)
            for w in words:
                assert w in message, (vid, message)
            open_tab(dash, vid)
            shown = shown_error(dash, vid)
            assert shown and f"{vid}.vl.json: this view cannot be shown" in shown and words[0] in shown, (vid, shown)
            assert "relative URL is resolved against the dashboard page" in shown, shown
            dash.wait("(id) => document.querySelector(`#mb-tabs [data-id=\"${id}\"]`).classList.contains('mb-tab-error')",
                      vid, what=f"the error mark on tab {vid!r}")
            dash.screenshot(f"faults-data-url-{vid}")

        # the rest of the dashboard is unaffected: the streaming chart runs, without error
        open_tab(dash, "telemetry")
        dash.wait_no_error("telemetry")
        dash.wait_rows_grow("telemetry")
        dash.wait_connection("live")
        assert not dash.page_errors, dash.page_errors


# -- B: markup from specs, the device and other clients is text -----------------------------

IMG = '<img src=x onerror="window.__pwned=1">'
BOLD = "<b>bold</b>"
HOSTILE = IMG + BOLD
IMAGE_FIELD = 'data:x" onerror="window.__pwned=1" x="'   # escapes an attribute if only < and & are escaped

# Names (device, channels, commands) are restricted to [A-Za-z0-9_-]: everything free-form
# carries markup. Streams an event carrying markup (and an `image` field) at 20 Hz.
HOSTILE_DEVICE = r"""
import sys, threading
import device_agent

IMG = '<img src=x onerror="window.__pwned=1">'
BOLD = "<b>bold</b>"
mon = device_agent.start(sys.argv[1])
log = mon.events("log")
mon.state.update({IMG: BOLD, "note": IMG + BOLD})


@mon.command
def boom():
    "Fail with markup in the message."
    raise ValueError(IMG + BOLD)


stop = threading.Event()


def run():
    while not stop.is_set():
        log.publish({"msg": IMG + BOLD, "image": 'data:x" onerror="window.__pwned=1" x="', IMG: BOLD})
        stop.wait(0.05)


thread = threading.Thread(target=run, daemon=True)
thread.start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
stop.set()
thread.join()
mon.close()
"""

HOSTILE_SPEC = {
    "usermeta": {
        "title": HOSTILE, "order": 1, "window": {"rows": 5}, "rate": 10,
        "buttons": [{"command": "boom", "label": HOSTILE}],
        IMG: 1,                                                        # an unknown key: a notice
        # vega-embed's own usermeta options: not applied (actions menu, HTML source header)
        "embedOptions": {"actions": True, "sourceHeader": IMG, "renderer": "svg", "tooltip": True},
    },
    "title": HOSTILE,
    "width": 300, "height": 200,
    "layer": [
        {"data": {"name": "log"},
         "mark": {"type": "point", "filled": True, "size": 3000, "tooltip": {"content": "data"}},
         "encoding": {"x": {"value": 60}, "y": {"value": 60}}},
        {"data": {"name": IMG}, "mark": "point",                     # no such channel: a notice
         "encoding": {"x": {"value": 10}, "y": {"value": 10}}},
    ],
}

# Markup in a view's ids and messages: file names, a compile error, a scene error.
HOSTILE_FILES: dict[str, Any] = {
    f"{IMG}.vl.json": '{"mark": ',                                   # not JSON: the id is the tab label
    "<b>bold.vl.json": {"data": {"name": "log"}, "mark": BOLD},     # Vega-Lite cannot compile it
    "scene.scene.json": {"title": HOSTILE, "objects": [{"type": BOLD}]},
}

# Before the page's own script runs: record every <img>, <b> or [onerror] element that ever
# enters the document (also ones removed again).
_JS_WATCH_MARKUP = """
window.__markup = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType !== 1) continue;
    for (const e of [n, ...n.querySelectorAll("*")]) {
      if (e.tagName === "IMG" || e.tagName === "B" || e.hasAttribute("onerror")) window.__markup.push(e.outerHTML.slice(0, 300));
    }
  }
}).observe(document, {childList: true, subtree: true});
"""

# Where to put the pointer to hover the hostile view's point: its plot origin + (60, 60).
_JS_POINT = """(id) => {
  const view = window.monbridge._internals.tabs.views()[id].result.view;
  const canvas = document.querySelector(`.mb-panel[data-id="${CSS.escape(id)}"] canvas`);
  const r = canvas.getBoundingClientRect();
  const [ox, oy] = view.origin();
  return [r.left + ox + 60, r.top + oy + 60];
}"""


def open_watched(dashboards: Dashboards, url: BridgeURL, fragment: str) -> Dashboard:
    """Dashboards.open with _JS_WATCH_MARKUP installed before the page's scripts."""
    context = dashboards.browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(_JS_WATCH_MARKUP)
    page = context.new_page()
    dash = Dashboard(context, page, url, "watched")
    dashboards.opened.append(dash)
    page.goto(url.url + fragment, wait_until="load")
    dash.wait("() => window.monbridge !== undefined", what="window.monbridge (the dashboard bundle ran)")
    dash.watch_banner()
    dash.wait_connection("live")
    return dash


def hover_tooltip(dash: Dashboard, view_id: str, attempts: int = 10) -> str:
    """Point at the view's point until Vega shows its tooltip; return the tooltip's text."""
    shown = "() => { const t = document.getElementById('vg-tooltip-element'); return t && t.classList.contains('visible'); }"
    for attempt in range(1, attempts + 1):
        x, y = dash.js(_JS_POINT, view_id)
        dash.page.mouse.move(x - 20, y - 20)
        dash.page.mouse.move(x, y + attempt % 3, steps=4)
        try:
            dash.wait(shown, timeout_ms=3000, what="the tooltip", view_id=view_id)
            break
        except AssertionError:
            if attempt == attempts:
                raise
    return dash.js("() => document.getElementById('vg-tooltip-element').textContent")


def press(dash: Dashboard, button: Any) -> str:
    """Click the hostile view's command button; return what it shows once the acknowledgement came."""
    dash.js("() => { document.querySelector('.mb-panel[data-id=\"hostile\"] .mb-btn-result').textContent = ''; }")
    button.click()
    return dash.wait("() => { const r = document.querySelector('.mb-panel[data-id=\"hostile\"] .mb-btn-result');"
                     " return r && r.textContent !== '…' && r.textContent; }", what="the command's result beside the button",
                     view_id="hostile")


def no_markup(dash: Dashboard) -> None:
    """Nothing ran and no element was made from the hostile text, now or before."""
    assert dash.js("() => window.__pwned") is None, "script from hostile text ran"
    assert dash.js("() => window.__markup") == [], dash.js("() => window.__markup")
    assert dash.js("() => document.querySelectorAll('img, b, [onerror]').length") == 0


@pytest.mark.timeout(120)
def test_markup_from_specs_the_device_and_clients_is_shown_as_text(mb, launch, dashboards: Dashboards,
                                                                   tmp_path: Path):
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs, "hostile.vl.json", HOSTILE_SPEC)
    for filename, content in HOSTILE_FILES.items():
        write_spec(specs, filename, content)
    name = mb.new_name()
    bridge = mb.serve(name, "--specs", str(specs))
    proc = launch(HOSTILE_DEVICE, name, mon="bridge=0")
    mb.devices.append(Device(proc, name, None))   # mb's teardown ends it (EOF on stdin)
    wait_attached(bridge.url, proc.pid)
    mb.client(bridge.url, headers={"User-Agent": HOSTILE})       # shown in the Status tab
    dash = open_watched(dashboards, bridge.url, "#/hostile")

    # the tab label and the page title are the spec's title, as text; notices quote names as text
    dash.wait_view("hostile")
    dash.wait_no_error("hostile")
    assert dash.js("() => document.querySelector('#mb-tabs [data-id=\"hostile\"]').textContent") == HOSTILE
    assert dash.js("() => document.title") == f"{HOSTILE} · monbridge"
    notices = dash.notices("hostile")
    assert any(f"dataset '{IMG}' matches no channel" in n for n in notices), notices
    assert any(f"usermeta.{IMG} is not a monbridge option" in n for n in notices), notices
    assert any("usermeta.embedOptions is not a monbridge option" in n for n in notices), notices
    # usermeta.embedOptions did not reach vega-embed: the menu holds only the exports, still a canvas
    links = dash.js("() => [...document.querySelectorAll('.mb-panel[data-id=\"hostile\"] .vega-actions a')].map((a) => a.textContent)")
    assert sorted(links) == ["Save as PNG", "Save as SVG"], links
    assert dash.js("() => !!document.querySelector('.mb-panel[data-id=\"hostile\"] canvas')") is True

    # a command whose handler raises with markup: the button's label and the error are text
    button = dash.page.locator('.mb-panel[data-id="hostile"] .mb-btn')
    assert button.text_content() == HOSTILE
    result = press(dash, button)
    if result.startswith("offline:"):   # a heartbeat late on a busy machine: the bridge refused it
        dash.wait_connection("live")
        result = press(dash, button)
    assert result == f"handler_error: boom: ValueError: {HOSTILE}", result

    # a tooltip of an event the device sent: every field as text, `image` included
    dash.wait("() => window.monbridge.views.hostile.rows() > 0", what="events in the chart", view_id="hostile")
    tip = hover_tooltip(dash, "hostile")
    for text in (HOSTILE, IMAGE_FIELD, BOLD):
        assert text in tip, (text, tip)
    dash.screenshot("faults-hostile-tooltip")
    dash.page.mouse.move(1, 1)

    # views whose file name or error holds markup
    for vid, words in [(IMG, [f"{IMG}.vl.json: this view cannot be shown", f"{IMG}.vl.json is not valid JSON"]),
                       ("<b>bold", ["<b>bold.vl.json: this view cannot be shown", f'mark: "{BOLD}" is not a Vega-Lite mark']),
                       ("scene", ["scene.scene.json: this view cannot be shown", f'got "{BOLD}"'])]:
        dash.wait_view(vid)
        dash.wait_error(vid)
        open_tab(dash, vid)
        shown = shown_error(dash, vid)
        for w in words:
            assert shown and w in shown, (vid, w, shown)
    labels = dash.js("() => Object.fromEntries([...document.querySelectorAll('#mb-tabs .mb-tab')]"
                     ".map((t) => [t.dataset.id, [t.textContent, t.title]]))")
    assert labels[IMG] == [IMG, f"{IMG}.vl.json"], labels
    assert labels["<b>bold"] == ["<b>bold", "<b>bold.vl.json"], labels
    assert labels["scene"] == [HOSTILE, "scene.scene.json"], labels

    # Status: the other client's user agent, the state's keys and values
    open_tab(dash, "status")
    dash.wait("(ua) => [...document.querySelectorAll('.mb-ua')].some((e) => e.textContent === ua && e.title === ua)",
              HOSTILE, what="the hostile user agent in the clients table")
    expected_rows = [[IMG, '"<b>bold</b>"'], ["note", '"<img src=x onerror=\\"window.__pwned=1\\"><b>bold</b>"']]
    dash.wait("(rows) => { const card = [...document.querySelectorAll('.mb-status .mb-card')]"
              ".find((c) => c.querySelector('h3').textContent === 'State');"
              " const shown = JSON.stringify([...card.querySelectorAll('tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent)));"
              " return rows.every((r) => shown.includes(JSON.stringify(r))); }", expected_rows,
              what=f"the state rows {expected_rows} in the Status tab (the bridge has {http(bridge.url, '/api/state')[2]})")
    dash.screenshot("faults-hostile-status")

    no_markup(dash)
    dash.wait_connection("live")
    assert not dash.page_errors, dash.page_errors


# -- C: a device restarted under the same name, beneath an open page -------------------------

_JS_TELEMETRY = """() => {
  const v = window.monbridge._internals.tabs.views().telemetry;
  const rows = v && v.result ? v.result.view.data("telemetry") : [];
  const ts = rows.map((r) => r.t);
  return {n: rows.length, min: ts.length ? Math.min(...ts) : null, max: ts.length ? Math.max(...ts) : null};
}"""


def device_card(dash: Dashboard) -> str:
    return dash.js("() => document.querySelector('.mb-status .mb-card').textContent")


@pytest.mark.timeout(120)
def test_device_restarted_under_the_same_name_goes_offline_and_back_live_without_a_reload(
        mb, dashboards: Dashboards, tmp_path: Path):
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs, "telemetry.vl.json", TELEMETRY_SPEC)
    bridge, first = start(mb, specs)
    # device time up to ~1008 s first: if the restarted device's rows (from 1000 s again) were
    # not started afresh, the 5 s window would throw them away as too old
    first.request("bulk 8000", "published")
    first.request("stream 100", "streaming")
    dash = dashboards.open(bridge.url, "#/telemetry")
    dash.wait_no_error("telemetry")
    dash.wait_rows_grow("telemetry")
    dash.wait("() => { const a = window.monbridge.lastApplied.telemetry; return a && a.t > 1008; }",
              what="the first device's rows applied", view_id="telemetry")
    dash.js("() => { window.__marker = 1; }")

    # the device dies (its resource tracker removes the segments); the bridge and the page stay
    first.proc.proc.send_signal(signal.SIGKILL)
    dash.wait("() => { const b = document.getElementById('mb-banner');"
              " return window.monbridge.connection === 'offline' && b.dataset.state === 'offline'"
              " && b.textContent === 'device offline'; }", what="the banner to say 'device offline'")
    assert first.proc.wait_gone() == -signal.SIGKILL
    wait_for(lambda: segments_of(first.name) == [], what="the dead device's segments to go")
    open_tab(dash, "status")
    dash.wait("(pid) => { const c = document.querySelector('.mb-status .mb-card').textContent;"
              " return c.includes('offline') && c.includes(String(pid)); }", first.pid,
              what="the Status tab's device card: offline, the old pid")
    dash.screenshot("faults-restart-offline")

    # the same name again, a new process: the page goes live and shows its data
    second = mb.device(first.name, mon="bridge=0")
    second.request("stream 100", "streaming")
    dash.wait_connection("live")
    dash.wait("(pid) => { const c = document.querySelector('.mb-status .mb-card').textContent;"
              " return c.includes('online') && c.includes(String(pid)); }", second.pid,
              what="the Status tab's device card: online, the new pid")
    open_tab(dash, "telemetry")
    dash.wait(f"() => {{ const d = ({_JS_TELEMETRY})(); return d.n > 0 && d.max < 1005; }}",
              what="only the restarted device's rows in the chart", view_id="telemetry")
    dash.wait_rows_grow("telemetry")
    dash.wait_connection("live")
    data = dash.js(_JS_TELEMETRY)
    assert data["n"] > 0 and data["min"] >= 1000 and data["max"] < 1005, data
    assert dash.js("() => window.__marker") == 1, "the page was reloaded"
    states = dash.banner_states()
    assert states[-1] == "live" and "offline" in states, states
    assert "disconnected" not in states, f"the page lost the bridge: {states}"
    assert http(bridge.url, "/api/health")[2]["device"]["pid"] == second.pid
    dash.screenshot("faults-restart-live")
    assert not dash.page_errors, dash.page_errors
