"""``monbridge record`` end to end: a real device process, a real recorder process, the
file read back with the ``mcap`` reader and the official ROS 2 decoder (test dependency
``mcap-ros2-support``), compared bit for bit with what the device published."""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import numpy as np
import pytest

from bridge_support import wait_stderr
from conftest import TIMEOUT, DeviceProcess, wait_for

mcap_reader = pytest.importorskip("mcap.reader")
from mcap.exceptions import McapError  # noqa: E402
from mcap.records import Message  # noqa: E402
from mcap.stream_reader import StreamReader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

# A device with every kind of channel. Content is a function of the sequence number, so
# the test can rebuild what was published. Lines on stdin: "burst N" publishes N records,
# a frame on each frame channel, events and a state change, then prints "done COUNT".
DEVICE = r"""
import sys, time
import numpy as np
import device_agent

name = sys.argv[1]
mon = device_agent.start(name)
tel = mon.records("telemetry", [("t", "f8"), ("seq", "i8"), ("value", "f4"), ("pos", "f4", (3,)), ("Flag", "?")],
                  capacity=65536)
img = mon.frame("img", shape=(48, 64), dtype="f4")
rgb = mon.frame("rgb", shape=(12, 16, 3), dtype="u1")
cloud = mon.frame("cloud", shape=(100, 6), dtype="f4")
grid = mon.frame("grid", shape=(5, 7), dtype="i2")
log = mon.events("log")
mon.state.update(mode="idle", speed=0.0)

def frame_of(ch, k):
    if ch == "img":
        return (np.arange(48 * 64, dtype="f4").reshape(48, 64) * 0.25 + k)
    if ch == "rgb":
        return ((np.arange(12 * 16 * 3).reshape(12, 16, 3) + k) % 251).astype("u1")
    if ch == "cloud":
        return (np.arange(k % 50 + 10)[:, None] * 6 + np.arange(6)).astype("f4") / 7 + k
    return (np.arange(35, dtype="i2").reshape(5, 7) - k)

frames = {"img": img, "rgb": rgb, "cloud": cloud, "grid": grid}
counts = {c: 0 for c in frames}
bursts = 0
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[:1] == ["burst"]:
        n = int(cmd[1])
        s0 = tel.count
        arr = np.zeros(n, tel.dtype)
        arr["seq"] = np.arange(s0, s0 + n)
        arr["t"] = time.time() + arr["seq"] * 1e-6
        arr["value"] = arr["seq"].astype("f4") * np.float32(0.5) - 100
        arr["pos"] = np.stack([arr["seq"], -arr["seq"], arr["seq"] * 0.125], axis=1)
        arr["Flag"] = arr["seq"] % 3 == 0
        tel.publish_many(arr[: n // 2])
        for rec in arr[n // 2 :]:
            tel.publish(*rec.tolist())
        for ch, fr in frames.items():
            counts[ch] += 1
            fr.publish(frame_of(ch, counts[ch]))
        bursts += 1
        log.publish({"level": "warning", "msg": f"burst {bursts}"})
        log.publish({"kind": "note", "n": bursts, "nested": [1, 2.5, None]})
        log.publish("just text")
        mon.state.update(mode="run", speed=bursts * 0.5, bursts=bursts)
        print("done", tel.count, flush=True)
    elif cmd[:1] == ["quit"]:
        break
mon.close()
"""

FRAME_OF = {
    "img": lambda k: np.arange(48 * 64, dtype="f4").reshape(48, 64) * np.float32(0.25) + np.float32(k),
    "rgb": lambda k: ((np.arange(12 * 16 * 3).reshape(12, 16, 3) + k) % 251).astype("u1"),
    "cloud": lambda k: (np.arange(k % 50 + 10)[:, None] * 6 + np.arange(6)).astype("f4") / np.float32(7) + np.float32(k),
    "grid": lambda k: (np.arange(35, dtype="i2").reshape(5, 7) - k),
}
ROS2_NAME = re.compile(r"^[a-z][a-z0-9_]*/msg/[A-Z][A-Za-z0-9]*$")
FOXGLOVE = {"foxglove_msgs/msg/RawImage", "foxglove_msgs/msg/PointCloud", "foxglove_msgs/msg/Log"}
RECORDING = re.compile(r"monbridge record: recording device")


