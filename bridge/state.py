"""StateRelay: the device's state (``mon.state``) as the clients see it, full or as changes.

Sans-I/O: ``poll`` reads the device's state blob through its attachment and hands what to
send to the ``send`` function it is given (the core's outbox); it never emits. No Flask or socketio imports.

A client gets the whole state when it connects or subscribes, and after that each change
(``{"full": false, "values": {changed keys}}``). A congested client gets nothing while it
is congested and the whole state once it is not (latest wins, like frames).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .protocol import MAX_DEPTH, shown, unsendable

log = logging.getLogger("bridge")
_MISSING = object()

Send = Callable[[str, Any, list[str]], None]


class StateRelay:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.version = -1
        self.needs_full: set[str] = set()  # clients owed the whole state once not congested

    def full(self) -> dict[str, Any]:
        """The ``state`` message that gives a client the whole state."""
        return {"full": True, "values": dict(self.values)}

    def forget(self, sid: str) -> None:
        self.needs_full.discard(sid)

    def reset(self) -> None:
        """A new device process: its state is sent whole at the next poll."""
        self.version = -1

    def poll(self, device: Any, attached: bool, sids: list[str], congested: Callable[[str], bool],
             send: Send) -> None:
        """Send what changed since the last poll (everything when ``attached``) to ``sids``."""
        if device is not None and device.state_version != self.version:
            version, values = device.state()
            problems = {k: p for k, v in values.items() if (p := unsendable(v, MAX_DEPTH - 2))}
            if problems:  # clients could not decode it (and the bridge refuses such input); say which
                key, problem = next(iter(problems.items()))
                log.warning("state %s %s: not sent to clients", shown(key), problem)
                values = {k: v for k, v in values.items() if k not in problems}
            changed = values if attached else {k: v for k, v in values.items() if self.values.get(k, _MISSING) != v}
            self.values, self.version = values, version
            if changed or attached:
                self.needs_full.update(s for s in sids if congested(s))
                ready = [s for s in sids if s not in self.needs_full]
                if ready:
                    send("state", {"full": attached, "values": changed}, ready)
        for sid in [s for s in self.needs_full if not congested(s)]:
            self.needs_full.discard(sid)
            send("state", self.full(), [sid])
