"""The dashboard with several devices per bridge (protocol 4), in chromium: the device picker.

Two small device processes publish a records channel of the same name (`level`) with values
that tell them apart (around 100 and around 200) and declare the same command (`mark`); a bridge
started by hand serves both (``monbridge serve --attach NAME1,NAME2``). The page shows the
picker; a view naming `level` follows it, a view naming `NAME1/level` stays on device 1, a view
naming a device the bridge does not serve says so. A single-device bridge shows no picker.
The same picker on an edge (issue 15): each device has an origin publishing into a real Redis,
and one edge (``serve --edge redis://... --attach all``) serves them both to the page.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bridge_support import BridgeURL, Device, http, mb, parse_url, wait_devices  # noqa: F401  (mb: fixture)
from browser_support import (  # noqa: F401  (chromium, dashboards, devices, specs_dir: fixtures)
    Dashboard,
    Dashboards,
    Devices,
    chromium,
    dashboards,
    devices,
    specs_dir,
    write_spec,
)
from conftest import START_TIMEOUT, wait_for
from redis_support import RedisServer, redis_server  # noqa: F401  (redis_server: fixture)
from test_fleet_bridges import wait_published

# Records channel `level` (t, value = BASE + (k % 10) / 100) at ~50 Hz; command mark(tag)
# puts the tag in the state and prints "marked TAG". Arguments: name, BASE.
LEVEL_DEVICE = r"""
import sys, threading, time
import device_agent

name, base = sys.argv[1], float(sys.argv[2])
mon = device_agent.start(name)
level = mon.records("level", {"t": "f8", "value": "f8"}, capacity=4096)


@mon.command
def mark(tag: str) -> str:
    "Remember a mark."
    mon.state.update(mark=tag)
    print("marked", tag, flush=True)
    return f"{name}:{tag}"


stop = threading.Event()


def run():
    k = 0
    while not stop.is_set():
        level.publish(t=time.time(), value=base + (k % 10) / 100)
        k += 1
        stop.wait(0.02)


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


def level_spec(dataset: str, title: str, order: int) -> dict[str, Any]:
    """A line chart of `dataset` with a Mark button (usermeta.buttons)."""
    return {
        "usermeta": {"title": title, "order": order, "window": {"seconds": 5}, "rate": 30,
                     "buttons": [{"command": "mark", "label": "Mark", "args": {"tag": "clicked"}}]},
        "width": "container", "height": 160, "autosize": {"type": "fit-x", "contains": "padding"},
        "data": {"name": dataset},
        "mark": "line",
        "encoding": {"x": {"field": "time", "type": "temporal"}, "y": {"field": "value", "type": "quantitative"}},
    }


SERVING = re.compile(r"monbridge: serving .* at (?P<url>\S+)")


def serve_devices(mb, names: list[str], specs: Path):
    """``python -m bridge serve --attach A,B --port 0 --specs DIR``; its URL once it serves."""
    proc = mb.serve(",".join(names), "--specs", str(specs), expect_url=False)
    line = proc.expect("monbridge: serving", START_TIMEOUT)
    m = SERVING.search("monbridge: serving " + line)
    assert m, line
    return proc, parse_url(m["url"])


def wait_values(dash: Dashboard, view_id: str, dataset: str, low: float, high: float, what: str) -> list[float]:
    """Wait until the view holds rows of `dataset` and every value is in [low, high)."""
    return dash.wait("([id, ds, lo, hi]) => { const v = window.monbridge.views[id]; const c = v && v.column('value');"
                     " const vals = c && c[ds]; return vals && vals.length > 3 && vals.every((x) => x >= lo && x < hi) ? vals : false; }",
                     [view_id, dataset, low, high], what=what, view_id=view_id)


def picker(dash: Dashboard) -> dict[str, Any]:
    return dash.js("() => { const p = document.getElementById('device-picker');"
                   " return {hidden: p.hidden, visible: p.offsetParent !== null, value: p.value,"
                   " options: [...p.options].map((o) => o.value)}; }")


def level_devices(mb, launch, names: list[str]) -> list[Device]:
    """Two LEVEL_DEVICEs named ``names`` (values ~100 and ~200) without a bridge of their own
    (launch's MON=bridge=0)."""
    for name, base in zip(names, ("100", "200")):
        mb.devices.append(Device(launch(LEVEL_DEVICE, name, base), name, None))  # stopped by mb's teardown
    return mb.devices[-2:]


def level_specs(tmp_path: Path, name1: str) -> Path:
    """A specs dir: `level` (follows the picker) and `pinned` (names NAME1/level)."""
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs, "level.vl.json", level_spec("level", "Level", 1))
    write_spec(specs, "pinned.vl.json", level_spec(f"{name1}/level", "Device 1", 2))
    return specs


