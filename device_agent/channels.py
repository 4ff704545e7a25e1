"""The device side of each channel kind: records, frame, events, and the shared state.

Publishing only: the bridge never imports this module (tests/test_layers.py). Imports only
numpy and the standard library. Each channel owns one segment
(``monbridge.<device>.ch.<channel>``): the 64-byte header of layout.py, then a
RecordRing (records, events) or FrameSlots (frame) at offset 64. Events reuse the record
ring with fixed-size event records; their format and the records dtype's JSON are in
payloads.py, which readers share.

Each channel has exactly one writer: publish from one thread per channel.
"""

from __future__ import annotations

import json
import operator
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import numpy as np

from .errors import ChannelError, MessageTooLarge
from .frames import FrameSlots
from .layout import HEADER_SIZE
from .payloads import EVENT_META, EVENT_TO_CLIENT
from .queues import SeqlockBlob
from .records import RecordRing

_STRUCT_CODES = {
    ("f", 8): "d", ("f", 4): "f", ("f", 2): "e",
    ("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
    ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q", ("b", 1): "?",
}


# -- dtypes (sans-I/O) ------------------------------------------------------------------

def records_dtype(fields: Any) -> np.dtype:
    """A packed, native-order structured dtype from ``{"t": "f8", ...}``, a list of
    (name, format[, shape]) tuples, or an existing structured dtype."""
    try:
        if isinstance(fields, Mapping):
            dtype = np.dtype(list(fields.items()))
        else:
            dtype = np.dtype(fields)
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"record fields {fields!r} do not make a numpy dtype: {exc}") from None
    if dtype.names is None or not dtype.names:
        raise ChannelError(f"record fields must be named, e.g. {{'t': 'f8', 'x': 'f4'}}; got {fields!r}")
    for name in dtype.names:
        sub = dtype.fields[name][0]
        if sub.hasobject or sub.base.kind not in "fiub":
            raise ChannelError(
                f"record field {name!r} has type {sub}; use numbers or booleans (f8, f4, i4, u2, ?, ...)"
            )
    # repack: no padding, native order, so the manifest's (name, format) list rebuilds it exactly
    return np.dtype([(name, dtype.fields[name][0].newbyteorder("=")) for name in dtype.names])


def struct_for(dtype: np.dtype) -> struct.Struct | None:
    """A Struct packing one record from its field values, if every field is a scalar."""
    codes = []
    offset = 0
    for name in dtype.names:
        sub, field_offset = dtype.fields[name][:2]
        code = _STRUCT_CODES.get((sub.kind, sub.itemsize))
        if sub.shape or code is None or field_offset != offset:
            return None
        codes.append(code)
        offset += sub.itemsize
    s = struct.Struct("=" + "".join(codes))
    return s if s.size == dtype.itemsize else None


# -- channels ---------------------------------------------------------------------------

_NOBODY_WAITS = memoryview(bytearray(8)).cast("Q")  # a wake flag that is never set


class Waker:
    """Rings the bridge's data doorbell at the first publish after the bridge asked for it.

    ``flag`` is the control segment's wake word (control.WAKE_AT): the bridge stores 1 when
    a subscriber waits for new data; a publish that sees 1 stores 0 and calls ``ring``. So
    new data reaches the bridge at once rather than at its next poll, and a publish costs
    one load when nobody waits (a ring, a few µs, happens at most once per bridge poll).
    """

    def __init__(self, flag: memoryview, ring: Callable[[], None]) -> None:
        self.flag = flag
        self._ring = ring

    def wake(self) -> None:
        self.flag[0] = 0
        self._ring()

    def close(self) -> None:
        self.flag = _NOBODY_WAITS


NO_WAKER = Waker(_NOBODY_WAITS, lambda: None)


