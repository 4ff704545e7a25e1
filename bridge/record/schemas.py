"""What each device channel becomes in an MCAP file: schema names, schema text, encoders.

Pure: numpy, the standard library and cdr.py; must not import mcap, device_agent or the
web stack (tests/test_record_schemas.py checks it over plain bytes).

| device channel | MCAP schema (encoding) | message encoding |
|---|---|---|
| records | ``monbridge_msgs/msg/<Channel>`` (ros2msg, generated from the dtype) | cdr |
| frame, 2-D u1/u2/f4 or H×W×1/3/4 u1 | ``foxglove_msgs/msg/RawImage`` (ros2msg) | cdr |
| frame, N×C float (3 ≤ C ≤ 16) | ``foxglove_msgs/msg/PointCloud`` (ros2msg) | cdr |
| frame, anything else | ``monbridge_msgs/msg/NDArray`` (ros2msg: dtype, shape, bytes) | cdr |
| events with a level and a message | ``foxglove_msgs/msg/Log`` (ros2msg) | cdr |
| other events, state, recorder status | ``monbridge.Event`` / ``monbridge.State...`` (jsonschema) | json |

``foxglove_msgs/msg/X`` is the ROS 2 spelling of Foxglove's ``foxglove.X`` schema: Foxglove
and Lichtblick recognise both (docs/recording.md, with sources).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cdr import CdrError, CdrWriter, RecordLayout

RULE = "=" * 80
TIME_MSG = f"{RULE}\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"

RAW_IMAGE = ("builtin_interfaces/Time timestamp\nstring frame_id\nuint32 width\nuint32 height\n"
             "string encoding\nuint32 step\nuint8[] data\n" + TIME_MSG)

POINT_CLOUD = (
    "builtin_interfaces/Time timestamp\nstring frame_id\ngeometry_msgs/Pose pose\nuint32 point_stride\n"
    "foxglove_msgs/PackedElementField[] fields\nuint8[] data\n" + TIME_MSG
    + f"{RULE}\nMSG: foxglove_msgs/PackedElementField\nstring name\nuint32 offset\n"
    "uint8 UNKNOWN=0\nuint8 UINT8=1\nuint8 INT8=2\nuint8 UINT16=3\nuint8 INT16=4\nuint8 UINT32=5\n"
    "uint8 INT32=6\nuint8 FLOAT32=7\nuint8 FLOAT64=8\nuint8 type\n"
    f"{RULE}\nMSG: geometry_msgs/Pose\nPoint position\nQuaternion orientation\n"
    f"{RULE}\nMSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z\n"
    f"{RULE}\nMSG: geometry_msgs/Quaternion\nfloat64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n")

LOG = ("builtin_interfaces/Time timestamp\nuint8 UNKNOWN=0\nuint8 DEBUG=1\nuint8 INFO=2\nuint8 WARNING=3\n"
       "uint8 ERROR=4\nuint8 FATAL=5\nuint8 level\nstring message\nstring name\nstring file\nuint32 line\n"
       + TIME_MSG)

NDARRAY = ("# A frame that is neither an image nor a point cloud, kept as it was published.\n"
           "builtin_interfaces/Time timestamp\n"
           "string dtype     # numpy type string, e.g. \"<f8\"\n"
           "uint32[] shape   # this frame's shape (its first dimension may be below the declared one)\n"
           "uint8[] data     # the array's bytes, C order, in dtype's byte order\n" + TIME_MSG)

# numpy kind+size -> foxglove PackedElementField type
_PACKED_TYPES = {("u", 1): 1, ("i", 1): 2, ("u", 2): 3, ("i", 2): 4, ("u", 4): 5, ("i", 4): 6, ("f", 4): 7, ("f", 8): 8}
CLOUD_MAX_COLUMNS = 16
_IMAGE_ENCODINGS = {("u", 1, 1): "mono8", ("u", 2, 1): "mono16", ("f", 4, 1): "32FC1",
                    ("u", 1, 3): "rgb8", ("u", 1, 4): "rgba8"}

# Log levels: foxglove.Log's numbers; the names a device may use (any case)
LOG_LEVELS = {"debug": 1, "info": 2, "information": 2, "warn": 3, "warning": 3, "error": 4,
              "err": 4, "fatal": 5, "critical": 5}
LOG_KEYS = {"level", "message", "msg", "name", "file", "line"}

# A time field holding Unix seconds becomes log_time; anything else (a step count, seconds
# since start) is left to the record itself and the recorder's clock stamps the message.
TIME_FIELDS = ("t", "time", "timestamp")
UNIX_MIN_S, UNIX_MAX_S = 1e9, 1e10   # 2001-09-09 .. 2286-11-20

_FIELD_OK = re.compile(r"^(?!.*__)(?!.*_$)[a-z][a-z0-9_]*$")  # rosidl's field name rule


class SchemaError(ValueError):
    """A channel that cannot be described by the schema asked for."""


# -- names ---------------------------------------------------------------------------------

def message_name(channel: str) -> str:
    """A ROS 2 message name (``^[A-Z][A-Za-z0-9]*$``) from a channel name: ``joint_temps`` →
    ``JointTemps``; ``3d-scan`` → ``C3dScan``."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", channel) if p]
    name = "".join(p[0].upper() + p[1:] for p in parts) or "Channel"
    return name if name[0].isalpha() else "C" + name


