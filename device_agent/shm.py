"""Creating, attaching, listing and removing monbridge's POSIX shared-memory segments.

Standard library only. Lifecycle rule: the creator (the device) unlinks; attachers
(the bridge, ``monbridge cleanup``, tests) only close, and never register the segment
with multiprocessing's resource tracker — on Python < 3.13 an attacher's tracker would
unlink the device's segment when the attacher exits.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

from .layout import SEGMENT_PREFIX

SHM_DIR = "/dev/shm"
_created_here: set[str] = set()  # registered with this process's tracker as their creator


def create_segment(name: str, size: int) -> SharedMemory:
    """Create a segment (mode 0600). The creator's resource tracker unlinks it if the
    device is killed with SIGKILL; a clean close unlinks it directly."""
    shm = SharedMemory(name=name, create=True, size=size)
    _created_here.add(name)
    return shm


def destroy_segment(shm: SharedMemory) -> None:
    """The creator's end: close and unlink. Safe if it is already gone."""
    close_segment(shm)
    _created_here.discard(shm.name)
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


def attach_segment(name: str) -> SharedMemory:
    """Attach to an existing segment without letting the resource tracker own it."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    shm = SharedMemory(name=name)
    if name not in _created_here:  # attaching to our own segment: the creator's entry stays
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


def close_segment(shm: SharedMemory) -> None:
    """Close our mapping; safe to call twice. Views still held elsewhere keep it mapped."""
    try:
        shm.close()
    except BufferError:  # a numpy view or memoryview is still alive; the GC unmaps later
        pass


def unlink_segment(name: str) -> bool:
    """Remove a segment by name without attaching; return False if it was already gone."""
    try:
        import _posixshmem

        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False


def list_segments(prefix: str = SEGMENT_PREFIX) -> list[str]:
    """Names of segments in /dev/shm starting with ``prefix`` (Linux)."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True
