"""A full memory fence for the seqlocks in records.py, frames.py and queues.py.

Standard library only.

Why this exists: a seqlock writer must make a slot's "writing" stamp visible before
the payload, and the payload before the "done" stamp; a reader must load the stamp,
then the payload, then the stamp again, in that order.

* x86-64 (and i386) is TSO: stores become visible in program order and loads are not
  reordered with other loads. Every shared-memory access here is a separate C call
  from the interpreter (a ``memoryview`` item store, a ``struct.pack_into``, a numpy
  copy), so the compiler cannot reorder them either. ``fence()`` is a no-op.
* aarch64 / armv7 (Raspberry Pi) are weakly ordered: stores may become visible out of
  order and loads may be satisfied out of order. There ``fence()`` calls C11
  ``atomic_thread_fence(memory_order_seq_cst)`` from libatomic through ctypes, which
  is a ``dmb ish`` — ordering all earlier loads and stores before all later ones.
"""

from __future__ import annotations

import platform
import warnings
from typing import Callable

_TSO_MACHINES = {"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"}
_MEMORY_ORDER_SEQ_CST = 5


def _noop() -> None:
    return None


def _load_fence() -> Callable[[], None]:
    if platform.machine().lower() in _TSO_MACHINES:
        return _noop
    import ctypes
    import ctypes.util

    for candidate in (ctypes.util.find_library("atomic"), "libatomic.so.1"):
        if not candidate:
            continue
        try:
            lib = ctypes.CDLL(candidate)
            c_fence = lib.atomic_thread_fence
        except (OSError, AttributeError):
            continue
        c_fence.argtypes = [ctypes.c_int]
        c_fence.restype = None

        def fence() -> None:
            c_fence(_MEMORY_ORDER_SEQ_CST)

        return fence
    warnings.warn(
        f"monbridge: libatomic not found on {platform.machine()}; readers may in rare "
        "cases see a torn record. Install it (Debian: apt-get install libatomic1).",
        RuntimeWarning,
        stacklevel=2,
    )
    import threading

    lock = threading.Lock()

    def lock_fence() -> None:  # acquire+release: a barrier in practice, not by contract
        with lock:
            pass

    return lock_fence


fence: Callable[[], None] = _load_fence()
"""Order every memory access before the call before every access after it."""

needs_fence: bool = fence is not _noop
