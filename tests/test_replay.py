"""``monbridge replay`` and ``monbridge recordings`` end to end: a real device recorded by a
real ``monbridge record``, replayed by a real ``monbridge replay`` (MON=port=0: it launches
the unchanged bridge) and received through ``bridge.client.Client``; a file written by the
``mcap`` library's writer alone plays too. Content is a function of each record's sequence
number (or each frame's number), so what arrives is checked against what was published."""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import sys
import time

import numpy as np
import pytest

from bridge_support import DASHBOARD_LINE, wait_stderr
from conftest import START_TIMEOUT, TIMEOUT, DeviceProcess, wait_for

pytest.importorskip("mcap.reader")
from mcap.reader import make_reader  # noqa: E402
from mcap.writer import Writer  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

from bridge.client import Client, Timeout  # noqa: E402

# Streams for as long as asked: 5 records every 10 ms, a frame on each frame channel every
# 50 ms, an event every 200 ms (a log line and a JSON one in turn), a state change every 250 ms.
DEVICE = r"""
import sys, time
import numpy as np
import device_agent

mon = device_agent.start(sys.argv[1])
tel = mon.records("tel", [("t", "f8"), ("seq", "i8"), ("value", "f4"), ("pos", "f4", (3,)), ("Flag", "?"),
                          ("h", "f2")], capacity=65536)
img = mon.frame("img", shape=(24, 32), dtype="f4")
cloud = mon.frame("cloud", shape=(64, 6), dtype="f4")
log = mon.events("log")
mon.state.update(mode="idle", k=0)
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[:1] == ["stream"]:
        start, k, seq = time.time(), 0, 0
        while time.time() - start < float(cmd[1]):
            k += 1
            s = np.arange(seq, seq + 5)
            rows = np.zeros(5, tel.dtype)
            rows["t"] = time.time() - (4 - np.arange(5)) * 0.002
            rows["seq"], rows["value"] = s, s.astype("f4") * np.float32(0.5) - 100
            rows["pos"] = np.stack([s, -s, s * 0.125], axis=1)
            rows["Flag"], rows["h"] = s % 3 == 0, (s % 1000 / 7).astype("f2")
            tel.publish_many(rows)
            seq += 5
            if k % 5 == 0:
                f = k // 5
                img.publish(np.arange(24 * 32, dtype="f4").reshape(24, 32) * np.float32(0.25) + np.float32(f))
                cloud.publish((np.arange(f % 40 + 8)[:, None] * 6 + np.arange(6)).astype("f4") / np.float32(7) + np.float32(f))
            if k % 20 == 0:
                n = k // 20
                log.publish({"level": "warning", "msg": f"tick {n}"} if n % 2 else {"kind": "note", "n": n})
            if k % 25 == 0:
                mon.state.update(mode="run", k=k // 25)
            time.sleep(0.01)
        print("streamed", tel.count, flush=True)
    elif cmd[:1] == ["quit"]:
        break
mon.close()
"""


def image(f: float) -> np.ndarray:
    return np.arange(24 * 32, dtype="f4").reshape(24, 32) * np.float32(0.25) + np.float32(f)


def cloud(f: int) -> np.ndarray:
    return (np.arange(f % 40 + 8)[:, None] * 6 + np.arange(6)).astype("f4") / np.float32(7) + np.float32(f)


def check_rows(rows: np.ndarray) -> None:
    """Every field is the function of ``seq`` the device published, bit for bit."""
    s = rows["seq"]
    assert rows["value"].tobytes() == (s.astype("f4") * np.float32(0.5) - np.float32(100)).tobytes()
    assert rows["pos"].tobytes() == np.stack([s, -s, s * 0.125], axis=1).astype("f4").tobytes()
    assert (rows["Flag"] == (s % 3 == 0)).all()
    assert rows["h"].tobytes() == (s % 1000 / 7).astype("f2").tobytes()


_recordings: dict[str, str] = {}


@pytest.fixture
def bridge_cmd(_guard):
    """``bridge_cmd(*args, mon=None)``: start ``python -m bridge *args`` (tagged, guarded)."""
    def start(*args: str, mon: str | None = None) -> DeviceProcess:
        env, tag = _guard.env(mon, None)
        proc = DeviceProcess([sys.executable, "-m", "bridge", *args], env, _guard.tmp_path, tag)
        _guard.procs.append(proc)
        return proc
    return start


