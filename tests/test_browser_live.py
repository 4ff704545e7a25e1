"""The dashboard in a real browser against a small device (browser_support.WAVE_DEVICE) and a
temp specs dir: view files coming and going, a slider shared by two users, the 3D canvas, and
a device that stops and comes back under an open page.
"""

from __future__ import annotations

import signal
import time

from browser_support import (  # noqa: F401  (chromium, dashboards, devices, specs_dir: fixtures)
    Dashboards,
    Devices,
    chromium,
    dashboards,
    devices,
    specs_dir,
    state_value,
    wait_state,
    write_spec,
)

EXTRA_SPEC = {
    "usermeta": {"title": "Extra", "order": 5, "window": {"rows": 300}},
    "width": "container", "height": 200, "autosize": {"type": "fit-x", "contains": "padding"},
    "data": {"name": "wave"},
    "mark": "point",
    "encoding": {"x": {"field": "time", "type": "temporal"}, "y": {"field": "value", "type": "quantitative"}},
}
BAD_MARK_SPEC = {"data": {"name": "wave"}, "mark": "nonsense",
                 "encoding": {"x": {"field": "time", "type": "temporal"}}}

_SLIDER = '.mb-panel[data-id="wave"] .vega-bind input[type="range"]'


def test_spec_files_become_tabs_show_errors_and_go(devices: Devices, specs_dir, dashboards: Dashboards):
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/wave")
    dash.wait_view("wave")
    dash.wait_rows_grow("wave")
    assert dash.tab_ids() == ["wave", "cloud", "status"]

    # a new file becomes a tab in the open page, in its order, and streams
    write_spec(specs_dir, "extra.vl.json", EXTRA_SPEC)
    dash.wait_view("extra")
    assert dash.tab_ids() == ["extra", "wave", "cloud", "status"]
    assert dash.js("() => document.querySelector('#mb-tabs [data-id=\"extra\"]').textContent") == "Extra"
    dash.open_tab("extra")
    dash.wait_no_error("extra")
    first, later = dash.wait_rows_grow("extra")
    dash.wait("() => window.monbridge.views.extra.rows() === 300", what="the rows window (300) filled")
    dash.screenshot("live-extra")

    # broken files: each shows its own error in its tab (and a mark on the tab), nothing else breaks
    write_spec(specs_dir, "broken.vl.json", '{"mark": "line", "data": {"name": "wave"},')
    write_spec(specs_dir, "badmark.vl.json", BAD_MARK_SPEC)
    write_spec(specs_dir, "noobjects.scene.json", {"title": "No objects"})
    for vid, words in [("broken", ["broken.vl.json", "not valid JSON"]),
                       ("badmark", ["could not compile", "nonsense"]),
                       ("noobjects", ["noobjects.scene.json", "objects"])]:
        dash.wait_view(vid)
        message = dash.wait_error(vid)
        for w in words:
            assert w in message, (vid, message)
        dash.open_tab(vid)
        shown = dash.js("(id) => { const p = document.querySelector(`.mb-panel[data-id=\"${id}\"]`);"
                        " const e = p.querySelector('.mb-view-error'); return e && !e.hidden && e.offsetHeight > 0 ? e.textContent : null; }", vid)
        assert shown and words[0] in shown, (vid, shown)
        dash.wait("(id) => document.querySelector(`#mb-tabs [data-id=\"${id}\"]`).classList.contains('mb-tab-error')",
                  vid, what=f"the error mark on tab {vid!r}")
        dash.screenshot(f"live-error-{vid}")
    for vid in ("wave", "extra"):
        assert dash.view(vid)["error"] is None, dash.describe(vid)

    # fixing a file clears its error, in place; a hidden view buffers what arrives and shows
    # it all in the first frame it is visible
    write_spec(specs_dir, "broken.vl.json", dict(EXTRA_SPEC, usermeta={"title": "Fixed", "window": {"rows": 50}}))
    dash.wait("() => { const v = window.monbridge.views.broken; return v && v.error === null; }",
              what="broken.vl.json, fixed, to have no error", view_id="broken")
    dash.open_tab("broken")
    dash.wait("() => window.monbridge.views.broken.rows() > 0", what="the fixed view to stream", view_id="broken")
    assert dash.js("() => document.querySelector('#mb-tabs [data-id=\"broken\"]').classList.contains('mb-tab-error')") is False

    # deleting files removes their tabs; the rest keeps streaming, without a reload
    dash.js("() => { window.__sameDocument = true; }")
    dash.open_tab("extra")
    for name in ("extra.vl.json", "broken.vl.json", "badmark.vl.json", "noobjects.scene.json"):
        (specs_dir / name).unlink()
    for vid in ("extra", "broken", "badmark", "noobjects"):
        dash.wait_view_gone(vid)
    assert dash.tab_ids() == ["wave", "cloud", "status"]
    assert dash.js("() => window.monbridge.activeTab") == "wave"   # the deleted open tab falls back to the first
    dash.wait_rows_grow("wave")
    assert dash.js("() => window.__sameDocument") is True
    assert dash.connection() == "live"
    assert not dash.page_errors, dash.page_errors


