"""docs/client.md's examples run, against a real device and bridge: examples/robot_arm.py
started with ``MON=port=0``, and each ```python block of the page run as a script with
``MONBRIDGE_URL`` set to the URL the device printed, as the page tells a reader to.

Blocks marked ``<!-- not-run: tests/test_docs_client.py runs it ... -->`` are this test's
(tests/test_docs.py skips them); any other not-run marker is a fragment, skipped here too.
"""

from __future__ import annotations

import re
import signal

from conftest import REPO, START_TIMEOUT, wait_for
from test_docs import fenced_blocks

PAGE = REPO / "docs" / "client.md"
DEVICE = REPO / "examples" / "robot_arm.py"
OURS = "not-run: tests/test_docs_client.py runs it"
RUN_TIMEOUT = 60.0
URL_RE = re.compile(r"monbridge: dashboard for '([^']+)' at (\S+)")


def our_blocks() -> list:
    blocks = [b for b in fenced_blocks(PAGE) if b.lang == "python"]
    for b in blocks:
        assert b.marker is not None and b.marker.startswith("not-run: "), \
            f"{b.id}: mark it <!-- {OURS} against examples/robot_arm.py --> or <!-- not-run: REASON -->"
    return [b for b in blocks if b.marker.startswith(OURS)]


def test_the_page_has_blocking_and_asyncio_examples() -> None:
    code = "".join(b.code for b in our_blocks())
    assert len(our_blocks()) >= 5 and "Client(" in code and "AsyncClient.connect(" in code
    for api in ("subscribe(", "command(", "wait_for_state(", "on_state", "CommandFailed", "wait_for("):
        assert api in code, f"no example uses {api}"


def test_examples_run_against_robot_arm(launch, new_device_name) -> None:
    name = new_device_name()
    # launch passes its second argument first on the command line: here robot_arm's option,
    # a limit in case the test dies before its SIGTERM
    device = launch(DEVICE.read_text(encoding="utf-8"), "--duration", "300", mon=f"port=0,name={name}", ready=None)

    def url() -> str | None:
        for m in URL_RE.finditer("".join(device.stderr)):
            if m.group(1) == name:
                return m.group(2)
        assert device.proc.poll() is None, f"the device exited: {device.describe()}"
        return None

    env = {"MONBRIDGE_URL": wait_for(url, START_TIMEOUT, "the device's dashboard URL")}
    try:
        for block in our_blocks():
            run = launch(block.code, "-", mon=None, ready=None, env=env)
            run.stop(timeout=RUN_TIMEOUT, check_stderr=False)   # exit code 0, checked by stop()
            err = "".join(run.stderr)
            assert "Traceback" not in err and "Task exception" not in err, f"{block.id}: {run.describe()}"
            assert run.stdout, f"{block.id} printed nothing"
    finally:
        device.proc.send_signal(signal.SIGTERM)
        code = device.wait_gone(START_TIMEOUT)
    assert code in (0, 128 + signal.SIGTERM), device.describe()
