"""Hostile clients against one real bridge (issue 11).

* ``test_hostile_socketio_clients...``: every client → bridge event (subscribe, unsubscribe,
  consumed, ping, command) and unknown names, fuzzed with hypothesis (seeded): wrong types,
  missing and extra keys, huge strings and numbers, deep nesting, NaN/Infinity, bytes where
  a string or number is expected, several arguments, commands without a usable id; plus every
  packet the bridge cannot decode.
* ``test_a_client_sending_big_messages...``: allowed 16 KiB messages must not stall the others.
* ``test_engineio_junk...``: frames below Socket.IO, half-open and reset connections.
* ``test_a_thousand_idle_connections...``: idle connections must not lock new clients out.

Each test starts ONE device and ONE bridge (by hand, logging to a file) while a normal
python-socketio client subscribed to the device's telemetry must keep getting data (no gap
over MAX_GAP) and must be able to command at the end. Hostile clients are raw websockets
(tests/hostile_support.py, with bench/wire.py's msgpack packets): a test sends exactly the
frames it means to, and every frame the bridge sends must be one the protocol allows (a binary
frame holding one msgpack packet map, or an Engine.IO control packet as text), with answers
that could be JSON (no NaN, no bytes).

Expected answers (docs/protocol.md §3, §4.8, §6; bridge/packets.py): a decodable event with
an ack id gets one acknowledgement of the documented shape with a documented code (never
``internal``: that is a bug, logged with a traceback); an event with more than one payload
argument gets ``bad_request``; a ``command`` gets exactly one ``result`` event with its id
(null when the id is missing or invalid) and, if it asked for one, an empty acknowledgement;
a packet the bridge cannot decode gets an ``error`` event ``{"code": "bad_request", ...}`` and
a namespace DISCONNECT; the log gets at most a rate-limited one-line warning, never a traceback.
"""

from __future__ import annotations

import json
import math
import re
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
import websocket
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from bench import wire
from bridge.packets import MALFORMED as MALFORMED_EVENT
from bridge.packets import MAX_NESTING, RESERVED_EVENTS
from bridge.server import MAX_MESSAGE
from bridge_support import mb, wait_attached  # noqa: F401  (mb: fixture)
from conftest import TIMEOUT, wait_for
from hostile_support import (
    EVENTS,
    LOG_LINE,
    NO_VALUE,
    RawSocketIO,
    check_ack_shape,
    client_ids,
    data_gaps,
    file_text,
    health,
    is_finite_number,
    log_problems,
    packed,
    pid_alive,
    reset,
    text,
    valid_command_id,
)

DEVICE_CHANNELS = ("telemetry", "img", "log")
MAX_RATE = 60.0                           # the bridge's default --rate
ARGS_LIMIT = 4096                         # command args, as compact ASCII JSON (docs/protocol.md §6.1)
# Log bounds. Each message template passes the bridge's rate limit at most once per 10 s
# (bridge/logs.py) and is one line; a hostile client can provoke about a dozen templates. For
# a run of under a minute that is well under 100 lines of at most 1 KB: 24 KB is a generous
# bound that a traceback per packet, or a line per packet, exceeds within seconds.
LOG_BYTES = 24 * 1024
STDERR_BYTES = 2 * 1024                   # with --log, the bridge has nothing to say on stderr
NORMAL_RATE = 30                          # the normal client's subscription (the device streams 100 Hz)
MAX_GAP = 1.0                             # seconds without data the normal client may see


# -- the setup shared by the tests ----------------------------------------------------------

def start(mb, tmp_path, *extra: str):
    """A bridge started by hand with a log file, a device streaming telemetry at 100 Hz, and a
    normal client subscribed to it; returns (bridge, device, normal client, log path)."""
    name = mb.new_name()
    log = tmp_path / "bridge.log"
    bridge = mb.serve(name, "--log", str(log), "--offline-after", "5", *extra)
    dev = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, dev.pid)
    dev.request("stream 100", "streaming")
    normal = mb.client(bridge.url)
    normal.subscribe("telemetry", rate=NORMAL_RATE)
    normal.wait_for(lambda: len(normal.records("telemetry")) >= 3, what="the normal client's first data")
    return bridge, dev, normal, log


def arrivals(client, channel: str = "telemetry") -> list[float]:
    return [t for e, d, t in list(client.events) if e == "data" and d.get("channel") == channel]


def check_served(bridge, normal, since: float, until: float, max_gap: float = MAX_GAP) -> None:
    """The bridge is up, the normal client got data all along and still does, and may command."""
    assert pid_alive(bridge.pid), bridge.proc.describe()
    assert health(bridge.url.port)["ok"] is True
    gap = data_gaps(arrivals(normal), since, until)
    assert gap <= max_gap, f"the normal client got no data for {gap:.2f} s while the hostile clients ran"
    mark = normal.mark()
    normal.wait_for(lambda: len(normal.records("telemetry", mark)) >= 3, what="data after the hostile clients")
    assert normal.sio.connected
    assert normal.command("add", a=2, b=3) == {"ok": True, "result": 5}


def check_bridge_output(bridge, log) -> None:
    """The log file: one-line records, no traceback, bounded; stderr: next to nothing."""
    found = log_problems(file_text(log), LOG_BYTES)
    found += log_problems("".join(bridge.proc.stderr), STDERR_BYTES, what="the bridge's stderr")
    assert not found, "; ".join(found)


# -- what a well-formed event should get ------------------------------------------------------
#
# An oracle per event: the set of outcomes the documentation allows ("ok" or error codes), and,
# where the answer is fully determined, a check of the ok acknowledgement. Where several
# errors apply, any of them may be the one reported (the docs fix the order only for commands).

NOT_A_COMMAND = object()   # Expect.answer_id of events answered by an acknowledgement


@dataclass
class Expect:
    outcomes: set[str]            # "ok" and/or error codes
    check_ok: Any = None          # a callable(answer) for a successful answer
    answer_id: Any = NOT_A_COMMAND  # a command: the id its 'result' event must carry (None: null)

    @property
    def is_command(self) -> bool:
        return self.answer_id is not NOT_A_COMMAND

    @property
    def may_be_queued(self) -> bool:
        """Whether the bridge may have queued it for the device: its answer then comes later,
        and not at all if the client is disconnected first (docs/protocol.md §3)."""
        return "ok" in self.outcomes

    def check(self, ack: Any, what: str) -> None:
        assert ack is not NO_VALUE, f"an acknowledgement without a value for {what}"
        outcome = check_ack_shape(ack)
        outcome = "ok" if outcome is True else outcome
        assert outcome in self.outcomes, f"{what}: got {ack!r}, expected one of {sorted(self.outcomes)}"
        if outcome == "ok" and self.check_ok is not None:
            self.check_ok(ack)

    def check_result(self, result: Any, what: str) -> None:
        """A command's 'result' event: its id, then the answer as for an acknowledgement."""
        assert isinstance(result, dict) and "id" in result, f"{what}: a result without an id: {result!r}"
        got = result["id"]
        assert got == self.answer_id and type(got) is type(self.answer_id), \
            f"{what}: the result carries the id {got!r}, expected {self.answer_id!r}"
        self.check({k: v for k, v in result.items() if k != "id"}, what)


