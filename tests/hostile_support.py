"""Hostile clients for the fault tests (issue 11): a Socket.IO client written by hand over one
raw websocket, so that a test sends exactly the frames it means to (NaN, undecodable packets,
text where binary is due) and checks exactly the frames the bridge sent; plus the checks every
hostile test makes: the bridge is up, its log stayed short, every frame it sent is what
protocol 3 allows (docs/protocol.md §1), an answer has the documented shape.

The packets are bench/wire.py's (protocol 3: every Socket.IO packet one binary websocket
frame holding one msgpack map; Engine.IO's open, ping and pong text frames). Builds on
tests/bridge_support.py (the ``mb`` harness) and tests/conftest.py (the guard). Public APIs
only: websocket-client's ``WebSocket``, msgpack and the standard library.

    raw = RawSocketIO(bridge.url.port, token=bridge.url.token)   # connected to "/"
    n = raw.emit(["ping", {"t": float("nan")}])                  # {"type": 2, "data": ["ping", {"t": NaN}], "id": 0}
    ack = raw.wait_ack(n)
    check_ack_shape(ack)
    answer = raw.command({"name": "add", "args": {"a": 1}})      # adds an id, waits for its 'result'
    raw.send_frames([packed({"type": 2, "nsp": "/", "data": {"not": "a list"}})])
    raw.wait_disconnected()                                      # a DISCONNECT after an 'error' event
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import websocket

from bench import procs, wire
from conftest import TIMEOUT

# Every code an acknowledgement may carry (bridge/protocol.py's docstring, docs/protocol.md §6.2).
ACK_CODES = frozenset({"bad_request", "unknown_channel", "unknown_command", "invalid_args", "too_large",
                       "forbidden", "rate_limited", "queue_full", "offline", "timeout", "handler_error",
                       "bad_result", "internal"})
EVENTS = ("subscribe", "unsubscribe", "consumed", "ping", "command")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} monbridge (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (isinstance(value, int) or math.isfinite(value))


def check_ack_shape(ack: Any, allowed: frozenset[str] = ACK_CODES - {"internal"}) -> Any:
    """Assert ``ack`` is ``{"ok": true, ...}`` or ``{"ok": false, "error": {"code": C, "message": str}}``
    with C in ``allowed``; return the code, or True for ok."""
    assert isinstance(ack, dict), f"the acknowledgement is not an object: {ack!r}"
    if ack.get("ok") is True:
        return True
    assert ack.get("ok") is False, f"'ok' is neither true nor false: {ack!r}"
    err = ack.get("error")
    assert isinstance(err, dict) and set(err) == {"code", "message"}, f"malformed error: {ack!r}"
    assert err["code"] in allowed, f"code {err['code']!r} is not one of {sorted(allowed)}: {ack!r}"
    assert isinstance(err["message"], str) and err["message"], ack
    return err["code"]


def valid_command_id(value: Any) -> bool:
    """What docs/protocol.md §3 allows as a command's ``id``: an integer with |n| < 2**53, or a
    string of 1 to 64 characters."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, str) and 0 < len(value) <= 64


# -- frames ---------------------------------------------------------------------------------

def packed(obj: Any, **options: Any) -> wire.Frame:
    """``obj`` as msgpack in one binary frame: a packet exactly as a test writes it (any map,
    or anything else); ``options`` go to ``msgpack.packb``."""
    return wire.BINARY, msgpack.packb(obj, **options)


def text(payload: str | bytes) -> wire.Frame:
    """A text frame holding ``payload`` as is (bytes: sent unchecked, invalid UTF-8 and all)."""
    return wire.TEXT, payload.encode() if isinstance(payload, str) else payload


def _refuse_extension(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code}")


PACKET_KEYS = {"type", "nsp", "data", "id"}