@pytest.fixture
def recorder(_guard):
    """``recorder(*args)``: start ``python -m bridge record *args`` (a tagged, guarded process)."""
    def start(*args: str, wait: bool = True) -> DeviceProcess:
        env, tag = _guard.env(None, None)
        proc = DeviceProcess([sys.executable, "-m", "bridge", "record", *args], env, _guard.tmp_path, tag)
        _guard.procs.append(proc)
        if wait:
            wait_stderr(proc, RECORDING)
        return proc
    return start


class JsonDecoderFactory:
    """json channels: the message is JSON text (the MCAP spec's ``json`` encoding)."""

    def decoder_for(self, message_encoding, schema):
        return json.loads if message_encoding == "json" else None


def read_all(path: str) -> tuple[list, dict, dict]:
    """(decoded messages as (topic, schema, channel, message, decoded)), metadata by name (last wins),
    the summary) from a finished file, CRCs checked."""
    for _ in StreamReader(path, validate_crcs=True).records:
        pass
    with open(path, "rb") as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[DecoderFactory(), JsonDecoderFactory()])
        summary = reader.get_summary()
        meta = {m.name: m.metadata for m in reader.iter_metadata()}
        out = []
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            out.append((channel.topic, schema, channel, message, decoded))
    return out, meta, summary


def by_topic(messages, topic):
    return [m for m in messages if m[0] == topic]


def run_device(launch, name):
    return launch(DEVICE, name, mon="bridge=0")


def test_record_everything_bit_for_bit(launch, device_name, recorder, tmp_path):
    dev = run_device(launch, device_name)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tel.vl.json").write_text('{"title": "Telemetry"}')
    out = str(tmp_path / "run.mcap")
    rec = recorder("--attach", device_name, "-o", out, "--specs", str(specs), "--progress", "0.3")
    published = 0
    for _ in range(3):
        published = int(dev.request("burst 1500", "done"))
    wait_stderr(rec, re.compile(r"records/s, missed"))      # a progress line
    rec.proc.send_signal(signal.SIGINT)
    assert rec.wait_gone() == 0, rec.describe()
    assert not os.path.exists(out + ".part") and os.path.exists(out)
    assert re.search(r"wrote .*run\.mcap .*stopped by SIGINT", "".join(rec.stderr)), rec.describe()
    dev.stop()

    messages, meta, summary = read_all(out)
    # schemas: every one Foxglove displays natively
    for topic, schema, channel, _, _ in messages:
        if channel.message_encoding == "cdr":
            assert schema.encoding == "ros2msg" and ROS2_NAME.match(schema.name), (topic, schema.name)
        else:
            assert (channel.message_encoding, schema.encoding) == ("json", "jsonschema"), topic
    kinds = {t: s.name for t, s, *_ in messages}
    assert kinds["/telemetry"] == "monbridge_msgs/msg/Telemetry"
    assert kinds["/img"] == kinds["/rgb"] == "foxglove_msgs/msg/RawImage"
    assert kinds["/cloud"] == "foxglove_msgs/msg/PointCloud"
    assert kinds["/grid"] == "monbridge_msgs/msg/NDArray"
    assert kinds["/log"] == "foxglove_msgs/msg/Log"
    assert kinds["/log/json"] == "monbridge.Event"

    # records: every one, in order, bit for bit; log_time = publish_time = the record's t
    tel = by_topic(messages, "/telemetry")
    assert [m.sequence for _, _, _, m, _ in tel] == list(range(published))
    for _, _, _, m, d in tel:
        s = m.sequence
        assert d.seq == s
        assert np.float32(d.value).tobytes() == (np.float32(s) * np.float32(0.5) - np.float32(100)).tobytes()
        assert np.asarray(d.pos, "f4").tobytes() == np.array([s, -s, s * 0.125], "f4").tobytes()
        assert d.flag == (s % 3 == 0)
        assert m.log_time == m.publish_time
        assert abs(m.log_time - d.t * 1e9) < 1000
    # frames: whatever was recorded is exact; recorded + missed = published
    missed = json.loads(meta["monbridge.summary"]["missed"])
    assert missed["telemetry"] == 0
    for ch in FRAME_OF:
        got = by_topic(messages, f"/{ch}")
        assert got and got[-1][3].sequence == 3, ch         # the last frame is always there
        assert len(got) + missed[ch] == 3, (ch, len(got), missed)
        for _, _, _, m, d in got:
            want = FRAME_OF[ch](m.sequence)
            if ch == "cloud":
                assert d.point_stride == 24 and [f.name for f in d.fields][:3] == ["x", "y", "z"]
            elif ch == "grid":
                assert d.dtype == "<i2" and list(d.shape) == [5, 7]
            else:
                assert (d.height, d.width, d.encoding) == ((48, 64, "32FC1") if ch == "img" else (12, 16, "rgb8"))
            assert bytes(d.data) == want.tobytes(), ch
    # events: Log where it is one, JSON otherwise, in sequence order across both topics
    logs = [(m.sequence, d.level, d.message) for _, _, _, m, d in by_topic(messages, "/log")]
    assert logs == [(0, 3, "burst 1"), (3, 3, "burst 2"), (6, 3, "burst 3")]
    others = [(m.sequence, d) for _, _, _, m, d in by_topic(messages, "/log/json")]
    assert others[:2] == [(1, {"message": {"kind": "note", "n": 1, "nested": [1, 2.5, None]}}),
                          (2, {"message": "just text"})]
    assert len(others) == 6
    # state: the last snapshot is the device's last state
    snaps = by_topic(messages, "/monbridge/state/snapshot")
    assert snaps[0][4] == {"mode": "idle", "speed": 0.0}
    assert snaps[-1][4] == {"mode": "run", "speed": 1.5, "bursts": 3}
    assert by_topic(messages, "/monbridge/state")
    # metadata: what replay needs
    assert meta["monbridge.recording"]["device"] == device_name
    manifest = json.loads(meta["monbridge.manifest"]["json"])
    assert {c["name"] for c in manifest["channels"]} == {"telemetry", "img", "rgb", "cloud", "grid", "log"}
    assert json.loads(meta["monbridge.channel.telemetry"]["capacity"]) == 65536
    assert json.loads(meta["monbridge.channel.telemetry"]["renamed"]) == {"Flag": "flag"}
    assert json.loads(meta["monbridge.channel.img"]["shape"]) == [48, 64]
    assert meta["monbridge.specs"] == {"tel.vl.json": '{"title": "Telemetry"}'}
    assert meta["monbridge.summary"]["ended"] == "stopped by SIGINT"
    # the summary's statistics agree (indexes written)
    assert summary.statistics.message_count == len(messages) and summary.chunk_indexes


