"""bridge.client_messages, the client's sans-I/O core, on hand-built messages: decoding of
records / frame / events (docs/protocol.md §4.3–4.5), the state merge, subscribe payloads,
acks and command answers, the session's bookkeeping (reconnects, exact ``missed``), the
device it follows on a bridge of one device or several (protocol 4: hello.devices, the
``devices`` event, routing by ``device``), and that it imports nothing of the web stack."""

from __future__ import annotations

import json
import subprocess
import sys

import msgpack
import numpy as np
import pytest

from bridge.client_messages import (
    BridgeError,
    ClientError,
    CommandFailed,
    ConnectionFailed,
    DeviceError,
    Events,
    Frame,
    ProtocolError,
    Records,
    Refused,
    Session,
    Stream,
    Timeout,
    check_ack,
    check_device_name,
    command_payload,
    command_result,
    consumed_payload,
    decode,
    merge_state,
    published_dtype,
    split_url,
    subscribe_payload,
    unsubscribe_payload,
)
from conftest import REPO

TEMPS = {"name": "temps", "kind": "records", "capacity": 64,
         "dtype": [["t", "<f8"], ["motor", "<f4"], ["pos", "<f4", [3]], ["ok", "|b1"], ["n", "<i2"]]}
CAMERA = {"name": "camera", "kind": "frame", "dtype": "|u1", "shape": [4, 6], "slots": 3}
LOG = {"name": "log", "kind": "events", "capacity": 16, "max_bytes": 4096}


def records_message(rows: np.ndarray, first: int, missed: int = 0, channel: str = "temps",
                    decimated: bool = False, span: int | None = None) -> dict:
    """A records message as the bridge builds it (§4.3), by hand: columns 8-byte aligned."""
    fields, parts, offset = [], [], 0
    for name in rows.dtype.names:
        sub = rows.dtype[name]
        column = np.ascontiguousarray(rows[name]).astype(sub.base.newbyteorder("<")).tobytes()
        pad = -offset % 8
        parts.append(bytes(pad))
        offset += pad
        code = "b1" if sub.base.kind == "b" else f"{sub.base.kind}{sub.base.itemsize}"
        fields.append({"name": name, "dtype": code, "shape": list(sub.shape), "offset": offset, "nbytes": len(column)})
        parts.append(column)
        offset += len(column)
    n = span if span is not None else len(rows)
    msg = {"channel": channel, "kind": "records", "seq": [first, first + n - 1], "missed": missed,
           "t": float(rows["t"][-1]) if len(rows) else None, "count": len(rows), "decimated": decimated,
           "fields": fields, "data": b"".join(parts)}
    return msgpack.unpackb(msgpack.packb(msg))   # what python-socketio hands over: lists, bytes


def temps_rows(n: int, start: int = 0) -> np.ndarray:
    rows = np.zeros(n, published_dtype(TEMPS))
    k = np.arange(start, start + n)
    rows["t"] = 100.0 + k * 0.01
    rows["motor"] = k * 0.5
    rows["pos"] = np.stack([k, -k, 2 * k], axis=1)
    rows["ok"] = k % 2 == 0
    rows["n"] = -k
    return rows


# -- decoding ----------------------------------------------------------------------------

def test_records_decode_to_the_published_structured_dtype():
    rows = temps_rows(5, start=10)
    msg = decode("data", records_message(rows, first=10, missed=3), TEMPS)
    assert isinstance(msg, Records) and msg.kind == "records"
    assert msg.channel == "temps" and msg.seq == (10, 14) and msg.missed == 3 and not msg.decimated
    assert msg.data.dtype == published_dtype(TEMPS) and msg.data.shape == (5,) and msg.count == 5
    np.testing.assert_array_equal(msg.data, rows)
    assert msg.data["pos"].shape == (5, 3) and msg.t == pytest.approx(100.14)
    msg.data["motor"][0] = 7.0   # the rows are the client's own


def test_records_with_no_rows_carry_only_missed():
    msg = decode("data", records_message(temps_rows(0), first=20, missed=4), TEMPS)
    assert msg.seq == (20, 19) and msg.missed == 4 and msg.count == 0 and msg.t is None
    assert msg.data.dtype == published_dtype(TEMPS)
    assert consumed_payload(msg) == {"channel": "temps", "seq": 19}
    assert consumed_payload(decode("data", records_message(temps_rows(0), first=0, missed=2), TEMPS)) is None


