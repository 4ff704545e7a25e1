"""Shared helpers for tests that run real device processes over real shared memory.

Every process a test starts goes through ``launch`` (or ``run_python``): a fresh
interpreter (``subprocess`` + ``sys.executable``, never fork) whose stdout/stderr are
read line by line on background threads, so a test can wait for a line with a deadline
instead of sleeping. Each process carries ``MONBRIDGE_TEST_TAG=<pytest pid>.<test>.<n>.x``
in its environment; its children (multiprocessing's resource tracker, a bridge) inherit
it, which is how teardown finds every descendant, including ones reparented to init.

Helpers: ``wait_for(predicate, timeout)``, ``segments_of(name)``, ``DeviceProcess``
(``expect``, ``send``, ``request``, ``stop``, ``wait_gone``, ``kill_group``).

Fixtures:
    device_name   a unique device name (pid + counter + test name); its segments are checked
    new_device_name()  more unique names, checked the same way
    launch(source, name, mon="bridge=0") -> DeviceProcess, after its "ready" line
    run_python(code, mon=None) -> CompletedProcess, for short probes
    attach(name)  a DeviceAttachment in the test process, closed at teardown

Teardown, in this order: processes still running are killed (and the test fails: stop
them yourself), every tagged descendant must exit, then /dev/shm must hold no
``monbridge.<name>.*`` segment of any name the test took (leftovers are removed and the
test fails). After a test that already failed, teardown only cleans up.

Device scripts conventionally: ``mon = device_agent.start(sys.argv[1])``, set up,
``print("ready", flush=True)``, then act on lines read from stdin until EOF or "quit".
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from device_agent.shm import list_segments, unlink_segment

REPO = Path(__file__).resolve().parent.parent
TAG_VAR = "MONBRIDGE_TEST_TAG"
START_TIMEOUT = 30.0   # a fresh interpreter importing numpy, on 2 busy cores
TIMEOUT = 15.0         # anything else we wait for
_names = itertools.count(1)
_tags = itertools.count(1)


# -- waiting --------------------------------------------------------------------------

def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "",
             interval: float = 0.005, ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Exceptions of the types in ``ignore`` count as "not yet". Raises AssertionError
    naming ``what`` after ``timeout`` seconds. The short sleep between polls only yields
    the CPU; it never stands in for synchronisation.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}{detail}")
        time.sleep(interval)


def segments_of(name: str) -> list[str]:
    """Names of the /dev/shm segments of device ``name``."""
    return list_segments(f"monbridge.{name}.")


def tagged_pids(tag_prefix: str) -> list[int]:
    """Pids of live processes whose environment has MONBRIDGE_TEST_TAG starting with ``tag_prefix``."""
    needle = f"{TAG_VAR}={tag_prefix}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X") and any(v.startswith(needle) for v in env.split(b"\0")):
            pids.append(int(entry))
    return pids


# -- processes ------------------------------------------------------------------------

class DeviceProcess:
    """A child interpreter with line-buffered stdout/stderr read on background threads."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, tag: str) -> None:
        self.tag = tag
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, None), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream: Any, keep: list[str], lines: queue.Queue | None) -> None:
        for line in stream:
            keep.append(line)
            if lines is not None:
                lines.put(line.rstrip("\n"))
        if lines is not None:
            lines.put(None)  # EOF

    def describe(self) -> str:
        err = "".join(self.stderr)[-3000:]
        return f"process {self.pid} (exit code {self.proc.poll()}); stderr:\n{err}"

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """Wait for a stdout line starting with ``prefix``; return the rest, stripped.

        Lines before it are skipped (they stay in ``self.stdout``).
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r} within {timeout} s from {self.describe()}") from None
            if line is None:
                self.lines.put(None)
                raise AssertionError(f"stdout closed before a line starting {prefix!r} from {self.describe()}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def request(self, line: str, answer: str, timeout: float = TIMEOUT) -> str:
        """Send ``line`` and wait for the line starting with ``answer``."""
        self.send(line)
        return self.expect(answer, timeout)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit and return its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process did not exit within {timeout} s: {self.describe()}") from None

    def wait_gone(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process and every descendant (its resource tracker...) to exit.

        Afterwards ``stderr`` is complete: the pipe closes when the last writer exits.
        """
        code = self.wait(timeout)
        wait_for(lambda: not tagged_pids(self.tag + "."), timeout, f"descendants of {self.pid} to exit")
        self.join_readers(timeout)
        return code

    def join_readers(self, timeout: float = TIMEOUT) -> None:
        """Wait until stdout and stderr are read to their end (every writer has exited)."""
        for t in self._readers:
            t.join(timeout)

    def stop(self, timeout: float = TIMEOUT, expect_code: int = 0, check_stderr: bool = True) -> None:
        """Close stdin (the script's signal to finish), wait for it and its children, check.

        Fails if the exit code differs, or (``check_stderr``) if stderr holds a traceback or
        a resource-tracker complaint (a segment the device failed to remove itself).
        """
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self.wait_gone(timeout)
        assert code == expect_code, f"exit code {code}, expected {expect_code}: {self.describe()}"
        if check_stderr:
            err = "".join(self.stderr)
            assert "Traceback" not in err and "resource_tracker" not in err, self.describe()

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process and everything in its session (its resource tracker too)."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


