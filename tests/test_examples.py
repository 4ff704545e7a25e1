"""The examples as a newcomer meets them: the README shows examples/minimal.py verbatim, and
with MON unset both examples run without a monitor, without importing the bridge, and stop
cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from conftest import REPO, START_TIMEOUT, segments_of

BRIDGE_MODULES = ("bridge", "flask", "flask_socketio", "socketio", "engineio", "eventlet")


def _env_without_mon() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MON"}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_readme_shows_minimal_example_verbatim():
    readme = (REPO / "README.md").read_text()
    minimal = (REPO / "examples" / "minimal.py").read_text()
    assert f"```python\n{minimal}```" in readme, "README's ten lines differ from examples/minimal.py"


def test_robot_arm_without_mon_imports_no_bridge_and_creates_nothing():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "examples" / "robot_arm.py"), "--duration", "1"],
        env=_env_without_mon(), capture_output=True, text=True, timeout=START_TIMEOUT, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MON unset: no monitor" in done.stdout
    imported = {m.group(1).strip().split(".")[0]
                for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", done.stderr, re.M)}
    assert "device_agent" in imported  # the probe works
    assert not imported & set(BRIDGE_MODULES), sorted(imported & set(BRIDGE_MODULES))
    assert not segments_of("robot_arm")


def test_minimal_without_mon_stops_cleanly_on_ctrl_c():
    # the first time.sleep() happens inside the loop: say so there, then keep sleeping
    wrapper = (
        "import runpy, sys, time\n"
        "sleep = time.sleep\n"
        "def announce(s):\n"
        "    time.sleep = sleep\n"
        "    print('running', flush=True)\n"
        "    sleep(s)\n"
        "time.sleep = announce\n"
        "sys.argv = ['minimal.py']\n"
        f"runpy.run_path({str(REPO / 'examples' / 'minimal.py')!r}, run_name='__main__')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", wrapper],
        env=_env_without_mon(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert not segments_of("minimal")
