"""bridge/packets.py: what python-socketio's packet reader makes of a client's bytes, in memory."""

from __future__ import annotations

import json
import math

import pytest
from socketio import packet as sio_packet

from bridge.packets import MALFORMED, SafePacket, StrictJSON


def decoded(encoded: str | bytes) -> SafePacket:
    return SafePacket(encoded_packet=encoded)


@pytest.mark.parametrize("encoded, reason", [
    ("2" + "[" * 5000 + "]" * 5000, "RecursionError"),
    ('2"ping"', "must be a list"),
    ("2[]", "must be a list"),
    ("2[1, 2]", "must be a list"),
    ('2["disconnect"]', "reserved"),
    ('2["connect", {"token": "x"}]', "reserved"),
    ("9", "packet type 9"),
    ('4"refused"', "packet type 4"),                 # CONNECT_ERROR goes from server to client only
    ('5["ping",{}]', "no attachments"),
    ('6[1]', "no attachments"),
    ("2[1,", "JSONDecodeError"),
    (b"\x00\x01junk", "ValueError"),
    ("x", "ValueError"),
])
def test_undecodable_packets_become_the_malformed_event(encoded, reason):
    pkt = decoded(encoded)
    assert pkt.packet_type == sio_packet.EVENT and pkt.namespace is None and pkt.id is None
    assert pkt.data[0] == MALFORMED and reason in pkt.data[1], pkt.data
    assert len(pkt.data[1]) <= 120
    assert pkt.attachment_count == 0


def test_good_packets_decode_as_python_socketio_decodes_them():
    pkt = decoded('2/,7["subscribe",{"channels":["a"]}]')
    assert (pkt.packet_type, pkt.id, pkt.data) == (sio_packet.EVENT, 7, ["subscribe", {"channels": ["a"]}])
    pkt = decoded('0{"token":"abcdefgh"}')
    assert (pkt.packet_type, pkt.data) == (sio_packet.CONNECT, {"token": "abcdefgh"})
    pkt = decoded('51-3["ping",{"_placeholder":true,"num":0}]')
    assert (pkt.packet_type, pkt.attachment_count, pkt.id) == (sio_packet.BINARY_EVENT, 1, 3)
    assert pkt.add_attachment(b"\x01\x02") is True
    assert pkt.data == ["ping", b"\x01\x02"]


def test_a_nan_in_a_request_reaches_the_handlers():
    assert math.isnan(decoded('2["ping",{"t":NaN}]').data[1]["t"])


@pytest.mark.parametrize("attachment, reason", [
    ("text", "text message"),
    (b"\x00", None),        # a second attachment where one was announced
])
def test_attachments_out_of_sequence_complete_as_the_malformed_event(attachment, reason):
    pkt = decoded('51-["ping",{"_placeholder":true,"num":0}]')
    if reason is None:
        assert pkt.add_attachment(b"first") is True   # complete: a real packet
        assert pkt.add_attachment(attachment) is True  # one more than announced
        reason = "Unexpected binary attachment"
    else:
        assert pkt.add_attachment(attachment) is True
    # complete, and of the type python-socketio dispatches as an event
    assert pkt.packet_type == sio_packet.BINARY_EVENT
    assert pkt.data[0] == MALFORMED and reason in pkt.data[1]


def test_a_placeholder_for_a_missing_attachment_is_malformed():
    pkt = decoded('51-["ping",{"_placeholder":true,"num":5}]')
    assert pkt.add_attachment(b"x") is True
    assert pkt.data[0] == MALFORMED and "IndexError" in pkt.data[1]


def test_strict_json_never_writes_nan_or_infinity():
    before = StrictJSON.replaced
    text = StrictJSON.dumps({"a": [1.5, math.nan, {"b": math.inf}], "c": -math.inf}, separators=(",", ":"))
    assert text == '{"a":[1.5,null,{"b":null}],"c":null}'
    assert StrictJSON.replaced == before + 1
    assert StrictJSON.dumps({"a": 1.5}) == json.dumps({"a": 1.5})
    assert StrictJSON.replaced == before + 1
    pkt = SafePacket(sio_packet.ACK, data=[{"t": math.nan}], id=3)
    assert pkt.encode() == '33[{"t":null}]'
