"""What the bridges of a fleet keep in Redis, and how an edge counts what it missed. Sans-I/O.

An *origin* (the bridge beside the device) XADDs one entry per channel per relay tick; an
*edge* (a bridge on any machine) XREADs them with explicit stream IDs and serves its browsers
with the same relay. This module builds and reads the values those calls carry and does the
edge's gap arithmetic; it never talks to Redis. It imports the standard library, numpy, the
bridge's own message encoders (``bridge.protocol``) and decoders (``bridge.client_messages``)
and ``device_agent.attach``'s plain data classes — never ``redis``, flask, socketio or
eventlet, and nothing of the bridge's server side (server, core, relay) — so it is tested on
plain dicts and bytes (tests/test_fleet_streams.py). docs/scaling.md, "What goes into Redis",
is the same layout for people.

Keys, for device ``D`` and edge ``E`` (names are ``[A-Za-z0-9_-]{1,48}``, so they never hold
a brace or a colon). The braces are literal: ``{D}`` is a Redis Cluster hash tag, so every
key of one device lives in one slot and one XREAD may name all of its streams::

    monbridge:{D}:ch:C         stream  channel C: an entry per relay tick that had something new
    monbridge:{D}:manifest     stream  the channel list and command catalog: an entry per change
    monbridge:{D}:state        stream  the whole state: an entry per change
    monbridge:{D}:heartbeat    string  the origin's view of the device, with a TTL (PX)
    monbridge:{D}:commands     stream  commands from every edge, in the order they reached Redis
    monbridge:{D}:replies:E    stream  the answers to edge E's commands (expires when E is gone)
    monbridge:{D}:wants        stream  the channels each edge's browsers subscribe to: an entry
                                       per change and every WANTS_EVERY s (frames go only there)
    monbridge:devices          set     the names of the devices origins publish

A channel entry (every value a Redis string; numbers in ASCII decimal, so ``redis-cli XRANGE``
is readable)::

    field  value
    kind   b"records" | b"frame" | b"events"
    run    the device process the entry comes from (opaque; a new run = sequence numbers restart)
    seq    the first sequence number the entry covers: a record's or event's ring number
           (from 0), or the frame number (from 1)
    n      how many sequence numbers it covers: records, the rows; events, the ring records
           read (an event the relay would not send still counts); frames, 1
    t      the device's publish time of the newest item (repr of a float), b"" if none
    meta   JSON. records: {"fields": [...]} as in the relay's message; frame: {"dtype",
           "shape"}; events: {}
    data   records: the message's ``data`` bytes, columns as encode_records lays them out;
           frame: the frame's bytes as encode_frame sends them; events: JSON, a list of
           {"seq", "t", "message"} plus "to" (a client id) for an event meant for one client

So an entry is a relay message with ``missed`` 0 and the channel name left to the key:
``message(...)`` rebuilds exactly the dict ``encode_records`` / ``encode_frame`` returned at
the origin, and an edge whose subscriber is in step forwards it without re-encoding. The gap
arithmetic needs only ``run``, ``seq`` and ``n``: an edge that expected sequence number s
and reads an entry starting at f > s missed exactly f - s, whether the entries between were
trimmed (MAXLEN), lost with a Redis restart, or never published (the origin was down or
behind its ring).

Errors: ``EntryError`` (a ValueError) names the field and the value it could not read.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

import numpy as np

from device_agent.attach import Event
from device_agent.layout import check_name

from ..client_messages import ProtocolError, decode_frame, decode_records
from ..protocol import encode_frame, encode_records

PREFIX = "monbridge"
DEVICES_KEY = f"{PREFIX}:devices"
KINDS = ("records", "frame", "events")
FIRST_ID = "0-0"            # XREAD from here: every entry of the stream

HEARTBEAT_PERIOD = 1.0      # seconds between the origin's SET of the heartbeat key
HEARTBEAT_TTL_MS = 3000     # the key's PX: three periods without a refresh and it is gone (offline)
REPLIES_TTL_MS = 60_000     # an edge's replies stream expires this long after the last answer to it
COMMANDS_MAXLEN = 1024      # commands kept (approximately); an origin reads them within a tick
REPLIES_MAXLEN = 1024
MANIFEST_MAXLEN = 16        # control streams: the newest entry is what counts
STATE_MAXLEN = 64
MAX_RUN = 64                # characters of a run id
LAYOUT = 2                  # this module's Redis layout, in the heartbeat (2: frames go out on edges' wants)
WANTS_EVERY = 1.0           # seconds between an edge's wants entries while its browsers subscribe to any
WANTS_TTL = 3.0             # an origin forgets an edge's wants this long after its last entry
WANTS_MAXLEN = 256


_DIGITS = re.compile(rb"[0-9]{1,20}")


class EntryError(ValueError):
    """A stream entry (or a value read from Redis) this module cannot read."""


# -- keys ---------------------------------------------------------------------------------

def device_prefix(device: str) -> str:
    """``monbridge:{D}``: every key of device ``D`` starts with it (one Redis Cluster slot).
    Names are checked as the device checks them (a ValueError names the bad one), so a key
    never holds a brace or a colon that would split it differently."""
    return f"{PREFIX}:{{{check_name('device', device)}}}"


def shown_url(url: str) -> str:
    """A Redis URL as logs and the console show it: without the user and password."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


