"""A TCP load balancer with failover, for tests and benchmarks of edges (docs/scaling.md).

Listens on 127.0.0.1 and a free port; each connection goes to the first backend, in order,
that accepts a TCP connection, and bytes are copied both ways until either side closes. An
edge that dies closes its connections: the client reconnects, and the balancer takes it to
the next live edge. This is what nginx or HAProxy do in front of edges (docs/scaling.md has
an nginx recipe); here without installing either. Standard library only.
"""

from __future__ import annotations

import socket
import threading

CONNECT_TIMEOUT = 1.0   # seconds to wait for a backend's TCP accept before trying the next


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self.chosen: list[tuple[str, int]] = []   # the backend each accepted connection went to
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, name="balancer", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for backend in self.backends:
            try:
                upstream = socket.create_connection(backend, timeout=CONNECT_TIMEOUT)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self.chosen.append(backend)
                self._socks.update((client, upstream))
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            self._pipe(client, upstream)
            return
        client.close()   # no backend is up: the client retries

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):   # one side gone: end both, so the client sees the edge go
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._socks.discard(s)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
