"""bridge/fleet/streams.py over plain dicts and bytes: the keys, the channel entries (the
relay's own messages, through its own encoders), the control entries, retention, and the
edge's gap arithmetic. No Redis here: tests/test_fleet_redis.py runs the same layout through
a real redis-server.
"""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.fleet import streams as fs
from bridge.protocol import encode_frame, encode_records
from conftest import REPO
from device_agent.attach import Event

RUN = "4242.1718000000"
DTYPE = np.dtype([("t", "<f8"), ("value", "<f4"), ("pos", "<f4", (3,)), ("n", "<i8"), ("ok", "?")])


def make_records(n: int, start: int = 0, dtype: np.dtype = DTYPE) -> np.ndarray:
    rows = np.zeros(n, dtype)
    if "t" in dtype.names:
        rows["t"] = 1_795_303_759.0 + np.arange(start, start + n) / 60
        rows["value"] = np.sin(np.arange(start, start + n))
    else:
        rows["x"], rows["y"] = np.arange(start, start + n) - 300, np.arange(n) * 7
    if "pos" in dtype.names:
        rows["pos"] = np.arange(3 * n).reshape(n, 3)
    if "n" in dtype.names:
        rows["n"] = np.arange(start, start + n) * 2**40
    if "ok" in dtype.names:
        rows["ok"] = np.arange(n) % 2 == 0
    return rows


def as_redis(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """What redis-py's XREAD gives back for an entry XADDed with ``fields``."""
    return {k.encode(): v for k, v in fields.items()}


# -- keys -----------------------------------------------------------------------------------

def test_keys_of_one_device_share_its_cluster_hash_tag():
    keys = [fs.channel_key("arm1", "temps"), fs.manifest_key("arm1"), fs.state_key("arm1"),
            fs.heartbeat_key("arm1"), fs.commands_key("arm1"), fs.replies_key("arm1", "edge-7")]
    assert keys == ["monbridge:{arm1}:ch:temps", "monbridge:{arm1}:manifest", "monbridge:{arm1}:state",
                    "monbridge:{arm1}:heartbeat", "monbridge:{arm1}:commands", "monbridge:{arm1}:replies:edge-7"]
    assert {k[k.index("{"):k.index("}") + 1] for k in keys} == {"{arm1}"}
    assert fs.DEVICES_KEY == "monbridge:devices"


@pytest.mark.parametrize("call", [lambda: fs.channel_key("a}b", "temps"), lambda: fs.channel_key("arm1", "t:x"),
                                  lambda: fs.state_key(""), lambda: fs.replies_key("arm1", "edge 1")])
def test_a_name_that_would_split_a_key_is_refused(call):
    with pytest.raises(ValueError, match="name .* is invalid: use 1-48 letters, digits"):
        call()


# -- channel entries ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [
    DTYPE,
    np.dtype([("t", ">f8"), ("value", ">f4")]),            # big-endian: encode_records converts
    np.dtype([("x", "<i2"), ("y", "<u1")]),               # no "t": the entry's t is empty
])
@pytest.mark.parametrize("n", [1, 17])
def test_a_records_entry_is_the_relay_message_without_missed(dtype, n):
    rows = make_records(n, 100, dtype)
    fields = fs.entry_for_records(RUN, rows, 100)
    assert set(fields) == {"kind", "run", "seq", "n", "t", "meta", "data"}
    assert all(isinstance(v, bytes) for v in fields.values())
    assert fields["seq"] == b"100" and fields["n"] == str(n).encode()
    entry = fs.decode_entry(as_redis(fields))
    assert (entry.kind, entry.run, entry.first, entry.count, entry.last, entry.next_seq) == \
        ("records", RUN, 100, n, 99 + n, 100 + n)
    assert fs.message("temps", entry) == encode_records("temps", rows, 100, 0)
    assert fs.message("temps", entry, missed=5) == encode_records("temps", rows, 100, 5)
    back = fs.records_of(entry, dtype)
    assert back.dtype == dtype and back.tobytes() == rows.tobytes()
    if "t" not in dtype.names:
        assert entry.t is None and fields["t"] == b""