def _plain_json(value: Any) -> bool:
    """What json.dumps(allow_nan=False) accepts: no bytes (nor msgpack timestamps), no NaN or
    Infinity, string keys."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (bytes, bytearray, msgpack.Timestamp)):
        return False
    if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
        return False
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
    for v in items:  # a loop, not all(...): one stack frame per level of a 128-level value
        if not _plain_json(v):
            return False
    return True


def _number_ok(value: Any, low: float, high: float) -> bool:
    return is_finite_number(value) and low <= value <= high


def _int_ok(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _channel_list_codes(channels: Any) -> set[str]:
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        return {"bad_request"}
    if any(c not in DEVICE_CHANNELS for c in channels):
        return {"unknown_channel"}
    return set()


def expect_subscribe(p: dict[str, Any]) -> Expect:
    codes = set()
    if set(p) - {"channels", "rate", "max_points", "window", "in_flight"}:
        codes.add("bad_request")
    codes |= _channel_list_codes(p.get("channels"))
    for key, low, high in (("rate", 0.1, 1000.0), ("max_points", 2, 1_000_000), ("window", 0.01, 86_400.0)):
        if p.get(key) is not None and not _number_ok(p[key], low, high):
            codes.add("bad_request")
    if p.get("in_flight") is not None and not _int_ok(p["in_flight"], 1, 64):
        codes.add("bad_request")
    if codes:
        return Expect(codes)

    def check_ok(ack: dict[str, Any]) -> None:
        assert ack["channels"] == list(dict.fromkeys(p["channels"])), (p, ack)
        assert ack["rate"] == min(p.get("rate") or MAX_RATE, MAX_RATE), (p, ack)
        assert ack["in_flight"] == p.get("in_flight"), (p, ack)
        assert ack["max_points"] == (int(p["max_points"]) if p.get("max_points") else None), (p, ack)
    return Expect({"ok"}, check_ok)


def expect_unsubscribe(p: dict[str, Any]) -> Expect:
    codes = {"bad_request"} if set(p) - {"channels"} else set()
    codes |= _channel_list_codes(p.get("channels"))
    if codes:
        return Expect(codes)
    return Expect({"ok"}, lambda ack: ack["channels"] == list(dict.fromkeys(p["channels"])) or
                  pytest.fail(f"unsubscribe {p!r} answered {ack!r}"))


def expect_consumed(p: dict[str, Any]) -> Expect:
    codes = set()
    if set(p) - {"channel", "seq"}:
        codes.add("bad_request")
    channel = p.get("channel")
    if not isinstance(channel, str):
        codes.add("bad_request")
    elif channel not in DEVICE_CHANNELS:
        codes.add("unknown_channel")
    if not _int_ok(p.get("seq"), 0, 2**63 - 1):
        codes.add("bad_request")
    if codes:
        if channel in DEVICE_CHANNELS:   # and this client may not be subscribed to it
            codes.add("unknown_channel")
        return Expect(codes)
    # whether this client is subscribed to that channel right now depends on the events
    # before it, which this oracle does not follow: either answer is right
    return Expect({"ok", "unknown_channel"}, lambda ack: set(ack) == {"ok"} or pytest.fail(repr(ack)))


def expect_ping(p: dict[str, Any]) -> Expect:
    t = p.get("t")
    if t is not None and not is_finite_number(t):
        return Expect({"bad_request"})

    def check_ok(ack: dict[str, Any]) -> None:
        assert ack["t"] == t and type(ack["t"]) is type(t), f"ping t={t!r} echoed as {ack['t']!r}"
        assert is_finite_number(ack["server_t"]) and abs(ack["server_t"] - time.time()) < 60, ack
    return Expect({"ok"}, check_ok)


# The DEVICE script's commands (tests/bridge_support.py) and what each accepts. 'nap' sleeps
# in the device's one dispatcher thread, so it is only ever sent with arguments the bridge
# refuses before queueing.
CATALOG = {"add": {"a", "b"}, "echo": {"value"}, "set_speed": {"value"}, "record": {"n"}, "history": set(),
           "whoami": set(), "notify": {"text"}, "nap": {"seconds"}, "queue_log": set()}


INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1   # msgpack's integers: a larger one cannot be sent at all


def overflows(data: list[Any]) -> bool:
    """An 'add' whose sum msgpack cannot hold: its result never reaches the client (a bridge
    defect, test_faults_bridge.py::test_a_result_msgpack_cannot_hold...), so the fuzz leaves it out."""
    p = data[1] if len(data) == 2 and data[0] == "command" else None
    if not isinstance(p, dict) or p.get("name") != "add" or not isinstance(p.get("args"), dict):
        return False
    a, b = p["args"].get("a"), p["args"].get("b", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
        return False
    return not INT64_MIN <= a + b <= UINT64_MAX


def expect_command(data: list[Any], role: str) -> Expect:
    """A command's 'result' (docs/protocol.md §3, §6.1)."""
    args = data[1:]
    payload = args[0] if args else None
    command_id = payload.get("id") if isinstance(payload, dict) else None
    answer_id = command_id if valid_command_id(command_id) else None
    if len(args) > 1 or not isinstance(payload, (dict, type(None))) or answer_id is None:
        # checked before the role (docs/protocol.md §6.1, row 0)
        return Expect({"bad_request"}, answer_id=answer_id)
    if role != "operator":
        return Expect({"forbidden"}, answer_id=answer_id)
    p = payload
    name = p.get("name")
    if not isinstance(name, str) or not name:
        return Expect({"bad_request"}, answer_id=answer_id)
    args = p.get("args", {})
    args = {} if args is None else args
    if not isinstance(args, dict) or not _plain_json(args):
        return Expect({"invalid_args"}, answer_id=answer_id)
    if len(json.dumps(args, separators=(",", ":"))) > ARGS_LIMIT:
        return Expect({"too_large"}, answer_id=answer_id)
    if name not in CATALOG:
        return Expect({"unknown_command", "rate_limited"}, answer_id=answer_id)
    if name == "add" and set(args) <= {"a", "b"} and "a" in args and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in args.values()):
        want = args["a"] + args.get("b", 1)
        return Expect({"ok", "rate_limited"}, lambda ack: ack["result"] == want or pytest.fail(f"{p!r} -> {ack!r}"),
                      answer_id)
    if name == "echo" and set(args) <= {"value"}:
        # (a result the bridge cannot send, e.g. nested too deeply, may be 'bad_result')
        want = args.get("value")
        return Expect({"ok", "rate_limited", "too_large", "bad_result"},
                      lambda ack: ack["result"] == want or pytest.fail(f"{p!r} -> {ack!r}"), answer_id)
    # a declared command: the device's answer depends on the arguments' types and ranges
    return Expect({"ok", "invalid_args", "handler_error", "bad_result", "too_large", "rate_limited"},
                  answer_id=answer_id)


