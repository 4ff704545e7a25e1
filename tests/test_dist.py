"""The packages as a user gets them (issue 13 §6): build the sdist and the wheel, check what
each holds, install each into a fresh virtualenv outside the repository, and use it from an
empty directory — the minimal example's code with MON=port=0, the dashboard in chromium with
a chart drawing data, and a command through the Python client.

Needs the built web UI (``make test`` builds it) and the package registry (pip installs the
dependencies into the fresh virtualenvs; its cache makes the second install quick).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from browser_support import chromium, dashboards  # noqa: F401  (fixtures)
from bridge_support import parse_url, wait_stderr
from conftest import REPO, DeviceProcess

pytestmark = pytest.mark.timeout(900)

UI_FILES = {"index.html", "app.js", "app.css"}
URL_LINE = re.compile(r"monbridge: dashboard for '[^']+' at (http://\S+)")
INSTALL_TIMEOUT = 600


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build``: the sdist, then the wheel built from it (as ``make dist`` does)."""
    for name in UI_FILES:
        assert (REPO / "bridge" / "static" / name).is_file(), "the web UI is not built: run make js"
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                         capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert run.returncode == 0, f"python -m build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_the_wheel_holds_the_product_and_nothing_else(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(meta_name).decode()
    ui = {n.rsplit("/", 1)[1] for n in names if n.startswith("bridge/static/")}
    assert UI_FILES <= ui, f"the built web UI is missing from the wheel: {sorted(ui)}"
    assert not [n for n in names if n.endswith(".map")], "the sourcemap is in the wheel"
    assert not [n for n in names if n.split("/", 1)[0] in ("tests", "bench", "webui", "examples", "tools")]
    specs = {n.rsplit("/", 1)[1] for n in names if n.startswith("bridge/default_specs/")}
    shipped = {p.name for p in (REPO / "specs").iterdir() if p.name.endswith((".vl.json", ".scene.json"))}
    assert specs == shipped
    for name in ("bridge/py.typed", "device_agent/py.typed", "bridge/client.py", "bridge/cli.py"):
        assert name in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for field in ("License-Expression: MIT", "Requires-Python: >=3.10", "Project-URL: ", "Classifier: ",
                  "Provides-Extra: client", "Description-Content-Type: text/markdown"):
        assert field in metadata, f"{field!r} missing from METADATA"
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in runtime if re.search(r"pytest|playwright|aiohttp|requests|websocket", r)], runtime
    assert any("python-socketio[" in r and "extra == \"client\"" in r for r in requires), requires


def test_the_sdist_holds_what_rebuilds_and_tests_it(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for path in ("package.json", "package-lock.json", "LICENSE", "CHANGELOG.md", "README.md", "Makefile",
                 "webui/src/main.js", "webui/build.mjs", "bridge/static/app.js", "bridge/static/index.html",
                 "specs/wave.vl.json", "examples/minimal.py", "tests/conftest.py", "tests/bridge_support.py",
                 "bench/common.py", "docs/protocol.md", ".ci/run"):
        assert path in names, f"{path} is missing from the sdist"
    assert not [n for n in names if n.startswith("node_modules/") or n.endswith(".map")]


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_from_an_empty_directory(kind: str, dists: dict[str, Path], tmp_path: Path, _guard: Any,
                                           new_device_name: Callable[[], str], dashboards: Any) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          f"monbridge[client] @ {dists[kind].as_uri()}"],
                         capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert pip.returncode == 0, f"pip install of the {kind} failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"
    version = subprocess.run([str(venv / "bin" / "monbridge"), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("monbridge ") and version.returncode == 0, version

    # the minimal example's code, run from an empty directory that holds impostors of both packages
    app, workdir = tmp_path / "app", tmp_path / "empty"
    app.mkdir()
    workdir.mkdir()
    (app / "minimal.py").write_text((REPO / "examples" / "minimal.py").read_text())
    (workdir / "bridge.py").write_text("print('an impostor bridge ran')\n")
    (workdir / "device_agent.py").write_text("raise SystemExit('an impostor device_agent ran')\n")
    name = new_device_name()
    env, tag = _guard.env(f"port=0,name={name}", None)
    env.pop("PYTHONPATH")   # nothing of the repository: the installed package only
    device = DeviceProcess([str(python), str(app / "minimal.py")], env, workdir, tag)
    _guard.procs.append(device)

    url = parse_url(wait_stderr(device, URL_LINE).group(1))
    dash = dashboards.open(url, fragment="#/wave")
    dash.wait_no_error("wave")
    dash.wait_rows_grow("wave")

    command = ("import sys; from bridge.client import Client\n"
               "with Client(sys.argv[1]) as c:\n"
               "    print(repr(c.command('set_gain', value=2.5)), c.wait_for_state('gain', 2.5, timeout=10))\n")
    # from app/: python -c puts its working directory first on sys.path, impostors included
    client = subprocess.run([str(python), "-c", command, url.url], cwd=app, env=env,
                            capture_output=True, text=True, timeout=60)
    assert client.returncode == 0 and client.stdout.split() == ["2.5", "2.5"], client
    dash.wait("() => window.monbridge.state.gain === 2.5", what="gain 2.5 in the page's state")

    device.proc.send_signal(signal.SIGINT)
    assert device.proc.wait(30) == 0, device.describe()
    stderr = "".join(device.stderr)
    assert "impostor" not in stderr + "".join(device.stdout) and "Traceback" not in stderr, device.describe()