def test_a_frame_entry_carries_the_frame_bytes_as_encode_frame_sends_them():
    image = (np.arange(1024 * 1024) % 251).astype(np.uint8).reshape(1024, 1024)  # 1 MiB
    fields = fs.entry_for_frame(RUN, 812, 1_795_303_760.25, image)
    assert fields["data"] == image.tobytes() and fields["n"] == b"1"
    entry = fs.decode_entry(as_redis(fields))
    assert entry.t == 1_795_303_760.25
    assert fs.message("camera", entry) == encode_frame("camera", 812, 1_795_303_760.25, image, 0)
    assert np.array_equal(fs.frame_of(entry), image)


def test_a_big_endian_frame_travels_little_endian():
    array = np.arange(12, dtype=">f4").reshape(3, 4)
    entry = fs.decode_entry(fs.entry_for_frame(RUN, 1, 2.5, array))
    assert entry.meta == {"dtype": "f4", "shape": [3, 4]}
    assert entry.data == array.astype("<f4").tobytes()
    assert np.array_equal(fs.frame_of(entry), array)


def test_an_events_entry_keeps_each_event_and_who_it_is_for():
    events = [Event(13, 1.5, {"text": "hello"}, None), Event(15, 2.5, [1, "x", None], "sid-a")]
    fields = fs.entry_for_events(RUN, events, 12, 16)   # 12: overwritten read; 14: not JSON
    entry = fs.decode_entry(as_redis(fields))
    assert (entry.first, entry.count, entry.t) == (12, 4, 2.5)
    assert fs.events_of(entry) == events
    with pytest.raises(ValueError, match="use events_of"):
        fs.message("log", entry)


def test_an_events_entry_without_events_still_covers_its_records():
    entry = fs.decode_entry(fs.entry_for_events(RUN, [], 30, 32))
    assert (entry.first, entry.next_seq, entry.t, fs.events_of(entry)) == (30, 32, None, [])