def container_depth(value: Any) -> int:
    """Levels of lists and maps in ``value`` ("x": 0, []: 1, [[]]: 2), as bridge/packets.py
    counts them against MAX_NESTING; without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def has_timestamp(value: Any) -> bool:
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, msgpack.Timestamp):
            return True
        if isinstance(v, (list, dict)):
            todo.extend(v.values() if isinstance(v, dict) else v)
    return False


def decodable(data: list[Any]) -> bool:
    """Whether the bridge can decode the event ``data`` (docs/protocol.md §4.8): not a reserved
    name, not nested more than MAX_NESTING levels, no msgpack timestamp (extension type -1)."""
    return not (data[0] in RESERVED_EVENTS or container_depth(data) > MAX_NESTING or has_timestamp(data))


def expect(data: list[Any], role: str) -> Expect:
    """What the decodable event ``data`` ([name, *args]) must be answered with."""
    name, args = data[0], data[1:]
    if name not in EVENTS:
        return Expect({"bad_request"})
    if name == "command":
        return expect_command(data, role)
    if len(args) > 1:
        return Expect({"bad_request"})
    payload = args[0] if args else None
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return Expect({"bad_request"})
    return {"subscribe": expect_subscribe, "unsubscribe": expect_unsubscribe, "consumed": expect_consumed,
            "ping": expect_ping}[name](payload)


# -- strategies ---------------------------------------------------------------------------------

def nested(depth: int, leaf: Any = 0, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


# msgpack integers are 64 bits (a larger one cannot even be encoded), so the 64-bit limits are
# the huge integers now; floats go on to 1e308 and NaN/Infinity travel as they are
HUGE_NUMBERS = [0, -0.0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, INT64_MIN, UINT64_MAX, 1e308, -1e308,
                5e-324, 1.5, float("nan"), float("inf"), float("-inf")]
numbers = st.one_of(
    st.integers(min_value=INT64_MIN, max_value=UINT64_MAX),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HUGE_NUMBERS),
)


def _huge(n: int, c: str) -> str:
    """About ``n`` bytes of msgpack string made of the character ``c``."""
    return c * (n // len(c.encode()))


huge_strings = st.builds(_huge, st.integers(2_000, MAX_MESSAGE - 2_000), st.sampled_from(["x", "é", "\u2603", "\"", "\\", "\x00"]))
# deep, but decodable: the bridge refuses a packet nested over MAX_NESTING levels (DEEP checks that edge)
deep = st.builds(nested, st.integers(1, MAX_NESTING - 8), st.sampled_from([0, "x", None, b"\x00"]),
                 st.sampled_from(["list", "dict"]))
# ("id" is left to the commands, which draw it on purpose: see command_ids)
keys = st.one_of(st.sampled_from(["channels", "rate", "max_points", "window", "in_flight", "channel", "seq", "t",
                                  "name", "args", "token", "value", "a", "b", "n", "text", "__proto__", ""]),
                 st.text(max_size=12)).filter(lambda k: k != "id")
leaves = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=24), st.binary(max_size=24))
json_values = st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(keys, kids, max_size=4)), max_leaves=10)
# a value for a field: mostly small and hostile; now and then huge or deeply nested
field_values = st.one_of(json_values, json_values, json_values, numbers, huge_strings, deep)
channel_names = st.one_of(st.sampled_from([*DEVICE_CHANNELS, "nope", "", "Telemetry", "telemetry "]),
                          st.text(max_size=10), huge_strings)
channel_lists = st.one_of(st.lists(channel_names, max_size=4), st.lists(st.sampled_from(DEVICE_CHANNELS), max_size=5),
                          field_values)


class _Omit:
    """A command id that is left out of the payload when it is sent."""

    def __repr__(self) -> str:
        return "<no id>"


OMIT = _Omit()
# Command ids a client may get wrong (docs/protocol.md §3: an integer with |n| < 2**53 or a
# string of 1-64 characters). Valid ids are the fuzz client's own, one per command
# (Fuzzer.with_id), so that every result can be matched to its command.
BAD_IDS = [OMIT, None, True, False, 1.5, float("nan"), 2**53, -(2**53), UINT64_MAX, "", "x" * 65, b"1", [1], {"id": 1}]
command_ids = st.one_of(st.sampled_from(BAD_IDS), field_values.filter(lambda v: not valid_command_id(v)))


def _payload(required: dict[str, st.SearchStrategy], optional: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    base = st.fixed_dictionaries(required, optional=optional)
    extra = st.dictionaries(keys, json_values, max_size=2)
    return st.one_of(base, base, base, st.builds(lambda a, b: {**b, **a}, base, extra))


def _num_or(values: list[Any]) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(values), numbers, field_values)


subscribe_payloads = _payload({"channels": channel_lists}, {
    "rate": _num_or([0.1, 1, 30, 60, 1000, 1001, 0]), "max_points": _num_or([2, 5000, 1_000_000, 1]),
    "window": _num_or([0.01, 10, 86_400]), "in_flight": _num_or([1, 2, 64, 65, 2.0, True])})
unsubscribe_payloads = _payload({"channels": channel_lists}, {})
consumed_payloads = _payload({}, {"channel": st.one_of(channel_names, field_values),
                                  "seq": _num_or([0, 1, 812, 2**63 - 1, 2**63, -1])})
ping_payloads = _payload({}, {"t": st.one_of(numbers, field_values)})


@st.composite
def command_payloads(draw) -> dict[str, Any]:
    name = draw(st.one_of(st.sampled_from(sorted(CATALOG)), st.sampled_from(sorted(CATALOG)),
                          st.sampled_from(["", "nope", "__init__", "_dispatcher", "ADD"]), field_values))
    params = CATALOG.get(name, set()) if isinstance(name, str) else set()
    if name == "nap":  # refused by the bridge's own check, never queued
        args = draw(st.sampled_from([{"seconds": "1"}, {"seconds": None}, {"seconds": [1]}, {"seconds": True},
                                     {"seconds": float("nan")}, {"secs": 1}, {"seconds": 1, "x": 2}, [1], "x"]))
    else:
        per_param = {p: st.one_of(field_values, st.integers(INT64_MIN, UINT64_MAX), st.text(max_size=50))
                     for p in sorted(params)}
        args = draw(st.one_of(st.fixed_dictionaries({}, optional=per_param),
                              st.builds(lambda a, b: {**a, **b}, st.fixed_dictionaries({}, optional=per_param),
                                        st.dictionaries(keys, json_values, max_size=2)),
                              field_values, st.none()))
    payload = {"name": name}
    if draw(st.integers(0, 9)):
        payload["args"] = args
    if not draw(st.integers(0, 5)):
        payload.update(draw(st.dictionaries(keys.filter(lambda k: k not in ("name", "args")), json_values, max_size=2)))
    if not draw(st.integers(0, 7)):
        payload["id"] = draw(command_ids)   # otherwise a fresh valid one is added when it is sent
    return payload


PAYLOADS = {"subscribe": subscribe_payloads, "unsubscribe": unsubscribe_payloads, "consumed": consumed_payloads,
            "ping": ping_payloads, "command": command_payloads()}
unknown_names = st.one_of(st.sampled_from(["Subscribe", "message", "hello", "data", "state", "error", "event",
                                           "views", "newListener", "ping ", "", "\x00", "subscribe\x00"]),
                          st.text(max_size=30), huge_strings).filter(lambda n: n not in EVENTS and n not in SPECIAL)
SPECIAL = tuple(sorted(RESERVED_EVENTS))

NEAR_LIMIT = MAX_MESSAGE - 300   # a string that makes a message just under the limit
FRAME_LIMIT = MAX_MESSAGE - 512   # bytes of one generated message; the bridge closes connections over MAX_MESSAGE
BATCH_BYTES = 150_000   # bytes of one generated batch (see batches())


def wire_form(data: list[Any]) -> list[Any]:
    """``data`` as it is sent: a payload's ``OMIT`` values left out."""
    # any argument, not only the first: an event may carry a command's payload as its second
    return [data[0], *({k: v for k, v in a.items() if v is not OMIT} if isinstance(a, dict) else a for a in data[1:])]


def _size(data: list[Any]) -> int:
    """Bytes of the event's frame (plus a command's id)."""
    return sum(len(payload) for _, payload in wire.encode_packet(wire.EVENT, wire_form(data), 0)) + 16


def _fits(data: list[Any]) -> bool:
    return _size(data) <= FRAME_LIMIT


@st.composite
def events(draw) -> list[Any]:
    """[name, *args] of a decodable event: a known name most of the time; under 16 KiB."""
    data = draw(_events())
    assume(_fits(data) and decodable(data) and not overflows(data))
    return data


@st.composite
def _events(draw) -> list[Any]:
    name = draw(st.one_of(st.sampled_from(EVENTS), st.sampled_from(EVENTS), st.sampled_from(EVENTS), unknown_names))
    strategy = PAYLOADS.get(name, field_values)
    shape = draw(st.sampled_from(["one"] * 6 + ["none", "null", "other", "several"]))
    if shape == "none":
        return [name]
    if shape == "null":
        return [name, None]
    if shape == "other":
        return [name, draw(field_values)]
    if shape == "several":
        return [name, draw(strategy), *draw(st.lists(st.one_of(strategy, field_values), min_size=1, max_size=3))]
    return [name, draw(strategy)]


