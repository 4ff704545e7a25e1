"""The Socket.IO protocol between the bridge and its clients: parsing and building messages.

Sans-I/O: no sockets, no Flask; numpy and the standard library only. The wire format is
documented in docs/protocol.md; this module is the code that reads and writes it.

Every client → bridge event but ``command`` is answered by an acknowledgement; a command
is answered by a ``result`` event carrying its id:
    {"ok": true, ...}   or   {"ok": false, "error": {"code": "...", "message": "..."}}

Error codes in acknowledgements and results: bad_request, unknown_device, unknown_channel, unknown_command,
invalid_args, too_large, forbidden, rate_limited, queue_full, offline, timeout,
handler_error, bad_result, internal. HTTP adds unauthorized.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decimate import min_max_rows

PROTOCOL_VERSION = 5
MAX_COMMAND_ID = 64  # characters of a string command id
MAX_IN_FLIGHT = 64  # subscribe's 'in_flight' limit (see docs/protocol.md, flow control)


class ProtocolError(Exception):
    """A client's request was rejected; becomes an error acknowledgement."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def ack(self) -> dict[str, Any]:
        return error(self.code, self.message)


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for echoing a client's value in an error."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(value: int | float) -> bool:
    """False for NaN and the infinities; an int of any size is finite (math.isfinite would
    raise OverflowError on one too large for a float)."""
    return isinstance(value, int) or math.isfinite(value)


MAX_DEPTH = 64  # nesting levels a value sent to clients may have (python-socketio recurses per level)


MSGPACK_INT_RANGE = (-2**63, 2**64 - 1)  # the integers msgpack can carry