@pytest.mark.parametrize("call, message", [
    (lambda: fs.entry_for_records(RUN, make_records(0), 0), "at least one record"),
    (lambda: fs.entry_for_records(RUN, make_records(2), -1), "'first' must be a sequence number"),
    (lambda: fs.entry_for_frame(RUN, 0, 1.0, np.zeros(3)), "frame number"),
    (lambda: fs.entry_for_events(RUN, [], 5, 5), "at least one ring record"),
    (lambda: fs.entry_for_events(RUN, [Event(9, 1.0, {}, None)], 5, 7), "event 9 is outside"),
    (lambda: fs.entry_for_frame("", 1, 1.0, np.zeros(3)), "'run' must be"),
    (lambda: fs.entry_for_frame("x" * 65, 1, 1.0, np.zeros(3)), "'run' must be"),
    (lambda: fs.entry_for_frame("é", 1, 1.0, np.zeros(3)), "'run' must be"),
])
def test_an_entry_that_cannot_be_made_says_why(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def good_fields() -> dict[bytes, bytes]:
    return as_redis(fs.entry_for_records(RUN, make_records(3), 7))


@pytest.mark.parametrize("change, message", [
    ({b"kind": b"table"}, "'kind' must be one of records, frame, events, got 'table'"),
    ({b"seq": b"-1"}, "'seq' must be an integer of at least 0, got b'-1'"),
    ({b"seq": b"7.0"}, "'seq' must be an integer"),
    ({b"seq": b""}, "'seq' must be an integer"),
    ({b"n": b"0"}, "'n' must be an integer of at least 1"),
    ({b"t": b"noon"}, "'t' must be a number or empty"),
    ({b"meta": b"[1]"}, "'meta' must be a JSON object"),
    ({b"meta": b"{"}, "'meta' is not JSON"),
    ({b"kind": b"frame", b"n": b"2"}, "a frame entry covers one frame"),
    ({b"kind": b"frame", b"seq": b"0"}, "'seq' must be an integer of at least 1"),
])
def test_a_bad_entry_is_refused_naming_the_field_and_value(change, message):
    fields = good_fields() | change
    with pytest.raises(fs.EntryError, match=message.replace("[", r"\[").replace("(", r"\(")):
        fs.decode_entry(fields)


def test_a_missing_field_is_named():
    fields = good_fields()
    del fields[b"run"]
    with pytest.raises(fs.EntryError, match="no 'run' field"):
        fs.decode_entry(fields)


def test_text_keys_are_read_too():
    """redis-py with decode_responses=True gives str keys (binary data cannot be read that
    way, but the control streams can)."""
    fields = {k.decode(): v for k, v in good_fields().items()}
    assert fs.decode_entry(fields).first == 7


def test_columns_that_do_not_fit_the_data_are_refused_when_read():
    entry = fs.decode_entry(good_fields() | {b"data": b"\0" * 5})
    with pytest.raises(fs.EntryError, match="records entry 7"):
        fs.records_of(entry)
    frame = fs.decode_entry(fs.entry_for_frame(RUN, 1, 1.0, np.zeros((2, 2))) | {"data": b"\0"})
    with pytest.raises(fs.EntryError, match="frame entry 1"):
        fs.frame_of(frame)
    events = fs.decode_entry(fs.entry_for_events(RUN, [], 0, 1) | {"data": b"{}"})
    with pytest.raises(fs.EntryError, match="not a list of events"):
        fs.events_of(events)


def test_entry_bytes_counts_names_and_values():
    assert fs.entry_bytes({"ab": b"123", b"c": b""}) == 6


# -- stream IDs and retention ---------------------------------------------------------------

def test_stream_ids_parse_and_order_as_redis_does():
    assert fs.parse_id(b"1718000000000-3") == (1718000000000, 3)
    assert fs.parse_id("5") == (5, 0)
    assert fs.parse_id("10-0") > fs.parse_id("9-99")      # numbers, not text
    assert fs.format_id((12, 4)) == "12-4"
    for bad in ("", "$", "1-x", "-1", ">", "1-2-3"):
        with pytest.raises(fs.EntryError, match="not a stream ID"):
            fs.parse_id(bad)


def test_maxlen_by_time_capped_by_bytes():
    r = fs.Retention()
    assert fs.maxlen("records", 60, 1024, r) == 600           # 10 s at 60 Hz
    assert fs.maxlen("events", 60, 1024, r) == 600
    assert fs.maxlen("frame", 30, 2**20, r) == 30             # 1 s of 1 MiB frames
    assert fs.maxlen("records", 60, 2**20, r) == 64           # 64 MiB cap
    assert fs.maxlen("frame", 1, 100, r) == 4                 # at least min_entries
    assert fs.maxlen("frame", 30, 8 * 2**20, fs.Retention(max_bytes=16 * 2**20)) == 4
    with pytest.raises(ValueError, match="'kind' must be one of"):
        fs.maxlen("table", 60, 10)
    with pytest.raises(ValueError, match="'rate' must be a positive number"):
        fs.maxlen("records", 0, 10)


def test_min_id_keeps_seconds_by_the_server_clock():
    assert fs.min_id(b"1718000010000-7", 10) == "1718000000000-0"
    assert fs.min_id("500-0", 10) == "0-0"


# -- the gap arithmetic -----------------------------------------------------------------------

def rec(first: int, n: int, run: str = RUN) -> fs.Entry:
    return fs.Entry("records", run, first, n, None, {}, b"")


def frame(k: int, run: str = RUN) -> fs.Entry:
    return fs.Entry("frame", run, k, 1, None, {}, b"")


def test_the_first_entry_misses_nothing_then_continuity_misses_nothing():
    s = fs.step(fs.Position(), "100-0", rec(500, 10))
    assert (s.missed, s.skip, s.restarted, s.duplicate) == (0, 0, False, False)
    assert s.position == fs.Position("100-0", RUN, 510)
    s = fs.step(s.position, "100-1", rec(510, 5))
    assert (s.missed, s.position.next_seq, s.position.stream_id) == (0, 515, "100-1")


def test_trimmed_entries_are_missed_exactly():
    at = fs.Position("100-1", RUN, 515)
    s = fs.step(at, "180-0", rec(600, 3))     # 515..599 trimmed away (or lost with Redis)
    assert (s.missed, s.skip, s.position.next_seq) == (85, 0, 603)


def test_an_overlap_is_skipped_and_a_repeat_dropped():
    at = fs.Position("100-1", RUN, 515)
    s = fs.step(at.after_redis_restart(), "0-5", rec(510, 8))     # a restarted stream repeats 510..514
    assert (s.missed, s.skip, s.duplicate, s.position.next_seq) == (0, 5, False, 518)
    s = fs.step(fs.Position("0-0", RUN, 515), "0-6", rec(505, 10))
    assert (s.missed, s.skip, s.duplicate, s.position.next_seq) == (0, 10, True, 515)
    assert s.position.stream_id == "0-6"      # read past, even though nothing was new
    assert at.after_redis_restart() == fs.Position("0-0", RUN, 515)


def test_a_new_device_process_restarts_the_numbering():
    s = fs.step(fs.Position("100-1", RUN, 515), "101-0", rec(0, 4, run="4243.1718000100"))
    assert (s.missed, s.restarted, s.position.run, s.position.next_seq) == (0, True, "4243.1718000100", 4)


def test_frames_count_what_was_published_between_them():
    s = fs.step(fs.Position(), "1-0", frame(7))
    assert (s.missed, s.position.next_seq) == (0, 8)         # like a subscribe: the first reports 0
    s = fs.step(s.position, "2-0", frame(8))
    assert s.missed == 0
    s = fs.step(s.position, "3-0", frame(12))
    assert s.missed == 3                                     # the relay's frame.seq - last - 1
    assert fs.step(s.position, "4-0", frame(12)).duplicate


def test_an_entry_id_not_after_the_position_is_a_caller_error():
    with pytest.raises(ValueError, match="entry 5-0 is not after the position 7-0"):
        fs.step(fs.Position("7-0", RUN, 10), "5-0", rec(10, 1))
    with pytest.raises(ValueError, match="not after"):
        fs.step(fs.Position("7-0", RUN, 10), "7-0", rec(10, 1))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_delivered_plus_missed_is_everything_published(data):
    """An origin publishes batches; Redis loses some (trimming, a restart that may also
    restart the IDs lower), an edge reads what is left, maybe twice after a restart. Every
    sequence number is delivered once or counted missed once, never both."""
    sizes = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=40))
    entries, seq = [], 0
    for n in sizes:
        entries.append(rec(seq, n))
        seq += n
    at, delivered, missed, ms = fs.Position(), [], 0, 1000
    i = 0
    while i < len(entries):
        if data.draw(st.booleans()):                 # lost: trimmed, or gone with Redis
            i += 1
            continue
        if data.draw(st.integers(0, 9)) == 0:        # Redis restarted: IDs start lower, re-read
            at, ms = at.after_redis_restart(), data.draw(st.integers(1, 999))
            i = max(0, i - data.draw(st.integers(0, 2)))   # the restarted stream repeats some
        ms += 1
        s = fs.step(at, f"{ms}-0", entries[i])
        e = entries[i]
        delivered += list(range(e.first + s.skip, e.next_seq))
        missed += s.missed
        at = s.position
        i += 1
    if not delivered:
        return
    assert delivered == sorted(set(delivered))                   # in order, none twice
    assert len(delivered) + missed == delivered[-1] - delivered[0] + 1