def test_channels_and_duration(launch, device_name, recorder, tmp_path):
    dev = run_device(launch, device_name)
    out = str(tmp_path / "sub.mcap")
    rec = recorder("--attach", device_name, "-o", out, "--channels", "telemetry,log", "--duration", "2")
    dev.request("burst 100", "done")
    assert rec.wait_gone() == 0, rec.describe()     # --duration ends it by itself
    assert "duration reached" in "".join(rec.stderr)
    messages, meta, _ = read_all(out)
    assert {t for t, *_ in messages} <= {"/telemetry", "/log", "/log/json", "/monbridge/state",
                                         "/monbridge/state/snapshot", "/monbridge/recorder"}
    assert len(by_topic(messages, "/telemetry")) == 100
    assert json.loads(meta["monbridge.recording"]["channels"]) == ["telemetry", "log"]

    bad = recorder("--attach", device_name, "-o", str(tmp_path / "bad.mcap"), "--channels", "telemetry,nope", wait=False)
    assert bad.wait_gone() == 2
    assert re.search(r"has no channel 'nope' \(channels: telemetry, img, rgb, cloud, grid, log\)", "".join(bad.stderr))
    assert not any(p.name.startswith("bad.mcap") for p in tmp_path.iterdir())
    exists = recorder("--attach", device_name, "-o", out, wait=False)
    assert exists.wait_gone() == 2 and "already exists" in "".join(exists.stderr)
    dev.stop()


def test_sigterm_finishes_and_renames(launch, device_name, recorder, tmp_path):
    dev = run_device(launch, device_name)
    out = str(tmp_path / "term.mcap")
    rec = recorder("--attach", device_name, "-o", out)
    dev.request("burst 10", "done")
    rec.proc.send_signal(signal.SIGTERM)
    assert rec.wait_gone() == 0, rec.describe()
    messages, meta, _ = read_all(out)
    assert len(by_topic(messages, "/telemetry")) == 10
    assert meta["monbridge.summary"]["ended"] == "stopped by SIGTERM"
    dev.stop()


BURSTS_DEVICE = r"""
import sys, time
import numpy as np
import device_agent

mon = device_agent.start(sys.argv[1])
fr = mon.frame("burst", shape=(4,), dtype="i8", slots=16)
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("bursts"):
        for b in range(int(line.split()[1])):
            for _ in range(5):             # five frames within microseconds, then a pause
                fr.publish(np.full(4, fr.count + 1, "i8"))
            time.sleep(0.05)
        print("done", fr.count, flush=True)
mon.close()
"""


