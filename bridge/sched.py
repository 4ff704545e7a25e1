"""The bridge's CPU time slice: ask Linux (6.12 and later) for a short one, so that the
clients its sends wake do not take its CPU mid-update (docs/bridge.md, "The bridge's CPU
time slice").

``sched_setattr(2)`` sets ``sched_runtime`` (the slice) of an ordinary thread, unprivileged;
threads and child processes inherit it. Standard library only; a no-op but on Linux x86-64
and arm64.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

MIN_SLICE, MAX_SLICE = 0.0001, 0.1   # seconds: what the kernel accepts (it clamps to this range)
# struct sched_attr (include/uapi/linux/sched/types.h), SCHED_ATTR_SIZE_VER1: size, policy,
# flags, nice, priority, runtime (ns: the slice), deadline, period, util_min, util_max
_ATTR = struct.Struct("=IIQiIQQQII")
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "arm64": (274, 275)}  # setattr, getattr
_FAIR_POLICIES = (0, 3)   # SCHED_OTHER, SCHED_BATCH


def _syscalls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return _SYSCALLS.get(platform.machine())


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def request_slice(seconds: float) -> str | None:
    """Ask for a ``seconds`` slice for the calling thread (and the threads and processes it
    starts); 0 asks for the kernel's default back. Return None, or why it could not be done.
    The kernel keeps its default where it has no custom slices (before Linux 6.12). A thread
    under a real-time policy is left alone."""
    calls = _syscalls()
    if calls is None:
        return f"not supported on {sys.platform} {platform.machine()}"
    fields = _get_attr(calls, 0)
    if fields is None:
        return f"sched_getattr failed: {os.strerror(ctypes.get_errno())}"
    if fields[1] not in _FAIR_POLICIES:
        return f"this thread runs under scheduling policy {fields[1]}, not an ordinary one: left alone"
    ns = 0 if seconds <= 0 else round(min(max(seconds, MIN_SLICE), MAX_SLICE) * 1e9)
    attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, *fields[1:5], ns, 0, 0, 0, 0), _ATTR.size)
    if _libc().syscall(calls[0], 0, attr, 0) != 0:
        return f"sched_setattr failed: {os.strerror(ctypes.get_errno())}"
    return None


def _get_attr(calls: tuple[int, int], tid: int) -> tuple[int, ...] | None:
    attr = ctypes.create_string_buffer(_ATTR.size)
    if _libc().syscall(calls[1], tid, attr, _ATTR.size, 0) != 0:
        return None
    return _ATTR.unpack(attr.raw)


def current_slice(tid: int = 0) -> float | None:
    """The slice of thread ``tid`` (0: the calling thread) in seconds, as the kernel reports
    it; None where it cannot be read."""
    calls = _syscalls()
    fields = _get_attr(calls, tid) if calls else None
    return fields[5] / 1e9 if fields else None


def yield_cpu() -> None:
    """Let another runnable task on this CPU go first (``sched_yield``; nothing where there is none)."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()
