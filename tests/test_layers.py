"""Which device_agent modules the bridge may import.

The bridge reads a device's shared memory; it must not depend on the device's own lifecycle
(monitor.py starts monitors and launches bridges, channels.py publishes, config.py parses
MON, commands.py runs handlers, disabled.py is the no-op monitor). It may import the byte
formats, the reading side and the pieces both processes share, listed in BRIDGE_MAY_IMPORT.
Those modules in turn may import only each other, so nothing forbidden comes in through them.

Checked by reading the source with ``ast`` (every import statement, at any depth, including
those inside functions), not by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

BRIDGE_MAY_IMPORT = {
    # byte formats: docs/shm-layout.md
    "device_agent.layout": "the segment header and segment names",
    "device_agent.records": "the records ring (records and events channels)",
    "device_agent.frames": "the frame slots",
    "device_agent.payloads": "the records dtype's JSON and the event record",
    "device_agent.queues": "seqlocked blobs and message queues",
    "device_agent.control": "the control segment's parts",
    "device_agent.fence": "the memory fence the formats use",
    # the reading side and what both processes share
    "device_agent.attach": "attaching to a device and reading its channels",
    "device_agent.shm": "attaching segments without the resource tracker",
    "device_agent.doorbell": "doorbells",
    "device_agent.errors": "exceptions",
    "device_agent.schema": "the command catalog and argument validation",
    "device_agent.settings": "the settings table, DEFAULT_PORT, is_loopback, check_token",
    "device_agent.cleanup": "finding and removing stale segments (monbridge list, cleanup)",
    "device_agent.version": "the package's version",
}


# Devices inside the bridge package, each allowed one more module beyond BRIDGE_MAY_IMPORT:
# ``monbridge replay`` is a device process (the package itself, for start() and parse_mon());
# an edge's mirror publishes the origin's data into channels laid out in its own memory.
DEVICE_PROGRAMS = {
    "bridge/record/replay_cli.py": ("device_agent", "monbridge replay: a device process playing a recording"),
    "bridge/fleet/mirror.py": ("device_agent.channels", "an edge's copy of the origin's device, written with "
                                                         "the channels' writer classes"),
}


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module of ``package``.
    ``from X import name`` counts as X.name when that is a module of device_agent."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                is_module = base == "device_agent" and (REPO / "device_agent" / f"{alias.name}.py").exists()
                found.append((node.lineno, f"{base}.{alias.name}" if is_module else base))
    return found


def problems(sources: dict[str, str], package: str) -> list[str]:
    """What is wrong with the device_agent imports of ``sources`` (file name -> source)."""
    out = []
    for file, source in sources.items():
        for line, name in imports_in(source, package):
            if name != "device_agent" and not name.startswith("device_agent."):
                continue
            if file in DEVICE_PROGRAMS and name == DEVICE_PROGRAMS[file][0]:
                continue
            if name not in BRIDGE_MAY_IMPORT:
                what = "the device_agent package itself (name a module)" if name == "device_agent" else name
                out.append(f"{file}:{line} imports {what}, which the bridge may not import; use the "
                           f"modules in tests/test_layers.py's BRIDGE_MAY_IMPORT, or move what it needs "
                           f"into one of them")
    return out


def read(paths: list[Path]) -> dict[str, str]:
    return {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in paths}


def test_the_bridge_imports_only_the_allowed_device_agent_modules():
    sources = read(sorted((REPO / "bridge").rglob("*.py")))   # bridge.record too
    assert sources
    found = problems(sources, "bridge")
    assert not found, "\n".join(found)


def test_the_allowed_modules_import_only_each_other():
    found = problems(read([REPO / (name.replace(".", "/") + ".py") for name in sorted(BRIDGE_MAY_IMPORT)]),
                     "device_agent")
    assert not found, "\n".join(found)


def test_every_allowed_module_exists():
    missing = [m for m in BRIDGE_MAY_IMPORT if not (REPO / (m.replace(".", "/") + ".py")).is_file()]
    assert not missing, f"BRIDGE_MAY_IMPORT names modules that do not exist: {missing}"


@pytest.mark.parametrize("source, found", [
    ("from device_agent.monitor import running_bridge\n", "device_agent.monitor"),
    ("import device_agent.channels\n", "device_agent.channels"),
    ("from device_agent import config\n", "device_agent.config"),
    ("from device_agent import start\n", "the device_agent package itself"),
    ("import os\n\ndef f():\n    from device_agent.commands import Dispatcher\n", "device_agent.commands"),
])
def test_a_forbidden_import_is_reported_with_file_line_and_module(source, found):
    report = problems({"bridge/probe.py": source}, "bridge")
    assert len(report) == 1, report
    assert report[0].startswith(f"bridge/probe.py:{source.count(chr(10))} imports {found}"), report
    assert "which the bridge may not import" in report[0]


def test_allowed_and_unrelated_imports_pass():
    source = "import os\nfrom device_agent.layout import HEADER_SIZE\nfrom device_agent import shm\nfrom . import logs\n"
    assert problems({"bridge/probe.py": source}, "bridge") == []


def test_relative_imports_resolve_inside_the_package():
    names = {name for _, name in imports_in((REPO / "device_agent" / "attach.py").read_text(), "device_agent")}
    assert "device_agent.payloads" in names and "device_agent.channels" not in names
