"""bench.relay's process-hop echo (HopEcho): a real helper process answers over a real socket pair."""

from __future__ import annotations

from bench.relay import HopEcho


def test_the_helper_answers_each_message_with_the_same_json_and_exits_with_its_server():
    hop = HopEcho()
    try:
        payloads = [{"name": "echo", "args": {"value": float(i)}} for i in range(50)]
        payloads.append({"nested": [1, 2.5, "x", None, True], "text": "ü" * 300})
        assert [hop.call(p) for p in payloads] == payloads
    finally:
        assert hop.close() == 0   # its recv returned nothing: it left by itself
