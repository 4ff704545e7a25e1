"""The replay's timeline bar in a real browser (webui/src/timeline.js; docs/recording.md, Replay).

A few seconds of the demo device (examples/robot_arm.py) are recorded once by a real
``monbridge record``, into a file whose name is hostile HTML; each test plays it with a real
``monbridge replay`` (MON=port=0: it launches the unchanged bridge) and opens the dashboard in
chromium. The device's side is read through the HTTP API (GET /api/state), the page's through
its test hooks (webui/src/hooks.js: ``replay``, ``resets``, ``views[id].times()``). Every wait
polls with a deadline.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys

import pytest
from bridge_support import BridgeURL, http, parse_url
from browser_support import (  # noqa: F401  (chromium, dashboards, devices, specs_dir: fixtures)
    Dashboard,
    Dashboards,
    Devices,
    chromium,
    dashboards,
    devices,
    specs_dir,
)
from conftest import REPO, START_TIMEOUT, DeviceProcess, segments_of, wait_for

pytest.importorskip("mcap.reader")
from test_replay import bridge_cmd, start_replay, stop_replay  # noqa: E402, F401  (bridge_cmd: a fixture)

from bridge.record.reader import open_recording  # noqa: E402

FILE_NAME = "arm <b>run <img src=x>.mcap"   # shown as text in the bar, never as HTML
RECORD_SECONDS = 4
BAR = "#mb-timeline"
SLIDER = f"{BAR} .mb-tl-slider"
PLAY = f"{BAR} .mb-tl-play"
SPEED = f"{BAR} .mb-tl-speed"
VIEW = "joints"                     # a demo chart of the 1 kHz joints channel (specs/joints.vl.json)

_recordings: dict[str, str] = {}


@pytest.fixture
def demo_recording(_guard, bridge_cmd, new_device_name, tmp_path_factory) -> str:
    """RECORD_SECONDS of examples/robot_arm.py by ``monbridge record``, made once per session."""
    if "demo" not in _recordings:
        name = new_device_name()
        out = str(tmp_path_factory.mktemp("replay-ui") / FILE_NAME)
        env, tag = _guard.env(f"name={name},bridge=0", None)
        demo = DeviceProcess([sys.executable, str(REPO / "examples" / "robot_arm.py")], env, _guard.tmp_path, tag)
        _guard.procs.append(demo)
        wait_for(lambda: segments_of(name), START_TIMEOUT, f"the demo device {name!r} to start")
        rec = bridge_cmd("record", "--attach", name, "-o", out, "--duration", str(RECORD_SECONDS),
                         "--chunk-seconds", "0.5", "--specs", str(REPO / "specs"))
        assert rec.wait_gone(START_TIMEOUT + RECORD_SECONDS) == 0, rec.describe()
        demo.proc.send_signal(signal.SIGINT)                # Ctrl-C
        assert demo.wait_gone(START_TIMEOUT) == 0, demo.describe()
        assert "Traceback" not in "".join(demo.stderr), demo.describe()
        _recordings["demo"] = out
    return _recordings["demo"]


def start_of(path: str) -> float:
    """The log time (s) of the file's first message: position 0 of the replay."""
    rec = open_recording(path)
    try:
        return rec.start_ns / 1e9
    finally:
        rec.close()


def clock(seconds: float) -> str:
    """m:ss.s, as the bar shows a time (rounded half up, as JavaScript's Math.round)."""
    tenths = math.floor(seconds * 10 + 0.5)
    return f"{tenths // 600}:{tenths % 600 // 10:02d}.{tenths % 10}"


def device_state(url: BridgeURL) -> dict:
    status, _, body = http(url, "/api/state")
    assert status == 200, body
    return body["values"]


def wait_device(url: BridgeURL, what: str, predicate) -> dict:
    """Poll GET /api/state until ``predicate(values)``; return the values."""
    def check() -> dict | None:
        values = device_state(url)
        return values if predicate(values) else None

    return wait_for(check, START_TIMEOUT, f"the replay's state: {what}", interval=0.05)


def bar_text(dash: Dashboard, selector: str) -> str:
    return dash.js("(sel) => document.querySelector(sel).textContent", selector)