@functools.lru_cache(maxsize=4096)
def channel_key(device: str, channel: str) -> str:
    return f"{device_prefix(device)}:ch:{check_name('channel', channel)}"


def manifest_key(device: str) -> str:
    return f"{device_prefix(device)}:manifest"


def state_key(device: str) -> str:
    return f"{device_prefix(device)}:state"


def heartbeat_key(device: str) -> str:
    return f"{device_prefix(device)}:heartbeat"


def commands_key(device: str) -> str:
    return f"{device_prefix(device)}:commands"


def replies_key(device: str, edge: str) -> str:
    """Edge ids follow the rule of device names (e.g. ``hostname-pid``, cut to 48 characters)."""
    return f"{device_prefix(device)}:replies:{check_name('edge', edge)}"


def wants_key(device: str) -> str:
    return f"{device_prefix(device)}:wants"


# -- reading what redis-py returns --------------------------------------------------------

def _get(fields: Mapping[Any, Any], name: str) -> bytes:
    """The value of field ``name``; redis-py gives byte keys (str keys with decode_responses)."""
    value = fields.get(name.encode())
    if value is None:
        value = fields.get(name)
    if value is None:
        raise EntryError(f"stream entry has no {name!r} field (fields: {sorted(text(k) for k in fields)})")
    return value.encode() if isinstance(value, str) else bytes(value) if isinstance(value, memoryview) else value


