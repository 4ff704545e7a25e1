"""Processes for the benchmarks: /proc readings (CPU, RSS, descriptors, the process tree),
child processes that answer JSON lines, a device script with its bridge, and cleaning up
what they leave (processes, /dev/shm segments)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any, Callable

from device_agent.shm import list_segments, unlink_segment

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_RE = re.compile(r"monbridge: dashboard for '([^']+)' at (\S+)")   # what a device prints
_TICK = os.sysconf("SC_CLK_TCK")


# -- /proc -------------------------------------------------------------------------------

def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def all_stat_fields() -> dict[int, list[str]]:
    """``stat_fields`` of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None:
            out[int(entry)] = fields
    return out


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / _TICK   # utime + stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (ProcessLookupError if it is gone)."""
    fields = stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return _cpu(fields)


def process_table() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, CPU seconds)} of every process."""
    return {pid: (int(f[1]), _cpu(f)) for pid, f in all_stat_fields().items()}


def descendants(root: int, table: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """Pids of every process below ``root``."""
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in (table if table is not None else process_table()).items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid``."""
    return [p for p, f in all_stat_fields().items() if int(f[2]) == pgid]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def is_bridge(argv: list[str]) -> bool:
    """A bridge's argv: ``python -m bridge serve ...``, ``monbridge serve ...``, or a device's
    launcher, ``python -c '... # monbridge bridge' serve ...`` (device_agent/monitor.py)."""
    if "serve" not in argv:
        return False
    return any(a in ("bridge", "monbridge") or a.endswith(("/monbridge", "# monbridge bridge"))
               for a in argv[:argv.index("serve")])


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    """Open file descriptors of a process (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_stall_us() -> int | None:
    """Linux pressure stall information: total µs some task waited for a CPU."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split()[-1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def machine_jiffies() -> tuple[int, int, int] | None:
    """(busy, total, steal) jiffies of all CPUs from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    steal = parts[7] if len(parts) > 7 else 0
    total = sum(parts[:8])
    return total - idle - steal, total, steal


# -- cleaning up -------------------------------------------------------------------------

leftover_segments = list_segments   # (prefix) -> names of the /dev/shm segments that start with it


def remove_segments(prefix: str) -> list[str]:
    """Unlink the segments whose names start with ``prefix`` (only there after a device was
    killed: a device that closes removes its own); return their names."""
    gone = leftover_segments(prefix)
    for seg in gone:
        unlink_segment(seg)
    return gone


def end_group(pgid: int, what: str, wait: float = 5.0) -> list[str]:
    """Wait up to ``wait`` s for process group ``pgid`` to empty, then SIGTERM and SIGKILL
    what is left of it; return problems."""
    problems: list[str] = []
    deadline = time.monotonic() + wait
    while any(alive(p) for p in group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = [p for p in group_members(pgid) if alive(p)]
        if not members:
            break
        names = ", ".join(f"{p} ({' '.join(cmdline(p))[:80]})" for p in members)
        problems.append(f"still running in {what} after it exited: {names}: {sig.name}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        time.sleep(2)
    return problems


def kill_descendants() -> list[str]:
    """SIGKILL every process still running below this one; return what was killed."""
    problems = []
    for pid in descendants(os.getpid()):
        if alive(pid):
            problems.append(f"still running after the run (killed): {pid} {' '.join(cmdline(pid))[:80]}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return problems


# -- child processes speaking JSON lines ------------------------------------------------
# A child (python -m bench.X --role ROLE JSON-ARGS) answers JSON requests on stdin with JSON lines
# ({"ok": true, ...} or {"ok": false, "error": traceback}); it exits on EOF, "quit" or its watchdog.

def run_role(argv: list[str], roles: dict[str, Callable[[dict[str, Any]], None]]) -> bool:
    """In ``main``: if ``argv`` is ``--role ROLE JSON``, run that role and return True."""
    if argv[:1] != ["--role"]:
        return False
    roles[argv[1]](json.loads(argv[2]))
    return True


def watchdog(seconds: float, on_expiry: Callable[[], Any] | None = None, label: str = "bench child") -> None:
    """In a child: exit (code 3) after ``seconds``, calling ``on_expiry`` first."""
    def expire() -> None:
        time.sleep(seconds)
        print(f"{label} {os.getpid()}: timeout after {seconds:.0f} s, exiting", file=sys.stderr, flush=True)
        try:
            if on_expiry is not None:
                on_expiry()
        finally:
            os._exit(3)

    threading.Thread(target=expire, daemon=True).start()


class Replies:
    """The child's side of the pipe: stdout is reserved for JSON replies."""

    def __init__(self) -> None:
        self.out = sys.stdout
        sys.stdout = sys.stderr

    def send(self, **msg: Any) -> None:
        self.out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self.out.flush()