class _Guard:
    """Tracks what a test started and names it used; checked at teardown."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        slug = re.sub(r"[^A-Za-z0-9]", "_", request.node.name)
        self.slug = slug[:18].strip("_")
        self.tag = f"{os.getpid()}.{next(_tags)}"
        self.tmp_path = tmp_path
        self.names: list[str] = []
        self.procs: list[DeviceProcess] = []
        self._n = itertools.count(1)

    def new_name(self) -> str:
        name = f"t{os.getpid()}-{next(_names)}-{self.slug}"[:48]
        self.names.append(name)
        return name

    def env(self, mon: str | None, extra: dict[str, str] | None) -> tuple[dict[str, str], str]:
        tag = f"{self.tag}.{next(self._n)}"
        env = {k: v for k, v in os.environ.items() if k not in ("MON", TAG_VAR)}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env[TAG_VAR] = tag + ".x"   # "<test>.<n>.x": prefix-matching "<test>.<n>." finds it alone
        if mon is not None:
            env["MON"] = mon
        env.update(extra or {})
        return env, tag

    def teardown(self) -> list[str]:
        problems = []
        for p in self.procs:
            if p.proc.poll() is None:
                problems.append(f"process {p.pid} was still running at teardown (killed)")
                p.kill_group()
                p.proc.wait(TIMEOUT)
        try:
            wait_for(lambda: not tagged_pids(self.tag + "."), TIMEOUT, "every started process to exit")
        except AssertionError:
            for pid in tagged_pids(self.tag + "."):
                problems.append(f"stray process {pid} (killed)")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.join_readers()   # every process has exited: this completes its stderr
            err = "".join(p.stderr)
            if "Traceback" in err:
                problems.append(f"process {p.pid} printed a traceback:\n{err[-2000:]}")
        for p in self.procs:
            for stream in (p.proc.stdin, p.proc.stdout, p.proc.stderr):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
        for name in self.names:
            left = segments_of(name)
            if left:
                problems.append(f"segments left in /dev/shm (removed): {left}")
                for seg in left:
                    unlink_segment(seg)
        return problems


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.stash[_call_failed] = report.failed
    return report


_call_failed = pytest.StashKey[bool]()


@pytest.fixture
def _guard(request: pytest.FixtureRequest, tmp_path: Path):
    guard = _Guard(request, tmp_path)
    yield guard
    problems = guard.teardown()
    # after a failed test, leftovers are expected: clean up without a second report
    if problems and not request.node.stash.get(_call_failed, False):
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def new_device_name(_guard: _Guard) -> Callable[[], str]:
    """A factory of unique device names; each one's segments are checked at teardown."""
    return _guard.new_name


@pytest.fixture
def device_name(new_device_name: Callable[[], str]) -> str:
    """A unique device name, e.g. ``t1234-7-test_state``; its segments are checked at teardown."""
    return new_device_name()


@pytest.fixture
def launch(_guard: _Guard) -> Callable[..., DeviceProcess]:
    """Start ``source`` (Python text, dedented) as ``python script.py <name> *args``.

    ``mon`` is the child's MON (None: unset). Waits for the line ``ready`` (pass
    ``ready=None`` not to wait). The test must end the process itself (``stop()``,
    ``kill_group()``...); teardown kills leftovers and fails the test.
    """

    def _launch(source: str, name: str, *args: str, mon: str | None = "bridge=0", ready: str | None = "ready",
                env: dict[str, str] | None = None, timeout: float = START_TIMEOUT) -> DeviceProcess:
        script = _guard.tmp_path / f"script{len(_guard.procs)}.py"
        script.write_text(textwrap.dedent(source))
        child_env, tag = _guard.env(mon, env)
        proc = DeviceProcess([sys.executable, str(script), name, *args], child_env, _guard.tmp_path, tag)
        _guard.procs.append(proc)
        if ready is not None:
            proc.expect(ready, timeout)
        return proc

    return _launch


@pytest.fixture
def run_python(_guard: _Guard) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -c code *args`` to completion (text output); MON unset unless given."""

    def _run(code: str, *args: str, mon: str | None = None, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
        env, _ = _guard.env(mon, None)
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=_guard.tmp_path,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    return _run


@pytest.fixture
def attach() -> Callable[..., Any]:
    """``attach(name)``: a DeviceAttachment from the test process, closed at teardown."""
    from device_agent.attach import DeviceAttachment

    opened: list[DeviceAttachment] = []

    def _attach(name: str, timeout: float = TIMEOUT) -> DeviceAttachment:
        att = wait_for(lambda: DeviceAttachment(name), timeout, f"device {name!r} to appear",
                       ignore=(FileNotFoundError,))
        opened.append(att)
        return att

    yield _attach
    for att in opened:
        att.close()