def _json_like(value: Any) -> bool:
    """No NaN or Infinity, no bytes, string keys only: what an answer may hold (it could be JSON)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, (bytes, bytearray)):
            return False
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return False
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return True


def frame_problem(opcode: int, payload: bytes) -> str | None:
    """What is wrong with a frame the bridge sent after the Engine.IO open packet, or None.

    Protocol 3 (docs/protocol.md §1): a text frame is an Engine.IO control packet (ping,
    close, noop; a pong for a client's probe), never a Socket.IO packet; a binary frame holds
    exactly one msgpack map {"type", "nsp": "/", "data", "id"?} of a packet type a server
    sends, with valid UTF-8 and no extension types; an event's data is a list starting
    with its name, an ack's a list with a non-negative integer id."""
    if opcode == wire.TEXT:
        try:
            body = payload.decode("utf-8")
        except UnicodeDecodeError:
            return "a text frame that is not UTF-8"
        if body[:1] in ("1", "2", "3", "6") and body[1:] in ("", "probe"):
            return None
        return f"a text frame that is not an Engine.IO control packet (protocol 3 sends packets as msgpack): {body[:120]!r}"
    if opcode != wire.BINARY:
        return f"a frame with opcode {opcode}"
    try:
        packet = msgpack.unpackb(payload, ext_hook=_refuse_extension)
    except Exception as exc:  # noqa: BLE001 (ExtraData, FormatError, UnicodeDecodeError, ...)
        return f"a binary frame that is not one msgpack value ({type(exc).__name__}: {exc})"
    if not isinstance(packet, dict) or not set(packet) <= PACKET_KEYS:
        return f"a binary frame that is not a packet map: {_excerpt(packet)}"
    kind, data, ident = packet.get("type"), packet.get("data"), packet.get("id")
    if isinstance(kind, bool) or kind not in (wire.CONNECT, wire.DISCONNECT, wire.EVENT, wire.ACK, wire.CONNECT_ERROR):
        return f"a packet of type {kind!r}: {_excerpt(packet)}"
    if packet.get("nsp") != "/":
        return f"a packet for namespace {packet.get('nsp')!r}: {_excerpt(packet)}"
    if kind == wire.EVENT and not (isinstance(data, list) and data and isinstance(data[0], str)):
        return f"an event that is not a list starting with its name: {_excerpt(packet)}"
    if kind == wire.ACK and not (isinstance(data, list) and isinstance(ident, int) and not isinstance(ident, bool)
                                 and ident >= 0):
        return f"a malformed ack: {_excerpt(packet)}"
    if kind == wire.CONNECT and not (isinstance(data, dict) and isinstance(data.get("sid"), str)):
        return f"a CONNECT without a sid: {_excerpt(packet)}"
    if kind != wire.ACK and ident is not None:
        return f"an id on a packet of type {kind}: {_excerpt(packet)}"
    return None


def _excerpt(value: Any) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= 200 else text_[:200] + "..."


@dataclass
class Refused(Exception):
    data: Any


NO_VALUE = "<an acknowledgement without a value>"


class RawSocketIO:
    """One websocket speaking Engine.IO 4 / Socket.IO 5 with the bridge's msgpack packets by hand.

    A reader thread answers the server's pings, checks every frame (``frame_problem``; and
    that acks, ``result`` and ``error`` events could be JSON: no NaN, no bytes), files what
    is wrong in ``bad_frames``, acknowledgements by id (``acks``; ``NO_VALUE`` for an empty
    one), events by name (``events``, in order) and ``result`` events (``results``).
    """

    def __init__(self, port: int, token: str | None = None, auth: Any = None, connect: bool = True,
                 origin: str | None = None, query: str = "", headers: list[str] | None = None,
                 timeout: float = TIMEOUT) -> None:
        """Open the websocket and, with ``connect``, join "/" presenting ``token`` (as
        ``auth: {"token": ...}``) or else ``auth`` as given. ``query`` is added to the URL
        as is ("&token=..."); ``headers`` are extra handshake lines ("Authorization: ...")."""
        self.port = port
        self.timeout = timeout
        options: dict[str, Any] = {"origin": origin} if origin else {}
        if headers:
            options["header"] = headers
        # (multithreaded: the reader answers pings while the test's thread sends)
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{wire.EIO_PATH}{query}",
                                              timeout=timeout, enable_multithread=True, **options)
        self.last: list[str] = []               # a short account of the last few packets, for messages
        self.bad_frames: list[str] = []         # frames protocol 3 does not allow (frame_problem)
        self.acks: dict[int, Any] = {}          # ack id -> the ACK's first value (NO_VALUE if none)
        self.sent: dict[int, str] = {}          # ack id -> the name of the event that asked for it
        self.events: list[tuple[str, Any]] = []
        self.results: list[Any] = []            # the 'result' events (also in events), in order
        self.sid: str | None = None
        self.refused: Any = None
        self.disconnected = False               # a DISCONNECT arrived: the server left the namespace
        self.closed = False                     # the websocket is gone
        self._decoder = wire.Decoder()
        self._next_id = 0
        self._command_ids = itertools.count(1)
        self._cond = threading.Condition()
        opcode, opened = self.ws.recv_data()
        kind, self.handshake = self._decoder.feed(opcode, opened) or (None, None)
        assert kind == "open" and isinstance(self.handshake, dict), (opcode, opened)
        self.ws.settimeout(None)  # the reader blocks; every wait here has its own deadline
        self._reader = threading.Thread(target=self._read, name=f"raw-sio-{port}", daemon=True)
        self._reader.start()
        if connect:
            self.connect({"token": token} if token is not None else auth)

    # -- reading

    def _read(self) -> None:
        while True:
            try:
                opcode, payload = self.ws.recv_data()
            except Exception:
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            problem = frame_problem(opcode, payload)
            if problem is None and opcode == wire.TEXT and payload == b"2":  # Engine.IO ping
                try:
                    self.send_frames(wire.encode_pong())
                except Exception:
                    break
                continue
            with self._cond:
                if problem is not None:
                    self.bad_frames.append(problem)
                elif opcode == wire.BINARY:
                    self._file(*self._decoder.feed(opcode, payload))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _file(self, kind: str, body: Any) -> None:
        self.last = (self.last + [f"{kind} {_excerpt(body)[:100]}"])[-6:]
        if kind == "connect":
            self.sid = body.get("sid")
        elif kind == "disconnect":
            self.disconnected = True
        elif kind == "connect_error":
            self.refused = body if body is not None else {}
        elif kind == "event":
            name, data = body[0], body[1] if len(body) > 1 else None
            self.events.append((name, data))
            if name in ("result", "error") and not _json_like(data):
                self.bad_frames.append(f"a {name!r} event that could not be JSON: {_excerpt(data)}")
            if name == "result":
                self.results.append(data)
        elif kind == "ack":
            ident, value = body
            if value is not None and not _json_like(value):
                self.bad_frames.append(f"an acknowledgement that could not be JSON: {_excerpt(value)}")
            # (the bridge never acknowledges with null: an empty ACK is how a handler that
            # returns nothing answers, e.g. 'command', whose answer is its 'result' event)
            self.acks[ident] = NO_VALUE if value is None else value

    # -- waiting

    def wait(self, predicate: Callable[[], Any], timeout: float | None = None, what: str = "") -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what or predicate}; last packets: {self.last}")
                self._cond.wait(min(left, 0.25))

    def wait_ack(self, ident: int, timeout: float | None = None) -> Any:
        """The acknowledgement with this id (its first value; ``NO_VALUE`` for an empty one)."""
        return self.wait(lambda: ident in self.acks and (self.acks[ident],), timeout,
                         f"the acknowledgement {ident}")[0]

    def wait_result(self, command_id: Any, timeout: float | None = None) -> Any:
        """The first 'result' event with this id (the whole event, ``id`` included)."""
        def find() -> Any:
            for r in self.results:
                if isinstance(r, dict) and r.get("id") == command_id and type(r.get("id")) is type(command_id):
                    return (r,)
            return None
        return self.wait(find, timeout, f"the result of command {command_id!r}")[0]

    def wait_disconnected(self, timeout: float | None = None) -> None:
        self.wait(lambda: self.disconnected or self.closed, timeout, "a disconnect from '/'")

    def errors(self, since: int = 0) -> list[Any]:
        """The 'error' events from ``events[since:]``."""
        with self._cond:
            return [data for name, data in self.events[since:] if name == "error"]

    # -- sending

    def connect(self, auth: Any = None) -> str:
        """Join "/" (``auth`` as the CONNECT payload); the sid, or raise ``Refused``."""
        self.send_frames(wire.encode_connect(auth))
        self.wait(lambda: self.sid or self.refused is not None or self.closed, what="CONNECT or CONNECT_ERROR")
        if self.sid is None:
            raise Refused(self.refused)
        return self.sid

    def rejoin(self, auth: Any = None) -> str:
        """After the server left "/" (a DISCONNECT), join it again on the same websocket."""
        with self._cond:
            self.sid, self.refused, self.disconnected = None, None, False
        return self.connect(auth)

    def send_frames(self, frames: list[wire.Frame]) -> None:
        for opcode, payload in frames:
            self.ws.send(payload, opcode)

    def emit(self, data: list[Any], ack: bool = True) -> int | None:
        """Send the event ``data`` ([name, *args]); the ack id, if one was asked for."""
        ident = None
        if ack:
            ident = self._next_id
            self._next_id += 1
            self.sent[ident] = data[0] if data and isinstance(data[0], str) else repr(data[:1])
        self.send_frames(wire.encode_packet(wire.EVENT, data, ident))
        return ident

    def call(self, data: list[Any], timeout: float | None = None) -> Any:
        return self.wait_ack(self.emit(data), timeout)

    def next_command_id(self) -> int:
        return next(self._command_ids)

    def command(self, payload: dict[str, Any], timeout: float | None = None) -> Any:
        """Send the command ``payload`` with a fresh ``id`` and return its answer: the 'result'
        event less its id (docs/protocol.md §3)."""
        command_id = self.next_command_id()
        self.emit(["command", {**payload, "id": command_id}], ack=False)
        result = self.wait_result(command_id, timeout)
        return {k: v for k, v in result.items() if k != "id"}

    def reset(self) -> None:
        """Drop the connection with a TCP RST, as a crashed or unplugged client would."""
        sock = self.ws.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.shutdown(socket.SHUT_RD)   # wakes the reader; sends nothing
        except OSError:
            pass
        self._reader.join(self.timeout)
        sock.close()                        # with SO_LINGER (1, 0): an RST

    def close(self) -> None:
        """Send a websocket close frame and shut the socket down (which also wakes the reader)."""
        try:
            self.ws.send_close()
        except Exception:
            pass
        try:
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self._reader.join(self.timeout)
        try:
            self.ws.shutdown()
        except Exception:
            pass


