"""The CPU time slice the bridge asks Linux for (bridge/sched.py, docs/bridge.md "The bridge's
CPU time slice"): set and read back through the kernel, in this process's own threads and in real
bridge, device and recorder processes. Skipped on kernels without custom slices (before 6.12)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from bridge import sched
from bridge_support import mb, wait_attached  # noqa: F401 (mb: fixture)
from device_agent.settings import BY_NAME
from test_record_control import record, recorders_of
from conftest import TIMEOUT, wait_for

DEFAULT_MS = BY_NAME["cpu_slice"].default


def in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread of its own, so that this process's main thread (and every process
    a later test starts) keeps its slice."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # raised again in the caller's thread
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def _kernel_takes_slices() -> bool:
    def probe() -> bool:
        return bool(sched.current_slice()) and sched.request_slice(0.0005) is None \
            and sched.current_slice() == pytest.approx(0.0005)
    return in_thread(probe)


needs_slices = pytest.mark.skipif(not _kernel_takes_slices(), reason="this kernel has no custom CPU time slices")
KERNEL_DEFAULT = in_thread(sched.current_slice)


@needs_slices
def test_a_thread_gets_the_slice_it_asks_for_within_the_kernels_range_and_its_threads_inherit_it():
    def run() -> list[float | None]:
        got = [sched.request_slice(0.0003), sched.current_slice()]
        child = threading.Thread(target=lambda: got.append(sched.current_slice()))
        child.start()
        child.join()
        for seconds in (1e-6, 5.0, 0):
            assert sched.request_slice(seconds) is None
            got.append(sched.current_slice())
        return got

    assert in_thread(run) == [None, 0.0003, 0.0003, sched.MIN_SLICE, sched.MAX_SLICE, KERNEL_DEFAULT]
    assert sched.current_slice() == KERNEL_DEFAULT   # the test's own thread was never touched


@needs_slices
def test_a_device_s_bridge_runs_with_the_short_slice_and_the_device_keeps_the_kernel_s(mb):
    dev = mb.device()
    assert sched.current_slice(dev.bridge_pid()) == pytest.approx(DEFAULT_MS / 1000)
    assert sched.current_slice(dev.pid) == KERNEL_DEFAULT
    off = mb.device(mon="port=0,cpu_slice=0")   # the MON key reaches the bridge it launches
    assert sched.current_slice(off.bridge_pid()) == KERNEL_DEFAULT


@needs_slices
def test_a_recorder_the_bridge_starts_puts_the_kernel_s_slice_back(mb, tmp_path: Path):
    dev = mb.device(mon="bridge=0")
    bridge = mb.serve(dev.name, "--cpu-slice", "2", "--record-dir", str(tmp_path / "runs"))
    wait_attached(bridge.url, dev.pid)
    assert sched.current_slice(bridge.pid) == pytest.approx(0.002)
    status, answer = record(bridge.url, {"action": "start"})
    assert status == 200, answer
    (recorder,) = wait_for(lambda: recorders_of(bridge.pid), TIMEOUT, "the recorder process")
    wait_for(lambda: sched.current_slice(recorder) == KERNEL_DEFAULT, TIMEOUT,
             f"the recorder's slice back at {KERNEL_DEFAULT} (it has {sched.current_slice(recorder)})")
    status, answer = record(bridge.url, {"action": "stop"})
    assert status == 200, answer
