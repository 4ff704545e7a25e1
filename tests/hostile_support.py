"""Hostile clients for the fault tests (issue 11): a Socket.IO client written by hand over one
raw websocket, so that a test sends exactly the frames it means to (NaN tokens, undecodable
packets, binary where text is due) and reads exactly the text the bridge sent; plus the
checks every hostile test makes: the bridge is up, its log stayed short, every text frame
was strict JSON, an acknowledgement has the documented shape.

Builds on tests/bridge_support.py (the ``mb`` harness) and tests/conftest.py (the guard).
Public APIs only: websocket-client's ``WebSocket`` and the standard library.

    raw = RawSocketIO(bridge.url.port, token=bridge.url.token)   # connected to "/"
    n = raw.emit(["ping", {"t": float("nan")}])                  # '420["ping",{"t":NaN}]'
    ack = raw.wait_ack(n)                                        # parsed strictly from the text
    check_ack_shape(ack)
    raw.send_frames(['42{"not": "a list"}'])
    raw.wait_disconnected()                                      # '41' after an 'error' event
"""

from __future__ import annotations

import http.client
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

import websocket

from conftest import TIMEOUT

# Every code an acknowledgement may carry (bridge/protocol.py's docstring, docs/protocol.md §6.2).
ACK_CODES = frozenset({"bad_request", "unknown_channel", "unknown_command", "invalid_args", "too_large",
                       "forbidden", "rate_limited", "queue_full", "offline", "timeout", "handler_error",
                       "bad_result", "internal"})
