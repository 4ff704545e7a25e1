"""Helpers the benchmarks share: CPU pressure, percentiles, rounding of the JSON figures.

Standard library only; imported by bench.ring, bench.relay and bench.browser.
"""

from __future__ import annotations

import math
from typing import Any


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
