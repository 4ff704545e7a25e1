"""bench.ring --device-env: the environment it adds reaches the device (writer) processes only,
and is put back afterwards. Unit tests of one function each: the spawn context's Process is
replaced by a recorder of the environment at start(), so no process is started."""

from __future__ import annotations

import json
import os

import pytest

from bench import ring

NAME = "MONBRIDGE_TEST_DEVICE_ENV"


def test_added_environment_adds_then_restores(monkeypatch):
    monkeypatch.setenv(NAME, "before")
    monkeypatch.delenv(NAME + "_NEW", raising=False)
    with ring.added_environment({NAME: "during", NAME + "_NEW": "x"}):
        assert os.environ[NAME] == "during"
        assert os.environ[NAME + "_NEW"] == "x"
    assert os.environ[NAME] == "before"
    assert NAME + "_NEW" not in os.environ


def test_added_environment_restores_after_an_error(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    with pytest.raises(RuntimeError):
        with ring.added_environment({NAME: "during"}):
            raise RuntimeError("the start failed")
    assert NAME not in os.environ


class RecordingProcess:
    """Stands in for the spawn context's Process: records what the environment held at start()."""

    started: list[tuple[str, str | None]] = []

    def __init__(self, target, args, name, daemon) -> None:
        self.name = name

    def start(self) -> None:
        RecordingProcess.started.append((self.name, os.environ.get(NAME)))


def test_only_device_processes_get_the_device_environment(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    monkeypatch.setattr(ring.CTX, "Process", RecordingProcess)
    monkeypatch.setitem(ring.DEVICE_ENV, NAME, "1")
    RecordingProcess.started.clear()
    children = ring.Children(budget=1.0)
    for role in ("device", "reader", "hwriter", "qprod"):
        children.spawn(role, "frame16mb", "unused", {})
    for _, conn in children.procs:
        conn.close()
    assert RecordingProcess.started == [("bench-device-frame16mb", "1"), ("bench-reader-frame16mb", None),
                                        ("bench-hwriter-frame16mb", None), ("bench-qprod-frame16mb", None)]
    assert NAME not in os.environ


@pytest.mark.parametrize("item", ["NOEQUALS", "=value", ""])
def test_device_env_needs_name_equals_value(item, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ring.main(["--device-env", item, "--only", "publish_ns"])
    assert exit_info.value.code == 2
    assert "--device-env takes NAME=VALUE" in capsys.readouterr().err


def test_a_run_with_a_device_environment_says_so_in_its_result(capsys):
    assert ring.main(["--quick", "--json", "--no-settle", "--only", "publish_ns", "--device-env", f"{NAME}=1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device_env"] == {NAME: "1"}
    assert ring.DEVICE_ENV == {}  # nothing left for a later run in this process