@pytest.fixture
def recording(launch, new_device_name, bridge_cmd, tmp_path_factory) -> str:
    """A ~3 s recording of DEVICE by ``monbridge record``, made once per session."""
    if "run" not in _recordings:
        folder = tmp_path_factory.mktemp("replay")
        out = str(folder / "run.mcap")
        dev = launch(DEVICE, new_device_name(), mon="bridge=0")
        rec = bridge_cmd("record", "--attach", dev.proc.args[2], "-o", out, "--chunk-seconds", "0.5")
        wait_stderr(rec, re.compile("recording device"))
        dev.request("stream 3", "streamed", timeout=30)
        rec.proc.send_signal(signal.SIGINT)
        assert rec.wait_gone() == 0, rec.describe()
        dev.stop()
        _recordings["run"] = out
    return _recordings["run"]


def last_state(path: str) -> dict:
    with open(path, "rb") as f:
        snaps = [json.loads(m.data) for _, _, m in make_reader(f).iter_messages(topics=["/monbridge/state/snapshot"])]
    return {k: snaps[-1][k] for k in ("mode", "k")}


def recorded(path: str, topic: str) -> list:
    """(message, decoded) of one topic, read with the mcap reader and the official decoder."""
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(m, d) for _, _, m, d in reader.iter_decoded_messages(topics=[topic])]


def start_replay(bridge_cmd, *args: str, mon: str = "port=0") -> tuple[DeviceProcess, str]:
    proc = bridge_cmd("replay", *args, mon=mon)
    url = wait_stderr(proc, DASHBOARD_LINE, START_TIMEOUT).group("url")
    return proc, url


def stop_replay(proc: DeviceProcess) -> str:
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait_gone() == 0, proc.describe()
    err = "".join(proc.stderr)
    assert "Traceback" not in err and "resource_tracker" not in err, err
    return err


def take_rows(sub, until_seq: int, timeout: float = 30) -> np.ndarray:
    got = []
    deadline = time.monotonic() + timeout
    while not got or got[-1]["seq"][-1] < until_seq:
        msg = sub.get(timeout=max(0.01, deadline - time.monotonic()))
        if msg.count:
            got.append(msg.data)
    return np.concatenate(got)


def test_replay_recreates_channels_and_publishes_the_recorded_values(recording, bridge_cmd, device_name):
    file_rows = recorded(recording, "/tel")
    last = file_rows[-1][1].seq
    proc, url = start_replay(bridge_cmd, recording, "--paused", "--name", device_name)
    with Client(url) as client:
        spec = {c["name"]: c for c in client.channels}
        assert spec["tel"]["kind"] == "records" and spec["tel"]["capacity"] == 65536
        assert [f[0] for f in spec["tel"]["dtype"]] == ["t", "seq", "value", "pos", "Flag", "h"]   # not renamed
        assert spec["img"]["shape"] == [24, 32] and spec["cloud"]["shape"] == [64, 6]
        assert {c["name"] for c in client.commands} >= {"pause", "resume", "seek", "speed"}
        assert client.state["replay_playing"] is False and client.state["replay_position"] == 0
        assert client.state["mode"] == "idle"                     # the recorded state at the start
        assert client.state["replay_duration"] == pytest.approx(3.0, abs=0.5)
        with client.subscribe("tel", rate=60) as tel, client.subscribe("img", rate=60) as img, \
                client.subscribe("cloud", rate=60) as cl, client.subscribe("log", rate=60) as log:
            client.command("resume")
            rows = take_rows(tel, last)
            frames = [img.get(timeout=TIMEOUT) for _ in range(3)]
            clouds = [cl.get(timeout=TIMEOUT) for _ in range(3)]
            events = []
            wait_for(lambda: events.extend(log.get(timeout=TIMEOUT).events) or len(events) >= 4, TIMEOUT, "events")
        client.wait_for_state("replay_playing", False, timeout=TIMEOUT)   # the end: paused there
        assert client.state["replay_position"] == client.state["replay_duration"]
        assert {k: client.state[k] for k in ("mode", "k")} == last_state(recording)
    err = stop_replay(proc)
    assert "reached the end" in err

    # every record, in order, bit for bit as published, t as recorded
    first = file_rows[0][1].seq
    assert rows["seq"].tolist() == list(range(first, last + 1))
    check_rows(rows)
    assert rows["t"].tolist() == [d.t for _, d in file_rows]
    for f in frames:
        assert f.data.tobytes() == image(f.data[0, 0]).tobytes()
    for c in clouds:
        k = int(round(float(c.data[0, 0])))
        assert c.data.tobytes() == cloud(k).tobytes()
    # events: a foxglove.Log line comes back as {"level", "msg"}, the others as published
    lines = [e["message"] for e in events if "level" in e["message"]]
    notes = [e["message"] for e in events if "kind" in e["message"]]
    assert len(lines) + len(notes) == len(events) and lines and notes
    assert all(m == {"level": "warning", "msg": m["msg"]} and m["msg"].startswith("tick ") for m in lines)
    assert all(m == {"kind": "note", "n": m["n"]} and m["n"] % 2 == 0 for m in notes)