def text(value: Any) -> str:
    """A value redis-py returned (bytes, or str with decode_responses) as text."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _int(fields: Mapping[Any, Any], name: str, low: int = 0) -> int:
    raw = _get(fields, name)
    if not _DIGITS.fullmatch(raw) or int(raw) < low:
        raise EntryError(f"stream entry: {name!r} must be an integer of at least {low}, got {raw[:40]!r}")
    return int(raw)


def _float_or_none(fields: Mapping[Any, Any], name: str) -> float | None:
    raw = _get(fields, name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise EntryError(f"stream entry: {name!r} must be a number or empty, got {raw[:40]!r}") from None


def _json(fields: Mapping[Any, Any], name: str) -> Any:
    raw = _get(fields, name)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise EntryError(f"stream entry: {name!r} is not JSON ({exc}): {raw[:40]!r}") from None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _number(value: float | None) -> bytes:
    return b"" if value is None else repr(float(value)).encode()


def _run(run: str) -> bytes:
    if not isinstance(run, str) or not 0 < len(run) <= MAX_RUN or not run.isascii():
        raise ValueError(f"'run' must be an ASCII string of 1 to {MAX_RUN} characters, got {run!r}")
    return run.encode()


# -- stream IDs ---------------------------------------------------------------------------

StreamId = tuple[int, int]


def parse_id(value: bytes | str) -> StreamId:
    """``b"1718000000000-3"`` → (1718000000000, 3): Redis orders IDs by these two numbers."""
    shown = text(value)
    ms, sep, seq = shown.partition("-")
    if not (ms.isdigit() and (not sep or seq.isdigit())):
        raise EntryError(f"not a stream ID: {shown[:40]!r} (expected MS-SEQ, e.g. '1718000000000-0')")
    return int(ms), int(seq or 0)


def format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


# -- channel entries ----------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One channel entry, decoded (see the module docstring for its fields)."""

    kind: str
    run: str
    first: int             # the first sequence number covered
    count: int             # sequence numbers covered
    t: float | None
    meta: dict[str, Any]   # shared between entries with the same ``meta`` bytes: read-only
    data: bytes

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def next_seq(self) -> int:
        """The sequence number after this entry's: where the next entry should start."""
        return self.first + self.count


def entry_for_records(run: str, records: np.ndarray, first: int) -> dict[str, bytes]:
    """The fields to XADD for a batch of records (structured array, oldest first) whose first
    record has sequence number ``first``: what ``encode_records`` would send, undecimated."""
    if not len(records):
        raise ValueError("'records' must hold at least one record (publish nothing when nothing is new)")
    if first < 0:
        raise ValueError(f"'first' must be a sequence number (>= 0), got {first}")
    msg = encode_records("", records, first, 0)
    meta = _RECORDS_META.get((records.dtype, len(records)))   # the same for a dtype and a row count
    if meta is None:
        if len(_RECORDS_META) >= 256:
            _RECORDS_META.clear()
        meta = _RECORDS_META[(records.dtype, len(records))] = _dumps({"fields": msg["fields"]})
    return {"kind": b"records", "run": _run(run), "seq": str(first).encode(), "n": str(len(records)).encode(),
            "t": _number(msg["t"]), "meta": meta, "data": msg["data"]}


_RECORDS_META: dict[tuple[np.dtype, int], bytes] = {}



def entry_for_frame(run: str, seq: int, t: float, array: np.ndarray) -> dict[str, bytes]:
    """The fields to XADD for frame number ``seq`` (from 1): what ``encode_frame`` would send."""
    if seq < 1:
        raise ValueError(f"'seq' must be a frame number (>= 1), got {seq}")
    msg = encode_frame("", seq, t, array, 0)
    return {"kind": b"frame", "run": _run(run), "seq": str(seq).encode(), "n": b"1", "t": _number(t),
            "meta": _dumps({"dtype": msg["dtype"], "shape": msg["shape"]}), "data": msg["data"]}


def entry_for_events(run: str, events: list[Event], first: int, next_cursor: int) -> dict[str, bytes]:
    """The fields to XADD for the events read from ring records ``first`` .. ``next_cursor - 1``
    (``EventsReader.read``: ``first`` is the cursor plus what the ring overwrote). Publish it
    even when ``events`` is empty (every record was for one client, or not JSON): the next
    entry must not look like a gap."""
    count = next_cursor - first
    if first < 0 or count < 1:
        raise ValueError(f"events entry must cover at least one ring record, got {first} .. {next_cursor - 1}")
    outside = [e.seq for e in events if not first <= e.seq < next_cursor]
    if outside:
        raise ValueError(f"event {outside[0]} is outside the records read, {first} .. {next_cursor - 1}")
    items = [{"seq": e.seq, "t": e.t, "message": e.message} | ({"to": e.to} if e.to is not None else {})
             for e in events]
    return {"kind": b"events", "run": _run(run), "seq": str(first).encode(), "n": str(count).encode(),
            "t": _number(events[-1].t if events else None), "meta": b"{}", "data": _dumps(items)}


