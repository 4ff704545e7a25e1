"""CDR encoding as ROS 2 writes it (plain CDR, little-endian), for MCAP messages.

Pure: numpy and the standard library; must not import mcap, device_agent or the web stack.

A message is a 4-byte encapsulation header ``00 01 00 00`` (CDR_LE) followed by the
fields in schema order. Every primitive is aligned to its own size (1, 2, 4 or 8),
counted from the first byte *after* the header; padding bytes are zero.

| ros2msg type | bytes | alignment |
|---|---|---|
| bool, int8, uint8 | 1 | 1 |
| int16, uint16 | 2 | 2 |
| int32, uint32, float32 | 4 | 4 |
| int64, uint64, float64 | 8 | 8 |
| ``T[n]`` (fixed array) | n × size(T), no length | as T |
| ``T[]`` (sequence) | uint32 count, then the elements | 4, then as T |
| string | uint32 length including the NUL, UTF-8 bytes, NUL | 4 |
| nested message | its fields, in order | as its first field |

Records have no strings or sequences, so every record of a channel has the same CDR
layout: ``RecordLayout`` expresses it as a numpy dtype with explicit offsets and encodes a
whole batch with one copy per field (no Python loop per record).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR_LE: plain CDR, little-endian, no options
HEADER = len(ENCAPSULATION)

# numpy kind + itemsize -> (ros2msg primitive, the little-endian numpy type stored)
PRIMITIVES: dict[tuple[str, int], tuple[str, str]] = {
    ("b", 1): ("bool", "|b1"),
    ("i", 1): ("int8", "|i1"), ("i", 2): ("int16", "<i2"), ("i", 4): ("int32", "<i4"), ("i", 8): ("int64", "<i8"),
    ("u", 1): ("uint8", "|u1"), ("u", 2): ("uint16", "<u2"), ("u", 4): ("uint32", "<u4"), ("u", 8): ("uint64", "<u8"),
    ("f", 4): ("float32", "<f4"), ("f", 8): ("float64", "<f8"),
    # float16 has no ros2msg type: widened to float32, which holds every float16 exactly
    ("f", 2): ("float32", "<f4"),
}


class CdrError(ValueError):
    """A dtype or value that this CDR encoder cannot express."""


def primitive(dt: np.dtype) -> tuple[str, str]:
    """The (ros2msg type, little-endian numpy type) for a scalar numpy dtype."""
    try:
        return PRIMITIVES[(dt.kind, dt.itemsize)]
    except KeyError:
        raise CdrError(f"numpy type {dt.str!r} has no CDR equivalent here "
                       f"(supported: bool, int8-64, uint8-64, float16/32/64)") from None


def _aligned(offset: int, size: int) -> int:
    """``offset`` (counted from the start of the message, header included) moved up to a
    multiple of ``size`` counted from the end of the header."""
    return HEADER + -(-(offset - HEADER) // size) * size


@dataclass(frozen=True)
class LayoutField:
    source: str          # the field's name in the records dtype
    name: str            # its name in the schema
    ros_type: str        # e.g. "float32", "float64[3]"
    count: int           # elements (1 for a scalar)
    array: bool          # a fixed-size array (a subarray field, flattened in C order)


class RecordLayout:
    """The fixed CDR layout of one records dtype.

    ``fields`` pairs each source field with its schema name (``names`` maps them, in
    order); ``encode(records)`` returns one bytes object per record.
    """

    def __init__(self, dtype: np.dtype, names: list[str]) -> None:
        if dtype.names is None or len(names) != len(dtype.names):
            raise CdrError(f"need a structured dtype and one schema name per field, got {dtype!r} and {names!r}")
        offset = HEADER
        formats: dict[str, tuple[int, str, tuple[int, ...]]] = {}
        fields = []
        view: dict[str, list] = {"names": [], "formats": [], "offsets": []}
        for source, name in zip(dtype.names, names):
            ft = dtype[source]
            base, shape = (ft.subdtype if ft.subdtype else (ft, ()))
            ros, stored = primitive(base)
            count = int(np.prod(shape)) if shape else 1
            offset = _aligned(offset, np.dtype(stored).itemsize)
            formats[name] = (offset, stored, (count,) if shape else ())
            view["names"].append(source)
            view["formats"].append((stored, shape) if shape else stored)
            view["offsets"].append(offset)
            fields.append(LayoutField(source, name, f"{ros}[{count}]" if shape else ros, count, bool(shape)))
            offset += count * np.dtype(stored).itemsize
        self.fields = fields
        self.records_dtype = dtype
        self.size = offset  # bytes per message, header included (no trailing padding)
        self.dtype = np.dtype({
            "names": ["_encapsulation", *formats],
            "formats": [("u1", (HEADER,))] + [(f, s) if s else f for _, f, s in formats.values()],
            "offsets": [0] + [o for o, _, _ in formats.values()],
            "itemsize": self.size,
        })
        # the same bytes seen with the records' own field names and shapes, in their order:
        # a whole batch converts either way in one numpy call (fields pair up by position)
        self.source_view = np.dtype({**view, "itemsize": self.size})

    def encode_array(self, records: np.ndarray) -> np.ndarray:
        """The batch in CDR layout: an array of ``self.dtype``, one message per row."""
        n = len(records)
        out = np.zeros(n, self.dtype)  # zeros: padding bytes must be 0
        out["_encapsulation"] = np.frombuffer(ENCAPSULATION, np.uint8)
        out.view(self.source_view)[...] = records
        return out

    def decode_array(self, messages: bytes) -> np.ndarray:
        """Messages of this layout, back to back, as records of ``dtype`` (values bit for bit:
        float16 was widened to float32 exactly and narrows back exactly)."""
        return np.frombuffer(messages, self.source_view).astype(self.records_dtype)

    def encode(self, records: np.ndarray) -> list[bytes]:
        """One CDR message (bytes) per record."""
        raw = self.encode_array(records).tobytes()
        size = self.size
        return [raw[i : i + size] for i in range(0, len(raw), size)]


class CdrWriter:
    """Builds one variable-size CDR message field by field (images, clouds, logs).

        w = CdrWriter(); w.time(ns); w.string("cam"); w.uint32(640); w.sequence_u8(data)
        msg = w.getvalue()

    A large ``sequence_u8`` (an image, a cloud) is kept by reference, not copied, until
    ``getvalue()`` joins the parts: the frame's bytes are copied once, not twice.
    """

    BIG = 4096   # bytes: a sequence_u8 at least this long is referenced, not copied

    def __init__(self) -> None:
        self._parts: list[bytes | bytearray | memoryview] = []
        self._done = 0                # bytes in _parts
        self._buf = bytearray(ENCAPSULATION)

    def _align(self, size: int) -> None:
        pad = -(self._done + len(self._buf) - HEADER) % size
        if pad:
            self._buf += bytes(pad)

    def _pack(self, fmt: str, size: int, value: int | float) -> None:
        self._align(size)
        self._buf += struct.pack(fmt, value)

    def uint8(self, v: int) -> None:
        self._buf.append(v)

    def uint32(self, v: int) -> None:
        self._pack("<I", 4, v)

    def int32(self, v: int) -> None:
        self._pack("<i", 4, v)

    def float64(self, v: float) -> None:
        self._pack("<d", 8, v)

    def string(self, s: str) -> None:
        data = s.encode()
        if b"\0" in data:
            raise CdrError(f"a CDR string cannot hold a NUL character: {s!r}")
        self.uint32(len(data) + 1)
        self._buf += data
        self._buf.append(0)

    def time(self, ns: int) -> None:
        """builtin_interfaces/Time: int32 sec, uint32 nanosec."""
        sec, nanosec = divmod(int(ns), 1_000_000_000)
        self.int32(sec)
        self.uint32(nanosec)

    def sequence_u8(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """``uint8[]``: any C-contiguous buffer, as bytes. A large one is referenced until
        ``getvalue()``: do not change it before then."""
        view = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else memoryview(np.ascontiguousarray(data)).cast("B")
        self.uint32(len(view))
        if len(view) < self.BIG:
            self._buf += view
            return
        self._parts += (self._buf, view)
        self._done += len(self._buf) + len(view)
        self._buf = bytearray()

    def sequence_u32(self, values: list[int]) -> None:
        self.uint32(len(values))
        for v in values:
            self.uint32(v)

    def buffers(self) -> list[bytes | bytearray | memoryview]:
        """The message as buffers to write one after the other (``getvalue()`` joins them)."""
        return [*self._parts, self._buf]

    def getvalue(self) -> bytes:
        return b"".join((*self._parts, self._buf)) if self._parts else bytes(self._buf)


class CdrReader:
    """Reads one CDR message field by field, the inverse of ``CdrWriter`` (replay,
    bridge/record/reader.py). Raises ``CdrError`` on a message that ends early or does not
    start with a little-endian CDR header.

        r = CdrReader(msg); stamp = r.time(); frame_id = r.string(); width = r.uint32() ...
    """

    def __init__(self, data: bytes | memoryview) -> None:
        self._buf = memoryview(data).cast("B")
        head = bytes(self._buf[:HEADER])
        if len(head) < HEADER or head[0] != 0 or head[1] not in (1, 3):   # CDR_LE, PL_CDR_LE
            raise CdrError(f"not a little-endian CDR message (header {head.hex()})")
        self._pos = HEADER

    def _take(self, n: int, align: int = 1) -> memoryview:
        self._pos += -(self._pos - HEADER) % align
        end = self._pos + n
        if end > len(self._buf):
            raise CdrError(f"CDR message ends at byte {len(self._buf)}, a field needs bytes up to {end}")
        view = self._buf[self._pos:end]
        self._pos = end
        return view

    def _unpack(self, fmt: str, size: int) -> int | float:
        return struct.unpack(fmt, self._take(size, size))[0]

    def uint8(self) -> int:
        return self._take(1)[0]

    def uint32(self) -> int:
        return int(self._unpack("<I", 4))

    def int32(self) -> int:
        return int(self._unpack("<i", 4))

    def float64(self) -> float:
        return float(self._unpack("<d", 8))

    def string(self) -> str:
        n = self.uint32()
        raw = bytes(self._take(n))
        return raw[:-1].decode("utf-8", errors="replace") if n else ""

    def time(self) -> int:
        """builtin_interfaces/Time as Unix nanoseconds."""
        sec = self.int32()
        return sec * 1_000_000_000 + self.uint32()

    def sequence_u8(self) -> memoryview:
        """``uint8[]``: a view of the bytes (no copy)."""
        return self._take(self.uint32())

    def sequence_u32(self) -> list[int]:
        n = self.uint32()
        return list(struct.unpack(f"<{n}I", self._take(4 * n, 4))) if n else []