def test_pause_seek_and_speed(recording, bridge_cmd, device_name):
    proc, url = start_replay(bridge_cmd, recording, "--paused", "--loop", "--name", device_name)
    with Client(url) as client:
        with client.subscribe("tel", rate=60) as tel:
            # pause: nothing more arrives, the position holds
            client.command("resume")
            client.wait_for_state("replay_position", lambda p: p >= 0.5, timeout=TIMEOUT)
            at = client.command("pause")
            client.wait_for_state("replay_playing", False, timeout=TIMEOUT)
            drained = 0
            with pytest.raises(Timeout):             # what was on its way, then nothing for a second
                while True:
                    tel.get(timeout=1.0)
                    drained += 1
                    assert drained < 10, "records keep arriving after pause"
            assert client.command("pause") == at and client.state["replay_position"] == at

            # seek back: the epoch changes, records continue from the new position
            epoch = client.state["replay_epoch"]
            assert client.command("seek", t=0.25) == 0.25
            client.wait_for_state("replay_epoch", epoch + 1, timeout=TIMEOUT)
            assert client.state["replay_position"] == 0.25
            client.command("resume")
            msg = wait_for(lambda: tel.get(timeout=TIMEOUT), TIMEOUT, "records after the seek")
            start_t = recorded(recording, "/tel")[0][1].t
            assert 0.2 <= msg.data["t"][0] - start_t <= 0.6, msg.data["t"][0] - start_t
            check_rows(msg.data)

            # speed: 2x covers about two recorded seconds per second (the command round trips
            # count in the wall time, so the measured pace is a little lower)
            client.command("pause")
            client.command("seek", t=0.0)
            assert client.command("speed", value=2) == 2.0
            client.wait_for_state("replay_speed", 2.0, timeout=TIMEOUT)
            epoch = client.state["replay_epoch"]
            t0 = time.monotonic()
            client.command("resume")
            client.wait_for_state("replay_position", lambda p: p >= 0.8, timeout=TIMEOUT)
            p1 = client.command("pause")
            pace = p1 / (time.monotonic() - t0)
            assert client.state["replay_epoch"] == epoch, "went round the loop: the client was too slow to pause"
            assert 1.2 < pace < 4.0, pace

            # --loop: past the end it starts over (a jump: the epoch changes)
            epoch = client.state["replay_epoch"]
            client.command("resume")
            client.wait_for_state("replay_epoch", lambda e: e > epoch, timeout=TIMEOUT)
            assert client.state["replay_playing"] is True
    stop_replay(proc)


def test_bad_arguments(bridge_cmd, tmp_path):
    missing = bridge_cmd("replay", str(tmp_path / "nope.mcap"))
    assert missing.wait_gone() == 2 and "no such file" in "".join(missing.stderr)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not mcap at all")
    bad = bridge_cmd("replay", str(junk))
    assert bad.wait_gone() == 2 and "is not an MCAP file" in "".join(bad.stderr)
    fast = bridge_cmd("replay", str(junk), "--speed", "50")
    assert fast.wait_gone() == 2 and "speed must be a number from 0.1 to 20" in "".join(fast.stderr)


# -- a file monbridge did not write ------------------------------------------------------

CLOUD_POINTS = 50


