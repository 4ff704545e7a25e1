"""The Python client's protocol core (docs/client.md): messages, decoding, state and subscriptions.

Sans-I/O: no sockets, no threads, no asyncio. ``bridge.aclient`` (asyncio) and
``bridge.client`` (blocking) feed it what the bridge sends and send what it builds; everything
they have in common lives here, and is tested on hand-built messages (tests/test_client_messages.py).
It imports numpy and the standard library only: never flask, eventlet, socketio or
bridge.server. The wire format it reads is docs/protocol.md (protocol version 5: bundles; a
bridge may serve several devices; a client follows one of them, see ``Session``).

Exceptions::

    ClientError                      anything the client raises on purpose
    ├── Refused (ConnectionError)    the bridge refused the token (missing or wrong)
    ├── ConnectionFailed (ConnectionError)  the bridge cannot be reached
    ├── Timeout (TimeoutError)       no connection / answer / condition in time
    ├── ProtocolError                a message from the bridge this client cannot read
    └── BridgeError(code, message)   the bridge answered a request with an error
        ├── CommandFailed            ... the request was a command
        └── DeviceError              the device asked for is not served (or several are, none asked for)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Mapping, Union
from urllib.parse import parse_qs, urlsplit

import numpy as np

PROTOCOL_VERSION = 5   # hello.protocol this client was written for
MAX_IN_FLIGHT = 64     # subscribe's in_flight range is 1..64 (docs/protocol.md §3)
DEVICE_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")   # what the bridge accepts as a device name


# -- exceptions --------------------------------------------------------------------------

class ClientError(Exception):
    """Base class of the client's exceptions."""


class Refused(ClientError, ConnectionError):
    """The bridge refused the connection: a missing or wrong token."""


class ConnectionFailed(ClientError, ConnectionError):
    """The bridge could not be reached (nothing listening, not a bridge, network down)."""


class Timeout(ClientError, TimeoutError):
    """Something did not happen within its timeout."""


class ProtocolError(ClientError):
    """The bridge sent something this client cannot read (a version mismatch or a bug)."""


