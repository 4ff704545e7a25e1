"""Socket.IO packets as the bridge reads and writes them: msgpack, and malformed input
becomes an event.

Plugged into python-socketio through its public ``serializer`` option: ``SafePacket`` is a
subclass of the library's own ``MsgPackPacket`` (the format of the ``socket.io-msgpack-parser``
package the page uses). Every Socket.IO packet is one binary websocket frame holding one
msgpack map::

    {"type": 0-4, "nsp": "/", "data": [...], "id": 7}      # "id" only on acks and on events that want one

Binary payloads (records columns, frames) travel inside it as msgpack ``bin``: no attachments,
so nothing can arrive out of sequence or interleave with another message (docs/protocol.md §1).
Standard library, msgpack and python-socketio only; no Flask, no sockets.

A client's bytes that cannot be decoded (not msgpack, too deeply nested, invalid UTF-8, an
extension type, not a map with an integer ``type`` and a string ``nsp``, an event that is not a
list starting with a name, a reserved event name, a packet type a client may not send) would
make python-socketio raise inside its reader: no answer, and a traceback in the log per packet.
``SafePacket`` turns each of these into the event ``MALFORMED`` with a short reason, which the
bridge handles like any other event (it names the client, answers with an ``error`` event and
disconnects it).
"""

from __future__ import annotations

from typing import Any

import msgpack
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

MALFORMED = "monbridge:malformed"  # the event a packet that cannot be decoded becomes
REASON_CHARS = 120                 # kept of the decoder's message in the reason
# python-socketio would run the server's own handlers for these if a client sent them as events
# ... and "*" would reach the catch-all handler with its arguments shifted; MALFORMED is ours
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "*", MALFORMED})
CLIENT_PACKET_TYPES = (sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT, sio_packet.ACK)
MAX_NESTING = 128  # msgpack containers inside one packet; the handlers refuse deeper values anyway


class _Refused(ValueError):
    pass


def _no_extension_types(code: int, data: bytes) -> Any:
    raise _Refused(f"msgpack extension type {code} is not part of the protocol")


class SafePacket(MsgPackPacket):
    """A msgpack Socket.IO packet whose decoding never raises (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        encoded = kwargs.get("encoded_packet")
        if encoded is not None and not encoded:  # the base class does not decode an empty message
            self._malformed("an empty message")

    def decode(self, encoded_packet: Any) -> int:
        try:
            if not isinstance(encoded_packet, (bytes, bytearray)):
                raise _Refused("a text message: this bridge speaks msgpack (binary messages only)")
            decoded = msgpack.unpackb(encoded_packet, ext_hook=_no_extension_types,
                                      max_array_len=1_000_000, max_map_len=100_000)
            if not isinstance(decoded, dict):
                raise _Refused(f"a packet must be a msgpack map, got {type(decoded).__name__}")
            kind, namespace = decoded.get("type"), decoded.get("nsp")
            if type(kind) is not int or kind not in CLIENT_PACKET_TYPES:
                raise _Refused(f"packet type {kind!r} is not one a client may send")
            if not isinstance(namespace, str):
                raise _Refused("a packet's 'nsp' must be a string")
            packet_id = decoded.get("id")
            if packet_id is not None and (isinstance(packet_id, bool) or not isinstance(packet_id, int)
                                          or packet_id < 0):
                raise _Refused(f"a packet's 'id' must be a non-negative integer, got {type(packet_id).__name__}")
            data = decoded.get("data")
            if kind == sio_packet.EVENT:
                if not _is_event(data):
                    raise _Refused("an event must be a list starting with the event's name")
                if data[0] in RESERVED_EVENTS:
                    raise _Refused(f"{data[0]!r} is reserved, not an event a client may send")
            problem = _problem(data)
            if problem:
                raise _Refused(problem)
        except (ValueError, TypeError, msgpack.StackError, RecursionError) as exc:
            # msgpack's own errors (ExtraData, FormatError, StackError, UnicodeDecodeError)
            # are ValueError subclasses
            return self._malformed(str(exc) if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}")
        self.packet_type, self.namespace, self.id, self.data = kind, namespace, packet_id, data
        return 0

    def _malformed(self, reason: str) -> int:
        """Become the event ``[MALFORMED, reason]`` on the default namespace, without an ack."""
        self.packet_type = sio_packet.EVENT
        self.namespace = "/"
        self.id = None
        self.data = [MALFORMED, " ".join(reason.split())[:REASON_CHARS]]  # one line, short
        return 0


def _is_event(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], str)


_LEAVES = (str, int, float, bytes, bool, type(None))  # what msgpack's core types decode to


def _problem(value: Any) -> str | None:
    """Why a decoded packet's data is refused: more than MAX_NESTING levels of lists and maps,
    or a value of another type (msgpack's timestamp extension type, -1, decodes to a
    Timestamp without asking ``ext_hook``). Breadth first, without recursion."""
    depth, level = 0, [value]
    while level:
        nested = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(item.values())
            elif isinstance(item, list):
                nested.extend(item)
            elif not isinstance(item, _LEAVES):
                return f"a value of type {type(item).__name__} (msgpack extension types are not part of the protocol)"
        if nested or any(isinstance(i, (dict, list)) for i in level):
            depth += 1
            if depth > MAX_NESTING:
                return f"the packet nests more than {MAX_NESTING} levels deep"
        level = nested
    return None