class RecordsChannel:
    """A ring of fixed-size records. ``publish(t=..., x=...)`` or ``publish_many(array)``."""

    kind = "records"

    def __init__(self, name: str, dtype: np.dtype, buf: memoryview, waker: Waker = NO_WAKER) -> None:
        self.name = name
        self.dtype = dtype
        self._waker = waker
        self._wake_flag = waker.flag  # cached for publish(); _detach() swaps in a flag never set
        self._mv = buf
        self._ring: RecordRing | None = RecordRing(buf, HEADER_SIZE)
        self._names = dtype.names
        self._struct = struct_for(dtype)
        self._pack = self._struct.pack if self._struct else self._pack_numpy
        self._get = operator.itemgetter(*self._names) if len(self._names) > 1 else (lambda d: (d[self._names[0]],))

    @property
    def count(self) -> int:
        """Records published so far."""
        return self._ring.write_count if self._ring else 0

    def publish(self, *values: Any, **fields: Any) -> None:
        """Append one record, by field name (``t=1.0, x=2``) or in field order."""
        ring = self._ring
        if ring is None:
            return
        if fields:
            if values or len(fields) != len(self._names):
                raise self._field_error(values, fields)
            try:
                values = self._get(fields)
            except KeyError:
                raise self._field_error(values, fields) from None
        elif len(values) != len(self._names):
            raise self._field_error(values, fields)
        try:
            payload = self._pack(*values)
        except (struct.error, TypeError, ValueError) as exc:
            raise ChannelError(f"records {self.name!r}: cannot store {values!r}: {exc}") from None
        ring.write(payload, self._mv)
        if self._wake_flag[0]:
            self._waker.wake()

    def publish_many(self, records: np.ndarray) -> None:
        """Append a structured array of records (same field names; cast if needed)."""
        ring = self._ring
        if ring is None:
            return
        if not isinstance(records, np.ndarray) or records.dtype.names is None:
            raise ChannelError(f"records {self.name!r}: publish_many takes a structured numpy array")
        if records.dtype != self.dtype:
            if set(records.dtype.names) != set(self._names):
                raise ChannelError(
                    f"records {self.name!r}: array fields {records.dtype.names} differ from {self._names}"
                )
            records = records.astype(self.dtype)
        ring.write_many(np.ascontiguousarray(records.reshape(-1)))
        if self._wake_flag[0]:
            self._waker.wake()

    def skip_to(self, n: int) -> None:
        """Number the next record ``n``: the ones skipped count as missed (RecordRing.skip_to)."""
        if self._ring is not None:
            self._ring.skip_to(n)

    def _pack_numpy(self, *values: Any) -> bytes:
        rec = np.zeros((), dtype=self.dtype)
        for name, value in zip(self._names, values):
            rec[name] = value
        return rec.tobytes()

    def _field_error(self, values: tuple, fields: dict) -> ChannelError:
        got = list(fields) if fields else f"{len(values)} positional values"
        return ChannelError(f"records {self.name!r}: expected fields {list(self._names)}, got {got}")

    def _detach(self) -> None:
        self._ring = None
        self._mv = None
        self._wake_flag = _NOBODY_WAITS


