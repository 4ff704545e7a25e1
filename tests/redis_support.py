"""A real redis-server for the fleet tests (issue 15 §3), started and stopped by the test.

    from redis_support import redis_server  # noqa: F401  (the fixture)

    def test_x(redis_server):
        r = redis.Redis.from_url(redis_server.url)
        ...
        redis_server.restart()       # same port, data gone (--save '' --appendonly no)

``redis_server`` (one per test) and ``redis_server_module`` (one per test module; tests that
share it use their own keys, or call ``flush()``) run ``redis-server --bind 127.0.0.1 --port
<free> --save '' --appendonly no`` in a temporary directory, wait until it answers PING
(polling with a deadline), yield a ``RedisServer``, and stop it by PID: SIGTERM, then SIGKILL
after a deadline. The server does not carry the conftest guard's MONBRIDGE_TEST_TAG, so a
module-wide server is not mistaken for a test's stray process; it is stopped here instead.

No redis-server on the machine fails the tests that use these fixtures, with the command
that installs it; it never skips them. Talks RESP over a plain socket (PING), so the fixture
itself needs no redis-py; the tests use redis-py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from bench.procs import alive
from conftest import TAG_VAR

START_TIMEOUT = 15.0   # redis-server answers PING within milliseconds; a busy box gets slack
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 5      # a free port can be taken between choosing it and binding it
INSTALL_HINT = ("redis-server is not installed, and the fleet tests start a real one: "
                "sudo apt-get install redis-server (Debian/Ubuntu; bash .ci/run installs it), "
                "or set MONBRIDGE_REDIS_SERVER to its path")


def redis_server_binary() -> str:
    """The redis-server to run: $MONBRIDGE_REDIS_SERVER, else the one on PATH; fails the test
    (not a skip) with the install command when there is none."""
    wanted = os.environ.get("MONBRIDGE_REDIS_SERVER")
    found = shutil.which(wanted or "redis-server")
    if found is None and wanted:
        pytest.fail(f"MONBRIDGE_REDIS_SERVER={wanted!r} is not a program; unset it to use redis-server from "
                    f"PATH ({INSTALL_HINT.split(': ', 1)[1]})", pytrace=False)
    if found is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int, timeout: float = 1.0) -> bool:
    """True if a Redis on 127.0.0.1:``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1, stopped and restarted by PID."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "redis-server.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start on ``self.port`` (a free one the first time) and wait for PONG."""
        attempts = 1 if self.port else PORT_ATTEMPTS
        for _ in range(attempts):
            port = self.port or free_port()
            if self._start_on(port):
                self.port = port
                self.starts += 1
                return
        raise AssertionError(f"redis-server did not start on 127.0.0.1:{port} within {START_TIMEOUT} s "
                             f"({attempts} attempt(s)); its log:\n{self.log_tail()}")

    def _start_on(self, port: int) -> bool:
        env = {k: v for k, v in os.environ.items() if k != TAG_VAR}
        argv = [self.binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:      # exited: the port was taken, or a bad option
                self.proc = None
                return False
            if ping(port) and self.proc.poll() is None:   # PONG from our process, not another
                return True
            time.sleep(0.01)                      # yields the CPU between polls; PONG decides
        self.stop()
        return False

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop, then start on the same port: an empty Redis (nothing is persisted), with a new
        ``run_id``; clients see their connections closed."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """FLUSHALL: a module-wide server made empty for the next test."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(64).startswith(b"+OK")


def _serve(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), tmp)
    server.start()
    try:
        yield server
    finally:
        pid = server.pid
        server.stop()
        if pid is not None:
            assert not alive(pid), f"redis-server {pid} still running after stop()"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (see the module docstring)."""
    yield from _serve(tmp_path)


@pytest.fixture(scope="module")
def redis_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the tests of one module: use distinct keys, or ``flush()``."""
    yield from _serve(tmp_path_factory.mktemp("redis"))
