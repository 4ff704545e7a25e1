"""Helpers the benchmarks share: CPU pressure and waiting for quiet, percentiles, rounding
of the JSON figures, removing the segments of a killed device.

Standard library only at import time (bench.relay's echo server imports this before eventlet
monkey-patches); device_agent.shm is imported where segments are listed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
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
