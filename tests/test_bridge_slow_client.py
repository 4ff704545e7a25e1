"""A client that stops reading must not grow the bridge or slow the other clients down.

The slow client is a raw websocket speaking bench/wire.py's msgpack packets by hand:
it connects, subscribes to a 2.4 MB frame channel published at 60 Hz, and never reads
again. A normal python-socketio client subscribes to the same channel.
"""

from __future__ import annotations

import time

import websocket

from bench import wire
from bridge_support import http, mb, rss_bytes  # noqa: F401  (mb: fixture)

WINDOW = 10.0            # seconds the slow client sits there
BASELINE = 5.0           # seconds the normal client is measured alone first
RSS_LIMIT = 60 * 2**20   # growth allowed for the bridge process
FRAME_BYTES = 200_000 * 3 * 4


def open_raw_client(port: int, token: str) -> websocket.WebSocket:
    """Connect, authenticate and subscribe to ``cloud`` by hand; return the socket."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}{wire.EIO_PATH}", timeout=15)
    decoder = wire.Decoder()
    kind, handshake = decoder.feed(*ws.recv_data()) or (None, None)
    assert kind == "open" and "sid" in handshake, (kind, handshake)

    def send(frames: list[wire.Frame]) -> None:
        for opcode, payload in frames:
            ws.send(payload, opcode)

    send(wire.encode_connect({"token": token}))
    # the bridge's connect handler emits hello/state before the CONNECT packet; skip to it
    deadline = time.monotonic() + 15
    while True:
        packet = decoder.feed(*ws.recv_data())
        if packet is not None and packet[0] == "connect":
            assert "sid" in packet[1], packet
            break
        assert time.monotonic() < deadline, "no CONNECT packet"
    send(wire.encode_event("subscribe", {"channels": ["cloud"], "rate": 60}, 0))
    return ws


def frames_during(normal, seconds: float, sample=lambda: None) -> list[dict]:
    """The ``cloud`` frames the normal client gets over ``seconds``, calling ``sample()``
    between frames (the wait for the next frame is the pacing, not a sleep)."""
    mark = normal.mark()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        sample()
        normal.wait_for(lambda n=len(normal.data("cloud", mark)): len(normal.data("cloud", mark)) > n,
                        timeout=5, what="the next frame for the normal client")
    return normal.data("cloud", mark)


def published_over(frames: list[dict]) -> int:
    """Frames the device published from the first of ``frames`` to the last."""
    return frames[-1]["seq"][0] - frames[0]["seq"][0] + 1


def test_a_client_that_stops_reading_stays_bounded_and_others_keep_their_rate(mb):
    dev = mb.device(None, "cloud")
    bridge_pid = dev.bridge_pid()
    with mb.connected(dev.url) as normal:
        normal.subscribe("cloud", rate=60)
        dev.request("cloud 60", "clouding")
        normal.wait_for(lambda: len(normal.data("cloud")) >= 30, timeout=30, what="the normal client to get going")
        # what this machine lets the normal client take of 2.4 MB at 60 Hz before the slow
        # client comes: the rate it must keep
        first = frames_during(normal, BASELINE)
        alone = len(first) / published_over(first)
        base_rss = rss_bytes(bridge_pid)

        raw = open_raw_client(dev.url.port, dev.url.token)
        try:
            rss = [base_rss]
            frames = frames_during(normal, WINDOW, lambda: rss.append(rss_bytes(bridge_pid)))
            peak = max(rss)
            rows = {r["id"]: r for r in http(dev.url, "/api/clients")[2]["clients"]}
        finally:
            raw.close()

        # the slow client really was stuck: it got a few frames, then the bridge skipped it
        slow = [r for sid, r in rows.items() if sid != normal.sid]
        assert len(slow) == 1, rows
        slow_sub = slow[0]["subscriptions"][0]
        assert slow_sub["channel"] == "cloud" and slow_sub["skipped"] > 0, slow[0]

        published = published_over(frames)
        delivered = len(frames)
        assert sum(f["missed"] for f in frames[1:]) + delivered == published  # missed counts the rest
        assert published >= 0.5 * 60 * WINDOW, f"the device published only {published} frames"
        growth = peak - base_rss
        summary = (f"the normal client got {delivered} of {published} frames ({delivered / published:.0%}; "
                   f"alone before, {alone:.0%}); "
                   f"the bridge grew by {growth / 2**20:.0f} MB (~{growth / FRAME_BYTES:.0f} frames of "
                   f"{FRAME_BYTES / 2**20:.1f} MB) while the slow client's outbox held {slow[0]['queued']} packets")
        print(summary)
        assert delivered >= 0.8 * alone * published, summary
        assert growth < RSS_LIMIT, summary