def write_foreign(path: str) -> dict:
    """1 s of: /imu (json numbers), /points (foxglove.PointCloud, json), /points_cdr
    (foxglove_msgs/msg/PointCloud, cdr by mcap_ros2's writer), /camera (foxglove.RawImage, json,
    bgr8), /rosout (foxglove.Log, json), /jpeg (foxglove.CompressedImage), /notes (json strings)."""
    from bridge.record.schemas import POINT_CLOUD

    start = 1_760_000_000 * 10**9
    want: dict = {"imu": [], "clouds": [], "images": []}
    with open(path, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="test")
        obj = lambda title: w.register_schema(title, "jsonschema", json.dumps({"type": "object"}).encode())  # noqa: E731
        ch = {topic: w.register_channel(topic, "json", obj(schema)) for topic, schema in (
            ("/imu", "Imu"), ("/points", "foxglove.PointCloud"), ("/camera", "foxglove.RawImage"),
            ("/rosout", "foxglove.Log"), ("/jpeg", "foxglove.CompressedImage"), ("/notes", "Note"))}
        for k in range(100):
            t = start + k * 10_000_000
            imu = {"ax": k * 0.5, "ay": -k, "ok": k % 2 == 0, "pose": {"x": k / 3, "y": 1e-3 * k}, "label": "a"}
            want["imu"].append((t, imu))
            w.add_message(ch["/imu"], log_time=t, publish_time=t, data=json.dumps(imu).encode(), sequence=k)
            if k % 10 == 0:
                n = CLOUD_POINTS - k // 10
                pts = np.zeros(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                   ("blue", "u1"), ("alpha", "u1")])
                pts["x"], pts["y"], pts["z"] = np.arange(n), -np.arange(n), k
                pts["red"], pts["green"], pts["blue"] = 255, 0, 51
                fields = [{"name": c, "offset": pts.dtype.fields[c][1], "type": 7 if c in "xyz" else 1}
                          for c in pts.dtype.names]
                cloud_msg = {"timestamp": {"sec": t // 10**9, "nsec": t % 10**9}, "frame_id": "map",
                             "pose": {"position": {"x": 0, "y": 0, "z": 0}, "orientation": {"x": 0, "y": 0, "z": 0, "w": 1}},
                             "point_stride": pts.dtype.itemsize, "fields": fields,
                             "data": base64.b64encode(pts.tobytes()).decode()}
                w.add_message(ch["/points"], log_time=t, publish_time=t, data=json.dumps(cloud_msg).encode())
                want["clouds"].append(pts)
                bgr = ((np.arange(4 * 5 * 3).reshape(4, 5, 3) + k) % 256).astype("u1")
                img_msg = {"timestamp": {"sec": 0, "nsec": 0}, "frame_id": "cam", "width": 5, "height": 4,
                           "encoding": "bgr8", "step": 16, "data": base64.b64encode(
                               np.pad(bgr.reshape(4, 15), ((0, 0), (0, 1))).tobytes()).decode()}
                w.add_message(ch["/camera"], log_time=t, publish_time=t, data=json.dumps(img_msg).encode())
                want["images"].append(bgr[..., ::-1])
                w.add_message(ch["/jpeg"], log_time=t, publish_time=t,
                              data=json.dumps({"format": "jpeg", "data": "AAAA"}).encode())
            if k % 25 == 0:
                w.add_message(ch["/rosout"], log_time=t, publish_time=t, data=json.dumps(
                    {"level": 4, "message": f"fault {k}", "name": "arm", "file": "", "line": 0}).encode())
                w.add_message(ch["/notes"], log_time=t, publish_time=t, data=json.dumps({"text": f"n{k}"}).encode())
        # a foxglove_msgs/msg/PointCloud in CDR, encoded by the official ROS 2 writer's serializer
        from mcap_ros2._dynamic import serialize_dynamic
        encode = serialize_dynamic("foxglove_msgs/msg/PointCloud", POINT_CLOUD)["foxglove_msgs/msg/PointCloud"]
        sid = w.register_schema("foxglove_msgs/msg/PointCloud", "ros2msg", POINT_CLOUD.encode())
        cid = w.register_channel("/points_cdr", "cdr", sid)
        pts = np.arange(30, dtype="<f4").reshape(10, 3)
        w.add_message(cid, log_time=start + 500_000_000, publish_time=start + 500_000_000, data=encode({
            "timestamp": {"sec": 0, "nanosec": 0}, "frame_id": "map",
            "pose": {"position": {"x": 0.0, "y": 0.0, "z": 0.0}, "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
            "point_stride": 12, "fields": [{"name": c, "offset": 4 * i, "type": 7} for i, c in enumerate("xyz")],
            "data": pts.tobytes()}))
        want["cdr_cloud"] = pts
        w.finish()
    return want


def test_a_file_written_by_the_mcap_writer_alone_plays(bridge_cmd, device_name, tmp_path):
    path = str(tmp_path / "foreign.mcap")
    want = write_foreign(path)
    proc, url = start_replay(bridge_cmd, path, "--paused", "--name", device_name)
    err = "".join(proc.stderr)
    assert "not replayed: /jpeg: foxglove.CompressedImage (json)" in err     # no Pillow, or not a real JPEG
    with Client(url) as client:
        spec = {c["name"]: c for c in client.channels}
        assert spec["imu"]["kind"] == "records"
        assert [f[0] for f in spec["imu"]["dtype"]] == ["t", "ax", "ay", "ok", "pose_x", "pose_y"]
        assert spec["points"]["kind"] == "frame" and spec["points"]["shape"] == [CLOUD_POINTS, 6]
        assert spec["points_cdr"]["shape"] == [10, 3]
        assert spec["camera"]["shape"] == [4, 5, 3] and spec["camera"]["dtype"] == "|u1"
        assert spec["rosout"]["kind"] == "events" and spec["notes"]["kind"] == "events"
        with client.subscribe("imu", rate=60) as imu, client.subscribe("points", rate=60) as points, \
                client.subscribe("points_cdr") as cdr, client.subscribe("camera", rate=60) as camera, \
                client.subscribe("rosout") as rosout:
            client.command("resume")
            got = []
            while not got or got[-1]["ax"][-1] < 99 * 0.5:
                got.append(imu.get(timeout=TIMEOUT).data)
            rows = np.concatenate(got)
            cloud_msg = points.get(timeout=TIMEOUT)
            cdr_msg = cdr.get(timeout=TIMEOUT)
            image_msg = camera.get(timeout=TIMEOUT)
            log_msg = rosout.get(timeout=TIMEOUT)
        client.wait_for_state("replay_playing", False, timeout=TIMEOUT)
    stop_replay(proc)

    by_ax = {imu["ax"]: (t, imu) for t, imu in want["imu"]}
    for row in rows:
        t, imu = by_ax[row["ax"]]
        assert row["t"] == t / 1e9 and row["ay"] == imu["ay"] and row["ok"] == imu["ok"]
        assert row["pose_x"] == imu["pose"]["x"] and row["pose_y"] == imu["pose"]["y"]
    assert len(rows) == 100
    pts = next(p for p in want["clouds"] if len(p) == len(cloud_msg.data))
    np.testing.assert_array_equal(cloud_msg.data[:, :3], np.stack([pts["x"], pts["y"], pts["z"]], axis=1))
    np.testing.assert_array_equal(cloud_msg.data[:, 3:], np.tile(np.float32([1.0, 0.0, 0.2]), (len(pts), 1)))
    np.testing.assert_array_equal(cdr_msg.data, want["cdr_cloud"])
    assert any(np.array_equal(image_msg.data, im) for im in want["images"])
    assert log_msg.events[0]["message"] == {"level": "error", "msg": "fault 0", "name": "arm"}


# -- monbridge recordings ----------------------------------------------------------------

def test_recordings_lists_finished_unfinished_and_unreadable_files(recording, bridge_cmd, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copy(recording, folder / "a.mcap")
    data = open(recording, "rb").read()
    (folder / "b.mcap.part").write_bytes(data[: len(data) * 2 // 3])   # a recorder killed mid-way
    (folder / "c.mcap").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not a recording")
    write_foreign(str(folder / "d.mcap"))

    listing = bridge_cmd("recordings", str(folder), "--json")
    assert listing.wait_gone() == 0, listing.describe()
    rows = {r["file"]: r for r in json.loads("".join(listing.stdout))}
    assert sorted(rows) == ["a.mcap", "b.mcap.part", "c.mcap", "d.mcap"]
    a, b = rows["a.mcap"], rows["b.mcap.part"]
    assert a["complete"] and a["channels"] == ["cloud", "img", "log", "tel"] and a["device"]
    assert a["duration_s"] == pytest.approx(3.0, abs=0.6) and a["size"] == len(data)
    assert not b["complete"] and b["channels"] == a["channels"] and 0 < b["duration_s"] < a["duration_s"]
    assert rows["c.mcap"]["error"]
    assert rows["d.mcap"]["channels"] == ["/camera", "/imu", "/jpeg", "/notes", "/points", "/points_cdr", "/rosout"]

    table = bridge_cmd("recordings", str(folder))
    assert table.wait_gone() == 0
    text = "".join(table.stdout)
    assert re.search(r"a\.mcap\s+\d+\.\d [kM]B\s+\d\.\d s\s+\S+\s+4: cloud, img, log, tel", text), text
    assert re.search(r"b\.mcap\.part .*\(unfinished\)", text) and "unreadable" in text


def test_an_unfinished_recording_replays(recording, bridge_cmd, device_name, tmp_path):
    part = tmp_path / "cut.mcap.part"
    data = open(recording, "rb").read()
    part.write_bytes(data[: len(data) * 2 // 3])
    proc, url = start_replay(bridge_cmd, str(part), "--paused", "--name", device_name)
    assert "unfinished: read into memory" in "".join(proc.stderr)
    with Client(url) as client:
        with client.subscribe("tel", rate=60) as tel:
            client.command("resume")
            msg = tel.get(timeout=TIMEOUT)
            check_rows(msg.data)
        client.wait_for_state("replay_playing", False, timeout=TIMEOUT)
        assert 0 < client.state["replay_duration"] < 3.0
    stop_replay(proc)