def unsendable(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (JSON from the device) cannot go to clients, or None: it nests lists and
    dicts more than ``limit`` levels, or holds an integer msgpack cannot carry. Checked
    without recursion."""
    low, high = MSGPACK_INT_RANGE
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return f"nests more than {limit} levels deep"
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, int) and not isinstance(item, bool) and not low <= item <= high:
            return "holds an integer beyond 64 bits"
    return None


def check_one_payload(event: str, count: int) -> None:
    """Every event takes one payload object (or none); more arguments are a 'bad_request'."""
    if count > 1:
        raise ProtocolError("bad_request", f"{event}: send one payload object, not {count} arguments")


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


@dataclass(frozen=True)
class Subscribe:
    channels: tuple[str, ...]
    rate: float
    max_points: int | None
    window: float | None   # seconds the chart keeps; with max_points sets a per-update budget
    in_flight: int | None = None  # most data messages not yet confirmed with 'consumed'; None: no limit

    def points_per_update(self) -> int | None:
        """The most rows one data message for this subscription may carry."""
        if self.max_points is None:
            return None
        if self.window is None:
            return self.max_points
        return max(2, int(self.max_points / (self.window * self.rate)))


def _object(payload: Any, event: str) -> dict[str, Any]:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise ProtocolError("bad_request", f"{event}: payload must be an object, got {type(payload).__name__}")
    return payload


def _channel_list(payload: dict[str, Any], event: str, known: set[str]) -> tuple[str, ...]:
    channels = payload.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise ProtocolError("bad_request", f"{event}: 'channels' must be a non-empty list of channel names")
    unknown = [c for c in channels if c not in known]
    if unknown:
        raise ProtocolError(
            "unknown_channel",
            f"{event}: unknown channel {shown(unknown[0])} (channels: {', '.join(sorted(known)) or 'none'})",
        )
    return tuple(dict.fromkeys(channels))


def _number(payload: dict[str, Any], key: str, event: str, low: float, high: float) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or not low <= value <= high:
        raise ProtocolError("bad_request", f"{event}: {key!r} must be a number from {low:g} to {high:g}, got {shown(value)}")
    return value


def parse_subscribe(payload: Any, known: set[str], max_rate: float) -> Subscribe:
    p = _object(payload, "subscribe")
    extra = set(p) - {"channels", "rate", "max_points", "window", "in_flight"}
    if extra:
        raise ProtocolError("bad_request", f"subscribe: unknown key {shown(sorted(extra)[0])}")
    channels = _channel_list(p, "subscribe", known)
    asked = _number(p, "rate", "subscribe", 0.1, 1000.0) or max_rate
    max_points = _number(p, "max_points", "subscribe", 2, 1_000_000)
    window = _number(p, "window", "subscribe", 0.01, 86_400.0)
    in_flight = _integer(p, "in_flight", "subscribe", 1, MAX_IN_FLIGHT)
    return Subscribe(channels, effective_rate(asked, max_rate), int(max_points) if max_points else None, window,
                     in_flight)


def parse_consumed(payload: Any, subscribed: set[str]) -> tuple[str, int]:
    """``consumed`` {"channel": name, "seq": n}: the client is done with messages up to seq n."""
    p = _object(payload, "consumed")
    extra = set(p) - {"channel", "seq"}
    if extra:
        raise ProtocolError("bad_request", f"consumed: unknown key {shown(sorted(extra)[0])}")
    channel = p.get("channel")
    if not isinstance(channel, str):
        raise ProtocolError("bad_request", "consumed: 'channel' must be a channel name")
    if channel not in subscribed:
        raise ProtocolError("unknown_channel", f"consumed: not subscribed to {shown(channel)}")
    seq = _integer(p, "seq", "consumed", 0, 2**63 - 1)
    if seq is None:
        raise ProtocolError("bad_request", "consumed: 'seq' (the last sequence number of the message) is required")
    return channel, seq


def _integer(payload: dict[str, Any], key: str, event: str, low: int, high: int) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError("bad_request", f"{event}: {key!r} must be an integer from {low} to {high}, got {shown(value)}")
    return value


def effective_rate(rate: float, max_rate: float) -> float:
    """The rate a subscription gets: what it asked for, capped by the server's maximum."""
    return min(rate, max_rate)


def parse_unsubscribe(payload: Any, known: set[str]) -> tuple[str, ...]:
    p = _object(payload, "unsubscribe")
    extra = set(p) - {"channels"}
    if extra:
        raise ProtocolError("bad_request", f"unsubscribe: unknown key {shown(sorted(extra)[0])}")
    return _channel_list(p, "unsubscribe", known)


def parse_command(payload: Any, max_bytes: int) -> tuple[str, dict[str, Any]]:
    p = _object(payload, "command")
    name = p.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("bad_request", "command: 'name' must be the command's name")
    args = p.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError("invalid_args", f"{name}: 'args' must be an object, got {type(args).__name__}")
    try:
        size = len(json.dumps(args, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ProtocolError("invalid_args", f"{name}: args are not plain JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("invalid_args", f"{name}: args are nested too deeply") from None
    if size > max_bytes:
        raise ProtocolError("too_large", f"{name}: args are {size} bytes, the limit is {max_bytes}")
    return name, args


def valid_command_id(value: Any) -> bool:
    """A command's ``id``: an integer (|n| < 2**53, so JavaScript holds it exactly) or a
    string of 1 to MAX_COMMAND_ID characters."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, str) and 0 < len(value) <= MAX_COMMAND_ID


def parse_device(event: str, payload: Any, names: list[str], multi: bool) -> str | None:
    """The device a payload names (its ``device`` key), checked against the bridge's ``names``;
    None for "the only device", which a payload may leave out unless the bridge serves several
    (``multi``). Raises ProtocolError."""
    listed = ", ".join(names) or "none yet"
    device = payload.get("device") if isinstance(payload, dict) else None
    if device is None:
        if multi:
            raise ProtocolError("bad_request", f"{event}: name the device ('device': one of {listed})")
        return None
    if not isinstance(device, str):
        raise ProtocolError("bad_request", f"{event}: 'device' must be a device name, got {shown(device)}")
    if device not in names:
        raise ProtocolError("unknown_device", f"{event}: unknown device {shown(device)} (devices: {listed})")
    return device


def parse_command_id(payload: Any) -> int | str:
    """The ``id`` a command's ``result`` event echoes; checked before anything else."""
    p = _object(payload, "command")
    command_id = p.get("id")
    if not valid_command_id(command_id):
        got = "nothing" if command_id is None else shown(command_id)
        raise ProtocolError("bad_request", f"command: 'id' must be an integer or a string of 1 to {MAX_COMMAND_ID}"
                                           f" characters, echoed in the 'result' event; got {got}")
    return command_id


def parse_ping(payload: Any) -> Any:
    p = _object(payload, "ping")
    t = p.get("t")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not _finite(t)):
        shown = repr(t) if isinstance(t, float) else type(t).__name__
        raise ProtocolError("bad_request", f"ping: 't' must be a finite number, got {shown}")
    return t


# -- bridge → client ---------------------------------------------------------------------

def _js_dtype(dt: np.dtype) -> str:
    """The numpy type as little-endian text, e.g. 'f8', 'u2' — the JS decoder's names."""
    return f"{dt.kind}{dt.itemsize}" if dt.kind != "b" else "b1"


_FEW_ROWS = 16  # encode_records cuts the columns of at most this many records from bytes


def encode_records(channel: str, records: np.ndarray, first: int, missed: int,
                   budget: int | None = None) -> dict[str, Any]:
    """A ``data`` message for a records batch: the columns, one after another, in ``data``.

    One binary value (msgpack bin) per message, whatever the number of fields. Column i
    starts at ``fields[i].offset``,
    a multiple of 8, so a browser reads it with ``new Float64Array(data, offset, count)``
    without copying. ``seq`` spans the records the batch covers (before decimation);
    ``count`` is the number of rows sent. With a ``budget``, rows are reduced by min/max
    per bucket.
    """
    n = len(records)
    decimated = False
    if budget is not None and n > budget:
        records = records[min_max_rows(records, budget)]
        decimated = True
    count = len(records)
    plan = _columns_plan(records.dtype)
    fields, parts, size = [], [], 0
    few = plan.raw and count <= _FEW_ROWS
    itemsize = records.dtype.itemsize
    if few:                      # every field little-endian already, a few records: a column
        rows = records.tobytes()  # is a slice of each record's bytes
        end = count * itemsize
    elif plan.raw:               # ... many: the same slices, cut by numpy
        rows = np.ascontiguousarray(records).view(np.uint8).reshape(count, itemsize)
    for name, js, shape, at, width, le in plan.columns:
        if size % 8:
            parts.append(bytes(-size % 8))
            size += -size % 8
        if not count:
            column = b""
        elif few:
            column = b"".join([rows[i:i + width] for i in range(at, end, itemsize)])
        elif plan.raw:
            column = rows[:, at:at + width].tobytes()
        else:
            column = np.ascontiguousarray(records[name], dtype=le).tobytes()
        fields.append({"name": name, "dtype": js, "shape": list(shape), "offset": size, "nbytes": len(column)})
        parts.append(column)
        size += len(column)
    t = float(records["t"][-1]) if n and plan.scalar_t else None
    return {
        "channel": channel,
        "kind": "records",
        "seq": [first, first + n - 1],
        "missed": missed,
        "t": t,
        "count": count,
        "decimated": decimated,
        "fields": fields,
        "data": b"".join(parts),
    }


@dataclass(frozen=True)
class _ColumnsPlan:
    columns: tuple[tuple[str, str, tuple[int, ...], int, int, np.dtype], ...]  # name, JS dtype, shape,
    # offset and bytes in a record, little-endian dtype
    raw: bool       # every field little-endian (or single bytes): no conversion
    scalar_t: bool  # a scalar field "t": the message's ``t`` is the newest record's


@functools.lru_cache(maxsize=256)
def _columns_plan(dtype: np.dtype) -> _ColumnsPlan:
    """What encode_records needs of a records dtype, worked out once per dtype."""
    columns = []
    for name in dtype.names:
        sub, at = dtype.fields[name][:2]
        columns.append((name, _js_dtype(sub.base), tuple(sub.shape), at, sub.itemsize, _le(sub.base)))
    raw = all(dtype[name].base == le for name, _, _, _, _, le in columns)
    return _ColumnsPlan(tuple(columns), raw, "t" in dtype.names and not dtype["t"].shape)


def encode_frame(channel: str, seq: int, t: float, array: np.ndarray, missed: int) -> dict[str, Any]:
    return {
        "channel": channel,
        "kind": "frame",
        "seq": [seq, seq],
        "missed": missed,
        "t": t,
        "dtype": _js_dtype(array.dtype),
        "shape": list(array.shape),
        "data": np.ascontiguousarray(array).astype(_le(array.dtype), copy=False).tobytes(),
    }


def _le(dt: np.dtype) -> np.dtype:
    return dt.newbyteorder("<") if dt.itemsize > 1 else dt