# the first item of every line or symbol mark of a Vega view: its ARIA description, if any
_DESCRIPTIONS = """(id) => {
  const view = window.monbridge._internals.tabs.views()[id].result.view;
  const found = [];
  const walk = (node) => {
    if (["line", "symbol"].includes(node.marktype) && node.items.length) found.push(node.items[0].description ?? null);
    for (const item of node.items || []) walk(item);
  };
  walk(view.scenegraph().root);
  return found;
}"""


def test_canvas_charts_skip_aria_descriptions_unless_the_spec_asks(devices: Devices, specs_dir,
                                                                    dashboards: Dashboards):
    # Vega-Lite formats a description string per data point on every update, for SVG output
    # only: the dashboard draws on canvas and turns them off; a spec's config.aria wins
    write_spec(specs_dir, "plain.vl.json", EXTRA_SPEC)
    write_spec(specs_dir, "described.vl.json", dict(EXTRA_SPEC, config={"aria": True}))
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/plain")
    for vid in ("plain", "described"):
        dash.open_tab(vid)
        dash.wait_no_error(vid)
        dash.wait_rows_grow(vid)
    plain, described = dash.js(_DESCRIPTIONS, "plain"), dash.js(_DESCRIPTIONS, "described")
    assert plain == [None], plain
    assert len(described) == 1 and described[0].startswith("time: "), described
    assert not dash.page_errors, dash.page_errors


def test_slider_in_one_context_moves_the_device_and_the_other(devices: Devices, specs_dir, dashboards: Dashboards):
    dev = devices.start(specs_dir)
    a = dashboards.open(dev.url, "#/wave", label="A")
    b = dashboards.open(dev.url, "#/wave", label="B")
    for d in (a, b):
        d.wait_no_error("wave")
        d.wait(f"() => document.querySelector('{_SLIDER}')", what="the gain slider")
        d.wait(f"() => Number(document.querySelector('{_SLIDER}').value) === 1", what="the slider at the state's 1.0")

    # A: set the range input and fire the events a drag fires
    a.js(f"""(v) => {{ const s = document.querySelector('{_SLIDER}');
                       s.value = String(v);
                       s.dispatchEvent(new Event('input', {{bubbles: true}}));
                       s.dispatchEvent(new Event('change', {{bubbles: true}})); }}""", 2.5)
    wait_state(dev, "gain", 2.5)
    b.wait(f"() => Number(document.querySelector('{_SLIDER}').value) === 2.5 && window.monbridge.state.gain === 2.5",
           what="B's slider and state at 2.5", view_id="wave")
    assert float(a.js(f"() => document.querySelector('{_SLIDER}').value")) == 2.5
    a.screenshot("live-slider-A")
    b.screenshot("live-slider-B")

    # B: the keyboard (real input events) moves the slider to its maximum; A follows
    b.page.locator(_SLIDER).focus()
    b.page.keyboard.press("End")
    wait_state(dev, "gain", 5)
    a.wait(f"() => Number(document.querySelector('{_SLIDER}').value) === 5 && window.monbridge.state.gain === 5",
           what="A's slider and state at 5", view_id="wave")
    assert float(b.js(f"() => document.querySelector('{_SLIDER}').value")) == 5
    # neither slider was pulled back to an older value
    sliders = [float(d.js(f"() => document.querySelector('{_SLIDER}').value")) for d in (a, b)]
    assert sliders == [5, 5] and state_value(dev, "gain") == 5
    for d in (a, b):
        assert not d.page_errors, d.page_errors
        assert d.js("() => [...document.querySelectorAll('.mb-ctl-status.mb-error')].map((e) => e.textContent)") == []


