"""DeviceLink: the bridge's attachment to one device, across crashes and restarts.

Imports device_agent (the reading side) and the standard library; no Flask or socketio.
``poll()`` is called from the relay loop and reports what changed since the last call,
so the loop can tell clients.

States: no attachment (waiting for the device to appear) → online (heartbeat fresh) →
offline (heartbeat older than ``offline_after``, or the device closed). While offline the
link re-checks the device's control segment every ``retry_period``; a new device process
under the same name is attached in place of the old one ("restarted").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from device_agent import layout
from device_agent.attach import DeviceAttachment, OpenSegment, live_devices
from device_agent.errors import LayoutError
from device_agent.shm import attach_segment, close_segment

log = logging.getLogger("bridge")


@dataclass
class LinkChanges:
    online: bool | None = None       # new online status, if it changed
    attached: bool = False           # a (new) device process was attached: reset cursors, resend all
    channels: bool = False           # the manifest changed
    closed: bool = False             # the device closed cleanly
    notes: list[str] = field(default_factory=list)


class DeviceLink:
    def __init__(self, name: str, offline_after: float = 1.0, retry_period: float = 0.5,
                 open_segment: OpenSegment = attach_segment) -> None:
        """``open_segment`` maps a segment by name (tests pass one over ``bytearray``s)."""
        self.name = name            # a device name, or "auto"
        self.open_segment = open_segment
        self.offline_after = offline_after
        self.retry_period = retry_period
        self.device: DeviceAttachment | None = None
        self.online = False
        self.closed_cleanly = False
        self._next_retry = 0.0
        self._warned_several = False

    @property
    def device_name(self) -> str | None:
        return self.device.device if self.device else (None if self.name == "auto" else self.name)

    def status(self, now: float | None = None) -> dict[str, Any]:
        dev = self.device
        return {
            "name": self.device_name,
            "status": "online" if self.online else "offline",
            "pid": dev.writer_pid if dev else None,
            "heartbeat_age": round(dev.heartbeat_age(now), 3) if dev else None,
        }

    def poll(self, now: float | None = None) -> LinkChanges:
        now = time.time() if now is None else now
        changes = LinkChanges()
        dev = self.device
        if dev is not None:
            if dev.closed:
                if self.online:
                    changes.online = self.online = False
                if not self.closed_cleanly:
                    self.closed_cleanly = changes.closed = True
                    changes.notes.append(f"device {dev.device!r} closed")
            elif dev.heartbeat_age(now) > self.offline_after:
                if self.online:
                    changes.online = self.online = False
                    changes.notes.append(f"device {dev.device!r} stopped beating (pid {dev.writer_pid})")
            else:
                if not self.online:
                    changes.online = self.online = True
                try:
                    changes.channels = dev.refresh()
                except (ValueError, LayoutError) as exc:
                    log.warning("cannot read the manifest of %r: %s", dev.device, exc)
        if (dev is None or not self.online) and now >= self._next_retry:
            self._next_retry = now + self.retry_period
            self._try_attach(now, changes)
        return changes

    def _try_attach(self, now: float, changes: LinkChanges) -> None:
        name = self._pick_name()
        if name is None:
            return
        current = self.device
        if current is not None and current.device == name and not self._replaced(name, current):
            return
        try:
            fresh = DeviceAttachment(name, self.open_segment)
        except (FileNotFoundError, LayoutError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot attach to device %r: %s", name, exc)
            return
        if fresh.closed or fresh.heartbeat_age(now) > self.offline_after:
            fresh.close()
            return
        if current is not None:
            current.close()
        self.device = fresh
        self.online = True
        self.closed_cleanly = False
        changes.online = True
        changes.attached = changes.channels = True
        changes.notes.append(f"attached to device {name!r} (pid {fresh.writer_pid})")

    def _pick_name(self) -> str | None:
        if self.name != "auto":
            return self.name
        if self.device is not None:
            return self.device.device
        live = live_devices()
        if len(live) > 1:
            if not self._warned_several:
                log.warning("several devices are running (%s); choose one with --attach NAME, or serve them "
                            "all with --attach all", ", ".join(live))
                self._warned_several = True
            return None
        return live[0] if live else None

    def _replaced(self, name: str, current: DeviceAttachment) -> bool:
        """True if the control segment under ``name`` now belongs to another process."""
        try:
            shm = self.open_segment(layout.control_segment_name(name))
        except FileNotFoundError:
            return False
        try:
            header = layout.read_header(shm.buf)
            return (header.writer_pid, header.created) != (current.header.writer_pid, current.header.created)
        except LayoutError:
            return False
        finally:
            close_segment(shm)

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