def decode_entry(fields: Mapping[Any, Any]) -> Entry:
    """An entry as XREAD / XRANGE return it (``{b"kind": b"records", ...}``); raises EntryError."""
    kind = text(_get(fields, "kind"))
    if kind not in KINDS:
        raise EntryError(f"stream entry: 'kind' must be one of {', '.join(KINDS)}, got {kind[:40]!r}")
    run = text(_get(fields, "run"))
    first = _int(fields, "seq", 1 if kind == "frame" else 0)
    count = _int(fields, "n", 1)
    if kind == "frame" and count != 1:
        raise EntryError(f"stream entry: a frame entry covers one frame, got 'n' {count}")
    return Entry(kind, run, first, count, _float_or_none(fields, "t"), _meta(_get(fields, "meta")),
                 _get(fields, "data"))


@functools.lru_cache(maxsize=1024)
def _meta(raw: bytes) -> dict[str, Any]:
    """``meta`` as a dict, parsed once per distinct value: a channel's entries repeat a few
    values (one per row count), and parsing a records channel's ``fields`` list is most of an
    edge's decoding cost. The dict is shared: read it, never change it."""
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise EntryError(f"stream entry: 'meta' is not JSON ({exc}): {raw[:40]!r}") from None
    if not isinstance(meta, dict):
        raise EntryError(f"stream entry: 'meta' must be a JSON object, got {type(meta).__name__}")
    return meta


def message(channel: str, entry: Entry, missed: int = 0) -> dict[str, Any]:
    """The relay's ``data`` message for a records or frame entry — the very dict
    ``encode_records`` / ``encode_frame`` returned at the origin, with ``missed`` set. Events
    go per client (an event may be for one of them): see ``events_of``."""
    if entry.kind == "records":
        return {"channel": channel, "kind": "records", "seq": [entry.first, entry.last], "missed": missed,
                "t": entry.t, "count": entry.count, "decimated": False, "fields": entry.meta.get("fields", []),
                "data": entry.data}
    if entry.kind == "frame":
        return {"channel": channel, "kind": "frame", "seq": [entry.first, entry.first], "missed": missed,
                "t": entry.t, "dtype": entry.meta.get("dtype"), "shape": entry.meta.get("shape"), "data": entry.data}
    raise ValueError(f"an events entry has no single message; use events_of (kind {entry.kind!r})")


def records_of(entry: Entry, dtype: np.dtype | None = None) -> np.ndarray:
    """A records entry's rows as a structured array (the published ``dtype`` if given), for an
    edge that batches or decimates them again with ``encode_records``."""
    if entry.kind != "records":
        raise ValueError(f"records_of needs a records entry, got {entry.kind!r}")
    try:
        return decode_records(message("", entry), dtype).data
    except (ProtocolError, ValueError, TypeError, KeyError) as exc:  # a column that does not fit
        raise EntryError(f"records entry {entry.first}: {exc}") from None


def frame_of(entry: Entry) -> np.ndarray:
    """A frame entry's array (read-only, a view of ``entry.data``)."""
    if entry.kind != "frame":
        raise ValueError(f"frame_of needs a frame entry, got {entry.kind!r}")
    try:
        return decode_frame(message("", entry)).data
    except (ProtocolError, ValueError, TypeError) as exc:
        raise EntryError(f"frame entry {entry.first}: {exc}") from None


def events_of(entry: Entry) -> list[Event]:
    """An events entry's events, as ``EventsReader.read`` returns them at the origin."""
    if entry.kind != "events":
        raise ValueError(f"events_of needs an events entry, got {entry.kind!r}")
    try:
        items = json.loads(entry.data)
        if not isinstance(items, list):
            raise TypeError(f"a JSON {type(items).__name__}")
        return [Event(int(i["seq"]), float(i["t"]), i["message"], i.get("to")) for i in items]
    except (ValueError, TypeError, KeyError) as exc:
        raise EntryError(f"events entry {entry.first}: 'data' is not a list of events ({exc!r})") from None