def test_decimated_records_keep_the_whole_span():
    rows = temps_rows(4)
    msg = decode("data", records_message(rows, first=0, decimated=True, span=100), TEMPS)
    assert msg.decimated and msg.seq == (0, 99) and msg.count == 4


def test_records_without_a_spec_use_the_wire_dtypes():
    msg = decode("data", records_message(temps_rows(2), first=0), None)
    assert msg.data.dtype.names == ("t", "motor", "pos", "ok", "n")
    assert msg.data.dtype["pos"] == np.dtype(("<f4", (3,))) and msg.data.dtype["ok"] == np.dtype("?")


def test_a_big_endian_published_dtype_gets_the_same_values():
    spec = {**TEMPS, "dtype": [["t", ">f8"], ["motor", ">f4"], ["pos", ">f4", [3]], ["ok", "|b1"], ["n", ">i2"]]}
    rows = temps_rows(3)
    msg = decode("data", records_message(rows, first=0), spec)
    assert msg.data.dtype == published_dtype(spec) and msg.data.dtype["t"].byteorder == ">"
    for name in rows.dtype.names:
        np.testing.assert_array_equal(msg.data[name], rows[name])


def test_a_short_column_is_a_protocol_error():
    raw = records_message(temps_rows(3), first=0)
    raw["fields"][1]["nbytes"] -= 4
    with pytest.raises(ProtocolError, match="column 'motor'"):
        decode("data", raw, TEMPS)
    raw = records_message(temps_rows(3), first=0)
    raw["data"] = raw["data"][:-8]
    with pytest.raises(ProtocolError, match="column 'n'"):
        decode("data", raw, TEMPS)
    with pytest.raises(ProtocolError, match="wire dtype"):
        decode("data", {**records_message(temps_rows(1), first=0),
                        "fields": [{"name": "t", "dtype": "c8", "shape": [], "offset": 0, "nbytes": 8}]}, TEMPS)


def test_frames_decode_to_dtype_and_shape():
    image = np.arange(24, dtype="u1").reshape(4, 6)
    raw = {"channel": "camera", "kind": "frame", "seq": [117, 117], "missed": 2, "t": 5.5,
           "dtype": "u1", "shape": [4, 6], "data": image.tobytes()}
    msg = decode("data", raw, CAMERA)
    assert isinstance(msg, Frame) and msg.seq == (117, 117) and msg.missed == 2 and msg.t == 5.5
    np.testing.assert_array_equal(msg.data, image)
    assert msg.data.dtype == np.dtype("u1") and not msg.data.flags.writeable
    floats = np.linspace(0, 1, 6, dtype="<f4").reshape(2, 3)   # a shorter first dimension
    msg = decode("data", {**raw, "dtype": "f4", "shape": [2, 3], "data": floats.tobytes()},
                 {**CAMERA, "dtype": "<f4"})
    np.testing.assert_array_equal(msg.data, floats)
    with pytest.raises(ProtocolError, match="bytes for shape"):
        decode("data", {**raw, "shape": [5, 6]}, CAMERA)


def test_events_decode_to_dicts():
    raw = {"channel": "log", "kind": "events", "seq": [13, 14], "missed": 1, "t": 2.0,
           "events": [{"seq": 13, "t": 1.0, "message": {"text": "a"}}, {"seq": 14, "t": 2.0, "message": [1, 2]}]}
    msg = decode("event", raw, LOG)
    assert isinstance(msg, Events) and msg.seq == (13, 14) and msg.missed == 1
    assert [e["message"] for e in msg.events] == [{"text": "a"}, [1, 2]]
    with pytest.raises(ProtocolError, match="not expected"):
        decode("data", raw, LOG)
    with pytest.raises(ProtocolError, match="not a map"):
        decode("data", [1, 2], LOG)


# -- state, requests, answers ------------------------------------------------------------

def test_full_state_replaces_and_delta_merges():
    state, changes, full = merge_state({"old": 1}, {"full": True, "values": {"speed": 1.0, "mode": "run"}})
    assert state == {"speed": 1.0, "mode": "run"} and changes == state and full
    before = state
    state, changes, full = merge_state(state, {"full": False, "values": {"speed": 1.5}})
    assert state == {"speed": 1.5, "mode": "run"} and changes == {"speed": 1.5} and not full
    assert before == {"speed": 1.0, "mode": "run"}, "the old dict must not change under a reader"
    with pytest.raises(ProtocolError):
        merge_state({}, {"full": True})


