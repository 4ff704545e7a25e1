"""What is waiting to be sent to one client: the one read of python-engineio internals.

python-socketio and python-engineio have no public way to ask how much is queued for a client,
and the bridge needs it to tell a client that stops reading from one that keeps up
(docs/protocol.md §5). So this module, and nothing else in the project, reads
``Server.eio.sockets[eio_sid].queue`` (engine.io's outgoing packet queue for a connection).
``check_library()`` says whether the installed engine.io still has it; the bridge calls it at
start and tests/test_outbox.py fails when it changes. pyproject.toml pins python-engineio's
minor version for this reason. No Flask; no sockets.
"""

from __future__ import annotations

from typing import Any

import engineio
import engineio.socket
import socketio


def check_library() -> str | None:
    """None if the installed python-engineio has what ``queued`` reads; else what changed."""
    server = socketio.Server(async_mode="threading")
    sockets = getattr(server.eio, "sockets", None)
    if not isinstance(sockets, dict):
        return f"engineio {engineio.__version__ if hasattr(engineio, '__version__') else '?'}: Server.sockets is gone"
    probe = engineio.socket.Socket(server.eio, "probe")
    queue = getattr(probe, "queue", None)
    if queue is None or not callable(getattr(queue, "qsize", None)) or not hasattr(queue, "queue"):
        return "engineio: Socket.queue is no longer a queue.Queue"
    return None


def queued(server: socketio.Server, sid: str) -> tuple[int, int] | None:
    """(packets, bytes) waiting in the outgoing queue of client ``sid``; None if it is gone.

    Safe to call from any task: a queue mutated meanwhile is read again at the next call
    (bytes then count as 0)."""
    try:
        eio_sid = server.manager.eio_sid_from_sid(sid, "/")
        queue = server.eio.sockets[eio_sid].queue
    except (KeyError, AttributeError, TypeError):
        return None
    packets = queue.qsize()
    if packets == 0:  # the usual case: the writer keeps up
        return 0, 0
    try:
        waiting = sum(_size(p) for p in list(queue.queue))
    except (RuntimeError, AttributeError, TypeError):  # mutated by the writer meanwhile
        waiting = 0
    return packets, waiting


def _size(pkt: Any) -> int:
    data = getattr(pkt, "data", None) if pkt is not None else None
    return len(data) if isinstance(data, (bytes, bytearray, str)) else 0