async def serve(replies: Replies, ops: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
    """Answer each request on stdin with ``ops[op](request)`` (awaited if it is a coroutine
    function) until EOF or "quit"."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            reply = ops[req["op"]](req)
            replies.send(ok=True, **(await reply if inspect.isawaitable(reply) else reply))
        except Exception:
            replies.send(ok=False, error=traceback.format_exc())


class Child:
    """The parent's side: a child process, speaking JSON lines unless ``json_io`` is False; its stderr goes to ours."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str] | None = None, json_io: bool = True,
                 log: Callable[[str], None] = functools.partial(print, file=sys.stderr),
                 call_timeout: float = 20.0) -> None:
        self.label = label
        self.log = log
        self.call_timeout = call_timeout
        pipe = subprocess.PIPE if json_io else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=pipe, stdout=pipe, text=True, bufsize=1,
                                     close_fds=True)
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        if json_io:
            threading.Thread(target=self._read, name=f"read-{label}", daemon=True).start()

    @classmethod
    def role(cls, module: str, role: str, label: str, args: dict[str, Any], **kwargs: Any) -> "Child":
        """``python -m MODULE --role ROLE JSON-ARGS``, with MON unset."""
        env = {k: v for k, v in os.environ.items() if k != "MON"}
        return cls(label, [sys.executable, "-m", module, "--role", role, json.dumps(args)], env, **kwargs)

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def send(self, **msg: Any) -> None:
        self.proc.stdin.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        timeout = self.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.label}: no answer in {timeout:.0f} s") from None
            if line is None:
                self.proc.wait(5)
                raise RuntimeError(f"{self.label} exited (code {self.proc.returncode})")
            try:
                msg = json.loads(line)
            except ValueError:
                self.log(f"{self.label}: {line.rstrip()}")
                continue
            if not msg.get("ok"):
                raise RuntimeError(f"{self.label} failed:\n{msg.get('error')}")
            return msg

    def call(self, wait: float | None = None, **msg: Any) -> dict[str, Any]:
        self.send(**msg)
        return self.recv(wait)

    def stop(self, grace: float = 5.0) -> None:
        """Ask politely ("quit", EOF) and wait ``grace`` s, then SIGTERM, then SIGKILL."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                if self.proc.poll() is None:
                    self.send(op="quit")
                self.proc.stdin.close()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.log(f"terminating {self.label} (pid {self.pid}): it did not exit in {grace:.0f} s")
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)


def broadcast(children: list[Child], timeout: float | None = None, **msg: Any) -> list[dict[str, Any]]:
    """Send ``msg`` to every child, then collect their answers."""
    for c in children:
        c.send(**msg)
    return [c.recv(timeout) for c in children]


# -- a device script and its bridge -----------------------------------------------------

class DeviceProcess:
    """A device script run with MON=... in a session of its own; it launches its bridge, which
    exits with it. Its output (stdout and stderr, the bridge's log too) is drained to the end
    on a thread: the last lines are kept, and ``on_line`` sees every one."""

    def __init__(self, argv: list[str], name: str, start_timeout: float = 45.0,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.argv = argv
        self.name = name
        self.start_timeout = start_timeout
        self.on_line = on_line
        self.proc: Any = None   # subprocess.Popen
        self.lines: collections.deque[str] = collections.deque(maxlen=80)
        self.url: str | None = None
        self.port = 0
        self.bridge_pid: int | None = None
        self._seen = threading.Event()

    def start(self, mon: str) -> str:
        """Start it with MON=``mon``; return the dashboard URL it prints (with ?token=)."""
        env = dict(os.environ, MON=mon, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._read, name="device-output", daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not self._seen.wait(0.1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the device exited with code {self.proc.returncode} before printing its URL:\n"
                                   + self.output())
            if time.monotonic() > deadline:
                raise RuntimeError(f"no dashboard URL from the device in {self.start_timeout:.0f} s:\n" + self.output())
        if self.url is None:
            raise RuntimeError("the device's bridge did not start:\n" + self.output())
        self.port = url_port(self.url)
        self.bridge_pid = next((pid for pid in descendants(self.proc.pid) if is_bridge(cmdline(pid))), None)
        return self.url

    def _read(self) -> None:
        for line in self.proc.stdout:  # drained to the end: the device never blocks on a full pipe
            line = line.rstrip("\n")
            self.lines.append(line)
            if self.on_line is not None:
                self.on_line(line)
            m = DASHBOARD_RE.search(line)
            if m and not self._seen.is_set():
                self.url = m.group(2)
                self._seen.set()
            elif "the bridge exited with code" in line and not self._seen.is_set():
                self._seen.set()   # the device goes on without a dashboard: give up at once

    def output(self) -> str:
        return "\n".join("    " + line for line in self.lines) or "    (no output)"

    def stop(self) -> list[str]:
        """SIGTERM the device (its monitor closes and the bridge exits with it); escalate to its
        session only if something is left. Returns problems."""
        problems: list[str] = []
        proc = self.proc
        if proc is None:
            return problems
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("the device ignored SIGTERM for 15 s")
        # a session leader: the bridge (and e.g. its resource tracker) is in its process group
        problems += end_group(proc.pid, "the device's session", wait=10.0)
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append("the device is still running")
        return problems


def url_port(url: str) -> int:
    """The port of an http://HOST:PORT/... URL."""
    return int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def http_json(port: int, path: str, body: Any = None) -> Any:
    """GET http://127.0.0.1:PORT/PATH as JSON, or POST ``body`` (JSON) there if it is given."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data,
                                 {"Content-Type": "application/json"} if data is not None else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)