def test_subscribe_payload_and_its_checks():
    assert subscribe_payload("joints") == {"channels": ["joints"], "in_flight": 4, "rate": 30}
    assert subscribe_payload("joints", rate=None, max_points=500, window=10, in_flight=1) == \
        {"channels": ["joints"], "in_flight": 1, "max_points": 500, "window": 10}
    for kwargs, words in [({"in_flight": 0}, "'in_flight' must be an integer from 1 to 64, got 0"),
                          ({"in_flight": 65}, "got 65"), ({"in_flight": True}, "got True"),
                          ({"rate": 0}, "'rate' must be a number from 0.1 to 1000, got 0"),
                          ({"max_points": 1}, "'max_points'"), ({"window": "10"}, "'window'")]:
        with pytest.raises(ValueError, match=words):
            subscribe_payload("joints", **kwargs)
    with pytest.raises(ValueError, match="'channel'"):
        subscribe_payload("")


def test_acks_and_command_answers():
    assert check_ack({"ok": True, "rate": 30}, "subscribe") == {"ok": True, "rate": 30}
    with pytest.raises(BridgeError) as info:
        check_ack({"ok": False, "error": {"code": "unknown_channel", "message": "no 'x'"}}, "subscribe")
    assert info.value.code == "unknown_channel" and info.value.message == "no 'x'"
    assert str(info.value) == "unknown_channel: no 'x'"
    with pytest.raises(ProtocolError):
        check_ack(None, "subscribe")
    with pytest.raises(DeviceError) as unknown:
        check_ack({"ok": False, "error": {"code": "unknown_device", "message": "subscribe: unknown device 'x' "
                                                                             "(devices: arm1, cam2)"}}, "subscribe")
    assert unknown.value.code == "unknown_device" and "arm1, cam2" in unknown.value.message
    assert unsubscribe_payload("temps") == {"channels": ["temps"]}
    assert command_payload(7, "set_speed", {"value": 1.5}) == {"id": 7, "name": "set_speed", "args": {"value": 1.5}}
    assert command_payload(8, "home", None)["args"] == {}
    assert command_result({"ok": True, "result": [1, 2]}, "x") == [1, 2]
    assert command_result({"ok": True, "result": None, "coalesced": True}, "x") is None
    with pytest.raises(CommandFailed) as failed:
        command_result({"ok": False, "error": {"code": "handler_error", "message": "x: ValueError: no"}}, "x")
    assert failed.value.code == "handler_error" and "ValueError" in failed.value.message
    assert isinstance(failed.value, BridgeError)


def test_the_exception_tree():
    assert issubclass(Refused, ConnectionError) and issubclass(Refused, ClientError)
    assert issubclass(ConnectionFailed, ConnectionError)
    assert issubclass(Timeout, TimeoutError) and issubclass(Timeout, ClientError)
    assert issubclass(CommandFailed, ClientError) and issubclass(ProtocolError, ClientError)
    assert issubclass(DeviceError, BridgeError) and not issubclass(DeviceError, CommandFailed)


def test_split_url():
    assert split_url("http://127.0.0.1:8050/?token=abc") == ("http://127.0.0.1:8050", "socket.io", "abc")
    assert split_url("http://127.0.0.1:8050/?token=abc", "mine") == ("http://127.0.0.1:8050", "socket.io", "mine")
    assert split_url("http://h:1") == ("http://h:1", "socket.io", None)
    assert split_url("https://h/mon/?token=t") == ("https://h", "mon/socket.io", "t")
    assert split_url("http://h/mon/index.html") == ("http://h", "mon/socket.io", None)
    with pytest.raises(ValueError, match="not a bridge URL"):
        split_url("127.0.0.1:8050")


# -- the session -------------------------------------------------------------------------

def status(name: str | None, pid: int | None = 10, online: bool = True) -> dict:
    return {"name": name, "status": "online" if online else "offline", "pid": pid,
            "heartbeat_age": 0.01 if pid is not None else None}


def entry(name: str | None, pid: int | None = 10, channels: list | None = None, commands: list | None = None,
          online: bool = True) -> dict:
    """A DEVICE_ENTRY of hello.devices and the devices event."""
    return {"name": name, "device": status(name, pid, online), "channels": channels or [], "commands": commands or []}


def hello(pid: int = 10, channels: list | None = None) -> dict:
    """A single-mode hello (protocol 4): device 'd', also at the top level."""
    only = entry("d", pid, [TEMPS, CAMERA, LOG] if channels is None else channels)
    return {"protocol": 5, "sid": "abc", "role": "operator", "multi": False, "devices": [only],
            "device": only["device"], "channels": only["channels"], "commands": [], "views": []}


