"""The newcomer's path: `make demo`, open the printed URL, watch every tab, steer, Ctrl-C.

Runs the Makefile's demo target as the README says (MON=port=0 so a free port is used),
in its own session under the conftest guard: every tab of specs/ (whatever files it holds,
from GET /api/views) that is for this device renders live data in chromium, the views of other
devices (the minimal example's) are left out, the speed slider changes the device's
state, Home sends the arm home, and Ctrl-C stops device and bridge leaving no process or
/dev/shm segment behind.
"""

from __future__ import annotations

import signal
import threading

import pytest
from bridge_support import DASHBOARD_LINE, http, parse_url, wait_stderr
from browser_support import SCREENSHOTS, Dashboards, chromium, dashboards  # noqa: F401  (fixtures)
from conftest import REPO, START_TIMEOUT, DeviceProcess, wait_for

from device_agent.layout import control_segment_name
from device_agent.shm import segment_owner

DEMO_DEVICE = "robot_arm"          # the name examples/robot_arm.py publishes under
MAKE_START_TIMEOUT = START_TIMEOUT + 120  # make may rebuild the web UI first
CONTROLS = '.mb-panel[data-id="controls"]'
MIN_SCENE_PIXELS = 200
VIEW_WAIT_MS = 25_000


def check_view(dash, v: dict) -> dict:
    """Open the view's tab; it must mount without error or notice and receive growing data."""
    vid = v["id"]
    assert v["error"] is None, f"GET /api/views: {v['file']}: {v['error']}"
    dash.wait_view(vid)
    dash.open_tab(vid)
    dash.wait_no_error(vid, VIEW_WAIT_MS)
    notices = dash.notices(vid)
    assert not notices, f"{v['file']} shows notices: {notices}"
    first, later = dash.wait_rows_grow(vid, VIEW_WAIT_MS)
    assert dash.view(vid)["error"] is None, dash.describe(vid)
    result = {"kind": v["kind"], "first": first, "later": later}
    if v["kind"] == "scene":
        result["pixels"] = dash.wait_scene_pixels(vid, MIN_SCENE_PIXELS, VIEW_WAIT_MS)["other"]
    notices = dash.notices(vid)
    assert not notices, f"{v['file']} shows notices: {notices}"
    return result


def test_make_demo_newcomer_path(_guard, dashboards: Dashboards, request):
    owner = segment_owner(control_segment_name(DEMO_DEVICE))
    if owner is not None:
        pytest.skip(f"a {DEMO_DEVICE} device is already running here (pid {owner}); stop it to run this test")
    env, tag = _guard.env("port=0", None)
    proc = DeviceProcess(["make", "--no-print-directory", "demo"], env, REPO, tag)
    _guard.procs.append(proc)
    _guard.names.append(DEMO_DEVICE)
    try:
        m = wait_stderr(proc, DASHBOARD_LINE, MAKE_START_TIMEOUT)
        url = parse_url(m["url"])
        status, _, body = http(url, f"/api/views?token={url.token}", token=None)
        assert status == 200, body
        listed = body["views"]
        assert listed, "GET /api/views lists no views for specs/"
        dash = dashboards.open(url, label="demo")
        for old in SCREENSHOTS.glob("demo-*.png"):   # tabs of files since removed
            old.unlink()
        dash.wait("() => window.monbridge.hiddenViews.length > 0", what="the other devices' views left out")
        hidden = dash.js("() => window.monbridge.hiddenViews")
        assert "wave" in hidden, hidden   # examples/minimal.py's: the robot arm has no channel 'wave'
        views = [v for v in listed if v["id"] not in hidden]
        assert dash.tab_ids() == [v["id"] for v in views] + ["status"], dash.describe()

        # Events views (the log) only get rows when the device logs something: take a
        # picture now and then (each one logs a line) while the tabs are checked.
        stop = threading.Event()

        def pictures() -> None:
            while not stop.wait(1.0):
                try:
                    http(url, "/api/command", method="POST", body={"name": "take_picture"})
                except OSError:
                    pass

        clicker = threading.Thread(target=pictures, daemon=True)
        clicker.start()
        results: dict[str, object] = {}
        failures: dict[str, str] = {}
        try:
            for v in views:
                vid = v["id"]
                try:
                    results[vid] = check_view(dash, v)
                except AssertionError as exc:
                    failures[vid] = str(exc)
                finally:
                    dash.screenshot(f"demo-{vid}")
            dash.open_tab("status")
            dash.screenshot("demo-status")
        finally:
            stop.set()
            clicker.join()
        request.node.user_properties.append(("views", results))
        assert not failures, "views of specs/ that do not render live data with robot_arm.py:\n" + "\n".join(
            f"- {vid}: {msg}" for vid, msg in failures.items())

        # steer it: the speed slider, then the Home button
        dash.open_tab("controls")
        slider = f"{CONTROLS} .vega-bind input[type=range]"
        dash.wait("(sel) => document.querySelector(sel)", slider, what="the speed slider")
        dash.js("""([sel, v]) => { const s = document.querySelector(sel);
                                   s.value = String(v);
                                   s.dispatchEvent(new Event('input', {bubbles: true}));
                                   s.dispatchEvent(new Event('change', {bubbles: true})); }""", [slider, 1.5])
        wait_for(lambda: http(url, "/api/state")[2]["values"].get("speed") == 1.5, START_TIMEOUT,
                 "the device's speed to follow the slider to 1.5")
        dash.page.get_by_role("button", name="Home", exact=True).click()
        wait_for(lambda: http(url, "/api/state")[2]["values"].get("mode") == "idle", START_TIMEOUT,
                 "the arm to go idle (homing) after Home")
        dash.screenshot("demo-controls-after-home")
        assert dash.connection() == "live", dash.describe()
        assert not dash.page_errors, dash.page_errors
    finally:
        if proc.proc.poll() is None:
            proc.kill_group(signal.SIGINT)   # Ctrl-C in the terminal: make, device and bridge get it
        code = proc.wait_gone(START_TIMEOUT)
    assert code is not None, proc.describe()
    assert "Traceback" not in "".join(proc.stderr), proc.describe()
    # the guard fails the test if any process it started, or a segment of robot_arm, is left
