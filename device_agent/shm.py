"""Creating, attaching, listing and removing monbridge's POSIX shared-memory segments.

Standard library only. Lifecycle rule: the creator (the device) unlinks; attachers
(the bridge, ``monbridge cleanup``, tests) only close, and never register the segment
with multiprocessing's resource tracker — on Python < 3.13 an attacher's tracker would
unlink the device's segment when the attacher exits.
"""

from __future__ import annotations

import mmap
import os
from multiprocessing.shared_memory import SharedMemory

from . import layout
from .errors import LayoutError

from .layout import SEGMENT_PREFIX

SHM_DIR = "/dev/shm"


class CreatedSegment(SharedMemory):
    """The device's segment. Unlike ``SharedMemory``, its finalizer stays quiet when views of
    it are still alive: that happens when SIGTERM closes the monitor in the middle of a
    publish, whose frame (kept by the exit's traceback) holds views to the very end. The
    segment is unlinked by then, and the process's exit unmaps it."""

    def __del__(self) -> None:
        try:
            self.close()
        except (BufferError, OSError):
            pass


def create_segment(name: str, size: int) -> SharedMemory:
    """Create a segment (mode 0600). The creator's resource tracker unlinks it if the
    device is killed with SIGKILL; a clean close unlinks it directly."""
    return CreatedSegment(name=name, create=True, size=size)


def destroy_segment(shm: SharedMemory) -> None:
    """The creator's end: close and unlink. Safe if it is already gone."""
    close_segment(shm)
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


class AttachedSegment:
    """An existing segment mapped without the resource tracker ever hearing of it.

    ``SharedMemory(name)`` registers even when it only attaches (Python < 3.13), and
    processes started by multiprocessing share one tracker, so an attacher's
    unregister would also erase the creator's entry. Mapping it ourselves avoids both.
    """

    def __init__(self, name: str) -> None:
        import _posixshmem

        self.name = name
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise ValueError(f"segment {name!r} is empty")
            self._mmap = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.size = size
        self.buf: memoryview | None = memoryview(self._mmap)

    def close(self) -> None:
        """Unmap; safe to call twice. Raises BufferError while views of ``buf`` exist."""
        if self.buf is not None:
            self.buf.release()
            self.buf = None
        self._mmap.close()


def attach_segment(name: str) -> AttachedSegment:
    """Map an existing segment for reading and writing; never unlinks it."""
    return AttachedSegment(name)


def close_segment(shm: SharedMemory | AttachedSegment) -> None:
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


def segment_owner(seg_name: str) -> int | None:
    """The pid that wrote ``seg_name`` if that process still runs and has not closed it."""
    try:
        shm = attach_segment(seg_name)
    except (FileNotFoundError, ValueError):
        return None
    try:
        pid = layout.peek_owner(shm.buf)
        if pid is None or not pid_alive(pid):
            return None
        try:
            closed = layout.read_header(shm.buf).closed
        except LayoutError:
            closed = False  # another monbridge version: trust the pid
        return None if closed else pid
    finally:
        close_segment(shm)