EVENTS = ("subscribe", "unsubscribe", "consumed", "ping", "command")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} monbridge (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


class NonStandardJSON(ValueError):
    pass


def strict_loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as a browser's JSON.parse does."""
    def refuse(token: str) -> Any:
        raise NonStandardJSON(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


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


# -- Socket.IO over a raw websocket --------------------------------------------------------

def _encode_binary(value: Any, parts: list[bytes]) -> Any:
    """Replace every bytes value by a Socket.IO placeholder, collecting the attachments."""
    if isinstance(value, (bytes, bytearray)):
        parts.append(bytes(value))
        return {"_placeholder": True, "num": len(parts) - 1}
    # loops, not comprehensions: one stack frame per level of a 500-level value
    if isinstance(value, list):
        out = []
        for v in value:
            out.append(_encode_binary(v, parts))
        return out
    if isinstance(value, dict):
        obj = {}
        for k, v in value.items():
            obj[k] = _encode_binary(v, parts)
        return obj
    return value


def encode_event(data: list[Any], ack_id: int | None) -> list[str | bytes]:
    """The frames python-socketio's client would send for ``emit(*data)``, except that NaN and
    Infinity go out as the bare tokens a lenient encoder writes."""
    parts: list[bytes] = []
    body = _encode_binary(data, parts)
    text = json.dumps(body, separators=(",", ":"), allow_nan=True, ensure_ascii=False)
    ident = "" if ack_id is None else str(ack_id)
    if parts:
        return [f"45{len(parts)}-{ident}{text}", *parts]
    return [f"42{ident}{text}"]


def parse_packet(text: str) -> tuple[int, int, str, int | None, str]:
    """A Socket.IO packet as text (without the Engine.IO '4') -> (type, attachments, namespace,
    id, JSON text)."""
    kind = int(text[0])
    rest = text[1:]
    attachments = 0
    m = re.match(r"(\d+)-", rest)
    if kind in (5, 6) and m:
        attachments, rest = int(m.group(1)), rest[m.end():]
    namespace = "/"
    if rest.startswith("/"):
        namespace, _, rest = rest.partition(",")
    m = re.match(r"\d+", rest)
    ident = None
    if m:
        ident, rest = int(m.group(0)), rest[m.end():]
    return kind, attachments, namespace, ident, rest


@dataclass
class Refused(Exception):
    data: Any


class RawSocketIO:
    """One websocket speaking Engine.IO 4 / Socket.IO 5 by hand.

    A reader thread answers the server's pings, keeps every text frame as sent
    (``texts``), checks it is strict JSON (violations land in ``bad_frames``), and files
    acknowledgements by id (``acks``) and events by name (``events``). Binary attachments
    of the bridge's ``data`` messages are consumed and counted, not decoded.
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
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket{query}",
                                              timeout=timeout, **options)
        self.texts: list[str] = []              # every text frame after the Engine.IO open packet
        self.bad_frames: list[str] = []         # frames that were not strict JSON or not Socket.IO
        self.acks: dict[int, Any] = {}          # ack id -> the first value of the ACK packet (or a marker)
        self.raw_acks: dict[int, str] = {}
        self.events: list[tuple[str, Any]] = []
        self.attachments = 0
        self.sid: str | None = None
        self.refused: Any = None
        self.disconnected = False               # a '41' arrived: the server left the namespace
        self.closed = False                     # the websocket is gone
        self._pending_binary = 0
        self._next_id = 0
        self._cond = threading.Condition()
        opened = self.ws.recv()
        assert isinstance(opened, str) and opened.startswith("0{"), opened
        self.handshake = strict_loads(opened[1:])
        self.ws.settimeout(None)  # the reader blocks; every wait here has its own deadline
        self._reader = threading.Thread(target=self._read, name=f"raw-sio-{port}", daemon=True)
        self._reader.start()
        if connect:
            self.connect({"token": token} if token is not None else auth)

    # -- reading

    def _read(self) -> None:
        while True:
            try:
                opcode, data = self.ws.recv_data()
            except Exception:
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if opcode == websocket.ABNF.OPCODE_BINARY:
                with self._cond:
                    self.attachments += 1
                    self._pending_binary = max(0, self._pending_binary - 1)
                    self._cond.notify_all()
                continue
            text = data.decode("utf-8")
            if text == "2":  # Engine.IO ping
                try:
                    self.ws.send("3")
                except Exception:
                    break
                continue
            with self._cond:
                self.texts.append(text)
                try:
                    self._file(text)
                except (ValueError, IndexError, AssertionError) as exc:  # NonStandardJSON is a ValueError
                    self.bad_frames.append(f"{type(exc).__name__}: {exc}: {text[:300]}")
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _file(self, text: str) -> None:
        if not text.startswith("4"):
            return  # Engine.IO noop/close/...: no JSON
        kind, attachments, _, ident, body = parse_packet(text[1:])
        value = strict_loads(body) if body else None
        if kind == 0:
            self.sid = value.get("sid") if isinstance(value, dict) else None
        elif kind == 1:
            self.disconnected = True
        elif kind == 4:
            self.refused = value if value is not None else {}
        elif kind in (2, 5):
            self._pending_binary = attachments
            assert isinstance(value, list) and value and isinstance(value[0], str), text[:200]
            self.events.append((value[0], value[1] if len(value) > 1 else None))
        elif kind in (3, 6):
            assert isinstance(value, list), text[:200]
            self.acks[ident] = value[0] if value else NO_VALUE
            self.raw_acks[ident] = text

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
                    raise AssertionError(f"timed out waiting for {what or predicate}; last frames: "
                                         f"{[t[:120] for t in self.texts[-6:]]}")
                self._cond.wait(min(left, 0.25))

    def wait_ack(self, ident: int, timeout: float | None = None) -> Any:
        """The acknowledgement with this id (its first value; ``NO_VALUE`` for an empty one)."""
        return self.wait(lambda: ident in self.acks and (self.acks[ident],), timeout,
                         f"the acknowledgement {ident}")[0]

    def wait_disconnected(self, timeout: float | None = None) -> None:
        self.wait(lambda: self.disconnected or self.closed, timeout, "a disconnect from '/'")

    def errors(self, since: int = 0) -> list[Any]:
        """The 'error' events from ``events[since:]``."""
        with self._cond:
            return [data for name, data in self.events[since:] if name == "error"]

    # -- sending

    def connect(self, auth: Any = None) -> str:
        """Join "/" (``auth`` as the CONNECT payload); the sid, or raise ``Refused``."""
        self.send_frames(["40" + ("" if auth is None else json.dumps(auth))])
        self.wait(lambda: self.sid or self.refused is not None or self.closed, what="CONNECT or CONNECT_ERROR")
        if self.sid is None:
            raise Refused(self.refused)
        return self.sid

    def rejoin(self, auth: Any = None) -> str:
        """After the server left "/" (a '41'), join it again on the same websocket."""
        with self._cond:
            self.sid, self.refused, self.disconnected = None, None, False
        return self.connect(auth)

    def send_frames(self, frames: list[str | bytes]) -> None:
        for f in frames:
            if isinstance(f, bytes):
                self.ws.send_binary(f)
            else:
                self.ws.send(f)

    def emit(self, data: list[Any], ack: bool = True) -> int | None:
        """Send the event ``data`` ([name, *args]); the ack id, if one was asked for."""
        ident = None
        if ack:
            ident = self._next_id
            self._next_id += 1
        self.send_frames(encode_event(data, ident))
        return ident

    def call(self, data: list[Any], timeout: float | None = None) -> Any:
        return self.wait_ack(self.emit(data), timeout)

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


NO_VALUE = "<an acknowledgement without a value>"


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


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


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
    if "Traceback" in text:
        last = [line for line in lines if re.match(r"^\w+(Error|Exception)\b", line)]
        found.append(f"{text.count('Traceback')} traceback(s) in {what}, ending {sorted(set(last))[:4]}")
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