class BridgeError(ClientError):
    """An error answer from the bridge: ``code`` is stable, for programs (docs/protocol.md
    §6.2); ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CommandFailed(BridgeError):
    """A command's error answer: from the bridge (``forbidden``, ``unknown_command``,
    ``invalid_args``, ``offline``, ``timeout``...) or the device (``handler_error``...)."""


class DeviceError(BridgeError):
    """The client cannot follow the device asked for: ``code`` ``"unknown_device"`` (the bridge
    does not serve it; the message lists the devices it does) or ``"bad_request"`` (the bridge
    serves several devices and none was named)."""


# -- messages ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Records:
    """A batch of a records channel: ``data`` is a structured array of the channel's published
    dtype, one row per record sent. ``seq`` = (first, last) are the device's sequence numbers
    the batch covers; ``missed`` records before ``seq[0]`` will never come. With ``decimated``
    the rows are a min/max selection of the batch, fewer than ``last - first + 1``."""

    kind: ClassVar[str] = "records"
    channel: str
    seq: tuple[int, int]
    missed: int
    t: float | None
    decimated: bool
    data: np.ndarray

    @property
    def count(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Frame:
    """The newest frame of a frame channel: ``data`` is a read-only ndarray of the published
    dtype and this frame's shape; ``seq`` = (k, k) for frame number k; ``missed`` frames were
    published since the previous one you got (latest wins: downsampling, not loss)."""

    kind: ClassVar[str] = "frame"
    channel: str
    seq: tuple[int, int]
    missed: int
    t: float | None
    data: np.ndarray


@dataclass(frozen=True)
class Events:
    """Events of an events channel: ``events`` is a list of ``{"seq", "t", "message"}``."""

    kind: ClassVar[str] = "events"
    channel: str
    seq: tuple[int, int]
    missed: int
    t: float | None
    events: list[dict[str, Any]]


Message = Union[Records, Frame, Events]


# -- decoding ----------------------------------------------------------------------------

def published_dtype(spec: Mapping[str, Any]) -> np.dtype:
    """The dtype a channel publishes, from its ``hello.channels`` entry: a structured dtype for
    records (``[["t", "<f8"], ["pos", "<f4", [3]]]``), the element dtype for frames."""
    try:
        if spec.get("kind") == "records":
            return np.dtype([(e[0], e[1], tuple(e[2])) if len(e) > 2 else (e[0], e[1]) for e in spec["dtype"]])
        return np.dtype(spec["dtype"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProtocolError(f"channel {spec.get('name')!r}: cannot read its dtype {spec.get('dtype')!r}: "
                            f"{exc}") from None


def _wire_dtype(code: Any) -> np.dtype:
    """A wire dtype code ('f8', 'u1', 'b1'...) as a little-endian numpy dtype."""
    if not isinstance(code, str) or len(code) < 2 or code[0] not in "fiub":
        raise ProtocolError(f"unknown wire dtype {code!r} (expected e.g. 'f8', 'i4', 'u1', 'b1')")
    return np.dtype("<" + code)


def _seq(msg: Mapping[str, Any]) -> tuple[int, int]:
    seq = msg.get("seq")
    if not (isinstance(seq, (list, tuple)) and len(seq) == 2 and all(isinstance(s, int) for s in seq)):
        raise ProtocolError(f"channel {msg.get('channel')!r}: 'seq' must be [first, last], got {seq!r}")
    return int(seq[0]), int(seq[1])


def decode_records(msg: Mapping[str, Any], dtype: np.dtype | None = None) -> Records:
    """A records ``data`` message (§4.3) as Records. ``dtype`` is the published one; without it
    (or when its field names differ from the message's) the rows get the wire's dtype."""
    channel = msg.get("channel")
    count = msg.get("count")
    data = msg.get("data")
    fields = msg.get("fields")
    if not isinstance(count, int) or count < 0 or not isinstance(data, (bytes, bytearray)) \
            or not isinstance(fields, list):
        raise ProtocolError(f"records message of {channel!r} lacks count, fields or binary data")
    columns = []
    for f in fields:
        wire = _wire_dtype(f.get("dtype"))
        shape = tuple(f.get("shape") or ())
        n = count * math.prod(shape)
        offset, nbytes = f.get("offset", 0), f.get("nbytes", 0)
        if nbytes != n * wire.itemsize or offset < 0 or offset + nbytes > len(data):
            raise ProtocolError(f"records message of {channel!r}: column {f.get('name')!r} holds {nbytes} bytes "
                                f"at offset {offset} of {len(data)}; {count} rows of {wire}{list(shape)} need "
                                f"{n * wire.itemsize}")
        columns.append((f["name"], wire, shape, np.frombuffer(data, wire, count=n, offset=offset)))
    names = tuple(name for name, *_ in columns)
    if dtype is None or dtype.names != names:
        dtype = np.dtype([(name, wire, shape) for name, wire, shape, _ in columns])
    rows = np.empty(count, dtype)
    for name, _, shape, col in columns:
        rows[name] = col.reshape((count, *shape))
    return Records(channel, _seq(msg), int(msg.get("missed", 0)), msg.get("t"), bool(msg.get("decimated")), rows)


def decode_frame(msg: Mapping[str, Any], dtype: np.dtype | None = None) -> Frame:
    """A frame ``data`` message (§4.4) as Frame; ``dtype`` is the published element dtype."""
    channel = msg.get("channel")
    data = msg.get("data")
    shape = msg.get("shape")
    if not isinstance(data, (bytes, bytearray)) or not isinstance(shape, list):
        raise ProtocolError(f"frame message of {channel!r} lacks shape or binary data")
    wire = _wire_dtype(msg.get("dtype"))
    if len(data) != math.prod(shape) * wire.itemsize:
        raise ProtocolError(f"frame message of {channel!r}: {len(data)} bytes for shape {shape} of {wire}")
    array = np.frombuffer(data, wire).reshape(shape)
    if dtype is not None and dtype != wire and dtype.kind == wire.kind and dtype.itemsize == wire.itemsize:
        array = array.astype(dtype)   # a big-endian device: same values, its byte order
        array.flags.writeable = False
    return Frame(channel, _seq(msg), int(msg.get("missed", 0)), msg.get("t"), array)


def decode_events(msg: Mapping[str, Any]) -> Events:
    """An ``event`` message (§4.5) as Events."""
    events = msg.get("events")
    if not isinstance(events, list):
        raise ProtocolError(f"event message of {msg.get('channel')!r} lacks its 'events' list")
    return Events(msg.get("channel"), _seq(msg), int(msg.get("missed", 0)), msg.get("t"), events)


def decode(event: str, msg: Any, spec: Mapping[str, Any] | None = None) -> Message:
    """A ``data`` or ``event`` message as Records, Frame or Events; ``spec`` is the channel's
    ``hello.channels`` entry (None if unknown: the wire's dtypes are used)."""
    if not isinstance(msg, Mapping):
        raise ProtocolError(f"{event!r} message is a {type(msg).__name__}, not a map")
    kind = msg.get("kind")
    if event == "event" and kind == "events":
        return decode_events(msg)
    known = spec is not None and spec.get("kind") == kind and kind in ("records", "frame")
    dtype = published_dtype(spec) if known else None
    if event == "data" and kind == "records":
        return decode_records(msg, dtype)
    if event == "data" and kind == "frame":
        return decode_frame(msg, dtype)
    raise ProtocolError(f"{event!r} message of kind {kind!r} not expected")


# -- requests and answers ----------------------------------------------------------------

def _number(name: str, value: Any, low: float, high: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"'{name}' must be a number from {low:g} to {high:g}, got {value!r}")


def subscribe_payload(channel: str, rate: float | None = 30, max_points: int | None = None,
                      window: float | None = None, in_flight: int = 4) -> dict[str, Any]:
    """The ``subscribe`` payload for one channel (docs/protocol.md §3); ValueError on a value
    the bridge would refuse. ``in_flight`` is required: the client confirms every message."""
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"'channel' must be a channel name, got {channel!r}")
    _number("rate", rate, 0.1, 1000)
    _number("max_points", max_points, 2, 1_000_000)
    _number("window", window, 0.01, 86_400)
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or not 1 <= in_flight <= MAX_IN_FLIGHT:
        raise ValueError(f"'in_flight' must be an integer from 1 to {MAX_IN_FLIGHT}, got {in_flight!r}")
    payload: dict[str, Any] = {"channels": [channel], "in_flight": in_flight}
    for key, value in (("rate", rate), ("max_points", max_points), ("window", window)):
        if value is not None:
            payload[key] = value
    return payload


def unsubscribe_payload(channel: str) -> dict[str, Any]:
    """The ``unsubscribe`` payload for one channel (§3)."""
    return {"channels": [channel]}


def check_ack(ack: Any, what: str) -> dict[str, Any]:
    """An acknowledgement ``{"ok": true, ...}``, or BridgeError for an error answer
    (DeviceError for ``unknown_device``)."""
    if not isinstance(ack, dict) or "ok" not in ack:
        raise ProtocolError(f"{what}: the bridge answered {ack!r}, not {{ok, ...}}")
    if not ack["ok"]:
        err = ack.get("error") or {}
        code, message = str(err.get("code", "unknown")), str(err.get("message", ""))
        raise (DeviceError if code == "unknown_device" else BridgeError)(code, message)
    return ack


def command_payload(command_id: int, name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``command`` event's payload (§3): the bridge answers with a ``result`` event."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"'name' must be a command name, got {name!r}")
    return {"id": command_id, "name": name, "args": dict(args or {})}


def command_result(answer: Any, name: str) -> Any:
    """A ``result`` event (less its id) → the handler's return value, or CommandFailed."""
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ProtocolError(f"command {name!r}: the bridge answered {answer!r}, not {{ok, ...}}")
    if not answer["ok"]:
        err = answer.get("error") or {}
        raise CommandFailed(str(err.get("code", "unknown")), str(err.get("message", "")))
    return answer.get("result")


def merge_state(state: Mapping[str, Any], msg: Any) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Apply a ``state`` message (§4.2): ``(new state, changes, full)``. A full message
    replaces the state (``changes`` is then all of it); a delta merges its keys. The result is
    a new dict: a reader on another thread never sees one half-updated."""
    if not isinstance(msg, Mapping) or not isinstance(msg.get("values"), Mapping):
        raise ProtocolError(f"state message {msg!r} lacks its 'values' map")
    values = dict(msg["values"])
    full = bool(msg.get("full"))
    return (values if full else {**state, **values}), values, full


def split_url(url: str, token: str | None = None) -> tuple[str, str, str | None]:
    """The URL the bridge printed (``http://host:port/?token=...``, maybe under a path prefix)
    → (origin, socketio_path, token). An explicit ``token`` wins over the URL's."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a bridge URL: {url!r}; pass the URL the bridge printed, "
                         "e.g. 'http://127.0.0.1:8050/?token=...'")
    if token is None:
        token = (parse_qs(parts.query).get("token") or [None])[0]
    prefix = parts.path[: parts.path.rfind("/") + 1] if "/" in parts.path else "/"
    return f"{parts.scheme}://{parts.netloc}", (prefix + "socket.io").lstrip("/"), token or None


# -- the session -------------------------------------------------------------------------

def check_device_name(device: Any) -> str | None:
    """``device`` as given to a client: None (the bridge's only device) or a device name."""
    if device is not None and not (isinstance(device, str) and DEVICE_NAME.fullmatch(device)):
        raise ValueError(f"'device' must be a device name (letters, digits, '_' or '-', at most 48) or None, "
                         f"got {device!r}")
    return device


def _status(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A DEVICE_ENTRY's status (``{"name", "status", "pid", "heartbeat_age"}``)."""
    status = entry.get("device")
    if isinstance(status, Mapping):
        return dict(status)
    return {"name": entry.get("name"), "status": "offline", "pid": None, "heartbeat_age": None}


@dataclass
class Stream:
    """One open subscription's bookkeeping (one per channel and client: the bridge keeps one)."""

    channel: str
    payload: dict[str, Any]        # what subscribe sends (less the device, added when sent)
    active: bool = False           # subscribed (or being subscribed) on the current connection
    ack: dict[str, Any] | None = None
    resubscribed: bool = False     # the next message is the first after a re-subscribe
    last: int | None = None        # seq[1] of the last message, under device ``pid``
    pid: Any = None


@dataclass
class Session:
    """What the client knows, updated from the bridge's messages (§4). Every attribute is
    replaced, never changed in place, so another thread may read it at any time.

    The client follows one device: ``want``, or with ``want`` None the bridge's only device
    (single mode; in multi mode ``device_problem`` says to name one). ``device``, ``channels``,
    ``commands`` and ``state`` are that device's; per-device messages of other devices are
    ignored, except that ``devices`` (every DEVICE_ENTRY the bridge serves) is kept current."""

    want: str | None = None
    hello: dict[str, Any] = field(default_factory=dict)
    multi: bool = False
    devices: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    channels: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    views: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    streams: dict[str, Stream] = field(default_factory=dict)   # channel -> its open subscription

    # -- which device

    @property
    def name(self) -> str | None:
        """The name of the device followed, as requests carry it; None while unknown (single
        mode with ``--attach auto`` before a device attaches: requests then omit it)."""
        if self.want is not None:
            return self.want
        if self.multi:
            return None
        first = self.devices[0].get("name") if self.devices else None
        return self.device.get("name") or first

    @property
    def listed(self) -> bool:
        """Whether the bridge serves the device followed (now)."""
        return self._entry() is not None

    def device_names(self) -> list[str]:
        return [e["name"] for e in self.devices if isinstance(e.get("name"), str)]

    def statuses(self) -> list[dict[str, Any]]:
        """Every device's status (``{"name", "status", "pid", "heartbeat_age"}``), in the bridge's order."""
        return [_status(e) for e in self.devices]

    def device_problem(self) -> DeviceError | None:
        """Why this client cannot follow its device on this bridge, checked after ``hello``; None
        if it can. A named device missing in multi mode is no problem: under ``--attach all``
        it may start later (``missing_device`` then tells an operation that waited for it)."""
        listing = ", ".join(self.device_names()) or "none yet"
        if self.want is None:
            if self.multi:
                return DeviceError("bad_request", f"this bridge serves several devices ({listing}): pass "
                                                  "device=... to follow one of them")
            return None
        if self.listed or self.multi:
            return None
        return DeviceError("unknown_device", f"this bridge serves device {listing}, not {self.want!r}: pass "
                                             "device=None or the name of a device it serves")

    def missing_device(self, what: str, waited: float) -> DeviceError:
        listing = ", ".join(self.device_names()) or "none"
        return DeviceError("unknown_device", f"{what}: the bridge does not serve device {self.want!r} (devices: "
                                             f"{listing}); waited {waited:g} s for it to appear")

    def with_device(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload`` with ``"device"`` when the device's name is known (§3)."""
        name = self.name
        return {**payload, "device": name} if name is not None else dict(payload)

    def ours(self, msg: Mapping[str, Any]) -> bool:
        """Whether a per-device message (``state``, ``data``, ``event``, ``device``,
        ``channels``) is about the device followed. Without a ``device`` key (protocol 3) it is."""
        if "device" not in msg:
            return True
        name = msg["device"]
        if self.multi:
            return self.want is not None and name == self.want
        return self.want is None or name is None or name == self.want

    def _entry(self) -> dict[str, Any] | None:
        """Our DEVICE_ENTRY in ``devices``, if the bridge serves the device followed."""
        if self.want is None:
            return self.devices[0] if self.devices and not self.multi else None
        for e in self.devices:
            if e.get("name") == self.want:
                return e
        if not self.multi and len(self.devices) == 1 and self.devices[0].get("name") is None:
            return self.devices[0]   # single mode, --attach auto, nothing attached yet
        return None

    def _named(self, name: Any) -> dict[str, Any] | None:
        return next((e for e in self.devices if e.get("name") == name), None) if name is not None else None

    def _replace_entry(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.devices = [new if e is old else e for e in self.devices]

    def _follow(self, entry: Mapping[str, Any] | None) -> None:
        """Take the device followed from its entry; None: the bridge does not serve it (now)."""
        if entry is None:
            self.device = {**(self.device or {"name": self.want, "pid": None, "heartbeat_age": None}),
                           "status": "offline"}
            self.channels, self.commands = [], []
        else:
            self.device = _status(entry)
            self.channels = list(entry.get("channels") or [])
            self.commands = list(entry.get("commands") or [])

    # -- the bridge's messages

    def on_hello(self, hello: Any) -> None:
        """A new connection (first or after a reconnect): the bridge has no subscriptions of ours."""
        if not isinstance(hello, Mapping):
            raise ProtocolError(f"hello is {hello!r}, not a map")
        self.hello = dict(hello)
        self.multi = bool(hello.get("multi"))
        entries = hello.get("devices")
        if not isinstance(entries, list):   # a protocol 3 bridge: its one device at the top level
            status = dict(hello.get("device") or {})
            entries = [{"name": status.get("name"), "device": status, "channels": hello.get("channels"),
                        "commands": hello.get("commands")}]
        self.devices = [dict(e) for e in entries if isinstance(e, Mapping)]
        self.views = list(hello.get("views") or [])
        self._follow(self._entry())
        self.disconnected()

    def disconnected(self) -> None:
        for s in self.streams.values():
            s.active = False

    def on_devices(self, msg: Any) -> None:
        """A ``devices`` event (the set of devices changed). If the device followed left, the
        bridge dropped its subscriptions: they are sent again (``to_subscribe``) when it is back."""
        if not isinstance(msg, Mapping) or not isinstance(msg.get("devices"), list):
            raise ProtocolError(f"devices event {msg!r} lacks its 'devices' list")
        was = self.listed
        self.devices = [dict(e) for e in msg["devices"] if isinstance(e, Mapping)]
        entry = self._entry()
        if entry is None and was:
            self.disconnected()
        self._follow(entry)

    def on_state(self, msg: Any) -> tuple[dict[str, Any], bool] | None:
        """Merge a ``state`` message; return (changes, full) for the callbacks, or None if it is
        another device's."""
        if isinstance(msg, Mapping) and not self.ours(msg):
            return None
        self.state, changes, full = merge_state(self.state, msg)
        return changes, full

    def on_device(self, device: Any) -> bool:
        """A ``device`` event; True if it is a new process of the device followed (its sequence
        numbers restart). Another device's status only updates ``devices``."""
        if not isinstance(device, Mapping):
            raise ProtocolError(f"device event is {device!r}, not a map")
        status = {k: v for k, v in device.items() if k != "device"}   # as in hello: name, status, pid...
        ours = self.ours(device)
        entry = self._entry() if ours else self._named(status.get("name"))
        if entry is not None:
            self._replace_entry(entry, {**entry, "name": status.get("name") or entry.get("name"), "device": status})
        if not ours:
            return False
        old = self.device.get("pid")
        self.device = status
        return status.get("pid") is not None and old is not None and status.get("pid") != old

    def on_channels(self, msg: Any) -> bool:
        """A ``channels`` event; True if it is the device followed's (its channels may now
        include ones we wait for)."""
        if not isinstance(msg, Mapping):
            raise ProtocolError(f"channels event is {msg!r}, not a map")
        channels, commands = list(msg.get("channels") or []), list(msg.get("commands") or [])
        ours = self.ours(msg)
        entry = self._entry() if ours else self._named(msg.get("device"))
        if entry is not None:
            name = msg.get("device") or entry.get("name")
            self._replace_entry(entry, {**entry, "name": name, "channels": channels, "commands": commands})
        if ours:
            self.channels, self.commands = channels, commands
        return ours

    def on_views(self, msg: Any) -> None:
        if isinstance(msg, Mapping):
            self.views = list(msg.get("views") or [])

    @property
    def role(self) -> str | None:
        return self.hello.get("role")

    def channel(self, name: str) -> dict[str, Any] | None:
        """The ``hello.channels`` entry of ``name`` (None if the device has no such channel)."""
        return next((c for c in self.channels if c.get("name") == name), None)

    def to_subscribe(self) -> list[Stream]:
        """Open subscriptions to send now: not active on this connection, channel known (a
        channel the device has not declared yet waits for the ``channels`` event that has it).
        Marks them active; call ``subscribe_failed`` for each one the bridge refuses."""
        due = [s for s in self.streams.values() if not s.active and self.channel(s.channel) is not None]
        for s in due:
            s.active = True
            s.resubscribed = s.last is not None
        return due

    def subscribe_failed(self, stream: Stream) -> None:
        stream.active = False

    def receive(self, event: str, msg: Any) -> tuple[Stream, Message] | None:
        """A ``data`` or ``event`` message: (its stream, the decoded message), or None if it is
        another device's or no subscription of ours is open for its channel (a message in
        flight when it closed).

        ``missed`` stays exact across a re-subscribe (after a reconnect): the bridge counts
        from the new subscription, so a records or frame message that follows one under the
        same device process counts the gap since the last message it got."""
        if not isinstance(msg, Mapping) or not self.ours(msg):
            return None
        stream = self.streams.get(msg.get("channel"))
        if stream is None:
            return None
        decoded = decode(event, msg, self.channel(stream.channel))
        pid = self.device.get("pid")
        if stream.resubscribed and stream.last is not None and stream.pid == pid and decoded.kind != "events":
            gap = decoded.seq[0] - stream.last - 1
            if gap > decoded.missed:
                decoded = _with_missed(decoded, gap)
        stream.resubscribed = False
        stream.last, stream.pid = decoded.seq[1], pid
        return stream, decoded


def _with_missed(msg: Message, missed: int) -> Message:
    return replace(msg, missed=missed)


def consumed_payload(msg: Message) -> dict[str, Any] | None:
    """The ``consumed`` confirmation of a message the user has taken (None for a message
    without rows whose seq[1] is negative: it was not counted in flight)."""
    return {"channel": msg.channel, "seq": msg.seq[1]} if msg.seq[1] >= 0 else None