# Keep the page busy (its main thread) until the bridge's state has another replay_epoch: what
# the bridge sends meanwhile (the new state included) waits, unread, and no batch is confirmed.
_BUSY_UNTIL_JUMP = """([epoch, ms]) => setTimeout(() => {
  const end = performance.now() + ms;
  const now = () => { const x = new XMLHttpRequest(); x.open("GET", "api/state", false); x.send();
                      return JSON.parse(x.responseText).values.replay_epoch; };
  while (now() === epoch && performance.now() < end);
}, 0)"""


def unconfirmed(url: BridgeURL, channel: str) -> int:
    """Batches of ``channel`` the (one) page has not confirmed yet, as the bridge counts them."""
    status, _, body = http(url, "/api/clients")
    assert status == 200, body
    subs = [s for c in body["clients"] for s in c["subscriptions"] if s["channel"] == channel]
    return subs[0]["unconfirmed"] if subs else 0


def open_replay(dashboards: Dashboards, url: BridgeURL, label: str) -> Dashboard:
    dash = dashboards.open(url, f"#/{VIEW}", label=label)
    dash.wait("() => window.monbridge.replay !== null", what="the timeline bar")
    assert dash.js("(sel) => document.querySelector(sel).hidden", BAR) is False
    return dash


def test_the_timeline_bar_plays_seeks_and_sets_the_speed(demo_recording, bridge_cmd, device_name,
                                                         dashboards: Dashboards):
    start = start_of(demo_recording)
    proc, printed = start_replay(bridge_cmd, demo_recording, "--paused", "--name", device_name)
    url = parse_url(printed)
    dash = open_replay(dashboards, url, "operator")
    duration = device_state(url)["replay_duration"]
    assert duration == pytest.approx(RECORD_SECONDS, abs=1.0)

    # what it shows: the file's name as text, the position and duration, the loop mode
    assert bar_text(dash, f"{BAR} .mb-tl-file") == FILE_NAME
    assert dash.js("(sel) => document.querySelector(sel).querySelector('b, img')", BAR) is None
    assert bar_text(dash, f"{BAR} .mb-tl-clock") == f"0:00.0 / {clock(duration)}"
    assert bar_text(dash, f"{BAR} .mb-tl-loop") == "plays once"
    assert "Play" in bar_text(dash, PLAY)
    dash.wait_no_error(VIEW)
    dash.screenshot("replay-paused")

    # play; the speed
    dash.page.locator(PLAY).click()
    wait_device(url, "playing", lambda v: v["replay_playing"] is True)
    dash.wait("(sel) => document.querySelector(sel).textContent.includes('Pause')", PLAY, what="the Pause label")
    for speed in (2, 0.25):
        dash.page.select_option(SPEED, str(speed))
        wait_device(url, f"speed {speed}", lambda v, s=speed: v["replay_speed"] == s)
    dash.wait("(id) => window.monbridge.views[id].rows() > 0", VIEW, what="rows in the chart", view_id=VIEW)

    # drag the slider with the mouse: the state, which keeps moving, leaves the handle alone;
    # letting go seeks there
    epoch = device_state(url)["replay_epoch"]
    box = dash.page.locator(SLIDER).bounding_box()
    y = box["y"] + box["height"] / 2
    dash.page.mouse.move(box["x"] + box["width"] * 0.1, y)
    dash.page.mouse.down()
    dash.page.mouse.move(box["x"] + box["width"] * 0.2, y, steps=4)
    held = float(dash.js("(sel) => document.querySelector(sel).value", SLIDER))
    assert duration * 0.1 < held < duration * 0.3, (held, duration)
    moving = dash.js("() => window.monbridge.state.replay_position")
    dash.wait("(p) => window.monbridge.state.replay_position > p + 0.1", moving,
              what="state updates (the replay plays on) while the slider is held")
    assert float(dash.js("(sel) => document.querySelector(sel).value", SLIDER)) == held
    assert dash.js("() => window.monbridge.replay.held") is True
    assert bar_text(dash, f"{BAR} .mb-tl-clock").startswith(clock(held))
    assert device_state(url)["replay_epoch"] == epoch      # moving it sent no seek
    dash.page.mouse.up()
    moved = wait_device(url, "the seek on letting go", lambda v: v["replay_epoch"] == epoch + 1)
    assert held - 0.01 <= moved["replay_position"] < held + 0.5, (moved, held)
    dash.wait("() => !window.monbridge.replay.held", what="the slider to follow the state again")

    # seek forward while playing, with rows from before the jump still in the ring: the page is
    # busy, so the bridge holds back its next batch (flow control) while the replay plays on; then
    # a seek (over the HTTP API). Once the page has read the new state, the epoch it tells of has
    # cleared the charts, which then hold only rows from the new position on
    before = device_state(url)
    resets = dash.js("() => window.monbridge.resets")
    dash.js(_BUSY_UNTIL_JUMP, [before["replay_epoch"], 20_000])
    wait_for(lambda: unconfirmed(url, VIEW) == 1, START_TIMEOUT, "a batch the busy page cannot confirm")
    wait_device(url, "playing on", lambda v: v["replay_position"] > before["replay_position"])
    status, _, body = http(url, "/api/command", method="POST", body={"name": "seek", "args": {"t": 2.0}})
    assert status == 200 and body["ok"], body
    after = wait_device(url, "the seek", lambda v: v["replay_epoch"] > before["replay_epoch"])
    assert after["replay_epoch"] == before["replay_epoch"] + 1
    assert 2.0 <= after["replay_position"] < 3.0, after
    lo, hi, position = dash.wait(
        "([id, n]) => { const m = window.monbridge, times = m.views[id].times();"
        "  return m.resets === n + 1 && times && [...times, m.state.replay_position]; }",
        [VIEW, resets], what="the charts cleared, then rows after the seek", view_id=VIEW)
    assert start + 2.0 - 0.15 <= lo <= hi <= start + position + 0.15, (lo - start, hi - start, position)

    # pause (before the end, where it pauses by itself)
    assert dash.js("(sel) => document.querySelector(sel).textContent", PLAY).endswith("Pause")
    dash.page.locator(PLAY).click()
    wait_device(url, "paused", lambda v: v["replay_playing"] is False)
    dash.wait("(sel) => document.querySelector(sel).textContent.includes('Play')", PLAY, what="the Play label")
    assert dash.js("() => window.monbridge.replay.error") is None
    dash.screenshot("replay-after-seek")
    assert not dash.page_errors, dash.page_errors

    # a command that fails says why, as text: the replay (and its bridge) gone
    stop_replay(proc)
    dash.wait_connection("disconnected")
    dash.page.locator(PLAY).click()
    error = dash.wait("() => window.monbridge.replay.error", what="the command's error in the bar")
    assert error.startswith("resume: disconnected"), error
    assert bar_text(dash, f"{BAR} .mb-tl-error") == error