# -- packets the bridge cannot decode, by hand -----------------------------------------------

P = msgpack.packb


def _event(data: Any, **more: Any) -> wire.Frame:
    """An EVENT packet map with ``data`` as given (and more keys, or keys replaced)."""
    return packed({"type": wire.EVENT, "nsp": "/", "data": data, **more})


def _raw_event(data: bytes, ack_id: int | None = None) -> wire.Frame:
    """An EVENT packet map whose 'data' is the msgpack bytes ``data`` as given: what
    msgpack.packb will not write (5,000 levels deep, cut short, invalid UTF-8)."""
    head = {"type": wire.EVENT, "nsp": "/", **({} if ack_id is None else {"id": ack_id})}
    body = b"".join(P(k) + P(v) for k, v in head.items())
    return wire.BINARY, bytes([0x80 | (len(head) + 1)]) + body + P("data") + data


def _array(*items: bytes) -> bytes:
    return bytes([0x90 | len(items)]) + b"".join(items)


def _deep(levels: int) -> bytes:
    return b"\x91" * levels + b"\xc0"   # [[[...[nil]...]]]


GOOD = P({"type": wire.EVENT, "nsp": "/", "data": ["ping", {}]})
# the log line a forged 'type' would write, if the bridge logged it raw
FORGED = "\n2026-01-01 00:00:00,000 monbridge CRITICAL forged\nTraceback (most recent call last):\n  x"

# Packets the bridge cannot decode (docs/protocol.md §4.8): each must get an 'error' event
# and a disconnect, on a fresh connection and at the end of a batch. Protocol 2's own
# failures (attachment counts, placeholders, text where an attachment was due) have no
# msgpack form (protocol 3 and later); what stands in for them is marked "(protocol 2: ...)".
UNDECODABLE: dict[str, list[wire.Frame]] = {
    # a text message: Socket.IO's default JSON parser, the wire of protocol 2
    "a JSON text event": [text('42["ping",{}]')],
    "a JSON text event with an ack id": [text('421["ping",{"t":1}]')],
    "a JSON text CONNECT": [text('40{"token":"x"}')],
    # (protocol 2: text where the 2nd of 2 attachments is due; text where the attachment is due)
    "a JSON text binary event, then its attachment": [text('451-["ping",{"_placeholder":true,"num":0}]'),
                                                     (wire.BINARY, b"x")],
    "a JSON text event after a msgpack one": [(wire.BINARY, GOOD), text('42["ping",{}]')],
    "an empty text message": [text("4")],
    # bytes that are not one msgpack value
    "an empty binary message": [(wire.BINARY, b"")],
    "a byte msgpack never uses (0xc1)": [(wire.BINARY, b"\xc1")],   # (protocol 2: single quotes)
    "junk bytes": [(wire.BINARY, b"\x00\x01junk")],   # (protocol 2: binary with no packet announced)
    "a JSON event in a binary frame": [(wire.BINARY, b'2["ping",{}]')],
    "a JSON binary event in a binary frame": [(wire.BINARY, b'51-["ping",{"_placeholder":true,"num":0}]')],
    "a packet cut short": [(wire.BINARY, GOOD[:-3])],             # (protocol 2: truncated JSON)
    "trailing garbage": [(wire.BINARY, GOOD + b"garbage")],
    "two packets in one frame": [(wire.BINARY, GOOD + GOOD)],
    "a 64-bit integer cut short": [_raw_event(_array(P("ping"), b"\x81" + P("t") + b"\xcf\x00\x01"), 1)],
    # (protocol 2: an integer of 5000 digits; msgpack has none over 64 bits)
    "a string longer than the frame": [_raw_event(_array(P("ping"), b"\xdb\x7f\xff\xff\xff" + b"x" * 10))],
    # not a map
    "a list for a packet": [packed([wire.EVENT, "/", ["ping", {}]])],
    "a string for a packet": [packed("ping")],
    "nil for a packet": [packed(None)],
    "an integer for a packet": [packed(wire.EVENT)],
    # a packet type a client may not send
    "no packet type": [packed({"nsp": "/", "data": ["ping"]})],
    "packet type 7": [packed({"type": 7, "nsp": "/"})],
    "packet type 9": [packed({"type": 9, "nsp": "/", "data": ["ping"]})],
    "packet type -1": [packed({"type": -1, "nsp": "/", "data": ["ping"]})],
    "a packet type of true": [_event(["ping"], type=True)],
    "a packet type as a string": [_event(["ping"], type="2")],
    "a forged log line as the packet type": [_event(["ping"], type=FORGED)],
    "CONNECT_ERROR from a client": [packed({"type": wire.CONNECT_ERROR, "nsp": "/", "data": {"message": "x"}})],
    # (protocol 2: a binary event announcing no attachment; an attachment count of 13 digits)
    "a binary event (type 5)": [packed({"type": 5, "nsp": "/", "data": ["ping", {}], "attachments": 1})],
    "a binary ack (type 6)": [packed({"type": 6, "nsp": "/", "data": [{}], "id": 1})],   # (... a binary ack announcing none)
    # the namespace
    "no namespace": [packed({"type": wire.EVENT, "data": ["ping", {}]})],
    "a namespace that is a number": [_event(["ping", {}], nsp=1)],
    "a namespace in bytes": [_event(["ping", {}], nsp=b"/")],
    # the ack id (protocol 2: an id of 200 digits)
    "an id that is a string": [_event(["ping", {}], id="7")],
    "a negative id": [_event(["ping", {}], id=-1)],
    "an id that is a float": [_event(["ping", {}], id=1.0)],
    "an id of true": [_event(["ping", {}], id=True)],
    # extension types, invalid UTF-8, keys that are not strings
    "an extension type": [_event(["ping", msgpack.ExtType(1, b"x")], id=1)],
    # (protocol 2: a placeholder numbered by a string)
    "invalid UTF-8 in a string": [_raw_event(_array(P("ping"), b"\x81" + P("t") + b"\xa2\xff\xfe"), 1)],
    "invalid UTF-8 in the event's name": [_raw_event(_array(b"\xa4pi\xffg"), 1)],
    "an integer map key": [_event(["ping", {1: 2}], id=1)],   # (protocol 2: a placeholder beyond the attachments)
    "a nil map key": [_event(["subscribe", {None: ["telemetry"]}], id=1)],
    # nesting
    "5000-level nesting": [_raw_event(_deep(5000))],
    "5000-level nesting in a payload, with an ack id": [_raw_event(_array(P("ping"), _deep(5000)), 1)],
    "2500-level objects in a command": [_raw_event(_array(P("command"), b"\x83" + P("id") + P(1) + P("name") + P("echo") +
                                                          P("args") + b"\x81" + P("value") + b"\x81\xa1a" * 2500 + b"\x00"), 1)],
    f"{MAX_NESTING + 1}-level nesting, one over the bridge's limit": [_event(["ping", nested(MAX_NESTING)], id=1)],
    # an event that is not a list starting with its name
    "an object for an event": [_event({"t": 1})],
    "a string for an event": [_event("ping")],
    "an event without data": [packed({"type": wire.EVENT, "nsp": "/", "id": 1})],
    "an empty event": [_event([])],
    "an event named by a number": [_event([1, 2])],
    "an event named by null": [_event([None, {}], id=1)],
    "an event named by a list": [_event([["ping"]])],
    "an event named by NaN": [_event([float("nan")])],
    "an event named in bytes": [_event([b"ping", {}], id=1)],
    # reserved names
    "reserved 'connect'": [_event(["connect"])],
    "reserved 'disconnect' with an ack id": [_event(["disconnect", {}], id=1)],
    "reserved 'connect_error'": [_event(["connect_error", {}])],
    "reserved '*'": [_event(["*", "ping", {}], id=1)],
    "the bridge's own event for undecodable packets": [_event([MALFORMED_EVENT, "a reason of my own"])],
    "a packet type as a float": [_event(["ping", {"t": 1}], type=float(wire.EVENT), id=999995)],
    "a msgpack timestamp (extension type -1)": [_event(["ping", {"t": msgpack.Timestamp(1, 0)}], id=999995)],
}
# Decodable, but for a namespace this client never joined, an ack nobody asked for, or a
# second CONNECT: python-socketio drops them (the last with a CONNECT_ERROR). The client must
# stay connected and be answered afterwards. (Ids far above the ones the fuzz client uses.)
IGNORED: dict[str, list[wire.Frame]] = {
    "an event for another namespace": [_event(["ping", {}], nsp="/nope", id=999999)],
    "a command for another namespace": [_event(["command", {"id": 999998, "name": "add", "args": {"a": 1}}], nsp="/nope")],
    "a disconnect from another namespace": [packed({"type": wire.DISCONNECT, "nsp": "/nope"})],
    "an ack nobody asked for": [packed({"type": wire.ACK, "nsp": "/", "data": [{}], "id": 999999})],
    "an ack without an id": [packed({"type": wire.ACK, "nsp": "/", "data": [{}]})],
    "an ack whose data is not a list": [packed({"type": wire.ACK, "nsp": "/", "data": "x", "id": 999997})],
    "a second CONNECT": [packed({"type": wire.CONNECT, "nsp": "/", "data": {}})],
}


