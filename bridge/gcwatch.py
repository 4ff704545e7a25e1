"""The bridge process's garbage collector: startup's objects frozen, and every collection's
pause counted for /metrics and /api/stats. Standard library only.

A full (generation 2) collection walks every tracked object. After startup that is Flask,
eventlet, numpy and socketio's tens of thousands of objects, a pause of ~60 ms on this
machine in which the relay sends nothing; frozen (``gc.freeze``), it is ~1 ms
(docs/performance.md, "Garbage collection pauses").
"""

from __future__ import annotations

import gc
import time
from typing import Any

GENERATIONS = 3


class GcWatch:
    """Counts collections and their pauses per generation, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = [0] * GENERATIONS
        self.pause_max = [0.0] * GENERATIONS     # seconds
        self.pause_total = [0.0] * GENERATIONS   # seconds
        self._started = 0.0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        g = info["generation"]
        self.collections[g] += 1
        self.pause_total[g] += pause
        if pause > self.pause_max[g]:
            self.pause_max[g] = pause

    def figures(self) -> dict[str, Any]:
        """For /api/stats: per generation (0, 1, 2), and how many objects are frozen."""
        return {"frozen_objects": gc.get_freeze_count(), "collections": list(self.collections),
                "pause_max_ms": [round(p * 1e3, 3) for p in self.pause_max],
                "pause_total_ms": [round(p * 1e3, 3) for p in self.pause_total]}

    def prometheus(self) -> list[str]:
        """The /metrics lines."""
        lines = ["# HELP monbridge_gc_frozen_objects Objects frozen at startup (gc.freeze): no collection scans them.",
                 "# TYPE monbridge_gc_frozen_objects gauge", f"monbridge_gc_frozen_objects {gc.get_freeze_count()}",
                 "# TYPE monbridge_gc_collections_total counter"]
        lines += [f'monbridge_gc_collections_total{{generation="{g}"}} {n}' for g, n in enumerate(self.collections)]
        lines += ["# HELP monbridge_gc_pause_seconds_max The longest collection of each generation, since start.",
                  "# TYPE monbridge_gc_pause_seconds_max gauge"]
        lines += [f'monbridge_gc_pause_seconds_max{{generation="{g}"}} {p:.6f}' for g, p in enumerate(self.pause_max)]
        lines += ["# TYPE monbridge_gc_pause_seconds_total counter"]
        lines += [f'monbridge_gc_pause_seconds_total{{generation="{g}"}} {p:.6f}' for g, p in enumerate(self.pause_total)]
        return lines


def freeze_startup() -> None:
    """Move every object alive now out of the collector's sight: what startup built lives as
    long as the process. Collect first, so that startup's garbage is not frozen with it."""
    gc.collect()
    gc.freeze()