def multi_hello(*entries: dict) -> dict:
    return {"protocol": 5, "sid": "abc", "role": "operator", "multi": True, "devices": list(entries),
            "device": None, "channels": [], "commands": [], "views": []}


ARM = entry("arm1", 10, [TEMPS, LOG], [{"name": "home", "params": []}])
CAM = entry("cam2", 20, [CAMERA, TEMPS], [{"name": "snap", "params": []}])


def test_session_resubscribes_after_a_new_hello_and_waits_for_unknown_channels():
    s = Session()
    s.on_hello(hello(channels=[TEMPS]))
    s.streams["temps"] = Stream("temps", subscribe_payload("temps"))
    s.streams["log"] = Stream("log", subscribe_payload("log"))
    assert [x.channel for x in s.to_subscribe()] == ["temps"]   # log: not declared yet
    assert s.to_subscribe() == []                                # temps is active now
    s.on_channels({"channels": [TEMPS, LOG], "commands": []})
    assert [x.channel for x in s.to_subscribe()] == ["log"]
    s.on_hello(hello(channels=[TEMPS, LOG]))                      # a reconnect
    assert {x.channel for x in s.to_subscribe()} == {"temps", "log"}
    stream = s.streams["log"]
    s.subscribe_failed(stream)
    assert s.to_subscribe() == [stream]


def test_session_routes_messages_and_keeps_missed_exact_across_a_resubscribe():
    s = Session()
    s.on_hello(hello(pid=10))
    assert s.receive("data", records_message(temps_rows(3), first=0)) is None   # not subscribed
    s.streams["temps"] = Stream("temps", subscribe_payload("temps"))
    s.to_subscribe()
    stream, msg = s.receive("data", records_message(temps_rows(3), first=0))
    assert stream is s.streams["temps"] and msg.seq == (0, 2) and msg.missed == 0
    stream, msg = s.receive("data", records_message(temps_rows(2, 5), first=5, missed=2))
    assert msg.missed == 2          # the bridge's count, as it is
    s.on_hello(hello(pid=10))       # reconnected: the bridge counts from the new subscription
    s.to_subscribe()
    _, msg = s.receive("data", records_message(temps_rows(2, 20), first=20, missed=0))
    assert msg.missed == 13         # records 7..19 were published while we were away
    _, msg = s.receive("data", records_message(temps_rows(1, 22), first=22))
    assert msg.missed == 0
    s.on_hello(hello(pid=11))       # reconnected to a restarted device: numbering starts over
    s.to_subscribe()
    _, msg = s.receive("data", records_message(temps_rows(2), first=0))
    assert msg.missed == 0


def test_session_frames_after_a_resubscribe_count_skipped_frames():
    s = Session()
    s.on_hello(hello())
    s.streams["camera"] = Stream("camera", subscribe_payload("camera"))
    s.to_subscribe()
    frame = {"channel": "camera", "kind": "frame", "seq": [4, 4], "missed": 0, "t": 1.0, "dtype": "u1",
             "shape": [4, 6], "data": bytes(24)}
    assert s.receive("data", frame)[1].missed == 0
    s.on_hello(hello())
    s.to_subscribe()
    assert s.receive("data", {**frame, "seq": [9, 9]})[1].missed == 4


def test_session_device_restart_and_state():
    s = Session()
    s.on_hello(hello(pid=10))
    assert not s.on_device({"device": "d", "name": "d", "status": "online", "pid": 10})
    assert s.on_device({"device": "d", "name": "d", "status": "online", "pid": 12})
    assert s.device == {"name": "d", "status": "online", "pid": 12} and s.role == "operator"
    assert s.statuses() == [s.device]
    assert s.on_state({"device": "d", "full": True, "values": {"a": 1}}) == ({"a": 1}, True)
    assert s.on_state({"device": "d", "full": False, "values": {"b": 2}}) == ({"b": 2}, False)
    assert s.state == {"a": 1, "b": 2}


# -- which device: protocol 4 ------------------------------------------------------------