class FrameChannel:
    """The latest N-D array. ``publish(array)``; the first dimension may be shorter than declared."""

    kind = "frame"

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype, buf: memoryview,
                 waker: Waker = NO_WAKER) -> None:
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self._waker = waker
        self._wake_flag = waker.flag
        self._slots: FrameSlots | None = FrameSlots(buf, HEADER_SIZE)
        self._views = [
            np.ndarray(shape, dtype=dtype, buffer=buf, offset=self._slots.data_offset(i))
            for i in range(self._slots.nslots)
        ]

    @property
    def count(self) -> int:
        return self._slots.latest if self._slots else 0

    def skip_to(self, k: int) -> None:
        """Number the next frame ``k + 1`` (FrameSlots.skip_to)."""
        if self._slots is not None:
            self._slots.skip_to(k)

    def publish(self, array: Any, t: float | None = None) -> None:
        slots = self._slots
        if slots is None:
            return
        array = np.asarray(array)
        if array.shape[1:] != self.shape[1:] or array.ndim != len(self.shape) or array.shape[0] > self.shape[0]:
            raise ChannelError(
                f"frame {self.name!r}: array of shape {array.shape} does not fit declared shape "
                f"{self.shape} (the first dimension may be shorter)"
            )
        if not np.can_cast(array.dtype, self.dtype, "same_kind"):
            raise ChannelError(f"frame {self.name!r}: cannot store {array.dtype} data in a {self.dtype} frame")
        rows = array.shape[0]
        slot = slots.begin_write()
        np.copyto(self._views[slot][:rows], array, casting="same_kind")
        slots.end_write(time.time() if t is None else t, rows * self.dtype.itemsize * _inner(self.shape), rows)
        if self._wake_flag[0]:
            self._waker.wake()

    def _detach(self) -> None:
        self._slots = None
        self._views = []
        self._wake_flag = _NOBODY_WAITS


def _inner(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


class EventsChannel:
    """Variable-size JSON messages (log lines, notices), at most ``max_bytes`` each."""

    kind = "events"

    def __init__(self, name: str, max_bytes: int, buf: memoryview, waker: Waker = NO_WAKER) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self._waker = waker
        self._wake_flag = waker.flag
        self._mv = buf
        self._ring: RecordRing | None = RecordRing(buf, HEADER_SIZE)
        self._lock = threading.Lock()  # events may come from handlers and the device loop

    @property
    def count(self) -> int:
        return self._ring.write_count if self._ring else 0

    def skip_to(self, n: int) -> None:
        """Number the next event ``n``: the ones skipped count as missed (RecordRing.skip_to)."""
        with self._lock:
            if self._ring is not None:
                self._ring.skip_to(n)

    def publish(self, message: Any, to: str | None = None, t: float | None = None) -> None:
        """Publish one JSON-able message; ``to`` addresses it to one client id only."""
        if self._ring is None:
            return
        flags = 0
        if to is not None:
            message = {"to": str(to), "message": message}
            flags = EVENT_TO_CLIENT
        try:
            data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ChannelError(f"events {self.name!r}: message is not JSON-serializable: {exc}") from None
        if len(data) > self.max_bytes:
            raise MessageTooLarge(
                f"events {self.name!r}: message is {len(data)} bytes as JSON, the limit is "
                f"{self.max_bytes}; raise it with mon.events({self.name!r}, max_bytes=...)"
            )
        with self._lock:
            ring = self._ring
            if ring is None:
                return
            off = ring.begin_write()
            EVENT_META.pack_into(self._mv, off, time.time() if t is None else t, len(data), flags)
            self._mv[off + EVENT_META.size : off + EVENT_META.size + len(data)] = data
            ring.end_write()
        if self._wake_flag[0]:
            self._waker.wake()

    def _detach(self) -> None:
        with self._lock:
            self._ring = None
            self._mv = None
            self._wake_flag = _NOBODY_WAITS


class SharedState(Mapping):
    """Small key/value state shared with every client; the latest value wins.

    ``update(speed=1.0)`` merges and publishes; read it like a dict.
    """

    def __init__(self, blob: SeqlockBlob | None) -> None:
        self._blob = blob
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def update(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        changes = dict(values or {}, **more)
        for key, value in changes.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ChannelError(f"state {key!r}: value {value!r:.60} is not JSON-serializable: {exc}") from None
        with self._lock:
            merged = {**self._values, **changes}
            data = json.dumps(merged, separators=(",", ":")).encode()
            if self._blob is not None:
                if len(data) > self._blob.capacity:
                    raise MessageTooLarge(
                        f"state is {len(data)} bytes as JSON, the limit is {self._blob.capacity}; "
                        "keep large data in a channel"
                    )
                self._blob.write(data)
            self._values = merged

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SharedState({self._values!r})"

    def _detach(self) -> None:
        with self._lock:
            self._blob = None
