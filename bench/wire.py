"""The bridge's Socket.IO wire protocol as bench/ and the tests' raw clients speak it, in one
place: how a raw websocket client encodes and decodes Socket.IO packets, how the benchmarks make
a python-socketio client, and the command round trip. A new protocol version changes this
file only.

PROTOCOL_VERSION 5 (docs/protocol.md §1): Engine.IO v4 over a websocket; its control packets
(open, ping, pong) are text frames; every Socket.IO packet is one binary frame holding one
msgpack map {"type", "nsp", "data", "id"?}; commands carry an ``id`` and are answered by a
``result`` event; a client whose auth has ``bundle: true`` may get several records messages as
one ``bundle`` event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from typing import Any

import msgpack
import socketio

EIO_PATH = "/socket.io/?EIO=4&transport=websocket"   # the websocket handshake's path
TEXT, BINARY = 0x1, 0x2                               # websocket opcodes
Frame = tuple[int, bytes]                             # (opcode, payload) of one websocket frame
Packet = tuple[str, Any]
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR = range(5)  # Socket.IO packet types


# -- the raw clients' packets ------------------------------------------------------------

def encode_packet(kind: int, data: Any = None, ack_id: int | None = None, nsp: str = "/") -> list[Frame]:
    """One Socket.IO packet as the one binary websocket frame that carries it."""
    packet: dict[str, Any] = {"type": kind, "nsp": nsp}
    if data is not None:
        packet["data"] = data
    if ack_id is not None:
        packet["id"] = ack_id
    return [(BINARY, msgpack.packb(packet))]


def encode_connect(auth: dict[str, Any]) -> list[Frame]:
    """Socket.IO CONNECT to the default namespace with ``auth``."""
    return encode_packet(CONNECT, auth)


def encode_event(event: str, data: Any, ack_id: int | None = None) -> list[Frame]:
    """Socket.IO EVENT [event, data], asking for an ack if ``ack_id`` is given."""
    return encode_packet(EVENT, [event, data], ack_id)


def encode_disconnect() -> list[Frame]:
    return encode_packet(DISCONNECT)


def encode_pong() -> list[Frame]:
    return [(TEXT, b"3")]   # Engine.IO PONG, the answer to the server's PING


class Decoder:
    """Websocket frames in, packets out: ``feed`` returns one of ("open", handshake),
    ("ping", None), ("connect", {"sid": ...}), ("connect_error", data), ("disconnect", None),
    ("event", [name, *args]), ("ack", (id, args)), or None (a frame that is none of these).
    Binary values (records columns, frames) stay ``bytes`` inside the event's data."""

    def feed(self, opcode: int, payload: bytes | str) -> Packet | None:
        if opcode == BINARY:
            packet = msgpack.unpackb(payload)
            kind, data = packet.get("type"), packet.get("data")
            if kind == EVENT:
                return "event", data
            if kind == ACK:
                return "ack", (packet.get("id"), data[0] if data else None)
            if kind == CONNECT:
                return "connect", data or {}
            if kind == CONNECT_ERROR:
                return "connect_error", data
            if kind == DISCONNECT:
                return "disconnect", None
            return None
        text = payload if isinstance(payload, str) else payload.decode()
        if text[:1] == "0":
            return "open", json.loads(text[1:])
        if text == "2":
            return "ping", None
        return None


# -- python-socketio clients and commands ------------------------------------------------

_answers: "weakref.WeakKeyDictionary[Any, dict[int, asyncio.Future]]" = weakref.WeakKeyDictionary()
_command_ids = itertools.count(1)


def async_client(**options: Any) -> Any:
    """A ``socketio.AsyncClient`` set up to speak the bridge's protocol: msgpack, no size limit
    on incoming frames (a frame message can be several MiB), no reconnection, no logging unless
    ``logger`` / ``engineio_logger`` are given. It routes ``result`` events to ``command``."""
    sio = socketio.AsyncClient(**{"reconnection": False, "logger": False, "engineio_logger": False,
                                  "serializer": "msgpack", "websocket_extra_options": {"max_msg_size": 0},
                                  **options})
    pending: dict[int, asyncio.Future] = {}
    _answers[sio] = pending

    @sio.on("result")
    def _result(answer: Any) -> None:
        future = pending.pop(answer.get("id"), None) if isinstance(answer, dict) else None
        if future is not None and not future.done():
            future.set_result({k: v for k, v in answer.items() if k not in ("id", "device")})   # as the HTTP API answers

    return sio


async def connect(sio: Any, port: int, token: str, timeout: float = 10.0, bundle: bool = False) -> None:
    """Connect ``sio`` to the bridge on 127.0.0.1:``port`` over websocket; ``bundle``: take
    ``bundle`` messages (docs/protocol.md §4.9), as the page and monbridge's clients do."""
    await sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"], auth={"token": token, "bundle": bundle},
                      wait_timeout=timeout)


async def command(sio: Any, name: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Run the device command ``name`` through the bridge; return its answer
    ({"ok": true, "result": ...} or {"ok": false, "error": ...})."""
    command_id = next(_command_ids)
    payload: dict[str, Any] = {"id": command_id, "name": name}
    if args is not None:
        payload["args"] = args
    pending = _answers[sio]
    future = pending[command_id] = asyncio.get_running_loop().create_future()
    try:
        await sio.emit("command", payload)
        return await asyncio.wait_for(future, timeout)
    finally:
        pending.pop(command_id, None)
