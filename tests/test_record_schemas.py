"""bridge/record/cdr.py and schemas.py over plain bytes: dtype → ros2msg → CDR, checked
against the official ROS 2 decoder (mcap-ros2-support, a test dependency)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from bridge.record.cdr import CdrError, CdrWriter, RecordLayout
from bridge.record.schemas import (LOG, NDARRAY, POINT_CLOUD, RAW_IMAGE, RecordsSchema, SchemaError, encode_log,
                                   field_names, frame_schema, log_fields, message_name, state_change, time_field,
                                   unix_ns, unix_ns_column)

generate_dynamic = pytest.importorskip("mcap_ros2._dynamic").generate_dynamic


def decoder(name: str, text: str):
    return generate_dynamic(name, text)[name]


def test_records_cdr_layout_by_hand():
    dt = np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2"), ("d", "<f4", (3,)), ("e", "?")])
    layout = RecordLayout(dt, ["a", "b", "c", "d", "e"])
    rec = np.zeros(1, dt)
    rec[0] = (7, 1.5, -2, (1, 2, 3), True)
    (msg,) = layout.encode(rec)
    # header; a at 0; pad to 8; b; c at 16; pad to 20; d (3 x f4); e at 32 (offsets after the header)
    expect = (b"\x00\x01\x00\x00" + b"\x07" + b"\0" * 7 + struct.pack("<d", 1.5) + struct.pack("<h", -2)
              + b"\0\0" + struct.pack("<3f", 1, 2, 3) + b"\x01")
    assert msg == expect
    assert layout.size == len(expect)


DTYPES = [
    [("t", "<f8"), ("seq", "<i8"), ("value", "<f4")],
    [("flag", "?"), ("x", "<f8"), ("i1", "i1"), ("u2", "<u2"), ("i4", "<i4"), ("u8", "<u8"), ("u1", "u1")],
    [("pos", "<f4", (3,)), ("m", "<f8", (2, 2)), ("n", "<i2")],
    [("Temp A", "<f4"), ("temp_a", "<f8"), ("3d", "<u4"), ("x__y_", "<i8")],
    [("h", ">f8"), ("k", ">i4")],  # big-endian source: CDR_LE on the wire
]


@pytest.mark.parametrize("descr", DTYPES, ids=range(len(DTYPES)))
def test_records_round_trip_through_the_official_decoder(descr):
    dt = np.dtype(descr)
    rng = np.random.default_rng(3)
    recs = np.zeros(50, dt)
    for name in dt.names:
        base = dt[name].base
        shape = recs[name].shape
        if base.kind == "f":
            recs[name] = rng.normal(0, 1e3, shape)
        elif base.kind == "b":
            recs[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            info = np.iinfo(base)
            recs[name] = rng.integers(info.min, info.max, shape, dtype=base.newbyteorder("="), endpoint=True)
    schema = RecordsSchema("my-chan_x", dt)
    assert schema.name == "monbridge_msgs/msg/MyChanX"
    decode = decoder(schema.name, schema.text)
    names = field_names(dt.names)
    for rec, msg in zip(recs, schema.encode(recs)):
        got = decode(msg)
        for src, dst in zip(dt.names, names):
            value = np.asarray(getattr(got, dst), dtype=dt[src].base).reshape(dt[src].shape)
            # bit for bit: the decoded value, stored back in the source dtype, has the same bytes
            assert value.tobytes() == np.asarray(rec[src]).astype(dt[src].base).tobytes(), (src, value, rec[src])


def test_float16_is_widened_exactly():
    dt = np.dtype([("h", "<f2")])
    recs = np.array([(1.5,), (np.float16(65504),), (np.float16(6e-8),)], dt)
    schema = RecordsSchema("half", dt)
    assert "float32 h" in schema.text and "float16 on the device" in schema.text
    decode = decoder(schema.name, schema.text)
    assert [np.float16(decode(m).h) for m in schema.encode(recs)] == list(recs["h"])


def test_field_and_message_names():
    assert field_names(["t", "Temp A", "temp_a", "3d", "x__y_", "__"]) == ["t", "temp_a", "temp_a_2", "f_3d", "x_y", "field"]
    assert message_name("joint_temps") == "JointTemps"
    assert message_name("3d-scan") == "C3dScan"
    schema = RecordsSchema("x", np.dtype([("Temp A", "<f4")]))
    assert schema.renamed == {"Temp A": "temp_a"}


def test_unsupported_dtype_is_refused_with_the_type():
    with pytest.raises(SchemaError, match="c16"):
        RecordsSchema("z", np.dtype([("z", "<c16")]))
    with pytest.raises(CdrError):
        RecordLayout(np.dtype([("a", "<f8")]), [])


def test_time_field_and_unix_ns():
    assert time_field(np.dtype([("x", "f4"), ("t", "f8")])) == "t"
    assert time_field(np.dtype([("timestamp", "f8")])) == "timestamp"
    assert time_field(np.dtype([("t", "i8")])) is None
    assert unix_ns(1_700_000_000.25, 5) == 1_700_000_000_250_000_000
    assert unix_ns(1000.0, 5) == 5 and unix_ns(float("nan"), 5) == 5
    col = unix_ns_column(np.array([1_700_000_000.5, 12.0, np.inf]), 9)
    assert col.tolist() == [1_700_000_000_500_000_000, 9, 9]


@pytest.mark.parametrize("dtype,shape,kind,encoding", [
    ("|u1", (48, 64), "image", "mono8"),
    ("<u2", (48, 64), "image", "mono16"),
    ("<f4", (48, 64), "image", "32FC1"),
    ("|u1", (240, 320, 3), "image", "rgb8"),
    ("|u1", (240, 320, 4), "image", "rgba8"),
    ("<f4", (20000, 3), "cloud", ""),
    ("<f8", (100, 6), "cloud", ""),
    ("<i2", (5, 7), "array", ""),
    ("<f8", (48, 64), "array", ""),
    ("<f4", (10,), "array", ""),
    ("|u1", (2, 3, 4, 5), "array", ""),
])
def test_frame_classification(dtype, shape, kind, encoding):
    fs = frame_schema(np.dtype(dtype), shape)
    assert (fs.kind, fs.encoding) == (kind, encoding)
    assert fs.name == {"image": "foxglove_msgs/msg/RawImage", "cloud": "foxglove_msgs/msg/PointCloud",
                       "array": "monbridge_msgs/msg/NDArray"}[kind]


def test_raw_image_decodes():
    img = np.arange(12 * 16 * 3, dtype=np.uint8).reshape(12, 16, 3)
    fs = frame_schema(img.dtype, img.shape)
    msg = decoder(fs.name, RAW_IMAGE)(fs.encode(img, 1_700_000_000_123_456_789, "world"))
    assert (msg.timestamp.sec, msg.timestamp.nanosec) == (1_700_000_000, 123_456_789)
    assert (msg.frame_id, msg.width, msg.height, msg.encoding, msg.step) == ("world", 16, 12, "rgb8", 48)
    assert bytes(msg.data) == img.tobytes()


def test_point_cloud_decodes():
    pts = np.random.default_rng(1).normal(size=(7, 6)).astype("<f4")
    fs = frame_schema(pts.dtype, (100, 6))
    msg = decoder(fs.name, POINT_CLOUD)(fs.encode(pts, 5, "world"))
    assert msg.point_stride == 24
    assert [(f.name, f.offset, f.type) for f in msg.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("red", 12, 7), ("green", 16, 7), ("blue", 20, 7)]
    p = msg.pose
    assert (p.position.x, p.position.y, p.position.z, p.orientation.w) == (0, 0, 0, 1)
    assert bytes(msg.data) == pts.tobytes()


def test_ndarray_keeps_dtype_and_shape():
    arr = np.arange(35, dtype=">i2").reshape(5, 7)
    fs = frame_schema(arr.dtype, arr.shape)
    msg = decoder(fs.name, NDARRAY)(fs.encode(arr, 5, "world"))
    back = np.frombuffer(bytes(msg.data), dtype=np.dtype(msg.dtype)).reshape(msg.shape)
    assert msg.dtype == ">i2" and list(msg.shape) == [5, 7] and np.array_equal(back, arr)


def test_log_fields_and_encoding():
    assert log_fields({"level": "warning", "msg": "hot"}) == (3, "hot", "", "", 0)
    assert log_fields({"level": 4, "message": "x", "name": "arm", "file": "a.py", "line": 9}) == (4, "x", "arm", "a.py", 9)
    for not_a_log in ({"level": "info"}, {"level": "loud", "msg": "x"}, {"level": "info", "msg": "x", "extra": 1},
                      {"level": "info", "msg": 3}, {"level": True, "msg": "x"}, "text", {"level": "info", "msg": "a", "message": "b"}):
        assert log_fields(not_a_log) is None, not_a_log
    msg = decoder("foxglove_msgs/msg/Log", LOG)(encode_log(2_000_000_001, 2, "héllo", "n", "f.py", 7))
    assert (msg.timestamp.sec, msg.timestamp.nanosec, msg.level, msg.message, msg.name, msg.file, msg.line) == \
        (2, 1, 2, "héllo", "n", "f.py", 7)


def test_cdr_writer_alignment_and_strings():
    w = CdrWriter()
    w.uint8(1)
    w.string("ab")
    w.float64(2.0)
    w.sequence_u8(b"xyz")
    assert w.getvalue() == (b"\0\x01\0\0" + b"\x01\0\0\0" + struct.pack("<I", 3) + b"ab\0" + b"\0" * 5
                            + struct.pack("<d", 2.0) + struct.pack("<I", 3) + b"xyz")
    with pytest.raises(CdrError, match="NUL"):
        CdrWriter().string("a\0b")


def test_state_change():
    assert state_change({"a": 1}, {"a": 1}) is None
    assert state_change({"a": 1, "b": 2}, {"a": 1.0, "c": 3}) == {"changed": {"a": 1.0, "c": 3}, "removed": ["b"]}


def test_pure_modules_import_no_mcap_nor_web_stack():
    code = ("import sys, json; import bridge.record.schemas, bridge.record.cdr, bridge.record.cli, bridge.cli; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mcap', 'mcap_ros2', 'zstandard', 'flask', 'socketio', 'eventlet'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