def test_single_mode_follows_the_only_device_and_names_it_in_requests():
    s = Session()
    s.on_hello(hello())
    assert not s.multi and s.listed and s.device_problem() is None
    assert s.name == "d" and s.device["name"] == "d" and [c["name"] for c in s.channels] == ["temps", "camera", "log"]
    assert s.with_device(subscribe_payload("temps")) == {"channels": ["temps"], "in_flight": 4, "rate": 30,
                                                           "device": "d"}
    assert s.with_device({"id": 1, "name": "x", "args": {}})["device"] == "d"
    assert s.statuses() == [status("d")]
    named = Session(want="d")
    named.on_hello(hello())
    assert named.device_problem() is None and named.name == "d"
    other = Session(want="arm1")    # single mode: the bridge's device is 'd'
    other.on_hello(hello())
    problem = other.device_problem()
    assert isinstance(problem, DeviceError) and problem.code == "unknown_device"
    assert str(problem) == ("unknown_device: this bridge serves device d, not 'arm1': pass device=None or the name "
                            "of a device it serves")


def test_a_protocol_3_hello_is_one_device_at_the_top_level():
    s = Session()
    s.on_hello({"protocol": 3, "sid": "abc", "role": "viewer", "device": status("d"), "channels": [TEMPS],
                "commands": [], "views": []})
    assert s.listed and s.name == "d" and s.channel("temps") == TEMPS and s.role == "viewer"
    assert s.ours({"channel": "temps"})            # no 'device' key: protocol 3
    assert s.statuses() == [status("d")]


def test_multi_mode_needs_a_device_name():
    s = Session()
    s.on_hello(multi_hello(ARM, CAM))
    assert s.multi and not s.listed and s.name is None
    problem = s.device_problem()
    assert isinstance(problem, DeviceError) and problem.code == "bad_request"
    assert problem.message == "this bridge serves several devices (arm1, cam2): pass device=... to follow one of them"
    assert [d["name"] for d in s.statuses()] == ["arm1", "cam2"]   # what list_devices reports
    s = Session()
    s.on_hello(multi_hello())            # --attach all, nothing running yet
    assert "several devices (none yet)" in s.device_problem().message


def test_multi_mode_follows_the_named_device():
    s = Session(want="cam2")
    s.on_hello(multi_hello(ARM, CAM))
    assert s.listed and s.device_problem() is None and s.name == "cam2"
    assert s.device == status("cam2", 20) and s.channels == [CAMERA, TEMPS] and s.commands == CAM["commands"]
    assert s.with_device(consumed_payload(decode("data", records_message(temps_rows(1), first=0), TEMPS))) == \
        {"channel": "temps", "seq": 0, "device": "cam2"}
    assert s.with_device(unsubscribe_payload("temps")) == {"channels": ["temps"], "device": "cam2"}


def test_multi_mode_routes_messages_by_device():
    """Both devices have a 'temps' channel: only cam2's reach a client that follows cam2."""
    s = Session(want="cam2")
    s.on_hello(multi_hello(ARM, CAM))
    assert s.on_state({"device": "arm1", "full": True, "values": {"speed": 1}}) is None
    assert s.on_state({"device": "cam2", "full": True, "values": {"zoom": 2}}) == ({"zoom": 2}, True)
    assert s.state == {"zoom": 2}
    s.streams["temps"] = Stream("temps", subscribe_payload("temps"))
    assert [x.channel for x in s.to_subscribe()] == ["temps"]
    assert s.receive("data", {**records_message(temps_rows(3), first=0), "device": "arm1"}) is None
    stream, msg = s.receive("data", {**records_message(temps_rows(2), first=0), "device": "cam2"})
    assert stream is s.streams["temps"] and msg.seq == (0, 1)
    event = {"device": "arm1", "channel": "log", "kind": "events", "seq": [0, 0], "missed": 0, "t": 1.0, "events": []}
    assert s.receive("event", event) is None

    # another device's status and channels update the list, not the device followed
    assert not s.on_device({"device": "arm1", "name": "arm1", "status": "offline", "pid": 11})
    assert s.device == status("cam2", 20)
    assert s.statuses()[0] == {"name": "arm1", "status": "offline", "pid": 11}
    assert not s.on_channels({"device": "arm1", "channels": [LOG], "commands": []})
    assert s.channels == [CAMERA, TEMPS] and s.devices[0]["channels"] == [LOG]
    assert s.on_channels({"device": "cam2", "channels": [CAMERA], "commands": []})
    assert s.channels == [CAMERA] and s.devices[1]["channels"] == [CAMERA]
    assert s.on_device({"device": "cam2", "name": "cam2", "status": "online", "pid": 21})   # a restart
    assert s.device["pid"] == 21 and s.statuses()[1]["pid"] == 21


