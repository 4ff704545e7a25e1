"""Socket.IO packets as the bridge reads and writes them: malformed input becomes an event,
and every packet sent is strict JSON.

Plugged into python-socketio through its public ``serializer`` option (a ``Packet``
subclass, like the library's own ``MsgPackPacket``) and ``json`` option. Standard library
and python-socketio only; no Flask, no sockets.

python-socketio raises from inside its packet reader when a client sends JSON nested deeper
than the interpreter's recursion limit, a binary attachment nobody announced, an event that
is not a list starting with a name, or an unknown packet type: the client gets no answer and
the log a traceback per packet. ``SafePacket`` turns each of these into the event
``MALFORMED`` with a short reason, which the bridge handles like any other event (it names
the client, answers with an ``error`` event and disconnects it).
"""

from __future__ import annotations

import json
import math
from typing import Any

from socketio import packet as sio_packet

MALFORMED = "monbridge:malformed"  # the event a packet that cannot be decoded becomes
REASON_CHARS = 120                 # kept of the decoder's message in the reason
# python-socketio would run the server's own handlers for these if a client sent them as events
# ... and "*" would reach the catch-all handler with its arguments shifted; MALFORMED is ours
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "*", MALFORMED})


class StrictJSON:
    """The ``json`` module python-socketio uses: reads what the standard library reads (so a
    ``NaN`` in a request reaches the validators and gets ``bad_request``), writes only strict
    JSON (a non-finite number goes out as ``null``, which a browser's ``JSON.parse`` accepts)."""

    replaced = 0  # how many packets needed non-finite numbers replaced (a bug upstream)

    @staticmethod
    def loads(s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s, **kwargs)

    @classmethod
    def dumps(cls, obj: Any, **kwargs: Any) -> str:
        kwargs["allow_nan"] = False
        try:
            return json.dumps(obj, **kwargs)
        except ValueError:
            cls.replaced += 1
            return json.dumps(_finite(obj), **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class SafePacket(sio_packet.Packet):
    """A ``socketio.packet.Packet`` whose decoding never raises (see the module docstring)."""

    json = StrictJSON

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        encoded = kwargs.get("encoded_packet")
        if encoded is not None and not encoded:  # the base class does not decode an empty message
            self._malformed("an empty message")

    def decode(self, encoded_packet: str | bytes) -> int:
        try:
            attachments = super().decode(encoded_packet)
        except (ValueError, TypeError, IndexError, RecursionError) as exc:
            return self._malformed(f"{type(exc).__name__}: {exc}")
        kind = self.packet_type
        if kind not in (sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT, sio_packet.ACK,
                        sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            return self._malformed(f"packet type {kind!r} is not one a client may send")
        if kind in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            if not _is_event(self.data):
                return self._malformed("an event must be a list starting with the event's name")
            if self.data[0] in RESERVED_EVENTS:
                return self._malformed(f"{self.data[0]!r} is reserved, not an event a client may send")
        if kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK) and attachments < 1:
            return self._malformed("a binary packet announced no attachments")
        return attachments

    def add_attachment(self, attachment: Any) -> bool:
        """Called by python-socketio for each message after a binary packet; True when complete.

        A malformed sequence completes at once, as the event ``MALFORMED`` (a complete
        binary packet is dispatched as an event only when its type is BINARY_EVENT)."""
        if not isinstance(attachment, (bytes, bytearray)):
            self._malformed("a text message arrived where a binary attachment was announced",
                            sio_packet.BINARY_EVENT)
            return True
        try:
            return super().add_attachment(attachment)
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            self._malformed(f"{type(exc).__name__}: {exc}", sio_packet.BINARY_EVENT)
            return True

    def _malformed(self, reason: str, packet_type: int = sio_packet.EVENT) -> int:
        """Become the event ``[MALFORMED, reason]`` on the default namespace, without an ack."""
        self.packet_type = packet_type
        self.namespace = None
        self.id = None
        self.data = [MALFORMED, " ".join(reason.split())[:REASON_CHARS]]  # one line, short
        return 0


def _is_event(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], str)