def pick_device_2(dashboards: Dashboards, url: BridgeURL, dev1: Device, dev2: Device) -> Dashboard:
    """The page at ``url``: the picker lists both devices; picking device 2 shows its values and
    its URL, the Mark button commands device 2 only, the pinned view keeps device 1's values
    and its button commands device 1. Returns the page (the pinned tab open)."""
    name1, name2 = dev1.name, dev2.name
    dash = dashboards.open(url, "#/level")
    dash.wait("(n) => window.monbridge.devices.length === n", 2, what="both devices in the page")
    assert picker(dash) == {"hidden": False, "visible": True, "value": name1, "options": [name1, name2]}
    assert dash.js("() => [window.monbridge.multi, window.monbridge.device]") == [True, name1]

    # the default (first) device's data
    wait_values(dash, "level", "level", 100, 101, f"device 1 ({name1}) values in the 'level' view")

    # device 2: its values only (device 1's rows are gone), and the choice is in the URL
    dash.page.select_option("#device-picker", name2)
    dash.wait("(n) => window.monbridge.device === n", name2, what="device 2 selected")
    wait_values(dash, "level", "level", 200, 201, f"device 2 ({name2}) values in the 'level' view")
    query = dash.js("() => location.search")
    assert f"device={name2}" in query and "token=" not in query, query

    # a command goes to device 2 only
    dash.page.locator('.mb-panel[data-id="level"] .mb-buttons button').click()
    result = dash.wait("() => { const r = document.querySelector('.mb-panel[data-id=\"level\"] .mb-btn-result');"
                       " return r && r.textContent.startsWith('✓') ? r.textContent : false; }", what="the Mark button's answer")
    assert f"{name2}:clicked" in result, result
    assert dev2.proc.expect("marked", START_TIMEOUT) == "clicked"
    state = wait_for(lambda: (s := http(url, "/api/state")[2])["devices"][name2].get("mark") == "clicked" and s,
                     START_TIMEOUT, f"the mark in {name2}'s state at {url.base}")
    assert "mark" not in state["devices"][name1], state
    assert not any(line.startswith("marked") for line in dev1.proc.stdout), dev1.proc.stdout

    # a view naming NAME1/level keeps device 1's data while device 2 is selected, and its
    # button commands device 1 (every dataset of the view names it)
    dash.open_tab("pinned")
    wait_values(dash, "pinned", f"{name1}/level", 100, 101, f"device 1 values in the pinned view while {name2} is selected")
    dash.page.locator('.mb-panel[data-id="pinned"] .mb-buttons button').click()
    assert dev1.proc.expect("marked", START_TIMEOUT) == "clicked"
    return dash


@pytest.mark.timeout(180)
def test_the_picker_switches_views_commands_and_the_url(mb, launch, dashboards: Dashboards, tmp_path: Path):
    dev1, dev2 = level_devices(mb, launch, [mb.new_name(), mb.new_name()])
    name1, name2 = dev1.name, dev2.name
    specs = level_specs(tmp_path, name1)
    bridge, url = serve_devices(mb, [name1, name2], specs)
    dash = pick_device_2(dashboards, url, dev1, dev2)

    # the Status tab shows device 2: its status, and its channels from GET api/stats?device=NAME2
    asked: list[str] = []
    dash.page.on("request", lambda req: asked.append(req.url) if "/api/stats" in req.url else None)
    dash.open_tab("status")
    dash.wait("(n) => { const c = document.querySelector('.mb-panel[data-id=\"status\"] .mb-card strong');"
              " const rows = [...document.querySelectorAll('.mb-panel[data-id=\"status\"] .mb-wide td:first-child')];"
              " return c && c.textContent === n && rows.some((td) => td.textContent === 'level'); }", name2,
              what="the Status tab showing device 2 and its channels")
    assert not dash.js("() => document.querySelector('.mb-panel[data-id=\"status\"] .mb-wide .mb-error')"), dash.describe()
    assert asked and all(u.endswith(f"/api/stats?device={name2}") for u in asked), asked

    # a spec naming a device the bridge does not serve says so in its tab
    write_spec(specs, "ghost.vl.json", level_spec("nodevice/level", "Ghost", 3))
    dash.wait_view("ghost")
    message = dash.wait_error("ghost")
    assert "'nodevice'" in message and "does not serve" in message and name1 in message, message

    # a tab opened on the URL shows device 2 from the start
    dash.page.reload(wait_until="load")
    dash.wait("(n) => window.monbridge && window.monbridge.device === n", name2, what="device 2 after a reload")
    dash.wait_connection("live")
    assert picker(dash)["value"] == name2
    dash.open_tab("level")
    wait_values(dash, "level", "level", 200, 201, "device 2 values after a reload")
    dash.screenshot("devices-picker")
    assert not dash.page_errors, dash.page_errors

    # an orderly end: the bridge exits 0 on SIGTERM, each device on EOF, none with a traceback
    bridge.proc.send_signal(signal.SIGTERM)
    assert bridge.wait_gone(START_TIMEOUT) == 0, bridge.describe()
    assert "Traceback" not in "".join(bridge.stderr), bridge.describe()
    for dev in (dev1, dev2):
        dev.proc.stop(START_TIMEOUT)


