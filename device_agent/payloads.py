"""What a channel's ring slots hold, as both processes read it: the records dtype as JSON
(in the manifest) and the event record.

The device writes these (channels.py, monitor.py); the bridge and other readers read them
(attach.py). Sans-I/O; imports only numpy and the standard library. The bodies around them
are in records.py (the ring) and frames.py (frame slots); the segment header in layout.py.

Records dtype, in the manifest's channel entry: one ``[name, type string]`` per field, plus a
shape list for a subarray field, e.g. ``[["t", "<f8"], ["pos", "<f4", [3]]]``. It has no
offsets: readers rebuild a packed dtype.

Event record, the payload of an events ring slot (native byte order):

    offset  size       type  field
    0       8          f64   t       device time
    8       4          u32   length  bytes of JSON that follow
    12      4          u32   flags   bit 0 (EVENT_TO_CLIENT): the JSON is {"to": client_id, "message": m}
    16      max_bytes        JSON text, UTF-8
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

EVENT_META = struct.Struct("=dII")  # t, length, flags: the first 16 bytes of an event record
EVENT_TO_CLIENT = 1                 # flags bit 0


def event_record_size(max_bytes: int) -> int:
    """Bytes of one event record whose JSON is at most ``max_bytes``."""
    return EVENT_META.size + max_bytes


def dtype_to_json(dtype: np.dtype) -> list[list[Any]]:
    """The manifest's description of a packed structured dtype (see the module docstring)."""
    out = []
    for name in dtype.names:
        sub = dtype.fields[name][0]
        entry: list[Any] = [name, sub.base.str]
        if sub.shape:
            entry.append(list(sub.shape))
        out.append(entry)
    return out


def dtype_from_json(descr: list[list[Any]]) -> np.dtype:
    """The packed structured dtype a manifest entry describes (``dtype_to_json``'s inverse)."""
    return np.dtype([(e[0], e[1], tuple(e[2])) if len(e) > 2 else (e[0], e[1]) for e in descr])