def entry_bytes(fields: Mapping[Any, Any]) -> int:
    """Bytes of an entry's field names and values: what sizes a stream (``maxlen``)."""
    return sum(len(k) + len(v) for k, v in fields.items())


# -- retention ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Retention:
    """How much of each channel stream Redis keeps. Records and events are kept for
    ``seconds`` (an edge that was away that long catches up without loss; a late joiner's
    backfill); frames are latest-wins, so ``frame_seconds`` only bridges a short hiccup.
    ``max_bytes`` caps one stream whatever its rate (1 MB frames at 30 Hz)."""

    seconds: float = 10.0
    frame_seconds: float = 1.0
    max_bytes: int = 64 * 2**20
    min_entries: int = 4


def maxlen(kind: str, rate: float, entry_size: int, retention: Retention = Retention()) -> int:
    """Entries to keep for a stream of ``kind`` receiving ``rate`` entries a second of about
    ``entry_size`` bytes: the XADD's ``MAXLEN ~``. With approximate trimming Redis drops whole
    nodes (``stream-node-max-entries`` 100, ``stream-node-max-bytes`` 4 KiB by default), so a
    stream of small entries may hold up to ~100 more; entries over 4 KiB are one per node and
    trimmed exactly."""
    if kind not in KINDS:
        raise ValueError(f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"'rate' must be a positive number of entries per second, got {rate!r}")
    seconds = retention.frame_seconds if kind == "frame" else retention.seconds
    by_time = math.ceil(seconds * rate)
    by_bytes = retention.max_bytes // max(1, entry_size)
    return max(retention.min_entries, min(by_time, by_bytes))


def min_id(newest: bytes | str, seconds: float) -> str:
    """The ``MINID ~`` that keeps ``seconds`` of a stream, by Redis's own clock: the ID
    ``seconds`` before ``newest`` (an ID XADD returned), so the origin's clock never counts."""
    ms, _ = parse_id(newest)
    return f"{max(0, ms - int(seconds * 1000))}-0"


# -- the edge's position in a channel, and the gap arithmetic ------------------------------

@dataclass(frozen=True)
class Position:
    """Where an edge stands in one channel stream. ``stream_id``: the last entry read (the
    next XREAD asks for what comes after it); ``run`` and ``next_seq``: the device process and
    the first sequence number not yet delivered (None before the first entry)."""

    stream_id: str = FIRST_ID
    run: str | None = None
    next_seq: int | None = None

    def after_redis_restart(self) -> Position:
        """Redis restarted (its ``run_id`` changed) or the stream was recreated: read the
        stream again from its start. The IDs of the new entries may be lower than the old ones
        (another clock, a restored snapshot); the sequence numbers decide what is new, so
        nothing is delivered twice and the gap stays exact."""
        return replace(self, stream_id=FIRST_ID)


@dataclass(frozen=True)
class Step:
    """What to do with an entry: ``missed`` sequence numbers before it are gone for good;
    its first ``skip`` are already delivered (records: drop that many rows); ``restarted``: a
    new device process, numbering starts over (clear buffers, as when a device restarts);
    ``duplicate``: nothing in it is new."""

    position: Position
    missed: int = 0
    skip: int = 0
    restarted: bool = False
    duplicate: bool = False