def test_origin_resumes_after_its_stream_when_the_device_is_the_same():
    newest = rec(500, 10)
    assert fs.origin_cursor(newest, RUN, 530) == 510             # publish 510.. again from the ring
    assert fs.origin_cursor(newest, "other", 530) == 530         # another device process: from now
    assert fs.origin_cursor(None, RUN, 530) == 530
    assert fs.origin_cursor(newest, RUN, 5) == 5                 # the ring is behind the stream
    assert fs.origin_cursor(frame(9), RUN, 530) == 530


# -- control streams -------------------------------------------------------------------------

MANIFEST = {"device": "arm1", "pid": 10430, "doorbell": "@monbridge.arm1.device.10430.7f41", "version": 3,
            "heartbeat_period": 0.1,
            "channels": [{"name": "temps", "kind": "records", "dtype": [["t", "<f8"]], "capacity": 8192,
                          "segment": "monbridge.arm1.ch.temps"}],
            "commands": [{"name": "home", "coalesce": False, "doc": "", "params": []}]}


def test_the_manifest_reaches_edges_without_local_names():
    run, manifest = fs.decode_manifest(as_redis(fs.manifest_entry(RUN, MANIFEST)))
    assert run == RUN
    assert manifest == {"device": "arm1", "pid": 10430,
                        "channels": [{"name": "temps", "kind": "records", "dtype": [["t", "<f8"]],
                                      "capacity": 8192}],
                        "commands": MANIFEST["commands"]}
    with pytest.raises(fs.EntryError, match="'channels' list"):
        fs.decode_manifest({b"run": b"r", b"manifest": b"{}"})