def test_single_mode_auto_before_the_device_attaches():
    """--attach auto: the only device has no name until one attaches; requests omit it."""
    empty = entry(None, pid=None, online=False)
    s = Session()
    s.on_hello({**hello(), "devices": [empty], "device": empty["device"], "channels": []})
    assert s.listed and s.device_problem() is None and s.name is None
    assert s.device == {"name": None, "status": "offline", "pid": None, "heartbeat_age": None}
    assert s.with_device(subscribe_payload("temps", rate=None)) == {"channels": ["temps"], "in_flight": 4}
    assert s.ours({"device": None, "full": True, "values": {}})
    s.streams["temps"] = Stream("temps", subscribe_payload("temps"))
    assert s.to_subscribe() == []                      # no channels yet
    assert not s.on_device({"device": "arm1", "name": "arm1", "status": "online", "pid": 30})   # attached
    assert s.name == "arm1" and s.device["status"] == "online"
    assert s.statuses() == [{"name": "arm1", "status": "online", "pid": 30}]
    assert s.on_channels({"device": "arm1", "channels": [TEMPS], "commands": []})
    assert [x.channel for x in s.to_subscribe()] == ["temps"]
    assert s.with_device({"channels": ["temps"]}) == {"channels": ["temps"], "device": "arm1"}
    named = Session(want="arm1")        # asked for by name: accepted, it may be the one that attaches
    named.on_hello({**hello(), "devices": [empty], "device": empty["device"], "channels": []})
    assert named.listed and named.device_problem() is None and named.name == "arm1"


def test_a_device_that_starts_later_and_the_devices_event():
    """--attach all: the device asked for is not running yet; it appears in a devices event,
    leaves when it closes, and comes back as a new process."""
    s = Session(want="cam3")
    s.on_hello(multi_hello(ARM, CAM))
    assert s.device_problem() is None and not s.listed      # not an error: it may start later
    assert s.device == {"name": "cam3", "status": "offline", "pid": None, "heartbeat_age": None}
    assert s.with_device({"id": 1})["device"] == "cam3"
    waited = s.missing_device("subscribe 'temps'", 10)
    assert waited.code == "unknown_device" and waited.message == (
        "subscribe 'temps': the bridge does not serve device 'cam3' (devices: arm1, cam2); waited 10 s for it to appear")
    s.streams["temps"] = Stream("temps", subscribe_payload("temps"))
    assert s.to_subscribe() == []

    s.on_devices({"devices": [ARM, CAM, entry("cam3", 40, [TEMPS])]})
    assert s.listed and s.device["pid"] == 40 and [x.channel for x in s.to_subscribe()] == ["temps"]
    _, msg = s.receive("data", {**records_message(temps_rows(3), first=0), "device": "cam3"})
    assert msg.seq == (0, 2)

    s.on_devices({"devices": [ARM, CAM]})                   # cam3 closed: no longer served
    assert not s.listed and s.device["status"] == "offline" and s.device["pid"] == 40 and s.channels == []
    assert not s.streams["temps"].active
    assert [d["name"] for d in s.statuses()] == ["arm1", "cam2"]

    s.on_devices({"devices": [ARM, CAM, entry("cam3", 41, [TEMPS])]})   # started again
    assert [x.channel for x in s.to_subscribe()] == ["temps"]
    _, msg = s.receive("data", {**records_message(temps_rows(2), first=0), "device": "cam3"})
    assert msg.missed == 0                                  # a new process: numbering starts over
    with pytest.raises(ProtocolError, match="'devices' list"):
        s.on_devices({"devices": None})


def test_device_names_are_checked():
    assert check_device_name(None) is None and check_device_name("arm-1_B") == "arm-1_B"
    for bad in ("", "arm/1", "a" * 49, 3):
        with pytest.raises(ValueError, match="'device' must be a device name"):
            check_device_name(bad)


def test_client_modules_import_no_server_stack():
    """bridge.client_messages imports numpy and the standard library only; the clients add
    socketio's client, never flask, eventlet or bridge.server."""
    probe = ("import json, sys\n"
             "import bridge.client_messages\n"
             "core = sorted(m for m in sys.modules if m.split('.')[0] in ('socketio', 'engineio', 'aiohttp', "
             "'flask', 'flask_socketio', 'eventlet', 'msgpack') or m in ('bridge.server', 'bridge.core'))\n"
             "import bridge.client\n"
             "both = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'flask_socketio', 'eventlet') "
             "or m in ('bridge.server', 'bridge.core', 'bridge.relay', 'bridge.cli'))\n"
             "print(json.dumps([core, both]))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[], []]
