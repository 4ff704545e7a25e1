"""Network plumbing per async mode: the listening socket, running and stopping the server.

Why TCP_NODELAY: without it ~25% of 60 Hz messages arrive 10-30 ms late (Nagle's
algorithm holds a small write until the previous one is acknowledged, and the client delays
its ACK). It is set on the listening socket; Linux copies it to every accepted connection.

eventlet mode expects ``eventlet.monkey_patch()`` to have run before anything else was
imported (bridge/cli.py does it for ``serve``), so sockets, select and locks here are green.
"""

from __future__ import annotations

import logging
import math
import socket
from typing import Any, Callable

from device_agent.settings import DEFAULT_PORT

log = logging.getLogger("bridge")
SEND_BUFFER = 512 * 1024  # bytes; Linux doubles it
MAX_CONNECTIONS = 4096    # eventlet serves this many at once (its default 1024 let idle ones lock others out)
# seconds a connection may send or take nothing before it is closed: a request never finished,
# a client gone without a word (a websocket carries a ping and its answer every 10 s)
SOCKET_TIMEOUT = 30.0


def hostname() -> str:
    return socket.gethostname()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # a modest send buffer (accepted sockets inherit it): a client that reads slowly
        # then backs up in the engine.io queue, where the relay sees it and skips ahead,
        # instead of in tens of MB of kernel buffer where it only adds lag
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def listen(host: str, port: int | None) -> tuple[socket.socket, int]:
    """Bind ``host:port``; ``None`` means DEFAULT_PORT, or a free port if that is taken."""
    try:
        sock = _bind(host, DEFAULT_PORT if port is None else port)
    except OSError as exc:
        if port is None:
            log.info("port %d is taken; using a free port instead", DEFAULT_PORT)
            sock = _bind(host, 0)
        elif exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise OSError(exc.errno, f"port {port} on {host} is in use; choose another with --port N "
                                     f"(or MON=port=N), or --port 0 for a free one") from None
        else:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock, sock.getsockname()[1]


class NoWebSocketCompression:
    """WSGI wrapper: never negotiate permessage-deflate.

    Browsers always offer it and the websocket servers accept, after which every frame is
    zlib-compressed separately for every client: ~12 ms per 256 KiB frame per client here,
    for float data that hardly compresses. Dropping the offer keeps frames raw.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        environ["wsgi.errors"] = _ERRORS  # the servers' own notes (eventlet's websocket writes here)
        return self.app(environ, start_response)


class _ErrorsToLog:
    """A ``wsgi.errors`` stream that writes each note as one line to the bridge's log (which
    rate-limits it), instead of to stderr: the device's terminal when a device launched us."""

    def write(self, text: str) -> None:
        text = " ".join(str(text).split())
        if text:
            log.warning("web server: %s", text[:300])

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


_ERRORS = _ErrorsToLog()


def server(mode: str, sock: socket.socket, app: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """Return (run, stop): run serves until stop is called (from any task)."""
    app = NoWebSocketCompression(app)
    if mode == "eventlet":
        import eventlet.wsgi
        import greenlet

        main = greenlet.getcurrent()

        class Protocol(eventlet.wsgi.HttpProtocol):
            def log_message(self, format: str, *args: Any) -> None:
                # http.server's notes on requests it cannot parse ("code 400, message Bad
                # request version") go to stderr, the device's terminal: one log line instead
                log.warning("web server: %s", " ".join((format % args).split())[:300])

        def run() -> None:
            eventlet.wsgi.server(sock, app, log_output=False, log=_QuietLog(), debug=False, protocol=Protocol,
                                 max_size=MAX_CONNECTIONS, socket_timeout=SOCKET_TIMEOUT)

        def stop() -> None:  # eventlet.wsgi.server returns on SystemExit
            eventlet.hubs.get_hub().schedule_call_global(0, main.throw, SystemExit(0))

        return run, stop

    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    class NoDelayHandler(WSGIRequestHandler):
        disable_nagle_algorithm = True

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    host, port = sock.getsockname()[:2]
    srv = ThreadedWSGIServer(host, port, app, handler=NoDelayHandler, fd=sock.fileno())
    srv.daemon_threads = True
    import threading

    def stop_threaded() -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    return srv.serve_forever, stop_threaded


class _QuietLog:
    def write(self, *args: Any) -> None:
        pass

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        # eventlet.wsgi logs a request that raised as a traceback at info level: one line
        if isinstance(msg, str) and msg.startswith("Traceback"):
            log.warning("a request failed: %s", msg.strip().splitlines()[-1][:300])

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.error(msg, *args)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.warning(msg, *args)


def poll_grid(deadline: float, grid: float) -> float:
    """``deadline`` moved up to the next multiple of ``grid``. eventlet wakes its hub when a
    timer expires even if it was cancelled, so waits that a ring ends early, each with its
    own timeout, wake the process once more each; on a grid their timeouts fall together."""
    return math.ceil(deadline / grid) * grid


def wait_readable(fd: int, timeout: float) -> bool:
    """Wait until ``fd`` is readable or ``timeout`` passes. Under eventlet, select is
    monkey-patched (bridge/cli.py), so this yields to other greenlets instead of blocking."""
    import select

    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)
