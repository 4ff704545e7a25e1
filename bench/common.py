"""What every benchmark shares besides its processes (bench.procs): statistics, targets and
their judgement, waiting for a quiet machine, the parts of the JSON result every benchmark
has, and the command line (``--quick``, ``--json``, ``--only``, ``--no-settle``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterable

from bench.procs import REPO, cpu_stall_us, leftover_segments

CHROMIUM = "/usr/bin/chromium"   # Debian's package; never `playwright install`
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",
]
SETTLE_SAMPLE = 0.2   # s of CPU pressure sampled before each measurement
SETTLE_QUIET = 0.05   # quiet: some task waited for a CPU less than 5 % of the sample
Targets = dict[str, dict[str, float]]


def logger(prefix: str) -> Callable[[str], None]:
    """A benchmark's progress log: one line to stderr each, ``PREFIX: message``."""
    return lambda message: print(f"{prefix}: {message}", file=sys.stderr, flush=True)


# -- statistics --------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def dist(values: list[float]) -> dict[str, Any]:
    """p50, p99, max and count of ``values``."""
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else math.nan, "n": len(values)}


def growth_pct(start: float, end: float) -> float:
    """Growth from ``start`` to ``end`` in % of ``start`` (the benchmarks' JS heap growth)."""
    return 100 * (end - start) / start if start else math.nan


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


def judge(result: dict[str, Any], targets: Targets, missing_fails: bool = False) -> dict[str, bool]:
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


# -- a quiet machine ---------------------------------------------------------------------

class Settler:
    """Before each measurement, wait (within ``budget`` s for the run, and not past ``deadline``)
    for a 0.2 s sample in which tasks waited for a CPU less than 5 % of the time."""

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


# -- the result --------------------------------------------------------------------------

def git_revision(*paths: str) -> dict[str, Any]:
    """The commit measured, and whether ``paths`` (the code a benchmark measures) differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "modified": bool(git("status", "--porcelain", "--", *paths))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}


class Clock:
    """A run's wall time, load average, CPU pressure and phases, from when it was made."""

    def __init__(self) -> None:
        self.started = self.mark = time.perf_counter()
        self.load_before = os.getloadavg()[0]
        self.stall_before = cpu_stall_us()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """Add the time since the last lap to phase ``name``."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.mark
        self.mark = now

    def machine(self) -> dict[str, Any]:
        return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}

    def loadavg(self) -> list[float]:
        """The 1-minute load average [before, now]."""
        return [round(self.load_before, 2), round(os.getloadavg()[0], 2)]

    def pressure(self, since: float | None = None, stall_before: int | None = None) -> dict[str, float]:
        """{"cpu_pressure_pct": share of the run some runnable task waited for a CPU} (Linux PSI),
        or {} where there is no PSI."""
        stall0 = self.stall_before if stall_before is None else stall_before
        stall1 = cpu_stall_us()
        if stall0 is None or stall1 is None:
            return {}
        span = time.perf_counter() - (self.started if since is None else since)
        return {"cpu_pressure_pct": 100 * (stall1 - stall0) / 1e6 / span}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def finish(result: dict[str, Any], targets: Targets, clock: Clock, segments: str, missing_fails: bool = False,
           **before_segments: Any) -> dict[str, Any]:
    """Add what closes every result: targets, pass, ``before_segments`` (e.g. problems), the
    segments left that start with ``segments``, elapsed_s."""
    result["targets"] = targets
    result["pass"] = judge(result, targets, missing_fails)
    result.update(before_segments)
    result["leftover_segments"] = leftover_segments(segments)
    result["elapsed_s"] = clock.elapsed()
    return result


# -- the command line --------------------------------------------------------------------

def windows_main(argv: list[str] | None, prog: str, doc: str, quick: str, roles: dict[str, Callable[..., None]],
                 run: Callable[[str, bool], dict[str, Any]], log: Callable[[str], None],
                 hide: tuple[str, ...] = ("targets",)) -> int:
    """``main`` of a benchmark of child processes with --quick, --json and --no-settle
    (bench.relay, bench.fleet): a child role if argv names one, else ``run(mode, settle)``."""
    from bench.procs import run_role

    argv = sys.argv[1:] if argv is None else argv
    if run_role(argv, roles):
        return 0
    args = arguments(prog, doc, quick).parse_args(argv)
    exit_on_sigterm()
    result = round_figures(run("quick" if args.quick else "full", not args.no_settle))
    report(result, args.json, log, hide=hide)
    return 0


def arguments(prog: str, doc: str, quick: str | None, measurements: Iterable[str] = (),
              settle: bool = True) -> argparse.ArgumentParser:
    """A parser with --json, and (where given) --quick, --only and --no-settle."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0])
    if quick is not None:
        ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    if measurements:
        ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(measurements)}")
    if settle:
        ap.add_argument("--no-settle", action="store_true",
                        help="do not wait for other load on the machine to settle before each measurement")
    return ap


def only(ap: argparse.ArgumentParser, text: str | None, choices: Iterable[str]) -> set[str]:
    """The measurements --only names (all without it); an unknown one is an error (exit 2)."""
    choices = list(choices)
    if not text:
        return set(choices)
    chosen = {s.strip() for s in text.split(",") if s.strip()}
    unknown = chosen - set(choices)
    if unknown:
        ap.error(f"unknown measurement(s) {sorted(unknown)}; choose from {', '.join(choices)}")
    return chosen


def require_browser(prog: str) -> None:
    """Exit saying what is missing when chromium or the built web UI is."""
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{prog}: {CHROMIUM} not found: install Debian's chromium package")
    if not (REPO / "bridge" / "static" / "app.js").exists():
        raise SystemExit(f"{prog}: the web UI is not built (bridge/static/app.js missing): run `make js`")


def exit_on_sigterm() -> None:
    """SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C: the ``finally`` blocks stop the
    processes and remove the segments; the exit status is 128 + 15."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def report(result: dict[str, Any], as_json: bool, log: Callable[[str], None], hide: Iterable[str] = ("targets",),
           done: str = "") -> None:
    """Print the result (one JSON object, or one figure a line) and log the time it took."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key not in hide:
                print(f"{key:40} {value}")
    log(f"done in {result['elapsed_s']} s{done}")
