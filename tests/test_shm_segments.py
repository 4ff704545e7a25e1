"""device_agent/shm.py: a device's segment closed while a view of it is still alive (SIGTERM
in the middle of a publish) is unlinked at once, and its finalizer prints nothing later."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np

from device_agent.shm import create_segment, destroy_segment, list_segments


def test_a_segment_destroyed_while_a_view_is_alive_is_unlinked_and_its_finalizer_stays_quiet(monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    name = f"monbridge.test-shm-{os.getpid()}"
    shm = create_segment(name, 4096)
    view = np.frombuffer(shm.buf[:64], dtype="u1")   # what a publish in progress holds
    view_of_header = int(view[0])
    destroy_segment(shm)          # the monitor's close: the mapping cannot go yet, the name does
    assert name not in list_segments("monbridge.test-shm-")
    del shm
    gc.collect()
    assert int(view[0]) == view_of_header   # still mapped while the view lives
    del view
    gc.collect()
    assert [u.exc_value for u in unraisable] == []
