"""monbridge in Jupyter (issue 13 §3), in a real IPython kernel driven by nbclient: a cell that
ends in ``mon`` shows the dashboard inline, running the ``start()`` cell again replaces the
monitor instead of raising DeviceNameInUse, and both clients work beside the kernel's running
event loop (the blocking one, and the asyncio one with top-level ``await``).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

pytestmark = pytest.mark.timeout(300)

START = """\
import device_agent
mon = device_agent.start({name!r}, port=0)
wave = mon.records("wave", {{"t": "f8", "value": "f4"}})
mon.state.update(gain=1.0)

@mon.command
def set_gain(value: float) -> float:
    mon.state.update(gain=value)
    return value

print("url", mon.wait_url(30))
"""


def html_output(cell: Any) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs if o.get("output_type") == "execute_result")


def text_output(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_a_notebook_shows_restarts_and_commands_the_device(new_device_name: Any, tmp_path: Path) -> None:
    name = new_device_name()
    cells = [
        START.format(name=name),                                     # 0
        "mon",                                                       # 1: the dashboard inline
        START.format(name=name),                                     # 2: the same cell run again
        "mon.dashboard(height=400)",                                 # 3
        # 4: the blocking client, from a cell (the kernel's event loop is running)
        "from bridge.client import Client\n"
        "with Client(mon.url) as c:\n"
        "    print('blocking', c.command('set_gain', value=2.0), c.wait_for_state('gain', 2.0, timeout=10))",
        # 5: the asyncio client with top-level await, on the kernel's own loop
        "from bridge.client import AsyncClient\n"
        "c = await AsyncClient.connect(mon.url)\n"
        "print('async', await c.command('set_gain', value=3.0), await c.wait_for_state('gain', 3.0, timeout=10))\n"
        "await c.close()",
        "mon.close()\nprint('closed')",                             # 6
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["MON"] = "1"   # start() in the cell reads MON: on, with port=0 given as a keyword
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)   # handed to the kernel manager's start_kernel
    out = nb.cells

    first_url = text_output(out[0]).split()[-1]
    assert first_url.startswith("http://127.0.0.1:") and "token=" in first_url, text_output(out[0])
    frame = html_output(out[1])
    assert re.search(r"<iframe src=\"[^\"]+\"", frame), frame
    assert html.unescape(re.search(r'src="([^"]+)"', frame).group(1)) == first_url

    second_url = text_output(out[2]).split()[-1]
    assert second_url.startswith("http://127.0.0.1:") and second_url != first_url, text_output(out[2])
    assert not [o for c in out for o in c.outputs if o.get("output_type") == "error"], \
        [o for c in out for o in c.outputs if o.get("output_type") == "error"]
    assert 'height="400"' in html_output(out[3]) and html.escape(second_url, quote=True) in html_output(out[3])

    assert text_output(out[4]).split() == ["blocking", "2.0", "2.0"], out[4].outputs
    assert text_output(out[5]).split() == ["async", "3.0", "3.0"], out[5].outputs
    assert text_output(out[6]).strip() == "closed"