# The shapes of the fuzz client's own command ids, one after the other: all valid (|n| < 2**53,
# or 1-64 characters), all different on one connection
ID_STYLES = (lambda n: n, lambda n: -n, lambda n: 2**53 - n, str, lambda n: ("c" * 64 + str(n))[-64:],
             lambda n: f"é{n}")


@dataclass
class Fuzzer:
    """The hostile side of test 1: an operator and a viewer over raw websockets, reconnected
    whenever the bridge disconnects them; counts what was sent and how it ended."""

    port: int
    token: str
    clients: dict[str, RawSocketIO] = field(default_factory=dict)
    retired: list[RawSocketIO] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    disconnects: int = 0

    def client(self, role: str) -> RawSocketIO:
        c = self.clients.get(role)
        if c is None or c.disconnected or c.closed:
            if c is not None:
                self.retire(c)
            c = RawSocketIO(self.port, token=self.token if role == "operator" else None)
            hello = c.wait(lambda: [d for e, d in c.events if e == "hello"], what="hello")[0]
            assert hello["role"] == role, hello
            self.clients[role] = c
        return c

    def retire(self, c: RawSocketIO) -> None:
        check_frames(c)
        c.close()
        self.retired.append(c)

    def close(self) -> None:
        for c in self.clients.values():
            self.retire(c)
        self.clients.clear()

    @staticmethod
    def with_id(c: RawSocketIO, data: list[Any]) -> list[Any]:
        """``data`` as sent: a command's payload without an "id" gets a fresh one of this
        client's (in one of ID_STYLES); ``OMIT`` values are left out."""
        if data[0] == "command" and len(data) > 1 and isinstance(data[1], dict) and "id" not in data[1]:
            n = c.next_command_id()
            data = ["command", {**data[1], "id": ID_STYLES[n % len(ID_STYLES)](n)}, *data[2:]]
        return wire_form(data)


def check_frames(c: RawSocketIO) -> None:
    """Every frame this client received is one protocol 3 allows (hostile_support.frame_problem;
    answers that could be JSON), an event's acknowledgement has the documented shape, a
    command's is empty, and every 'result' has an id and the documented shape."""
    assert not c.bad_frames, f"frames protocol 3 does not allow: {c.bad_frames[:3]}"
    for ident, ack in list(c.acks.items()):
        if c.sent.get(ident) == "command":
            assert ack is NO_VALUE, f"a command was acknowledged with {ack!r}: its answer is the 'result' event"
        else:
            assert ack is not NO_VALUE, f"an acknowledgement without a value for {c.sent.get(ident)!r}"
            check_ack_shape(ack)
    for result in list(c.results):
        assert isinstance(result, dict) and "id" in result, f"a result without an id: {result!r}"
        check_ack_shape({k: v for k, v in result.items() if k != "id"})


ANSWER_WAIT = 5.0   # seconds for the bridge to answer or disconnect (it takes milliseconds)
RESULT_WAIT = ANSWER_WAIT + 5.0   # a queued command's result: at worst 'timeout' after --command-timeout (5 s)


def check_undecodable(c: RawSocketIO, what: str, since: int = 0) -> None:
    """An 'error' event (after ``events[since]``), then a disconnect from "/"."""
    try:
        c.wait_disconnected(ANSWER_WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{what}: no disconnect ({exc})") from None
    assert not c.closed or c.disconnected, f"{what}: the websocket was closed instead of a Socket.IO disconnect"
    errors = c.errors(since)
    assert len(errors) == 1, f"{what}: expected one 'error' event, got {errors}"
    assert errors[0]["code"] == "bad_request" and isinstance(errors[0]["message"], str), (what, errors)


def variants(data: list[Any]) -> list[list[Any]]:
    """``data``, and for a known event the same arguments under the other known names."""
    if data[0] not in EVENTS:
        return [data]
    return [data] + [[name, *data[1:]] for name in EVENTS if name != data[0]]


class Results:
    """Matches a client's 'result' events from index ``start`` on to its commands: by id, and
    those with the id null (a missing or invalid one; answered at once, so in order) first in,
    first out."""

    def __init__(self, c: RawSocketIO, start: int) -> None:
        self.c, self.start, self.used = c, start, set()

    def take(self, command_id: Any, may_be_lost: bool, what: str) -> Any:
        """The result for ``command_id``; None if it ``may_be_lost`` (queued for the device
        when the bridge disconnected the client: docs/protocol.md §3) and did not come."""
        c = self.c

        def find() -> Any:
            for i in range(self.start, len(c.results)):
                r = c.results[i]
                if i not in self.used and isinstance(r, dict) and "id" in r and r["id"] == command_id \
                        and type(r["id"]) is type(command_id):
                    self.used.add(i)
                    return (r,)
            if may_be_lost and (c.disconnected or c.closed):
                return (None,)   # everything sent before the DISCONNECT has arrived
            return None
        return c.wait(find, RESULT_WAIT, f"the result of {what}")[0]

    def unclaimed(self) -> list[Any]:
        return [r for i, r in enumerate(list(self.c.results)) if i >= self.start and i not in self.used]


def run_batch(fz: Fuzzer, role: str, batch: list[list[Any]], ack_flags: list[bool], ending: Any) -> None:
    """Send ``batch`` and ``ending`` back to back on the ``role`` client, then check every
    answer. ``ending``: ("none", None); ("event", [name, *args]), sent with an ack id, which
    must be answered if ``decodable`` and otherwise be an undecodable packet (reserved names,
    too deep); ("undecodable" | "ignored", a key of UNDECODABLE or IGNORED)."""
    c = fz.client(role)
    mark = len(c.events)
    results = Results(c, len(c.results))
    kind, value = ending
    todo = list(zip(batch, ack_flags)) + ([(value, True)] if kind == "event" else [])
    pending = []
    for data, want_ack in todo:
        data = fz.with_id(c, data)
        pending.append((data, c.emit(data, ack=want_ack)))
        fz.sent += 1
    if kind in ("undecodable", "ignored"):
        c.send_frames((UNDECODABLE if kind == "undecodable" else IGNORED)[value])
        fz.sent += 1
    outcome = decodable(value) if kind == "event" else None
    disconnecting = kind == "undecodable" or (kind == "event" and not outcome)
    if kind == "event" and not outcome:
        pending.pop()   # undecodable: answered by the error and the disconnect below, not an ack
    for data, n in pending:
        what = _short(data)
        e = expect(data, role)
        if n is not None:
            ack = c.wait_ack(n, timeout=RESULT_WAIT if e.is_command else ANSWER_WAIT)
            if e.is_command:   # docs/protocol.md §3: a callback sent with a command gets no arguments
                assert ack is NO_VALUE, f"{what}: a command was acknowledged with {ack!r}"
            else:
                e.check(ack, what)
                fz.acked += 1
        if e.is_command:
            result = results.take(e.answer_id, disconnecting and e.may_be_queued, what)
            if result is not None:
                e.check_result(result, what)
                fz.acked += 1
    if disconnecting:
        check_undecodable(c, _short(value) if kind == "event" else value, mark)
        fz.disconnects += 1
    elif kind == "ignored":
        # still connected, and still answered
        expect(["ping", {"t": 1}], role).check(c.call(["ping", {"t": 1}], ANSWER_WAIT), "a ping after an ignored packet")
        assert not c.disconnected
    else:
        assert not [d for e, d in c.events[mark:] if e == "error"], c.events[mark:]
    if c.disconnected and not c.closed:
        # the same websocket may join again; once a ping is answered there, everything the
        # bridge sent on the old session has arrived too (one connection, in order)
        c.rejoin({"token": fz.token} if role == "operator" else None)
        expect(["ping", {"t": 2}], role).check(c.call(["ping", {"t": 2}], ANSWER_WAIT), "a ping after rejoining")
    extra = results.unclaimed()
    assert not extra, f"'result' events no command of this batch asked for: {[_short(r) for r in extra[:3]]}"
    check_frames(c)


def _short(data: Any, limit: int = 400) -> str:
    """A readable account of a generated value: long strings, bytes and deep nesting abridged."""
    text = _brief(data, 0)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _brief(value: Any, depth: int) -> str:
    if depth > 6:
        return "…"
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 40 else f"{json.dumps(value[:1])}*{len(value)}"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**20:
        return f"<int of {len(str(abs(value)))} digits>"
    if isinstance(value, list):
        return "[" + ", ".join(_brief(v, depth + 1) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_brief(k, depth + 1)}: {_brief(v, depth + 1)}" for k, v in list(value.items())[:6]) + \
            (", …" if len(value) > 6 else "") + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_brief(v, depth + 1) for v in value) + ")"
    return repr(value)


