"""A device laid out in ``bytearray``s, for unit tests of the bridge's core (tests/test_core.py).

The same byte layouts as a real device's shared memory, written with device_agent's own
writer classes in this process (bridge/fleet/mirror.py, what an edge bridge serves): no
segments in /dev/shm, no threads, no clock of its own. The test says when the device
beats, publishes, and answers commands.

    dev = MemoryDevice("arm")
    temps = dev.records("temps", {"t": "f8", "v": "f4"})
    dev.command("add", {"a": {"type": "integer"}})
    link = DeviceLink("arm", open_segment=dev.open_segment)   # the bridge's side
    temps.publish(t=1.0, v=2.0)
    dev.answer(lambda name, args, client: args["a"] + 1)

A device restart under the same name: ``MemoryDevice("arm", pid=..., segments=dev.segments)``
lays its segments out afresh in the same dict, so the bridge's ``open_segment`` finds the new
control segment (another pid) where the old one was.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from bridge.fleet.mirror import MemoryDevice as _LaidOut
from device_agent.channels import EventsChannel, FrameChannel, RecordsChannel, records_dtype
from device_agent.payloads import dtype_to_json


class MemoryDevice(_LaidOut):
    def __init__(self, name: str, pid: int = 4242, now: float = 1000.0,
                 segments: dict[str, bytearray] | None = None) -> None:
        """``segments``: share another device's dict (a restart replaces its segments)."""
        super().__init__(name, pid, now, segments)

    def records(self, name: str, fields: Any, capacity: int = 64) -> RecordsChannel:
        dtype = records_dtype(fields)
        return self.add_channel({"name": name, "kind": "records", "dtype": dtype_to_json(dtype), "capacity": capacity})

    def frame(self, name: str, shape: tuple[int, ...], dtype: str = "f4", slots: int = 3) -> FrameChannel:
        return self.add_channel({"name": name, "kind": "frame", "dtype": np.dtype(dtype).str, "shape": list(shape),
                                 "slots": slots})

    def events(self, name: str, capacity: int = 64, max_bytes: int = 1024) -> EventsChannel:
        return self.add_channel({"name": name, "kind": "events", "capacity": capacity, "max_bytes": max_bytes})

    def command(self, name: str, params: list[dict[str, Any]] | None = None, coalesce: bool = False) -> None:
        """Add ``name`` to the command catalog (params as docs/protocol.md §6.3 lists them)."""
        self.commands.append({"name": name, "params": params or [], "coalesce": coalesce, "doc": ""})
        self.publish_manifest()

    def reply(self, command_id: Any, result: Any = None, error: dict[str, str] | None = None,
              coalesced: bool = False) -> None:
        msg = {"id": command_id, "ok": error is None, **({"error": error} if error else {"result": result})}
        if coalesced:
            msg["coalesced"] = True
        self.ctl.replies.put(json.dumps(msg).encode())

    def clients(self) -> list[dict[str, Any]]:
        """The clients table the bridge wrote into the control segment (``mon.clients``)."""
        _, data = self.ctl.clients.read()
        return json.loads(data) if data else []

    def answer(self, handler: Callable[[str, dict[str, Any], dict[str, Any]], Any]) -> list[dict[str, Any]]:
        """Run ``handler(name, args, client)`` for every queued command and reply with its
        result; return the commands taken."""
        taken = self.take_commands()
        for cmd in taken:
            self.reply(cmd["id"], handler(cmd["name"], cmd["args"], cmd.get("client", {})))
        return taken