def test_a_viewer_sees_the_bar_disabled(demo_recording, bridge_cmd, device_name, dashboards: Dashboards):
    proc, printed = start_replay(bridge_cmd, demo_recording, "--paused", "--name", device_name)
    url = parse_url(printed)
    viewer = open_replay(dashboards, dataclasses.replace(url, url=url.base + "/"), "viewer")
    assert viewer.js("() => window.monbridge._internals.store.role") == "viewer"
    controls = viewer.js("""(bar) => [...document.querySelectorAll(`${bar} button, ${bar} input, ${bar} select`)]
                                     .map((c) => ({disabled: c.disabled, title: c.title}))""", BAR)
    assert len(controls) == 3, controls
    for c in controls:
        assert c["disabled"] is True and "view only" in c["title"], controls
    assert "view only" in viewer.js("(sel) => document.querySelector(sel).title", BAR)
    viewer.screenshot("replay-viewer")

    # the viewer still follows the replay an operator steers (here through the HTTP API)
    status, _, body = http(url, "/api/command", method="POST", body={"name": "resume"})
    assert status == 200 and body["ok"], body
    viewer.wait("(sel) => document.querySelector(sel).textContent.includes('Pause')", PLAY, what="the Pause label")
    viewer.wait("() => window.monbridge.replay.position > 0", what="the position to move")
    assert not viewer.page_errors, viewer.page_errors
    stop_replay(proc)


def test_a_live_device_has_no_timeline_bar(devices: Devices, specs_dir, dashboards: Dashboards):
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/wave")
    dash.wait_rows_grow("wave")
    assert dash.js("(sel) => document.querySelector(sel).hidden", BAR) is True
    assert dash.js("() => window.monbridge.replay") is None
    assert dash.js("() => window.monbridge.resets") == 0
