"""Recording from the bridge: ``POST /api/record`` starts and stops a real ``monbridge record``
process beside a real device and bridge (bridge/record_control.py); ``GET /api/record`` and
``/api/stats`` say what it records. Files are read back with the ``mcap`` reader, CRCs checked.

Every wait polls with a deadline (conftest.wait_for); the conftest guard checks that no
process (the recorder inherits the bridge's test tag) and no /dev/shm segment is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bridge_support import (SERVING_LINE, Bridge, BridgeURL, children, cmdline, http, mb, parse_url,  # noqa: F401 (mb: fixture)
                            pid_gone, wait_attached)
from conftest import REPO, START_TIMEOUT, TIMEOUT, DeviceProcess, segments_of, wait_for
from device_agent.shm import unlink_segment

mcap_reader = pytest.importorskip("mcap.reader")
from mcap.stream_reader import StreamReader  # noqa: E402

DEFAULT_NAME = r"-\d{8}-\d{6}\.mcap"


def record(url: BridgeURL, body: Any, token: str | None | bool = True) -> tuple[int, Any]:
    status, _, answer = http(url, "/api/record", "POST", token=token, body=body, timeout=START_TIMEOUT + 30)
    return status, answer


def record_status(url: BridgeURL) -> dict[str, Any]:
    status, _, answer = http(url, "/api/record")
    assert status == 200, answer
    return answer


def start_all(mb: Any, tmp_path: Path, *args: str) -> tuple[Any, Bridge, Path]:
    """A device (no bridge of its own) publishing telemetry at 200 Hz, and a bridge started by
    hand with --record-dir; waits until the bridge is attached."""
    dev = mb.device(mon="bridge=0")
    rec_dir = tmp_path / "runs"
    bridge = mb.serve(dev.name, "--record-dir", str(rec_dir), *args)
    wait_attached(bridge.url, dev.pid)
    dev.request("stream 200", "streaming")
    return dev, bridge, rec_dir


def read_mcap(path: Path) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """({topic: messages}, {metadata name: metadata}) of a finished file, every CRC checked."""
    for _ in StreamReader(str(path), validate_crcs=True).records:
        pass
    with open(path, "rb") as f:
        reader = mcap_reader.make_reader(f)
        summary = reader.get_summary()
        assert summary is not None, f"{path} has no summary section: not finished"
        topics = {ch.topic: summary.statistics.channel_message_counts.get(cid, 0)
                  for cid, ch in summary.channels.items()}
        meta = {m.name: m.metadata for m in reader.iter_metadata()}
    return topics, meta


def recorders_of(pid: int) -> list[int]:
    """Live ``record`` child processes of ``pid``."""
    return [c for c in children(pid) if b"\0record\0" in cmdline(c)]


@pytest.mark.parametrize("mode", ["eventlet", "threading"])
def test_start_watch_and_stop_a_recording_over_http(mb: Any, tmp_path: Path, mode: str) -> None:
    dev, bridge, rec_dir = start_all(mb, tmp_path, "--async-mode", mode)
    idle = record_status(bridge.url)
    assert idle["recording"] is False and idle["last"] is None and idle["dir"] == str(rec_dir), idle

    # a viewer (no token on a loopback bind) and a wrong token are refused; nothing starts
    status, answer = record(bridge.url, {"action": "start"}, token=None)
    assert status == 403 and answer["error"]["code"] == "forbidden", answer
    assert "operator token" in answer["error"]["message"]
    status, answer = record(bridge.url, {"action": "start"}, token="wrong-token-123")
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert record_status(bridge.url)["recording"] is False and not rec_dir.exists()

    status, started = record(bridge.url, {"action": "start"})
    assert status == 200 and started["ok"] is True and started["recording"] is True, started
    assert re.fullmatch(re.escape(dev.name) + DEFAULT_NAME, started["file"]), started
    path = rec_dir / started["file"]
    assert started["path"] == str(path) and started["device"] == dev.name
    assert len(recorders_of(bridge.pid)) == 1

    # the figures move while it records; nothing is missed at 200 Hz
    def moving() -> dict[str, Any] | None:
        s = record_status(bridge.url)
        ok = s["recording"] and s["seconds"] > 1.0 and s["bytes"] > started["bytes"] and s["records_per_s"] > 50
        return s if ok else None
    now = wait_for(moving, TIMEOUT, "the recording's seconds, bytes and records/s to grow", interval=0.1)
    assert now["missed"] == {"telemetry": 0, "img": 0, "log": 0}, now
    assert now["file"] == started["file"] and (rec_dir / (started["file"] + ".part")).exists()
    _, _, stats = http(bridge.url, "/api/stats")
    assert stats["recording"]["recording"] is True and stats["recording"]["file"] == started["file"]

    status, answer = record(bridge.url, {"action": "start"})
    assert status == 409 and answer["error"]["code"] == "already_recording", answer
    assert started["file"] in answer["error"]["message"]
    status, answer = record(bridge.url, {"action": "stop"}, token=None)
    assert status == 403 and answer["error"]["code"] == "forbidden", answer

    status, stopped = record(bridge.url, {"action": "stop"})
    assert status == 200 and stopped["ok"] is True and stopped["recording"] is False, stopped
    last = stopped["last"]
    assert last["ok"] is True and last["file"] == started["file"] and last["exit_code"] == 0, last
    assert last["reason"] == "stopped by SIGTERM" and last["bytes"] == path.stat().st_size, last
    assert last["seconds"] >= now["seconds"] and last["missed"] == now["missed"], last
    assert path.exists() and not Path(str(path) + ".part").exists()
    assert recorders_of(bridge.pid) == []
    assert record_status(bridge.url)["last"] == last

    topics, meta = read_mcap(path)
    assert topics["/telemetry"] >= now["messages"] > 0, topics
    assert meta["monbridge.recording"]["device"] == dev.name
    assert json.loads(meta["monbridge.summary"]["missed"]) == {"telemetry": 0, "img": 0, "log": 0}

    status, answer = record(bridge.url, {"action": "stop"})
    assert status == 409 and answer["error"]["code"] == "not_recording", answer
    assert bridge.terminate() == 0


def test_bad_requests_are_refused_with_the_reason(mb: Any, tmp_path: Path) -> None:
    dev, bridge, rec_dir = start_all(mb, tmp_path)
    for name in ["../escape", "a/b", "/etc/passwd", "", ".hidden", "-rf", "a..b", "x" * 101, "sp ace", "<b>x</b>", 5]:
        status, answer = record(bridge.url, {"action": "start", "name": name})
        assert status == 400 and answer["error"]["code"] == "invalid_args", (name, answer)
        assert "'name'" in answer["error"]["message"], answer
    for body in [{}, {"action": "pause"}, {"action": "stop", "name": "x"}, {"action": "start", "duration": 5}, [1]]:
        status, answer = record(bridge.url, body)
        assert status == 400 and answer["error"]["code"] == "bad_request", (body, answer)
    status, answer = record(bridge.url, {"action": "start", "channels": ["bad name!"]})
    assert status == 400 and answer["error"]["code"] == "invalid_args", answer
    # an unknown channel: the recorder's own message, with the device's channels
    status, answer = record(bridge.url, {"action": "start", "channels": ["nope"]})
    assert status == 400 and answer["error"]["code"] == "invalid_args", answer
    assert "has no channel 'nope'" in answer["error"]["message"] and "telemetry" in answer["error"]["message"]
    # a page from another site may not use it, token or not
    req = urllib.request.Request(bridge.url.base + "/api/record", data=b'{"action": "start"}', method="POST",
                                 headers={"Content-Type": "application/json", "Origin": "http://evil.example",
                                          "Authorization": f"Bearer {bridge.url.token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=TIMEOUT)
    assert refused.value.code == 403
    assert record_status(bridge.url)["recording"] is False and record_status(bridge.url)["last"] is None
    assert not rec_dir.exists() or sorted(os.listdir(rec_dir)) == []

    # a name that is taken (with or without .mcap) is refused, not overwritten
    rec_dir.mkdir(exist_ok=True)
    (rec_dir / "taken.mcap").write_bytes(b"keep me")
    for name in ["taken", "taken.mcap"]:
        status, answer = record(bridge.url, {"action": "start", "name": name})
        assert status == 409 and answer["error"]["code"] == "file_exists", answer
    assert (rec_dir / "taken.mcap").read_bytes() == b"keep me"

    # a chosen name and channel list
    status, started = record(bridge.url, {"action": "start", "name": "run-1.a", "channels": ["telemetry"]})
    assert status == 200 and started["file"] == "run-1.a.mcap", started
    wait_for(lambda: record_status(bridge.url)["missed"] == {"telemetry": 0}, TIMEOUT, "the recorder's channels")
    status, stopped = record(bridge.url, {"action": "stop"})
    assert status == 200 and stopped["last"]["file"] == "run-1.a.mcap", stopped
    topics, _ = read_mcap(rec_dir / "run-1.a.mcap")
    assert "/telemetry" in topics and "/img" not in topics, topics

    # the device offline: nothing to record
    dev.proc.proc.stdin.close()
    dev.proc.wait_gone(TIMEOUT)
    wait_for(lambda: http(bridge.url, "/api/health")[2]["device"]["status"] == "offline", TIMEOUT, "device offline")
    status, answer = record(bridge.url, {"action": "start"})
    assert status == 503 and answer["error"]["code"] == "offline", answer


def test_the_bridge_exiting_finishes_the_file(mb: Any, tmp_path: Path) -> None:
    dev, bridge, rec_dir = start_all(mb, tmp_path)
    status, started = record(bridge.url, {"action": "start", "name": "at-exit"})
    assert status == 200, started
    wait_for(lambda: record_status(bridge.url)["messages"] > 100, TIMEOUT, "records in the file")
    assert bridge.terminate() == 0          # SIGTERM; waits for the bridge and its recorder
    assert "recording finished" in "".join(bridge.proc.stderr), bridge.proc.describe()
    path = rec_dir / "at-exit.mcap"
    assert path.exists() and not Path(str(path) + ".part").exists()
    topics, meta = read_mcap(path)
    assert topics["/telemetry"] > 100 and meta["monbridge.summary"]["ended"] == "stopped by SIGTERM"


def test_a_killed_bridge_leaves_a_recorder_that_finishes_by_itself(mb: Any, tmp_path: Path) -> None:
    dev, bridge, rec_dir = start_all(mb, tmp_path)
    status, started = record(bridge.url, {"action": "start", "name": "orphan"})
    assert status == 200, started
    [recorder] = recorders_of(bridge.pid)
    argv = cmdline(recorder).split(b"\0")
    status_dir = Path(os.fsdecode(argv[argv.index(b"--status-file") + 1])).parent   # the bridge cannot remove it now
    wait_for(lambda: record_status(bridge.url)["messages"] > 0, TIMEOUT, "records in the file")
    os.kill(bridge.pid, signal.SIGKILL)     # no shutdown path at all: --stop-with-parent
    bridge.proc.wait(TIMEOUT)
    path = rec_dir / "orphan.mcap"
    wait_for(lambda: path.exists(), TIMEOUT, "the orphaned recorder to finish orphan.mcap")
    _, meta = read_mcap(path)
    assert meta["monbridge.summary"]["ended"] == "the process that started it exited"
    wait_for(lambda: pid_gone(recorder), TIMEOUT, "the recorder to exit")
    assert status_dir.name.startswith("monbridge-record-")
    shutil.rmtree(status_dir)


def test_a_device_that_dies_ends_the_recording_and_the_bridge_reports_it(mb: Any, tmp_path: Path) -> None:
    dev, bridge, rec_dir = start_all(mb, tmp_path)
    status, started = record(bridge.url, {"action": "start"})
    assert status == 200, started
    wait_for(lambda: record_status(bridge.url)["messages"] > 100, TIMEOUT, "records in the file")
    dev.proc.kill_group()                   # SIGKILL: the recorder sees the heartbeat stop (exit 4)
    dev.proc.wait(TIMEOUT)
    done = wait_for(lambda: (s := record_status(bridge.url))["last"] and not s["recording"] and s, 3 * TIMEOUT,
                    "the bridge to report the recording as ended", interval=0.1)
    last = done["last"]
    assert last["ok"] is True and last["exit_code"] == 4, last
    assert last["reason"] == f"device stopped beating (pid {dev.pid})" and last["file"] == started["file"], last
    topics, _ = read_mcap(rec_dir / started["file"])
    assert topics["/telemetry"] > 100
    assert recorders_of(bridge.pid) == []
    for seg in segments_of(dev.name):       # what the killed device left
        unlink_segment(seg)
    assert bridge.terminate() == 0


# A stand-in for an installation without the `record` extra: `import mcap` fails as it would.
NO_MCAP = 'raise ModuleNotFoundError("No module named \'mcap\'", name="mcap")\n'


def test_without_the_record_extra_the_recorders_message_is_the_answer(mb: Any, tmp_path: Path) -> None:
    dev = mb.device(mon="bridge=0")
    fake = tmp_path / "no_mcap"
    (fake / "mcap").mkdir(parents=True)
    (fake / "mcap" / "__init__.py").write_text(NO_MCAP)
    env, tag = mb.guard.env(None, {"PYTHONPATH": f"{fake}{os.pathsep}{REPO}"})
    env.pop("MONBRIDGE_TOKEN", None)
    argv = [sys.executable, "-m", "bridge", "serve", "--attach", dev.name, "--port", "0",
            "--record-dir", str(tmp_path / "runs")]
    proc = DeviceProcess(argv, env, tmp_path, tag)
    mb.guard.procs.append(proc)
    m = SERVING_LINE.search("monbridge: serving " + proc.expect("monbridge: serving", START_TIMEOUT))
    bridge = Bridge(proc, dev.name, parse_url(m["url"]))
    mb.bridges.append(bridge)
    wait_attached(bridge.url, dev.pid)
    status, answer = record(bridge.url, {"action": "start"})
    assert status == 500 and answer["error"]["code"] == "record_failed", answer
    assert "needs the mcap package" in answer["error"]["message"], answer
    assert "pip install 'monbridge[record]'" in answer["error"]["message"], answer
    assert record_status(bridge.url)["recording"] is False
    assert bridge.terminate() == 0


def test_a_bridge_of_several_devices_records_the_one_named(mb: Any, tmp_path: Path) -> None:
    """``--attach a,b``: POST /api/record must name the device; the file is that device's."""
    from bridge_support import wait_devices

    a, b = mb.device(mon="bridge=0"), mb.device(mon="bridge=0")
    rec_dir = tmp_path / "runs"
    bridge = mb.serve_devices(f"{a.name},{b.name}", "--record-dir", str(rec_dir))
    wait_devices(bridge.url, {a.name: a.pid, b.name: b.pid})
    status, answer = record(bridge.url, {"action": "start"})
    assert status == 400 and answer["error"]["code"] == "bad_request" and b.name in answer["error"]["message"]
    status, answer = record(bridge.url, {"action": "start", "device": "nope"})
    assert status == 404 and answer["error"]["code"] == "unknown_device", answer
    assert not rec_dir.exists()

    status, started = record(bridge.url, {"action": "start", "device": b.name, "name": "run-b"})
    assert status == 200 and started["device"] == b.name and started["file"] == "run-b.mcap", started
    b.request("pub 50", "published")
    wait_for(lambda: record_status(bridge.url)["messages"], TIMEOUT, "the recorder to write b's records")
    status, stopped = record(bridge.url, {"action": "stop", "device": b.name})
    assert status == 200 and stopped["last"]["ok"] is True, stopped
    _topics, meta = read_mcap(rec_dir / "run-b.mcap")
    assert meta["monbridge.recording"]["device"] == b.name