def test_frames_published_faster_than_the_recorder_reads_are_all_recorded(launch, device_name, recorder, tmp_path):
    """Frames come five at a time: a reader of only the newest frame would keep one in five;
    the recorder reads back every frame the slots still hold."""
    dev = launch(BURSTS_DEVICE, device_name, mon="bridge=0")
    out = str(tmp_path / "bursts.mcap")
    rec = recorder("--attach", device_name, "-o", out, "--progress", "0.5")
    assert dev.request("bursts 40", "done") == "200"
    rec.proc.send_signal(signal.SIGINT)
    assert rec.wait_gone() == 0, rec.describe()
    messages, meta, _ = read_all(out)
    seqs = [m[3].sequence for m in by_topic(messages, "/burst")]
    assert seqs == list(range(1, 201))
    assert all((np.frombuffer(m[4].data, "<i8") == m[3].sequence).all() for m in by_topic(messages, "/burst"))
    assert json.loads(meta["monbridge.summary"]["missed"]) == {"burst": 0}
    dev.stop()


def salvage(path: str) -> list[Message]:
    """The messages of a .part file, read in order until its truncated end; chunk CRCs checked."""
    import zstandard

    got = []
    try:
        for record in StreamReader(path, validate_crcs=True).records:
            if isinstance(record, Message):
                got.append(record)
    except (McapError, zstandard.ZstdError):   # the chunk being written when the recorder died, or now
        pass
    return got


def test_sigkill_leaves_a_readable_part(launch, device_name, recorder, tmp_path):
    dev = run_device(launch, device_name)
    out = str(tmp_path / "killed.mcap")
    rec = recorder("--attach", device_name, "-o", out, "--chunk-seconds", "0.2")
    published = int(dev.request("burst 2000", "done"))
    tel_id = None

    def flushed() -> bool:
        return sum(1 for m in salvage(out + ".part") if m.channel_id == tel_id) == published

    # the telemetry channel's id, then wait until a completed chunk holds every record
    def telemetry_channel():
        import zstandard
        from mcap.records import Channel
        try:
            for r in StreamReader(out + ".part").records:
                if isinstance(r, Channel) and r.topic == "/telemetry":
                    return r.id
        except (McapError, zstandard.ZstdError):   # the chunk being written is not whole yet
            return None
    tel_id = wait_for(telemetry_channel, TIMEOUT, "the /telemetry channel in the .part file")
    wait_for(flushed, TIMEOUT, "every record in a completed chunk")
    rec.kill_group()
    rec.wait_gone()
    assert not os.path.exists(out)
    got = [m for m in salvage(out + ".part") if m.channel_id == tel_id]
    assert [m.sequence for m in got] == list(range(published))
    # the official decoder reads them too
    from mcap.records import Schema
    from mcap_ros2._dynamic import generate_dynamic
    schema = next(r for r in StreamReader(out + ".part").records if isinstance(r, Schema)
                  and r.name == "monbridge_msgs/msg/Telemetry")
    decode = generate_dynamic(schema.name, schema.data.decode())[schema.name]
    assert [decode(m.data).seq for m in got[:5]] == [0, 1, 2, 3, 4]
    dev.stop()


def test_device_not_running(recorder, device_name, tmp_path):
    rec = recorder("--attach", device_name, "-o", str(tmp_path / "x.mcap"), wait=False)
    assert rec.wait_gone() == 3
    assert f"no device named {device_name!r} is running" in "".join(rec.stderr)
    bad = recorder("--attach", "no/such", "-o", str(tmp_path / "x.mcap"), wait=False)
    assert bad.wait_gone() == 2 and "is invalid" in "".join(bad.stderr)
    assert not any(p.name.startswith("x.mcap") for p in tmp_path.iterdir())


def test_device_closing_ends_the_recording(launch, device_name, recorder, tmp_path):
    dev = run_device(launch, device_name)
    out = str(tmp_path / "closed.mcap")
    rec = recorder("--attach", device_name, "-o", out)
    dev.request("burst 50", "done")
    dev.stop()                      # the device closes cleanly: the recorder finishes
    assert rec.wait_gone() == 0, rec.describe()
    messages, meta, _ = read_all(out)
    assert len(by_topic(messages, "/telemetry")) == 50
    assert meta["monbridge.summary"]["ended"] == "device closed"
