"""bridge/packets.py: what python-socketio's packet reader makes of a client's bytes, in memory."""

from __future__ import annotations

import math

import msgpack
import pytest
from socketio import packet as sio_packet

from bridge.packets import MALFORMED, MAX_NESTING, SafePacket


def decoded(encoded: str | bytes) -> SafePacket:
    return SafePacket(encoded_packet=encoded)


def pack(obj) -> bytes:
    return msgpack.packb(obj)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("encoded, reason", [
    ('2["ping",{}]', "text message"),                                 # the JSON wire of protocol 2
    (b"\xc1", "FormatError"),                                         # never used in msgpack
    (pack({"type": 2, "nsp": "/", "data": ["ping"]}) + b"\x00", "ExtraData"),
    (pack(["ping", {}]), "must be a msgpack map"),
    (pack({"type": 2, "data": ["ping"]}), "'nsp'"),
    (pack({"type": 9, "nsp": "/", "data": []}), "packet type 9"),
    (pack({"type": 4, "nsp": "/", "data": "refused"}), "packet type 4"),  # CONNECT_ERROR: server to client only
    (pack({"type": 5, "nsp": "/", "data": ["ping"]}), "packet type 5"),  # no binary events with msgpack
    (pack({"type": True, "nsp": "/", "data": ["ping"]}), "packet type True"),
    (pack({"type": 2.0, "nsp": "/", "data": ["ping"]}), "packet type 2.0"),
    (pack({"type": 2, "nsp": "/", "data": ["ping", {"t": msgpack.Timestamp(1, 0)}]}), "type Timestamp"),
    (pack({"type": 2, "nsp": "/", "data": "ping"}), "must be a list"),
    (pack({"type": 2, "nsp": "/", "data": []}), "must be a list"),
    (pack({"type": 2, "nsp": "/", "data": [1, 2]}), "must be a list"),
    (pack({"type": 2, "nsp": "/", "data": ["disconnect"]}), "reserved"),
    (pack({"type": 2, "nsp": "/", "data": ["connect", {"token": "x"}]}), "reserved"),
    (pack({"type": 2, "nsp": "/", "data": [MALFORMED, "x"]}), "reserved"),
    (pack({"type": 2, "nsp": "/", "data": ["ping"], "id": "7"}), "'id'"),
    (pack({"type": 2, "nsp": "/", "data": ["ping"], "id": -1}), "'id'"),
    (pack({"type": 2, "nsp": "/", "data": ["ping", msgpack.ExtType(1, b"x")]}), "extension type 1"),
    (pack({"type": 2, "nsp": "/", "data": ["ping", nested(MAX_NESTING + 5)]}), "levels deep"),
    (b"\x91" * 5000 + b"\xc0", "Error"),                              # 5,000 nested arrays: msgpack's own limit
    (b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data\x91\xa2\xff\xfe", "UnicodeDecodeError"),
])
def test_undecodable_packets_become_the_malformed_event(encoded, reason):
    pkt = decoded(encoded)
    assert pkt.packet_type == sio_packet.EVENT and pkt.namespace == "/" and pkt.id is None
    assert pkt.data[0] == MALFORMED and reason in pkt.data[1], pkt.data
    assert len(pkt.data[1]) <= 120 and "\n" not in pkt.data[1]
    assert pkt.attachment_count == 0


def test_an_empty_message_is_malformed():
    pkt = decoded(b"")
    assert pkt.data[0] == MALFORMED and "empty" in pkt.data[1]


def test_good_packets_decode_as_python_socketio_decodes_them():
    pkt = decoded(pack({"type": 2, "nsp": "/", "data": ["subscribe", {"channels": ["a"]}], "id": 7}))
    assert (pkt.packet_type, pkt.namespace, pkt.id, pkt.data) == \
        (sio_packet.EVENT, "/", 7, ["subscribe", {"channels": ["a"]}])
    pkt = decoded(pack({"type": 0, "nsp": "/", "data": {"token": "abcdefgh"}}))
    assert (pkt.packet_type, pkt.data) == (sio_packet.CONNECT, {"token": "abcdefgh"})
    pkt = decoded(pack({"type": 2, "nsp": "/", "data": ["ping", b"\x01\x02", nested(MAX_NESTING - 2)]}))
    assert pkt.data[:2] == ["ping", b"\x01\x02"]
    assert pkt.attachment_count == 0


def test_a_nan_in_a_request_reaches_the_handlers():
    assert math.isnan(decoded(pack({"type": 2, "nsp": "/", "data": ["ping", {"t": math.nan}]})).data[1]["t"])


def test_what_the_bridge_sends_is_one_msgpack_map_with_binary_inside():
    frame = b"\x00\x01\x02\xff"
    pkt = SafePacket(sio_packet.EVENT, data=["data", {"channel": "cam", "data": frame}], namespace="/")
    encoded = pkt.encode()
    assert isinstance(encoded, bytes)
    assert msgpack.unpackb(encoded) == {"type": 2, "nsp": "/", "data": ["data", {"channel": "cam", "data": frame}]}
    ack = SafePacket(sio_packet.ACK, data=[{"ok": True}], namespace="/", id=3)
    assert msgpack.unpackb(ack.encode()) == {"type": 3, "nsp": "/", "data": [{"ok": True}], "id": 3}
