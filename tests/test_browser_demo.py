"""The real demo in a real browser: every tab of the repository's specs/ renders live data.

Runs examples/robot_arm.py (unmodified, through a small wrapper that only gives it a unique
device name, so a `make demo` running on the same machine cannot collide with it and the
conftest guard checks its /dev/shm segments) with ``MON=port=0,specs=<repo>/specs``. The
views are whatever files specs/ holds when the test runs (GET /api/views).
"""

from __future__ import annotations

import signal
import threading

from bridge_support import DASHBOARD_LINE, http, parse_url, wait_stderr
from browser_support import SCREENSHOTS, Dashboards, chromium, dashboards  # noqa: F401  (fixtures)
from conftest import REPO, START_TIMEOUT

ROBOT_ARM = REPO / "examples" / "robot_arm.py"
SPECS = REPO / "specs"

# Runs the demo file as __main__ with its own code; only device_agent.start(name=...) is
# given the test's unique device name instead of "robot_arm".
WRAPPER = f"""
import runpy, sys
import device_agent

name = sys.argv[1]
_start = device_agent.start

def start(*args, **kwargs):
    kwargs["name"] = name
    return _start(*args, **kwargs)

device_agent.start = start
sys.argv = [{str(ROBOT_ARM)!r}]
runpy.run_path({str(ROBOT_ARM)!r}, run_name="__main__")
"""

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


def test_every_demo_tab_renders_live_data(launch, device_name, dashboards: Dashboards, request):
    proc = launch(WRAPPER, device_name, mon=f"port=0,specs={SPECS}", ready="robot_arm: running")
    try:
        m = wait_stderr(proc, DASHBOARD_LINE, START_TIMEOUT)
        url = parse_url(m["url"])
        status, _, body = http(url, f"/api/views?token={url.token}", token=None)
        assert status == 200, body
        views = body["views"]
        assert views, f"GET /api/views lists no views for {SPECS}"
        dash = dashboards.open(url, label="demo")
        for old in SCREENSHOTS.glob("demo-*.png"):   # tabs of files since removed
            old.unlink()

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
        assert dash.connection() == "live", dash.describe()
        assert not dash.page_errors, dash.page_errors
    finally:
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
        code = proc.wait_gone(START_TIMEOUT)
    assert code in (0, 128 + signal.SIGTERM), proc.describe()
    assert "Traceback" not in "".join(proc.stderr), proc.describe()
