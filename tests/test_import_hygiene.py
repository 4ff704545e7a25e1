"""device_agent is imported by device code: it must not pull in the web stack, and with
MON unset it must not start threads or processes. Each check runs in a fresh interpreter,
since this test process may have imported anything already.
"""

from __future__ import annotations

import json

import pytest

WEB_STACK = ["flask", "flask_socketio", "socketio", "engineio", "eventlet"]

IMPORT_PROBE = r"""
import json, pkgutil, importlib, sys
WEB_STACK = %r
if sys.argv[1:] == ["control"]:
    import flask_socketio  # proves the probe can see the web stack
import device_agent
import device_agent.attach
import device_agent.cleanup
for mod in pkgutil.iter_modules(device_agent.__path__):
    importlib.import_module(f"device_agent.{mod.name}")
if sys.argv[1:] == ["start"]:  # an enabled monitor (no bridge) publishing
    mon = device_agent.start(sys.argv[2], mon="bridge=0")
    mon.records("r", {"t": "f8"}).publish(t=1.0)
    mon.state.update(x=1)
    mon.close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in WEB_STACK)))
""" % (WEB_STACK,)


@pytest.mark.parametrize("mode", ["import", "start"])
def test_device_agent_imports_no_web_stack(run_python, device_name, mode):
    done = run_python(IMPORT_PROBE, mode, device_name)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_import_probe_detects_the_web_stack(run_python):
    done = run_python(IMPORT_PROBE, "control")
    assert done.returncode == 0, done.stderr
    assert {"flask", "flask_socketio", "socketio", "engineio"} <= set(json.loads(done.stdout))


START_PROBE = r"""
import json, os, sys, threading
from multiprocessing import resource_tracker


def children():
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == os.getpid():
                    found.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return found


import device_agent

mon = device_agent.start(sys.argv[1])
mon.records("r", {"t": "f8"}).publish(t=1.0)


@mon.command
def ping() -> str:
    return "pong"


report = {
    "enabled": mon.enabled,
    "threads": [t.name for t in threading.enumerate()],
    "children": children(),
    "tracker_started": resource_tracker._resource_tracker._fd is not None,
}
mon.close()
print(json.dumps(report))
"""


@pytest.mark.parametrize("mon", [None, "", "0"])
def test_disabled_start_starts_no_thread_and_no_process(run_python, device_name, mon):
    done = run_python(START_PROBE, device_name, mon=mon)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "enabled": False, "threads": ["MainThread"], "children": [], "tracker_started": False,
    }


def test_start_probe_detects_threads_and_processes(run_python, device_name):
    """The same probe with MON set: the monitor's service thread and the resource tracker."""
    done = run_python(START_PROBE, device_name, mon="bridge=0")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["enabled"] is True
    assert f"monbridge-{device_name}-heartbeat" in report["threads"]
    assert f"monbridge-{device_name}-commands" in report["threads"]
    assert report["tracker_started"] is True and len(report["children"]) == 1