def test_state_entries_carry_the_whole_state():
    values = {"speed": 1.5, "mode": "run", "nested": {"a": [1, None]}}
    assert fs.decode_state(as_redis(fs.state_entry(RUN, 9, values))) == (RUN, 9, values)
    with pytest.raises(fs.EntryError, match="'values' must be a JSON object"):
        fs.decode_state({b"run": b"r", b"version": b"1", b"values": b"[]"})


def test_heartbeat_value_and_absence():
    beat = fs.heartbeat_value(RUN, 10430, "online", 0.02, "origin-host-1", 1_795_303_760.0)
    assert fs.decode_heartbeat(beat) == {"run": RUN, "pid": 10430, "status": "online", "heartbeat_age": 0.02,
                                         "origin": "origin-host-1", "t": 1_795_303_760.0, "layout": fs.LAYOUT}
    assert fs.decode_heartbeat(None) is None
    with pytest.raises(fs.EntryError, match="status online or offline"):
        fs.decode_heartbeat(b'{"status": "asleep"}')
    with pytest.raises(ValueError, match="'status' must be"):
        fs.heartbeat_value(None, None, "gone", None, "o", 0.0)
    assert fs.HEARTBEAT_TTL_MS >= 2 * fs.HEARTBEAT_PERIOD * 1000


def test_commands_and_replies_round_trip():
    command = fs.Command("edge-1", 17, "set_speed", {"value": 1.5}, {"id": "sid-9", "role": "operator"}, 1e9 + 0.5)
    assert fs.decode_command(as_redis(fs.command_entry(command))) == command
    assert fs.decode_reply(as_redis(fs.reply_entry(17, {"ok": True, "result": 1.5}))) == \
        (17, {"ok": True, "result": 1.5})
    with pytest.raises(fs.EntryError, match="boolean 'ok'"):
        fs.decode_reply({b"request": b"1", b"answer": b"{}"})
    with pytest.raises(fs.EntryError, match="'deadline' is required"):
        fs.decode_command(as_redis(fs.command_entry(command)) | {b"deadline": b""})
    with pytest.raises(fs.EntryError, match="must be JSON objects"):
        fs.decode_command(as_redis(fs.command_entry(command)) | {b"args": b"[]"})


# -- what the package may import --------------------------------------------------------------

def test_only_bridge_fleet_imports_redis_and_the_bridge_imports_fleet_only_when_asked():
    """``import bridge`` and every bridge module work without redis-py: redis is imported in
    bridge/fleet alone, and the server imports bridge.fleet inside the functions that run for
    --publish / --edge (tests/test_fleet_cli.py: without redis-py they say what to install)."""
    found = []
    for path in sorted((REPO / "bridge").rglob("*.py")):
        in_fleet = "fleet" in path.relative_to(REPO / "bridge").parts
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:   # module level: what importing the module imports
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{'.' * node.level}{node.module or ''}"] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                      if n == "redis" or (not in_fleet and "fleet" in n)]
    assert not found, found