def field_names(names: tuple[str, ...] | list[str]) -> list[str]:
    """Valid, distinct ros2msg field names for ``names``, unchanged where already valid:
    lowercased, other characters → ``_``, no ``__``, no leading digit or trailing ``_``."""
    out: list[str] = []
    for raw in names:
        if _FIELD_OK.match(raw):
            name = raw
        else:
            name = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", raw.lower())).strip("_") or "field"
            if not name[0].isalpha():
                name = "f_" + name
        base, k = name, 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


# -- time ----------------------------------------------------------------------------------

def unix_ns(seconds: float, fallback_ns: int) -> int:
    """``seconds`` as Unix nanoseconds if it looks like a Unix time, else ``fallback_ns``."""
    if isinstance(seconds, (int, float)) and math.isfinite(seconds) and UNIX_MIN_S <= seconds < UNIX_MAX_S:
        whole = math.floor(seconds)
        # whole and fraction apart: seconds * 1e9 would round to the nearest 256 ns
        return int(whole) * 1_000_000_000 + round((seconds - whole) * 1e9)
    return fallback_ns


def time_field(dtype: np.dtype) -> str | None:
    """The records field that carries the device's publish time, if any: the first scalar
    float field named t, time or timestamp."""
    for name in TIME_FIELDS:
        if dtype.names and name in dtype.names and dtype[name].kind == "f" and not dtype[name].shape:
            return name
    return None


def unix_ns_column(values: np.ndarray, fallback_ns: int) -> np.ndarray:
    """Vectorised ``unix_ns`` over a float column (int64 nanoseconds)."""
    v = values.astype(np.float64)
    ok = np.isfinite(v) & (v >= UNIX_MIN_S) & (v < UNIX_MAX_S)
    v = np.where(ok, v, 0.0)
    whole = np.floor(v)
    ns = whole.astype(np.int64) * 1_000_000_000 + np.round((v - whole) * 1e9).astype(np.int64)
    return np.where(ok, ns, fallback_ns).astype(np.int64)


# -- records -------------------------------------------------------------------------------

class RecordsSchema:
    """A records channel as ``monbridge_msgs/msg/<Channel>``: one CDR message per record."""

    def __init__(self, channel: str, dtype: np.dtype, type_name: str | None = None) -> None:
        self.channel = channel
        self.source_dtype = dtype
        self.name = f"monbridge_msgs/msg/{type_name or message_name(channel)}"
        try:
            self.layout = RecordLayout(dtype, field_names(dtype.names or ()))
        except CdrError as exc:
            raise SchemaError(f"records channel {channel!r}: {exc}") from None
        self.renamed = {f.source: f.name for f in self.layout.fields if f.source != f.name}
        lines = [f"# monbridge records channel {channel!r}: one message per record"]
        for f in self.layout.fields:
            shape = dtype[f.source].shape
            note = []
            if f.source != f.name:
                note.append(f"device field {f.source!r}")
            if len(shape) > 1:
                note.append(f"shape {list(shape)}, C order")
            if dtype[f.source].base.kind == "f" and dtype[f.source].base.itemsize == 2:
                note.append("float16 on the device")
            lines.append(f"{f.ros_type} {f.name}" + (f"  # {'; '.join(note)}" if note else ""))
        self.text = "\n".join(lines) + "\n"

    def encode(self, records: np.ndarray) -> list[bytes]:
        return self.layout.encode(records)


# -- frames --------------------------------------------------------------------------------

@dataclass
class FrameSchema:
    """How one frame channel is written: ``kind`` is image, cloud or array."""

    kind: str
    name: str
    text: str
    encoding: str = ""                      # RawImage encoding (images)
    columns: list[str] = field(default_factory=list)   # PointCloud field names (clouds)

    def encode(self, array: np.ndarray, stamp_ns: int, frame_id: str) -> bytes:
        return b"".join(self.encode_parts(array, stamp_ns, frame_id))

    def encode_parts(self, array: np.ndarray, stamp_ns: int, frame_id: str) -> list[bytes | bytearray | memoryview]:
        """The message as buffers to write one after the other: a large array's bytes are
        referenced, not copied (the recorder's sink copies them once, into its chunk)."""
        w = CdrWriter()
        w.time(stamp_ns)
        if self.kind == "image":
            h, wd = array.shape[0], array.shape[1]
            step = wd * (array.shape[2] if array.ndim == 3 else 1) * array.dtype.itemsize
            w.string(frame_id)
            w.uint32(wd)
            w.uint32(h)
            w.string(self.encoding)
            w.uint32(step)
            w.sequence_u8(_little(array))
        elif self.kind == "cloud":
            w.string(frame_id)
            for v in (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0):   # pose: origin, identity rotation
                w.float64(v)
            size = array.dtype.itemsize
            w.uint32(size * array.shape[1])
            w.uint32(len(self.columns))
            ptype = _PACKED_TYPES[(array.dtype.kind, size)]
            for i, col in enumerate(self.columns):
                w.string(col)
                w.uint32(i * size)
                w.uint8(ptype)
            w.sequence_u8(_little(array))
        else:
            w.string(array.dtype.str)
            w.sequence_u32(list(array.shape))
            w.sequence_u8(np.ascontiguousarray(array))
        return w.buffers()