def step(position: Position, entry_id: bytes | str, entry: Entry) -> Step:
    """Follow a channel stream by one entry, read with an explicit ID after
    ``position.stream_id``. The first entry an edge reads (``next_seq`` None) misses nothing:
    like a subscribe, it starts from now. Otherwise ``missed`` is exact: the sequence numbers
    between the last one delivered and the entry's first, whatever removed them."""
    new_id = parse_id(entry_id)
    if new_id <= parse_id(position.stream_id):
        raise ValueError(f"entry {format_id(new_id)} is not after the position {position.stream_id}: "
                         f"read with XREAD/XRANGE from the position's stream_id")
    here = Position(format_id(new_id), entry.run, entry.next_seq)
    if position.next_seq is None or position.run is None:
        return Step(here)
    if entry.run != position.run:
        return Step(here, restarted=True)
    expected = position.next_seq
    if entry.first >= expected:
        return Step(here, missed=entry.first - expected)
    if entry.next_seq <= expected:
        return Step(replace(here, next_seq=expected), skip=entry.count, duplicate=True)
    return Step(here, skip=expected - entry.first)


def origin_cursor(newest: Entry | None, run: str, write_count: int) -> int:
    """Where an origin starting up (or reconnecting to Redis) reads a records or events ring
    from: after the stream's newest entry if that came from this same device process and the
    ring has not moved behind it — so an origin restart loses only what the ring overwrote
    meanwhile, and the ring's own ``missed`` says how much — else from now."""
    if newest is not None and newest.run == run and newest.kind != "frame" and newest.next_seq <= write_count:
        return newest.next_seq
    return write_count


# -- control streams and keys -------------------------------------------------------------

def public_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The device's manifest as edges see it: its name, pid, channels (without their segment
    names) and command catalog; no doorbell address, nothing local to the origin's machine."""
    channels = [{k: v for k, v in c.items() if k != "segment"} for c in manifest.get("channels", [])]
    return {"device": manifest.get("device"), "pid": manifest.get("pid"), "channels": channels,
            "commands": list(manifest.get("commands", []))}