@pytest.mark.parametrize("modules, allowed", [
    ("bridge.fleet, bridge.fleet.streams, bridge.fleet.follow, bridge.fleet.mirror", ()),   # sans-I/O
    ("bridge.fleet.origin, bridge.fleet.edge, bridge.server", ("flask", "flask_socketio", "socketio", "engineio",
                                                                "eventlet")),   # redis only when they run
])
def test_the_fleet_modules_import_without_redis(run_python, modules, allowed):
    done = run_python(f"""
        import json, sys
        sys.modules["redis"] = None          # as if redis-py were not installed
        import {modules}
        web = ("flask", "flask_socketio", "socketio", "engineio", "eventlet", "redis")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in web and sys.modules[m])))
    """)
    assert done.returncode == 0, done.stderr
    assert [m for m in json.loads(done.stdout) if m.split(".")[0] not in allowed] == []


# -- wants: what the edges' browsers subscribe to ------------------------------------------------

def test_wants_entry_round_trip_and_errors():
    fields = fs.wants_entry("edge-1", {"cam", "arm"})
    assert fields == {"edge": b"edge-1", "channels": b'["arm","cam"]'}
    assert fs.decode_wants(fields) == ("edge-1", frozenset({"arm", "cam"}))
    with pytest.raises(fs.EntryError, match="'channels' must be a JSON list"):
        fs.decode_wants({b"edge": b"e", b"channels": b'{"cam": 1}'})
    with pytest.raises(fs.EntryError):
        fs.decode_wants({b"edge": b"e"})


def test_edge_wants_is_the_union_of_the_edges_heard_from_lately():
    wants = fs.EdgeWants(ttl=3.0)
    wants.update("a", frozenset({"cam"}), now=0.0)
    wants.update("b", frozenset({"cam", "depth"}), now=1.0)
    assert wants.channels(2.0) == {"cam", "depth"}
    wants.update("b", frozenset(), now=2.5)            # b's browsers unsubscribed
    assert wants.channels(2.5) == {"cam"}
    assert wants.channels(3.5) == frozenset()          # a said nothing for 3 s: it is gone
    wants.update("a", frozenset({"cam"}), now=4.0)     # ... until it speaks again
    assert wants.channels(4.0) == {"cam"}


def test_resp_commands_are_the_bytes_redis_py_sends_and_a_frame_is_not_copied():
    from redis.connection import PythonRespSerializer

    from bridge.fleet.origin import PACK_CUTOFF, resp_commands, xadd_args

    frame = memoryview(np.arange(100_000, dtype=np.uint8))
    commands = [xadd_args("monbridge:{arm}:ch:temps", {"kind": b"records", "seq": b"12", "data": b"\x00\r\n\xff"}, 600),
                ("SET", "monbridge:{arm}:heartbeat", b'{"status":"online"}', "PX", 3000),
                ("SADD", "monbridge:devices", "arm"), ("PEXPIRE", "monbridge:{arm}:replies:e1", 60_000),
                xadd_args("monbridge:{arm}:ch:cam", {"kind": b"frame", "data": frame}, 30),
                xadd_args("monbridge:{arm}:ch:ümlaut", {"kind": b"records", "data": b""}, 2**40)]
    packed = resp_commands(commands)
    library = PythonRespSerializer(PACK_CUTOFF, lambda v: v if isinstance(v, (bytes, memoryview)) else
                                   (v.encode() if isinstance(v, str) else repr(v).encode()))
    expected = b"".join(bytes(part) for args in commands for part in library.pack(*args))
    assert b"".join(bytes(part) for part in packed) == expected
    assert any(part is frame for part in packed)                     # sent as it is
    assert all(len(part) < 1000 for part in packed if part is not frame)
    assert resp_commands([("PING",)]) == [b"*1\r\n$4\r\nPING\r\n"]
