"""Find devices in /dev/shm and remove the segments of those whose process is gone.

Standard library only. Used by ``monbridge cleanup`` and ``python -m device_agent.cleanup``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from . import layout
from .errors import LayoutError
from .shm import SHM_DIR, attach_segment, close_segment, list_segments, pid_alive, unlink_segment

STARTING_GRACE = 5.0  # seconds a control segment without a header is taken for a starting device


@dataclass
class DeviceSegments:
    device: str
    pid: int = 0                 # 0: no readable control segment
    alive: bool = False
    segments: list[str] = field(default_factory=list)


def scan() -> list[DeviceSegments]:
    """Every device with segments in /dev/shm, with its owner's pid and liveness."""
    devices: dict[str, DeviceSegments] = {}
    for seg in list_segments():
        device = seg[len(layout.SEGMENT_PREFIX):].split(".", 1)[0]
        devices.setdefault(device, DeviceSegments(device)).segments.append(seg)
    for dev in devices.values():
        ctl = layout.control_segment_name(dev.device)
        try:
            shm = attach_segment(ctl)
        except (FileNotFoundError, ValueError, OSError):
            dev.alive = _just_created(ctl)  # a starting device may not have sized it yet
            continue
        try:
            pid = layout.peek_owner(shm.buf)
            if pid is None:
                dev.alive = _just_created(ctl)  # its header is not written yet
            else:
                dev.pid = pid
                try:
                    closed = layout.read_header(shm.buf).closed
                except LayoutError:  # another monbridge version: judge by its pid alone
                    closed = False
                dev.alive = pid_alive(pid) and not closed
        finally:
            close_segment(shm)
    return sorted(devices.values(), key=lambda d: d.device)


def _just_created(segment: str, grace: float = STARTING_GRACE) -> bool:
    """True if ``segment`` appeared in the last ``grace`` seconds (its device may be starting)."""
    try:
        return time.time() - os.stat(os.path.join(SHM_DIR, segment)).st_ctime < grace
    except OSError:
        return False


def cleanup(dry_run: bool = False) -> list[str]:
    """Unlink the segments of every device whose process is gone; return their names."""
    removed = []
    for dev in scan():
        if dev.alive:
            continue
        for seg in dev.segments:
            if dry_run or unlink_segment(seg):
                removed.append(seg)
    return removed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dry_run = "--dry-run" in args
    for dev in scan():
        if dev.alive:
            print(f"kept    {dev.device}: process {dev.pid} is running ({len(dev.segments)} segments)")
    removed = cleanup(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for seg in removed:
        print(f"{verb} /dev/shm/{seg}")
    print(f"{verb} {len(removed)} segment(s)" if removed else "nothing to remove")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