# -- plain sockets and HTTP ---------------------------------------------------------------

def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, zero timeout)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def http_raw(port: int, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes | None = None, timeout: float = TIMEOUT) -> tuple[int, dict[str, str], bytes]:
    """One request with ``path`` sent exactly as given (http.client does not normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_request(port: int, target: bytes, method: bytes = b"GET", headers: dict[str, str] | None = None,
                timeout: float = TIMEOUT) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a plain socket, the request target sent byte for byte (NUL,
    backslashes, '..' and all); (status, headers, body). Status 0: the server closed the
    connection without an answer."""
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    request = method + b" " + target + b" HTTP/1.1\r\n" + \
        b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return 0, {}, b""
    header_block, _, body = raw.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields[k.strip().lower()] = v.strip()
    return status, fields, body


def listening_ports(pid: int) -> list[int]:
    """TCP ports ``pid`` listens on (its socket inodes matched against /proc/net/tcp{,6})."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:   # state LISTEN
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def health(port: int, timeout: float = TIMEOUT) -> dict[str, Any]:
    status, _, body = http_raw(port, "GET", "/api/health", timeout=timeout)
    assert status == 200, (status, body[:300])
    return json.loads(body)


pid_alive = procs.alive   # the process exists and is not a zombie


def client_ids(port: int, token: str) -> list[str]:
    status, _, body = http_raw(port, "GET", "/api/clients", {"Authorization": f"Bearer {token}"})
    assert status == 200, (status, body[:300])
    return [row["id"] for row in json.loads(body)["clients"]]


# -- the bridge's log ----------------------------------------------------------------------

def log_problems(text: str, max_bytes: int, max_line: int = 1000, what: str = "the bridge's log") -> list[str]:
    """What is wrong with a log: a traceback, a line that is not a one-line record (a message
    carrying a newline), a line over ``max_line`` characters, more than ``max_bytes`` in all."""
    found = []
    lines = text.splitlines()
    # a traceback starts a line (a client's text quoted inside a record, e.g. a bad packet
    # type in the bridge's warning, may say "Traceback" without being one)
    tracebacks = [line for line in lines if line.startswith("Traceback")]
    if tracebacks:
        last = [line for line in lines if re.match(r"^\w+(Error|Exception)\b", line)]
        found.append(f"{len(tracebacks)} traceback(s) in {what}, ending {sorted(set(last))[:4]}")
    strays = [line[:120] for line in lines if not LOG_LINE.match(line) and not line.startswith(("  ", "Traceback"))]
    if strays:
        found.append(f"{what} has lines that are not one-line records: {strays[:3]}")
    long = [f"{line[:120]}... ({len(line)} chars)" for line in lines if len(line) > max_line]
    if long:
        found.append(f"{what} has lines over {max_line} characters: {long[:2]}")
    size = len(text.encode())
    if size > max_bytes:
        found.append(f"{what} is {size} bytes, over {max_bytes}")
    return found


def data_gaps(times: list[float], start: float, end: float) -> float:
    """The longest stretch within [start, end] with no arrival in ``times``."""
    inside = [t for t in times if start <= t <= end]
    marks = [start, *inside, end]
    return max(b - a for a, b in zip(marks, marks[1:]))


def file_text(path: os.PathLike | str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