EDGE_TOKEN = "edge-browser-token-0123456789"


@pytest.mark.timeout(180)
def test_the_picker_on_an_edge_serving_every_published_device(mb, launch, redis_server: RedisServer,
                                                               dashboards: Dashboards, tmp_path: Path):
    # device 1 is the one whose name sorts first ("t1-10-..." before "t1-9-..."): see the edge below
    dev1, dev2 = level_devices(mb, launch, sorted([mb.new_name(), mb.new_name()]))
    specs = level_specs(tmp_path, dev1.name)
    origins = [mb.serve(d.name, "--publish", redis_server.url, expect_url=False) for d in (dev1, dev2)]
    for origin, dev in zip(origins, (dev1, dev2)):   # the harness stops them (and the edge)
        origin.expect("monbridge: serving", START_TIMEOUT)
        wait_published(redis_server.url, dev.name)
    # both published before the edge first looks: it serves them in name order, not in the order
    # the origins happened to reach Redis
    edge = mb.serve_devices("all", "--edge", redis_server.url, "--specs", str(specs), "--token", EDGE_TOKEN)
    assert edge.url.token == EDGE_TOKEN, edge.url
    wait_devices(edge.url, {dev1.name: dev1.pid, dev2.name: dev2.pid})
    dash = pick_device_2(dashboards, edge.url, dev1, dev2)
    assert not dash.page_errors, dash.page_errors

    # an orderly end: the edge exits 0 on SIGTERM, without a traceback
    assert edge.terminate(START_TIMEOUT) == 0, edge.proc.describe()
    assert "Traceback" not in "".join(edge.proc.stderr), edge.proc.describe()


def test_a_single_device_bridge_shows_no_picker(devices: Devices, specs_dir, dashboards: Dashboards):
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/wave")
    dash.wait_rows_grow("wave")
    assert picker(dash)["hidden"] is True and picker(dash)["visible"] is False
    assert dash.js("() => [window.monbridge.multi, window.monbridge.device, window.monbridge.devices]") == [False, dev.name, [dev.name]]
    assert dash.js("() => document.getElementById('mb-device').textContent") == dev.name
    assert "device=" not in dash.js("() => location.search")
    assert not dash.page_errors, dash.page_errors


@pytest.mark.timeout(180)
def test_a_page_behind_a_balancer_is_served_by_another_edge_when_its_edge_dies(
        mb, launch, redis_server: RedisServer, dashboards: Dashboards, tmp_path: Path):
    """Issue 15's failover, in chromium: the page is loaded through a TCP balancer in front of
    two edges (bench/balancer.py, as nginx in docs/scaling.md); its edge is SIGKILLed; the same
    page shows records published after the kill, through the other edge, with no reload."""
    from bench.balancer import Balancer

    dev = level_devices(mb, launch, [mb.new_name()])[-1]   # values around 100
    specs = level_specs(tmp_path, dev.name)
    origin = mb.serve(dev.name, "--publish", redis_server.url, expect_url=False)
    origin.expect("monbridge: serving", START_TIMEOUT)
    wait_published(redis_server.url, dev.name)
    edges = [mb.serve_devices(dev.name, "--edge", redis_server.url, "--specs", str(specs), "--token", EDGE_TOKEN)
             for _ in range(2)]
    for edge in edges:
        wait_devices(edge.url, {dev.name: dev.pid})
    balancer = Balancer([("127.0.0.1", e.url.port) for e in edges])
    try:
        dash = dashboards.open(parse_url(f"{balancer.url}/?token={EDGE_TOKEN}"), "#/level")
        wait_values(dash, "level", "level", 100, 101, "the device's values through the first edge")
        victim = next(e for e in edges if e.url.port == balancer.chosen[0][1])
        victim.proc.kill_group()      # SIGKILL: the page's socket closes at once
        victim.proc.wait_gone()
        killed = time.time()
        dash.wait("(t) => { const a = window.monbridge.lastApplied['level']; return a && a.t > t; }", killed,
                  what="records published after the kill, through the other edge")
        took = time.time() - killed
        assert balancer.chosen[-1] != balancer.chosen[0], balancer.chosen
        assert took < 6.0, f"the page showed new records {took:.2f} s after its edge was killed"  # target 3 s: bench.fleet
        assert not dash.page_errors, dash.page_errors
    finally:
        balancer.close()