@st.composite
def batches(draw):
    """(role, events, which of them ask for an ack, how the batch ends)."""
    role = draw(st.sampled_from(["operator"] * 4 + ["viewer"]))
    drawn = draw(st.lists(events(), min_size=1, max_size=5))
    asks = [draw(st.integers(0, 9)) > 0 for _ in drawn]
    # each small payload also goes out under the other four event names: generating costs
    # far more than sending, and every handler then sees every kind of payload
    batch, acks = [], []
    for data, ask in zip(drawn, asks):
        more = variants(data) if _size(data) <= 20_000 else [data]
        batch += more
        acks += [ask] * len(more)
    # a big message costs the bridge ~1 ms per KB (test_a_client_sending_big_messages...),
    # so that a batch never stalls the normal client's stream for long, it stays under 150 kB
    assume(sum(_size(data) for data in batch) <= BATCH_BYTES)
    assume(not any(overflows(data) for data in batch))
    pick = draw(st.integers(0, 19))
    if pick == 0:
        ending = ("undecodable", draw(st.sampled_from(sorted(UNDECODABLE))))
    elif pick == 1:   # a reserved name: undecodable
        special = [draw(st.sampled_from(SPECIAL)), *draw(st.lists(field_values, max_size=2))]
        assume(_fits(special))
        ending = ("event", special)
    elif pick == 2:
        ending = ("ignored", draw(st.sampled_from(sorted(IGNORED))))
    else:
        ending = ("none", None)
    return role, batch, acks, ending


EXAMPLES = 300   # batches of 1-5 events, most sent under 5 names: ~2 800 messages, plus the explicit cases

