"""bridge/outbox.py, the one read of python-engineio internals: fails loudly when the
installed library no longer has what it reads."""

from __future__ import annotations

import socketio

from bridge import outbox


def test_the_installed_engineio_still_has_the_outgoing_queue():
    assert outbox.check_library() is None


def test_queued_counts_packets_and_bytes_of_a_real_engineio_socket():
    server = socketio.Server(async_mode="threading")
    import engineio.packet
    import engineio.socket

    sock = engineio.socket.Socket(server.eio, "eio-sid")
    server.eio.sockets["eio-sid"] = sock
    server.manager.connect("eio-sid", "/")  # the sid python-socketio gives this connection
    sid = server.manager.sid_from_eio_sid("eio-sid", "/")
    assert outbox.queued(server, sid) == (0, 0)
    sock.send(engineio.packet.Packet(engineio.packet.MESSAGE, data=b"x" * 100))
    sock.send(engineio.packet.Packet(engineio.packet.MESSAGE, data="hello"))
    assert outbox.queued(server, sid) == (2, 105)
    assert outbox.queued(server, "no-such-client") is None