def _little(array: np.ndarray) -> np.ndarray:
    """Foxglove reads image and cloud values little-endian."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def cloud_columns(n: int) -> list[str]:
    """PointCloud field names for N×n clouds: x y z, then colours (monbridge's N×6 convention
    is x y z r g b in 0..1, docs/scenes.md) under the names Foxglove's RGBA mode reads."""
    extra = {4: ["intensity"], 6: ["red", "green", "blue"], 7: ["red", "green", "blue", "alpha"]}.get(n)
    return ["x", "y", "z"] + (extra or [f"c{i}" for i in range(3, n)])


def frame_schema(dtype: np.dtype, shape: tuple[int, ...]) -> FrameSchema:
    """Classify a frame channel by its declared element dtype and (largest) shape."""
    dtype = np.dtype(dtype)
    key = (dtype.kind, dtype.itemsize)
    if len(shape) == 2 and dtype.kind == "f" and key in _PACKED_TYPES and 3 <= shape[1] <= CLOUD_MAX_COLUMNS:
        return FrameSchema("cloud", "foxglove_msgs/msg/PointCloud", POINT_CLOUD, columns=cloud_columns(shape[1]))
    depth = shape[2] if len(shape) == 3 else (1 if len(shape) == 2 else 0)
    encoding = _IMAGE_ENCODINGS.get((*key, depth)) if len(shape) in (2, 3) else None
    if encoding:
        return FrameSchema("image", "foxglove_msgs/msg/RawImage", RAW_IMAGE, encoding=encoding)
    return FrameSchema("array", "monbridge_msgs/msg/NDArray", NDARRAY)


# -- events --------------------------------------------------------------------------------

def log_fields(message: Any) -> tuple[int, str, str, str, int] | None:
    """(level, message, name, file, line) if ``message`` is a log line foxglove.Log can hold
    whole: an object whose keys are among level, message (or msg), name, file, line, with a
    known level name (or 0-5) and a string message; else None (it is written as JSON)."""
    if not isinstance(message, dict) or not message.keys() <= LOG_KEYS or "level" not in message:
        return None
    if ("message" in message) == ("msg" in message):
        return None
    text = message.get("message", message.get("msg"))
    level = message["level"]
    if isinstance(level, str):
        level = LOG_LEVELS.get(level.lower())
    elif not (isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= 5):
        level = None
    name, file, line = message.get("name", ""), message.get("file", ""), message.get("line", 0)
    if (level is None or not isinstance(text, str) or not isinstance(name, str) or not isinstance(file, str)
            or not (isinstance(line, int) and not isinstance(line, bool) and 0 <= line < 2**32)
            or "\0" in text + name + file):
        return None
    return level, text, name, file, line


def encode_log(stamp_ns: int, level: int, text: str, name: str = "", file: str = "", line: int = 0) -> bytes:
    w = CdrWriter()
    w.time(stamp_ns)
    w.uint8(level)
    w.string(text)
    w.string(name)
    w.string(file)
    w.uint32(line)
    return w.getvalue()


# -- JSON channels ----------------------------------------------------------------------

EVENT_JSON_SCHEMA = {"title": "monbridge.Event", "type": "object",
                     "description": "an event that is not a foxglove.Log line: {'message': <the event as "
                                    "published>} plus 'to' for an event sent to one client"}
STATE_JSON_SCHEMA = {"title": "monbridge.StateChange", "type": "object",
                     "description": "keys the device set ('changed') or removed ('removed') since the previous message"}
SNAPSHOT_JSON_SCHEMA = {"title": "monbridge.State", "type": "object",
                        "description": "the device's whole state (key/value), written at the start, periodically and at the end"}
STATUS_JSON_SCHEMA = {"title": "monbridge.RecorderStatus", "type": "object",
                      "description": "the recorder's own counters: messages written, records missed per channel"}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def state_change(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """``{"changed": {...}, "removed": [...]}`` between two states, or None if equal."""
    changed = {k: v for k, v in new.items() if k not in old or old[k] != v or type(old[k]) is not type(v)}
    removed = [k for k in old if k not in new]
    if not changed and not removed:
        return None
    return {"changed": changed, "removed": removed}
