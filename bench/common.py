"""Helpers the benchmarks share: CPU pressure and waiting for quiet, percentiles, rounding
of the JSON figures, removing the segments of a killed device; /proc readings (process tree,
RSS, descriptors); child processes that speak JSON lines (``Child``, ``Replies``,
``watchdog``); a device script run with MON=... and its bridge (``DeviceProcess``); chromium's
path and flags.

Standard library only at import time, and no threading, queue or subprocess before a function
needs them (bench.relay's echo server imports this before eventlet monkey-patches);
device_agent.shm is imported where segments are listed.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"   # Debian's package; never `playwright install` (DESIGN.md)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",
]
DASHBOARD_RE = re.compile(r"monbridge: dashboard for '([^']+)' at (\S+)")   # what a device prints
SETTLE_SAMPLE = 0.2   # s of CPU pressure sampled before each measurement
SETTLE_QUIET = 0.05   # quiet: some task waited for a CPU less than 5 % of the sample


def cpu_stall_us() -> int | None:
    """Linux pressure stall information: total µs some task waited for a CPU."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split()[-1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def round_figures(value: Any) -> Any:
    """Four significant digits for floats (whole numbers from 10^4), NaN as null, recursively."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return float(f"{value:.4g}") if abs(value) < 1e4 else round(value)
    if isinstance(value, dict):
        return {k: round_figures(v) for k, v in value.items()}
    if isinstance(value, list):
        return [round_figures(v) for v in value]
    return value


def growth_pct(start: float, end: float) -> float:
    """Growth from ``start`` to ``end`` in % of ``start`` (the benchmarks' JS heap growth)."""
    return 100 * (end - start) / start if start else math.nan


def judge(result: dict[str, Any], targets: dict[str, dict[str, float]], missing_fails: bool = False) -> dict[str, bool]:
    """{figure: met} for each target ({"min": x} or {"max": x}). A figure that could not be
    measured (NaN) is not met; a figure the run did not produce is left out (a run of some
    measurements only), or with ``missing_fails`` counts as not met."""
    met = {}
    for key, target in targets.items():
        value = result.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            if missing_fails:
                met[key] = False
            continue
        met[key] = value >= target["min"] if "min" in target else value <= target["max"]  # NaN: False
    return met


class Settler:
    """Before each measurement, wait (within a total budget for the run) for a quiet sample.

    Latency tails and busy-looping throughput tests measured while other work competes for
    the 2 cores measure the scheduler, not monbridge. ``deadline`` (perf_counter time): past
    it, nothing waits any more (bench.relay's --quick must end in time)."""

    def __init__(self, budget: float, log: Callable[[str], None], deadline: float | None = None) -> None:
        self.budget = budget
        self.log = log
        self.deadline = deadline
        self.waited = 0.0
        self.calls = self.checked = self.quiet = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.waited >= self.budget or (self.deadline is not None and time.perf_counter() > self.deadline):
            return
        self.checked += 1
        start = time.perf_counter()
        while True:
            before = cpu_stall_us()
            time.sleep(SETTLE_SAMPLE)
            after = cpu_stall_us()
            spent = time.perf_counter() - start
            if before is None or after is None:
                return
            if (after - before) / 1e6 / SETTLE_SAMPLE < SETTLE_QUIET:
                self.quiet += 1
                break
            if self.waited + spent + SETTLE_SAMPLE > self.budget:
                break
        self.waited += spent
        if spent > 2 * SETTLE_SAMPLE:
            self.log(f"waited {spent:.1f} s for other load to settle")

    def report(self) -> dict[str, Any]:
        return {"waited_s": self.waited, "budget_s": self.budget, "measurements": self.calls,
                "checked": self.checked, "quiet": self.quiet}


def leftover_segments(prefix: str) -> list[str]:
    """Names of the /dev/shm segments that start with ``prefix``."""
    from device_agent.shm import list_segments

    return list_segments(prefix)


def remove_segments(prefix: str) -> list[str]:
    """Unlink the segments whose names start with ``prefix`` (only there after a device was
    killed: a device that closes removes its own); return their names."""
    from device_agent.shm import unlink_segment

    gone = leftover_segments(prefix)
    for seg in gone:
        unlink_segment(seg)
    return gone


def git_revision(*paths: str) -> dict[str, Any]:
    """The commit measured, and whether ``paths`` (the code a benchmark measures) differ from it."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "modified": bool(git("status", "--porcelain", "--", *paths))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}


# ======================================================================================
# /proc
# ======================================================================================

_TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def process_table() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, CPU seconds)} of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def descendants(root: int, table: dict[int, tuple[int, float]]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                out.append(int(entry))
    return out


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


# ======================================================================================
# child processes speaking JSON lines: python -m bench.X --role ROLE ...
# A child reads JSON requests on stdin and answers JSON lines on stdout ({"ok": true, ...} or
# {"ok": false, "error": traceback}); it exits on EOF, "quit" or its watchdog, so nothing
# outlives a parent that died.
# ======================================================================================

def _stderr_log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def watchdog(seconds: float, on_expiry: Any = None, label: str = "bench child") -> None:
    """In a child: exit (code 3) after ``seconds``, calling ``on_expiry`` first."""
    import threading

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


class Child:
    """The parent's side: a child process speaking JSON lines; its stderr goes to ours."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str] | None = None, json_io: bool = True,
                 log: Callable[[str], None] = _stderr_log, call_timeout: float = 20.0) -> None:
        import queue
        import subprocess
        import threading

        self.label = label
        self.log = log
        self.call_timeout = call_timeout
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE if json_io else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if json_io else subprocess.DEVNULL,
                                     text=True, bufsize=1, close_fds=True)
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        if json_io:
            threading.Thread(target=self._read, name=f"read-{label}", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def send(self, **msg: Any) -> None:
        self.proc.stdin.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        import queue

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
        """Ask politely (quit, EOF), then SIGTERM, then SIGKILL."""
        import subprocess

        p = self.proc
        if p.poll() is None:
            try:
                self.send(op="quit")
            except (OSError, ValueError):
                pass
        try:
            p.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            self.log(f"terminating {self.label} (pid {p.pid}): it did not exit in {grace:.0f} s")
            p.terminate()
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)


