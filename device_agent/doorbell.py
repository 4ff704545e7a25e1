"""Doorbells: wake a process that waits for commands or replies, with no polling delay.

Standard library only. A doorbell is a non-blocking Unix datagram socket bound to an
abstract address on Linux (no file, gone when the process dies) or to a socket file in
a private temporary directory elsewhere. Ringing sends one byte; a full socket buffer
means the bell is already ringing, so the ring is dropped. The bell carries no data:
the message itself is in shared memory, so a spurious ring costs one empty check.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import tempfile
import threading

_ABSTRACT = sys.platform.startswith("linux")


class Doorbell:
    """The receiving end. ``address`` is what the other side passes to ``ring``."""

    def __init__(self, label: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._dir = None
        if _ABSTRACT:
            name = f"monbridge.{label}.{os.getpid()}.{id(self):x}"
            self._sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="monbridge-")
            self.address = os.path.join(self._dir, "bell")
            self._sock.bind(self.address)

    def fileno(self) -> int:
        return self._sock.fileno()

    def wait(self, timeout: float | None) -> bool:
        """Block until rung or ``timeout`` seconds pass; return True if rung. Drains."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if ready:
            self.drain()
        return bool(ready)

    def drain(self) -> None:
        try:
            while True:
                self._sock.recv(64)
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        self._sock.close()
        if self._dir:
            try:
                os.unlink(self.address)
                os.rmdir(self._dir)
            except OSError:
                pass


class Ringer:
    """The sending end; one per process is enough. Never blocks."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._lock = threading.Lock()

    def ring(self, address: str) -> bool:
        """Ring the doorbell at ``address``; False if nobody is listening there."""
        target = "\0" + address[1:] if address.startswith("@") else address
        try:
            with self._lock:
                self._sock.sendto(b"\x01", target)
            return True
        except BlockingIOError:
            return True  # its buffer is full: it has rings to wake up for already
        except (ConnectionRefusedError, FileNotFoundError, OSError):
            return False

    def close(self) -> None:
        self._sock.close()
