"""bridge.client_messages, the client's sans-I/O core, on hand-built messages: decoding of
records / frame / events (docs/protocol.md §4.3–4.5), the state merge, subscribe payloads,
acks and command answers, the session's bookkeeping (reconnects, exact ``missed``), and that
it imports nothing of the web stack."""

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
    Events,
    Frame,
    ProtocolError,
    Records,
    Refused,
    Session,
    Stream,
    Timeout,
    check_ack,
    command_payload,
    command_result,
    consumed_payload,
    decode,
    merge_state,
    published_dtype,
    split_url,
    subscribe_payload,
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


def test_split_url():
    assert split_url("http://127.0.0.1:8050/?token=abc") == ("http://127.0.0.1:8050", "socket.io", "abc")
    assert split_url("http://127.0.0.1:8050/?token=abc", "mine") == ("http://127.0.0.1:8050", "socket.io", "mine")
    assert split_url("http://h:1") == ("http://h:1", "socket.io", None)
    assert split_url("https://h/mon/?token=t") == ("https://h", "mon/socket.io", "t")
    assert split_url("http://h/mon/index.html") == ("http://h", "mon/socket.io", None)
    with pytest.raises(ValueError, match="not a bridge URL"):
        split_url("127.0.0.1:8050")


# -- the session -------------------------------------------------------------------------

def hello(pid: int = 10, channels: list | None = None) -> dict:
    return {"protocol": 3, "sid": "abc", "role": "operator", "device": {"name": "d", "status": "online", "pid": pid},
            "channels": [TEMPS, CAMERA, LOG] if channels is None else channels, "commands": [], "views": []}


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
    assert not s.on_device({"name": "d", "status": "online", "pid": 10})
    assert s.on_device({"name": "d", "status": "online", "pid": 12})
    assert s.device["pid"] == 12 and s.role == "operator"
    assert s.on_state({"full": True, "values": {"a": 1}}) == ({"a": 1}, True)
    assert s.on_state({"full": False, "values": {"b": 2}}) == ({"b": 2}, False)
    assert s.state == {"a": 1, "b": 2}


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