EXPLICIT = [
    ["ping", {"t": float("nan")}], ["ping", {"t": float("inf")}], ["ping", {"t": -float("inf")}],
    ["ping", {"t": 1}, {"t": 2}], ["ping", b"\x00" * 10], ["ping", {"t": b"1"}], ["ping", "x" * NEAR_LIMIT],
    ["ping", nested(MAX_NESTING - 1)], ["ping", {"t": UINT64_MAX}], ["ping", {"t": INT64_MIN}], ["ping", {"t": 2**63}],
    ["ping"], ["ping", None], ["ping", {b"t": 1}], ["ping", {"t": 5e-324}],
    ["subscribe", {"channels": ["telemetry"], "rate": float("nan")}],
    ["subscribe", {"channels": ["x" * NEAR_LIMIT]}], ["subscribe", {"channels": [b"telemetry"]}],
    ["subscribe", {b"channels": ["telemetry"]}],
    ["subscribe", {"channels": ["telemetry"], "in_flight": 2.0}], ["subscribe", {"channels": ["telemetry"]}, 1],
    ["unsubscribe", {"channels": ["telemetry"], "extra": 1}], ["consumed", {"channel": "telemetry", "seq": -1}],
    ["consumed", {"channel": "telemetry", "seq": UINT64_MAX}], ["consumed", {"channel": b"telemetry", "seq": 1}],
    ["consumed", {"channel": nested(MAX_NESTING - 2), "seq": 1}],
    ["command", {"name": "add", "args": {"a": 1}}, {"name": "add", "args": {"a": 2}}],
    ["command", {"name": "add", "args": {"a": 1}}, 7],
    ["command", {"name": "echo", "args": {"value": float("nan")}}],
    ["command", {"name": "echo", "args": {"value": b"\x00\x01"}}],
    ["command", {"name": "echo", "args": {b"value": 1}}],
    ["command", {"name": "echo", "args": {"value": "x" * NEAR_LIMIT}}],
    ["command", {"name": "echo", "args": {"value": nested(MAX_NESTING - 4)}}],
    ["command", {"name": "echo", "args": {"value": UINT64_MAX}}],
    ["command", {"name": "add", "args": {"a": UINT64_MAX, "b": INT64_MIN}}],
    ["command", {"name": "add", "args": {"a": "1"}}], ["command", {"name": "add", "args": {"a": 1, "c": 2}}],
    ["command", {"name": "set_speed", "args": {"value": float("inf")}}],
    ["command", {"name": "set_speed", "args": {"value": 11}}], ["command", {"name": "record", "args": [1]}],
    ["command", {"name": "nope" * (NEAR_LIMIT // 4)}], ["command", {"name": b"add"}], ["command", {"name": ""}],
    ["command", {"name": "whoami", "args": {"client": {"role": "operator"}}}],
    ["command", {"name": "notify", "args": {"text": "é" * 1000}}], ["command", "add"], ["command"],
    ["command", None], ["command", {"name": "add", "args": {"a": 1}}, None],
    *[["command", {"name": "add", "args": {"a": 1}, "id": bad}] for bad in BAD_IDS],
    ["nope" * (NEAR_LIMIT // 4), {}], ["x" * NEAR_LIMIT], ["message", "hi"], ["", {}], ["result", {"id": 1}],
]

# At the edge of the bridge's nesting limit (MAX_NESTING levels in the packet's data, counted
# from the event's own list), and far past it: answered up to the limit, undecodable beyond
# (msgpack's own reader would go on to 1024 levels; UNDECODABLE has 2500 and 5000)
DEEP = [["ping", nested(MAX_NESTING - 1)], ["ping", nested(MAX_NESTING)],
        ["command", {"name": "echo", "args": {"value": nested(MAX_NESTING - 3, b"x")}}],
        ["command", {"name": "echo", "args": {"value": nested(MAX_NESTING - 2, b"x")}}],
        ["subscribe", {"channels": ["telemetry"], "x": nested(MAX_NESTING - 2, b"x", "dict")}],
        ["subscribe", {"channels": ["telemetry"], "x": nested(MAX_NESTING - 1, b"x", "dict")}],
        ["ping", nested(450, b"x")], ["consumed", {"channel": nested(450), "seq": 1}],
        ["command", {"name": "echo", "args": {"value": nested(450)}}]]
# msgpack's timestamp is extension type -1, which msgpack decodes without asking for an
# extension hook: undecodable like every extension type (docs/protocol.md §4.8)
TIMESTAMPS = [["ping", {"t": msgpack.Timestamp(1, 0)}],
              ["command", {"name": "echo", "args": {"value": msgpack.Timestamp(1, 0)}}],
              ["subscribe", {"channels": ["telemetry"], "rate": msgpack.Timestamp(1, 0)}]]


class Problems:
    """Failures collected instead of raised, so that one run reports every kind of wrong
    answer (two examples of each) instead of the first; the test fails at the end if there
    is any. An undecodable packet or reserved name that was answered wrongly once is not
    sent again (``skip``): each try costs a wait for an answer that does not come."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[str]] = {}
        self.skip: set[Any] = set()
        self.lost = 0.0   # seconds spent in cases that went wrong (mostly waiting for answers)

    def run(self, fz: Fuzzer, what: str, fn, *args, key: Any = None) -> bool:
        started = time.monotonic()
        try:
            fn(*args)
            return True
        except Exception as exc:  # noqa: BLE001 (a broken connection is a finding too)
            self.lost += time.monotonic() - started
            text = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
            text = text.split("\n")[0]
            examples = self.kinds.setdefault(re.sub(r"\d+", "N", text)[:90], [])
            if len(examples) < 2:
                examples.append(f"{what}: {text[:600]}")
            if key is not None:
                self.skip.add(key)
            for c in list(fz.clients.values()):   # go on from fresh connections
                c.close()
                fz.retired.append(c)
            fz.clients.clear()
            return False

    def report(self) -> str:
        return "\n".join(f"- {example}" for examples in self.kinds.values() for example in examples)


def _undecodable_alone(fz: Fuzzer, what: str, frames: list[wire.Frame]) -> None:
    c = RawSocketIO(fz.port, token=fz.token)
    fz.retired.append(c)
    try:
        c.send_frames(frames)
        fz.sent += 1
        check_undecodable(c, what)
        fz.disconnects += 1
        assert not c.acks and not c.results, f"{what}: an undecodable packet was answered: {c.acks} {c.results}"
        check_frames(c)
    finally:
        c.close()


def check_table_drains(fz: Fuzzer, keep: str) -> None:
    """Every hostile client has closed its websocket: the clients table is the normal client's."""
    try:
        wait_for(lambda: client_ids(fz.port, fz.token) == [keep], TIMEOUT, "the hostile clients to leave the table")
    except AssertionError:
        left = set(client_ids(fz.port, fz.token)) - {keep}
        mine = {c.sid: c for c in fz.retired}
        raise AssertionError(f"{len(left)} closed clients still in the clients table after {TIMEOUT} s: " + "; ".join(
            f"{sid} (closed websocket: {sid in mine}, its last packets: {mine[sid].last[-3:] if sid in mine else '?'})"
            for sid in sorted(left))) from None


def check_log_injection(log) -> None:
    """The forged 'type' reached the log (it was the first undecodable packet), quoted on
    the one line of the bridge's warning."""
    lines = wait_for(lambda: [line for line in file_text(log).splitlines() if "forged" in line], TIMEOUT,
                     "the bridge's warning about the forged packet type")
    assert len(lines) == 1 and LOG_LINE.match(lines[0]) and " WARNING " in lines[0], lines


FUZZ_BUDGET = 60.0   # seconds; the generated phase takes ~20 s, more only while answers time out


@pytest.mark.timeout(120)
def test_hostile_socketio_clients_get_documented_answers_and_never_hurt_the_others(mb, tmp_path):
    bridge, dev, normal, log = start(mb, tmp_path, "--command-rate", "1000")
    fz = Fuzzer(bridge.url.port, bridge.url.token)
    problems = Problems()
    started = time.monotonic()

    # a client must not be able to write what it likes into the log: first thing, before the
    # rate limit holds back lines like the one it would provoke. The bridge quotes a bad
    # packet type in its warning; the bridge's own event for undecodable packets is reserved
    forged = "a forged log line as the packet type"
    problems.run(fz, forged, _undecodable_alone, fz, forged, UNDECODABLE[forged])
    problems.run(fz, "the forged line in the log", check_log_injection, log)
    injected = [MALFORMED_EVENT, "\nTraceback (most recent call last):\n  " + "x" * NEAR_LIMIT]
    problems.run(fz, "a log injection", run_batch, fz, "operator", [], [], ("event", injected))
    # every undecodable packet, each on a fresh connection: an error event and a disconnect
    for what, frames in UNDECODABLE.items():
        problems.run(fz, what, _undecodable_alone, fz, what, frames, key=("undecodable", what))
    for what in IGNORED:
        problems.run(fz, what, run_batch, fz, "operator", [], [], ("ignored", what), key=("ignored", what))
    # hand-picked events, the reserved names, then generated batches
    for data in EXPLICIT:
        assert decodable(data), data
        problems.run(fz, _short(data), run_batch, fz, "operator", [data], [True], ("none", None))
    for data in (["command", {"name": "add", "args": {"a": 1}}], ["command", {"name": "add"}, 1],
                 ["command", {"name": "add", "args": {"a": 1}, "id": None}], ["command", "add"]):
        problems.run(fz, "viewer " + _short(data), run_batch, fz, "viewer", [data], [True], ("none", None))
    for name in SPECIAL:
        problems.run(fz, name, run_batch, fz, "operator", [], [], ("event", [name, {}]), key=("event", name))
    assert {decodable(data) for data in DEEP} == {True, False}
    assert not any(decodable(data) for data in TIMESTAMPS)
    for data in DEEP + TIMESTAMPS:   # answered, or (too deep, a timestamp) an error and a disconnect
        problems.run(fz, _short(data), run_batch, fz, "operator", [], [], ("event", data))

    fuzz_started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(batches())
    def fuzz(example) -> None:
        if time.monotonic() - fuzz_started > FUZZ_BUDGET:
            return
        role, batch, acks, ending = example
        key = (ending[0], ending[1] if ending[0] != "event" else ending[1][0])
        if key in problems.skip:
            ending = ("none", None)
        problems.run(fz, f"{role} {_short(batch)} then {_short(ending)}", run_batch, fz, role, batch, acks, ending,
                     key=key if ending[0] != "none" else None)

    fuzz()
    fz.close()
    ended = time.monotonic()
    # the other checks go through the same collection, so that one run reports everything
    problems.run(fz, "the normal client", check_served, bridge, normal, started, ended)
    problems.run(fz, "the clients table", check_table_drains, fz, normal.sid)
    problems.run(fz, "the bridge's output", check_bridge_output, bridge, log)
    print(f"fuzz: {fz.sent} messages, {fz.acked} acks, {fz.disconnects} disconnects, {len(fz.retired)} connections; "
          f"{fuzz_started - started:.1f} s explicit, {ended - fuzz_started:.1f} s generated; {problems.lost:.1f} s lost to wrong answers")
    assert not problems.kinds, f"{len(problems.kinds)} kinds of wrong behaviour:\n{problems.report()}"
    assert ended - fuzz_started < FUZZ_BUDGET, f"the generated phase ran out of time ({ended - fuzz_started:.0f} s)"
    assert fz.sent >= 1500 and fz.acked >= 1000 and fz.disconnects >= len(UNDECODABLE), \
        (fz.sent, fz.acked, fz.disconnects)


BIG = MAX_MESSAGE - 1_000   # bytes: a message just under the bridge's limit
BURST = 10


@pytest.mark.timeout(90)
def test_a_client_sending_big_messages_does_not_stall_the_others(mb, tmp_path):
    """Messages up to MAX_MESSAGE (16 KiB) are allowed, to anyone (a viewer needs no token on loopback).
    Ten of them in a row from one client must not hold up everyone else's data for more
    than MAX_GAP: the bridge serves all its clients from one event loop."""
    bridge, dev, normal, log = start(mb, tmp_path)
    viewer = RawSocketIO(bridge.url.port)
    started = time.monotonic()
    ids = [viewer.emit(["ping", {"t": i, "pad": "x" * BIG}]) for i in range(BURST)]
    for i, n in enumerate(ids):
        ack = viewer.wait_ack(n, timeout=60)
        assert ack["ok"] is True and ack["t"] == i, ack
    ended = time.monotonic()
    viewer.close()
    print(f"{BURST} messages of {BIG} bytes answered in {ended - started:.2f} s")
    check_served(bridge, normal, started, ended)
    check_bridge_output(bridge, log)


# -- raw Engine.IO junk, half-open and reset connections --------------------------------------

# Frames that are not Engine.IO packets, or are ones a client must not send, or are too big.
ENGINE_JUNK: dict[str, list[wire.Frame]] = {
    "an empty text frame": [text("")],
    "an empty binary frame": [(wire.BINARY, b"")],
    "packet type 9": [text("9")],
    "a Socket.IO packet of garbage": [text("4xyz")],
    "not a packet type": [text("xyz")],
    "a bad base64 packet": [text("b!!!")],
    "a base64 packet of junk": [text("bAAECAwQ=")],
    "binary junk": [(wire.BINARY, b"\xff" * 10), (wire.BINARY, b"\x00")],
    "a pong nobody asked for": [text("3")],
    "a ping from the client": [text("2probe")],
    "an upgrade on a websocket": [text("5")],
    "a noop": [text("6")],
    "an open packet": [text('0{"sid":"x"}')],
    "a close packet": [text("1")],
    "a NUL": [text("\x00")],
    "non-ASCII": [text("\u00e9\u00e9")],
    "invalid UTF-8 in a text frame": [text(b"4\xff\xfe")],
    # (protocol 2: a binary event announcing 2 attachments, then text)
    "a JSON event, a msgpack packet cut short, then a JSON CONNECT": [text('42["ping"]'), (wire.BINARY, GOOD[:-2]),
                                                                      text("40")],
    "a frame just over the 16 KiB limit": [text("4" + "x" * (MAX_MESSAGE + 10))],
    "a msgpack packet just over the 16 KiB limit": [_event(["ping", {"pad": "x" * (MAX_MESSAGE + 10)}], id=1)],
    "a 10 MB text frame": [text("4" + "x" * (10 * 1024 * 1024))],
    "a 10 MB binary frame": [(wire.BINARY, b"\x00" * (10 * 1024 * 1024))],
}


def _junk_on(port: int, token: str | None, frames: list[wire.Frame]) -> RawSocketIO:
    """Open a websocket (joining "/" if ``token``) and send the frames; the caller closes it."""
    c = RawSocketIO(port, token=token, connect=token is not None)
    try:
        c.send_frames(frames)
    except (OSError, websocket.WebSocketException):
        pass  # the bridge may close the connection before the frame is out (10 MB)
    return c


HALF_OPEN = 100
RESETS = 200


@pytest.mark.timeout(120)
def test_engineio_junk_half_open_and_reset_connections_leave_the_bridge_serving(mb, tmp_path):
    bridge, dev, normal, log = start(mb, tmp_path)
    port, token = bridge.url.port, bridge.url.token
    started = time.monotonic()
    half_open: list[socket.socket] = []
    try:
        # junk on websockets that never joined "/", and on ones that did (those enter the table)
        junked = []
        for what, frames in ENGINE_JUNK.items():
            junked += [_junk_on(port, None, frames), _junk_on(port, token, frames)]
            assert pid_alive(bridge.pid), f"the bridge died on {what}: {bridge.proc.describe()}"
        for c in junked:
            assert not c.bad_frames, c.bad_frames[:3]
            c.close()
        # half-open: a partial HTTP request (or a partial websocket frame), then silence
        upgrade = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
        for i in range(HALF_OPEN):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            half_open.append(s)
            if i % 4 == 0:
                s.sendall(upgrade[: 20 + i % 40])
            elif i % 4 == 1:
                s.sendall(b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
            elif i % 4 == 2:
                s.sendall(upgrade + b"\x81")  # a websocket frame header cut after its first byte
            # i % 4 == 3: nothing at all
        # 200 connections reset: bare, mid-upgrade, and after joining "/"
        for i in range(RESETS):
            if i % 4 == 3:
                RawSocketIO(port, token=token).reset()
                continue
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            if i % 4 == 1:
                s.sendall(upgrade)
            elif i % 4 == 2:
                s.sendall(upgrade)
                s.recv(1024)              # the 101 and the Engine.IO open packet
            reset(s)
        # a request line http.server cannot parse: answered 400, its note goes to the log as
        # one line, not to stderr raw (the half-open requests above, cut and timed out, give
        # the same note, but only when the timeout falls within the test)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(b"GET / HT\r\n\r\n")
            assert b"400" in s.recv(4096)
        junk_done = time.monotonic()
        assert junk_done - started < 60, f"the junk took {junk_done - started:.0f} s"

        check_served(bridge, normal, started, junk_done)
        # everyone but the normal client leaves the clients table within the Engine.IO ping
        # timeout: a ping every 10 s, 10 s to answer it, and the server's sweep of its sockets
        # once per 10 s: 30 s at worst, counted from the end of the junk
        wait_for(lambda: client_ids(port, token) == [normal.sid], timeout=32, interval=0.5,
                 what="the clients table to drain back to the normal client")
        assert health(port)["clients"] == 1
        check_served(bridge, normal, junk_done, time.monotonic())
    finally:
        for s in half_open:
            s.close()
    check_bridge_output(bridge, log)


IDLE = 1100   # eventlet.wsgi.server's default max_size is 1024 connections


@pytest.mark.timeout(90)
def test_a_thousand_idle_connections_do_not_lock_out_new_clients(mb, tmp_path):
    """eventlet's WSGI server serves at most 1024 connections at once and, without a socket
    timeout, waits forever for a request that never comes: idle connections must not lock
    everyone else out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE + 300:   # this process and the bridge it starts each hold every connection
        if hard != resource.RLIM_INFINITY and hard < IDLE + 300:
            pytest.skip(f"needs {IDLE + 300} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (IDLE + 300, hard))
    bridge, dev, normal, log = start(mb, tmp_path)
    port = bridge.url.port
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            idle.append(s)
        started = time.monotonic()
        answered = wait_for(lambda: health(port, timeout=2), timeout=15, interval=0.2, ignore=(OSError,),
                            what=f"/api/health while {IDLE} connections sit idle")
        assert answered["ok"], answered
        assert normal.command("add", a=2, b=3) == {"ok": True, "result": 5}
        late = RawSocketIO(port, token=bridge.url.token)   # a new client gets in too
        late.close()
        print(f"answered after {time.monotonic() - started:.1f} s")
    finally:
        for s in idle:
            s.close()
    assert pid_alive(bridge.pid)
