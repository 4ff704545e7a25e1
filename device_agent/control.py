"""The control segment of a device: manifest, state, clients, bridge info, command queues.

Sans-I/O: ``ControlLayout`` places its parts in any buffer. Standard library only.

    offset    size                 part          writer   contents
    0         64                   header        device   see layout.py (heartbeat lives here)
    64        8                    wake          both     u64: 1 = the bridge waits for new data; the
                                                          next publish stores 0 and rings its data
                                                          doorbell (channels.Waker)
    72        4024                 reserved
    4096      16 + 64 KiB          manifest      device   JSON: channels + command catalog
    +         16 + 64 KiB          state         device   JSON object: the shared key/value state
    +         16 + 64 KiB          clients       bridge   JSON list: the bridge's clients table
    +         16 + 4 KiB           bridge        bridge   JSON: {"pid", "url", "doorbell", "data_doorbell"}
    +         64 + 128 × 8 KiB     commands      bridge   MessageQueue bridge → device (JSON)
    +         64 + 128 × 8 KiB     replies       device   MessageQueue device → bridge (JSON)

Each blob is a SeqlockBlob; its ``version`` tells a poller whether it changed.
"""

from __future__ import annotations

import json
from typing import Any

from .layout import HEADER_SIZE
from .queues import MessageQueue, SeqlockBlob, blob_bytes, queue_bytes

MANIFEST_BYTES = 64 * 1024
STATE_BYTES = 64 * 1024
CLIENTS_BYTES = 64 * 1024
BRIDGE_BYTES = 4 * 1024
QUEUE_SLOTS = 128
QUEUE_SLOT_BYTES = 8 * 1024
MAX_MESSAGE_BYTES = QUEUE_SLOT_BYTES - 8

WAKE_AT = 64
_FIRST = 4096
MANIFEST_AT = _FIRST
STATE_AT = MANIFEST_AT + blob_bytes(MANIFEST_BYTES)
CLIENTS_AT = STATE_AT + blob_bytes(STATE_BYTES)
BRIDGE_AT = CLIENTS_AT + blob_bytes(CLIENTS_BYTES)
COMMANDS_AT = BRIDGE_AT + blob_bytes(BRIDGE_BYTES)
REPLIES_AT = COMMANDS_AT + queue_bytes(QUEUE_SLOTS, QUEUE_SLOT_BYTES)
CONTROL_SIZE = REPLIES_AT + queue_bytes(QUEUE_SLOTS, QUEUE_SLOT_BYTES)
assert HEADER_SIZE <= _FIRST


class ControlLayout:
    """The parts of a control segment, over ``buf``. ``format=True`` initialises the queues."""

    def __init__(self, buf: memoryview | bytearray, format: bool = False) -> None:
        self.manifest = SeqlockBlob(buf, MANIFEST_AT, MANIFEST_BYTES)
        self.state = SeqlockBlob(buf, STATE_AT, STATE_BYTES)
        self.clients = SeqlockBlob(buf, CLIENTS_AT, CLIENTS_BYTES)
        self.bridge = SeqlockBlob(buf, BRIDGE_AT, BRIDGE_BYTES)
        if format:
            MessageQueue.format(buf, COMMANDS_AT, QUEUE_SLOTS, QUEUE_SLOT_BYTES)
            MessageQueue.format(buf, REPLIES_AT, QUEUE_SLOTS, QUEUE_SLOT_BYTES)
        self.commands = MessageQueue(buf, COMMANDS_AT)
        self.replies = MessageQueue(buf, REPLIES_AT)
        self.wake = memoryview(buf).cast("B")[WAKE_AT : WAKE_AT + 8].cast("Q")  # one aligned u64


class BridgeInfo:
    """What the bridge wrote into the bridge blob (its url, pid, ``doorbell`` and
    ``data_doorbell`` addresses: DeviceAttachment.publish_bridge), read again only when the
    blob's version changes. The device side's view: the monitor, an edge's copy of a device."""

    def __init__(self, blob: SeqlockBlob) -> None:
        self._blob: SeqlockBlob | None = blob
        self._seen: tuple[int, dict[str, Any]] = (-1, {})

    def get(self) -> dict[str, Any]:
        if self._blob is None:
            return self._seen[1]
        version = self._blob.version
        if version != self._seen[0] and version % 2 == 0 and version:
            _, data = self._blob.read()
            try:
                self._seen = (version, json.loads(data))
            except ValueError:
                self._seen = (version, {})
        return self._seen[1]

    def release(self) -> None:
        """Drop the view of the segment (so that it can be closed); ``get`` keeps the last value."""
        self._blob = None