def manifest_entry(run: str, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """An entry of ``monbridge:{D}:manifest``: ``public_manifest(manifest)`` as JSON."""
    return {"run": _run(run), "manifest": _dumps(public_manifest(manifest))}


def decode_manifest(fields: Mapping[Any, Any]) -> tuple[str, dict[str, Any]]:
    """(run, manifest) of a manifest entry."""
    manifest = _json(fields, "manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("channels"), list):
        raise EntryError("manifest entry: 'manifest' must be a JSON object with a 'channels' list")
    return text(_get(fields, "run")), manifest


def state_entry(run: str, version: int, values: Mapping[str, Any]) -> dict[str, bytes]:
    """An entry of ``monbridge:{D}:state``: the whole state (it is small), so the newest entry
    alone is what a late edge needs (XREVRANGE ... COUNT 1)."""
    return {"run": _run(run), "version": str(int(version)).encode(), "values": _dumps(dict(values))}


def decode_state(fields: Mapping[Any, Any]) -> tuple[str, int, dict[str, Any]]:
    """(run, version, values) of a state entry."""
    values = _json(fields, "values")
    if not isinstance(values, dict):
        raise EntryError(f"state entry: 'values' must be a JSON object, got {type(values).__name__}")
    return text(_get(fields, "run")), _int(fields, "version"), values


def heartbeat_value(run: str | None, pid: int | None, status: str, heartbeat_age: float | None,
                    origin: str, now: float) -> bytes:
    """The value the origin SETs (PX ``HEARTBEAT_TTL_MS``) at ``monbridge:{D}:heartbeat`` every
    ``HEARTBEAT_PERIOD``: the ``device`` event's fields as the origin sees them, and the
    ``layout`` it writes (an edge of another layout says so). The key expiring is how an edge
    learns that the origin, or Redis, is gone: offline."""
    if status not in ("online", "offline"):
        raise ValueError(f"'status' must be 'online' or 'offline', got {status!r}")
    return _dumps({"run": run, "pid": pid, "status": status, "heartbeat_age": heartbeat_age,
                   "origin": origin, "t": now, "layout": LAYOUT})


def decode_heartbeat(value: bytes | str | None) -> dict[str, Any] | None:
    """The heartbeat as a dict, or None when the key is absent (the device counts as offline)."""
    if value is None:
        return None
    try:
        beat = json.loads(value)
    except ValueError:
        raise EntryError(f"heartbeat is not JSON: {text(value)[:40]!r}") from None
    if not isinstance(beat, dict) or beat.get("status") not in ("online", "offline"):
        raise EntryError(f"heartbeat must be a JSON object with status online or offline, got {text(value)[:60]!r}")
    return beat


@dataclass(frozen=True)
class Command:
    """A command an edge validated and XADDed to ``monbridge:{D}:commands``. ``request`` is the
    edge's own number for it (unique per edge), echoed in the reply; ``client`` is what the
    device's handler sees as its ``client`` argument; after ``deadline`` (Unix time) the edge
    has answered ``timeout`` already, so the origin drops it unsent."""

    edge: str
    request: int
    name: str
    args: dict[str, Any]
    client: dict[str, Any]
    deadline: float


def command_entry(command: Command) -> dict[str, bytes]:
    return {"edge": command.edge.encode(), "request": str(command.request).encode(), "name": command.name.encode(),
            "args": _dumps(command.args), "client": _dumps(command.client), "deadline": _number(command.deadline)}


def decode_command(fields: Mapping[Any, Any]) -> Command:
    args, client = _json(fields, "args"), _json(fields, "client")
    if not isinstance(args, dict) or not isinstance(client, dict):
        raise EntryError("command entry: 'args' and 'client' must be JSON objects")
    deadline = _float_or_none(fields, "deadline")
    if deadline is None:
        raise EntryError("command entry: 'deadline' is required")
    return Command(text(_get(fields, "edge")), _int(fields, "request"), text(_get(fields, "name")),
                   args, client, deadline)


def reply_entry(request: int, answer: Mapping[str, Any]) -> dict[str, bytes]:
    """An entry of ``monbridge:{D}:replies:E``: the answer to edge E's command ``request``, as
    the broker gives it to a client (``{"ok": true, "result": ...}`` or an error)."""
    return {"request": str(int(request)).encode(), "answer": _dumps(dict(answer))}


def decode_reply(fields: Mapping[Any, Any]) -> tuple[int, dict[str, Any]]:
    answer = _json(fields, "answer")
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise EntryError("reply entry: 'answer' must be a JSON object with a boolean 'ok'")
    return _int(fields, "request"), answer


def wants_entry(edge: str, channels: Iterable[str]) -> dict[str, bytes]:
    """An entry of ``monbridge:{D}:wants``: the channels edge E's browsers subscribe to now."""
    return {"edge": edge.encode(), "channels": _dumps(sorted(channels))}


def decode_wants(fields: Mapping[Any, Any]) -> tuple[str, frozenset[str]]:
    channels = _json(fields, "channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise EntryError("wants entry: 'channels' must be a JSON list of channel names")
    return text(_get(fields, "edge")), frozenset(channels)


class EdgeWants:
    """The origin's view of what the edges' browsers subscribe to: each edge's newest wants
    entry, forgotten WANTS_TTL after it (an edge that died says nothing more)."""

    def __init__(self, ttl: float = WANTS_TTL) -> None:
        self.ttl = ttl
        self._by_edge: dict[str, tuple[frozenset[str], float]] = {}

    def update(self, edge: str, channels: frozenset[str], now: float) -> None:
        if channels:
            self._by_edge[edge] = (channels, now)
        else:
            self._by_edge.pop(edge, None)

    def channels(self, now: float) -> frozenset[str]:
        """What some edge wants now (``now``: the clock ``update`` was given)."""
        for edge in [e for e, (_, seen) in self._by_edge.items() if now - seen > self.ttl]:
            del self._by_edge[edge]
        return frozenset().union(*(c for c, _ in self._by_edge.values()))