def test_a_chart_made_anew_after_many_rows_keeps_its_data_and_its_slider(devices: Devices, specs_dir,
                                                                       dashboards: Dashboards):
    """Vega keeps a table entry per row that ever passed some transforms, so a chart is
    embedded anew, with the rows it holds, after many rows (here 40), while it is shown: the
    old chart stays on screen until the new one has drawn, so no frame shows no chart."""
    dev = devices.start(specs_dir)
    d = dashboards.open(dev.url, "#/wave", query="rebuild_rows=40")
    d.wait_no_error("wave")
    view = "window.monbridge.views.wave"
    d.wait(f"() => {view}.embeds === 1 && {view}.rows() > 0", what="the chart drawing", view_id="wave")
    # count, in every animation frame until 3 more embeds, the charts on screen (not the hidden new one)
    d.js(f"""() => {{ window.__charts = []; const until = {view}.embeds + 3;
        const panel = document.querySelector('.mb-panel[data-id="wave"]');
        const tick = () => {{
          window.__charts.push(panel.querySelectorAll('.mb-vl-embed:not(.mb-vl-embed-next) canvas').length);
          if ({view}.embeds < until) requestAnimationFrame(tick); else window.__chartsDone = true;
        }};
        requestAnimationFrame(tick); }}""")
    d.wait("() => window.__chartsDone === true", what="three charts made anew", view_id="wave")
    shown = d.js("() => window.__charts")
    assert len(shown) > 3 and set(shown) == {1}, f"charts on screen per frame: {shown}"
    d.wait(f"() => {view}.rows() > 0 && document.querySelectorAll('.mb-panel[data-id=\"wave\"] canvas').length === 1",
           what="one chart, with the rows it held", view_id="wave")
    updates = d.js(f"() => {view}.updates")
    d.wait(f"(n) => {view}.updates > n + 5", updates, what="new data in the new chart", view_id="wave")
    # its slider is bound: a drag commands the device (whichever chart is on screen)
    d.wait(f"() => document.querySelectorAll('{_SLIDER}').length >= 1", what="a slider", view_id="wave")
    d.js(f"""(v) => {{ const s = document.querySelector('{_SLIDER}');
                       s.value = String(v);
                       s.dispatchEvent(new Event('input', {{bubbles: true}})); }}""", 3.5)
    wait_state(dev, "gain", 3.5)
    assert not d.page_errors, d.page_errors
    assert d.js(f"() => {view}.error") is None


def test_scene_canvas_draws_the_points(devices: Devices, specs_dir, dashboards: Dashboards):
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/cloud")
    assert dash.js("() => window.monbridge.activeTab") == "cloud"
    dash.wait_no_error("cloud")
    info = dash.view("cloud")
    assert info["kind"] == "scene", info
    dash.wait("() => window.monbridge.views.cloud.rows() === 2000 && window.monbridge.views.cloud.updates >= 3",
              what="2000 points drawn, several frames", view_id="cloud")
    px = dash.wait_scene_pixels("cloud", 500)
    assert tuple(px["background"]) == (0, 0, 0), px   # the scene's background: the points are the rest
    dash.screenshot("live-scene-cloud")

    # the view keeps drawing new frames while it is shown
    u = dash.view("cloud")["updates"]
    dash.wait("(u) => window.monbridge.views.cloud.updates >= u + 5", u, what="more frames drawn", view_id="cloud")
    assert not dash.page_errors, dash.page_errors


def test_device_stops_and_restarts_under_an_open_page(devices: Devices, specs_dir, dashboards: Dashboards):
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/wave")
    dash.wait_no_error("wave")
    dash.wait_rows_grow("wave")
    dash.js("() => { window.__sameDocument = true; }")
    assert dash.banner_states()[-1] == "live"

    code = dev.terminate()
    assert code == 128 + signal.SIGTERM, dev.proc.describe()
    dash.wait("() => window.monbridge.connection !== 'live' && document.getElementById('mb-banner').dataset.state !== 'live'",
              what="the banner to leave 'live'")
    dash.wait("() => ['disconnected', 'offline'].includes(window.monbridge.connection)", what="disconnected/offline")
    dash.screenshot("live-reconnect-down")

    restarted_at = time.time()
    again = devices.start(specs_dir, name=dev.name, port=dev.url.port, token=dev.url.token)
    assert again.url == dev.url and again.pid != dev.pid
    dash.wait_connection("live", 60_000)
    # new data, from the new device (device time after the restart), in the same document
    dash.wait("(t) => { const a = window.monbridge.lastApplied.wave; return a && a.t > t; }", restarted_at,
              60_000, "rows from the restarted device applied", "wave")
    dash.wait_rows_grow("wave")
    assert dash.js("() => window.__sameDocument") is True, "the page reloaded"
    states = dash.banner_states()
    assert states[-1] == "live" and "live" in states[:-1], states
    assert any(s in ("disconnected", "offline") for s in states[states.index("live"):]), states
    dash.screenshot("live-reconnect-up")

    # the restarted device takes commands from the same page
    dash.js(f"""() => {{ const s = document.querySelector('{_SLIDER}');
                        s.value = '3'; s.dispatchEvent(new Event('input', {{bubbles: true}})); }}""")
    wait_state(again, "gain", 3)
    assert not dash.page_errors, dash.page_errors