# ======================================================================================
# a device script and its bridge
# ======================================================================================

class DeviceProcess:
    """A device script run with MON=... in a session of its own; it launches its bridge, which
    exits with it. Its output (stdout and stderr, the bridge's log too) is drained to the end
    on a thread: the last lines are kept, and ``on_line`` sees every one."""

    def __init__(self, argv: list[str], name: str, start_timeout: float = 45.0,
                 on_line: Callable[[str], None] | None = None) -> None:
        import collections
        import threading

        self.argv = argv
        self.name = name
        self.start_timeout = start_timeout
        self.on_line = on_line
        self.proc: Any = None   # subprocess.Popen
        self.lines: collections.deque[str] = collections.deque(maxlen=80)
        self.url: str | None = None
        self.bridge_pid: int | None = None
        self._seen = threading.Event()

    def start(self, mon: str) -> str:
        """Start it with MON=``mon``; return the dashboard URL it prints (with ?token=)."""
        import subprocess
        import threading

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
        self.bridge_pid = self._find_bridge()
        return self.url

    def _find_bridge(self) -> int | None:
        assert self.proc is not None
        for pid in descendants(self.proc.pid, process_table()):
            argv = cmdline(pid)
            if "bridge" in argv and "serve" in argv:
                return pid
        return None

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
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
        """SIGTERM the device (its monitor closes and the bridge exits with it); escalate
        to its session only if something is left. Returns problems."""
        import subprocess

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
        if self.bridge_pid is not None:
            deadline = time.monotonic() + 10
            while alive(self.bridge_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        pgid = proc.pid  # a session leader: the bridge is in its process group
        deadline = time.monotonic() + 5  # e.g. its resource tracker, which exits on its own
        while any(alive(p) for p in group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            members = [p for p in group_members(pgid) if alive(p)]
            if not members:
                break
            what = ", ".join(f"{p} ({' '.join(cmdline(p))[:80]})" for p in members)
            problems.append(f"still running in the device's session after it exited: {what}: {sig.name}")
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append("the device is still running")
        return problems
