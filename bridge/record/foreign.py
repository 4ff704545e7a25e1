"""Decoding messages of MCAP files monbridge did not write: Foxglove's well-known schemas
(``foxglove.PointCloud``, ``RawImage``, ``CompressedImage``, ``Log``, in CDR or JSON) and JSON
channels of numbers, into what a device publishes (a frame array, an event, records).

Used by reader.py, which decides which topics become which device channels (its module
docstring has the table). Imports numpy, the standard library, cdr.py and replay.py's SKIP; Pillow only to
decode a CompressedImage, when installed. Never mcap itself, device_agent or the web stack.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable

import numpy as np

from .cdr import CdrReader
from .replay import SKIP

MAX_JSON_FIELDS = 256            # numbers taken from one json channel
LEVEL_NAMES = {0: "unknown", 1: "debug", 2: "info", 3: "warning", 4: "error", 5: "fatal"}
# PackedElementField type -> numpy type (foxglove.PointCloud)
_PACKED = {1: "u1", 2: "i1", 3: "<u2", 4: "<i2", 5: "<u4", 6: "<i4", 7: "<f4", 8: "<f8"}
# RawImage encoding -> (numpy type, channels, reverse the channel order: bgr -> rgb)
_IMAGE = {"mono8": ("u1", 1, False), "8UC1": ("u1", 1, False), "mono16": ("<u2", 1, False),
          "16UC1": ("<u2", 1, False), "32FC1": ("<f4", 1, False), "64FC1": ("<f8", 1, False),
          "rgb8": ("u1", 3, False), "8UC3": ("u1", 3, False), "bgr8": ("u1", 3, True),
          "rgba8": ("u1", 4, False), "8UC4": ("u1", 4, False), "bgra8": ("u1", 4, True)}


def log_fields(level: Any, text: Any, name: Any = "", file: Any = "", line: Any = 0) -> dict[str, Any]:
    """A foxglove.Log line as the event a device would publish (docs/recording.md: the
    original spelling of the keys and the level is not kept)."""
    if isinstance(level, str):
        level = level.lower()
    else:
        level = LEVEL_NAMES.get(level, "info") if isinstance(level, int) else "info"
    event: dict[str, Any] = {"level": level, "msg": str(text)}
    if name:
        event["name"] = str(name)
    if file:
        event["file"] = str(file)
    if line:
        event["line"] = int(line)
    return event


def log_event(data: bytes) -> Any:
    r = CdrReader(data)
    r.time()
    level = r.uint8()
    return log_fields(level, r.string(), r.string(), r.string(), r.uint32())


def schema_kind(schema: Any, encoding: str) -> str | None:
    """The Foxglove schema a channel uses (its base name), "json", or None (not playable);
    ``schema``: an mcap Schema record or None."""
    name = schema.name if schema is not None else ""
    if name.startswith(("foxglove.", "foxglove_msgs/")) and encoding in ("cdr", "json"):
        base = re.split(r"[./]", name)[-1]
        if base in ("PointCloud", "RawImage", "CompressedImage", "Log"):
            return base
    return "json" if encoding == "json" else None


def channel_name(topic: str, taken: set[str]) -> str:
    """A device channel name (1-48 of A-Z a-z 0-9 _ -) for an MCAP topic."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", topic.strip("/")).strip("_-")[:44] or "channel"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else default


def _blob(value: Any) -> bytes:
    """A JSON-encoded bytes field: base64 (Foxglove's JSON encoding), or a list of numbers."""
    if isinstance(value, str):
        return base64.b64decode(value)
    if isinstance(value, list):
        return bytes(value)
    return b""


def cloud_message(data: bytes, json_encoded: bool) -> tuple[int, list[tuple[str, int, int]], bytes]:
    """(point_stride, [(name, offset, type)], data) of a foxglove.PointCloud."""
    if json_encoded:
        m = json.loads(data)
        fields = [(str(_get(f, "name", "")), int(_get(f, "offset", 0)), int(_get(f, "type", 0)))
                  for f in _get(m, "fields", []) or []]
        return int(_get(m, "point_stride", 0)), fields, _blob(_get(m, "data"))
    r = CdrReader(data)
    r.time()
    r.string()
    for _ in range(7):
        r.float64()
    stride = r.uint32()
    fields = [(r.string(), r.uint32(), r.uint8()) for _ in range(r.uint32())]
    return stride, fields, bytes(r.sequence_u8())


def cloud_points(stride: int, fields: list[tuple[str, int, int]], data: bytes) -> np.ndarray | None:
    """N×3 float32 (x y z), or N×6 with red green blue in 0..1 (monbridge's coloured cloud)."""
    by_name = {n: (o, t) for n, o, t in fields if t in _PACKED}
    if stride <= 0 or not {"x", "y", "z"} <= by_name.keys():
        return None
    colour = {"red", "green", "blue"} <= by_name.keys()
    names = ["x", "y", "z"] + (["red", "green", "blue"] if colour else [])
    n = len(data) // stride
    view = np.frombuffer(data, np.dtype({"names": names, "formats": [_PACKED[by_name[c][1]] for c in names],
                                         "offsets": [by_name[c][0] for c in names], "itemsize": stride}), count=n)
    out = np.empty((n, len(names)), np.float32)
    for i, c in enumerate(names):
        column = view[c]
        if i >= 3 and column.dtype.kind in "iu":
            column = column / np.iinfo(column.dtype).max
        out[:, i] = column
    return out


def image_message(data: bytes, json_encoded: bool) -> tuple[int, int, str, int, bytes]:
    """(width, height, encoding, step, data) of a foxglove.RawImage."""
    if json_encoded:
        m = json.loads(data)
        return (int(_get(m, "width", 0)), int(_get(m, "height", 0)), str(_get(m, "encoding", "")),
                int(_get(m, "step", 0)), _blob(_get(m, "data")))
    r = CdrReader(data)
    r.time()
    r.string()
    width, height, encoding, step = r.uint32(), r.uint32(), r.string(), r.uint32()
    return width, height, encoding, step, bytes(r.sequence_u8())


def image_array(width: int, height: int, encoding: str, step: int, data: bytes) -> np.ndarray | None:
    if encoding not in _IMAGE or width <= 0 or height <= 0:
        return None
    kind, depth, swap = _IMAGE[encoding]
    dt = np.dtype(kind)
    row = width * depth * dt.itemsize
    step = step or row
    if step < row or len(data) < step * (height - 1) + row:
        return None
    rows = np.lib.stride_tricks.as_strided(np.frombuffer(data, np.uint8), (height, row), (step, 1))
    image = np.ascontiguousarray(rows).view(dt).reshape((height, width, depth) if depth > 1 else (height, width))
    if swap:
        image = np.concatenate([image[..., 2::-1], image[..., 3:]], axis=-1)
    return image.astype(dt.newbyteorder("="), copy=False)


def compressed_message(data: bytes, json_encoded: bool) -> tuple[str, bytes]:
    if json_encoded:
        m = json.loads(data)
        return str(_get(m, "format", "")), _blob(_get(m, "data"))
    r = CdrReader(data)
    r.time()
    r.string()
    blob = bytes(r.sequence_u8())
    return r.string(), blob


def decompress(blob: bytes) -> np.ndarray | None:
    import io

    from PIL import Image   # optional: only for foxglove.CompressedImage

    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"))


def json_numbers(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """The numbers and booleans of a JSON value by flattened name (``pose.x`` → ``pose_x``,
    lists by index); strings and nulls are left out."""
    out = {} if out is None else out
    if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        out[prefix or "value"] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            key = re.sub(r"[^A-Za-z0-9_]+", "_", str(k)).strip("_") or "field"
            json_numbers(v, f"{prefix}_{key}" if prefix else key, out)
    elif isinstance(value, list) and len(value) <= MAX_JSON_FIELDS:
        for i, v in enumerate(value):
            json_numbers(v, f"{prefix}_{i}" if prefix else f"v{i}", out)
    return out


def json_records_decoder(dtype: np.dtype, stamp: bool) -> Callable[[list[bytes], list[int]], np.ndarray]:
    """Records from json messages; ``stamp``: fill ``t`` with the log time (the messages
    have no ``t`` of their own)."""
    names = [n for n in dtype.names if not (stamp and n == "t")]

    def decode(datas: list[bytes], times: list[int]) -> np.ndarray:
        out = np.zeros(len(datas), dtype)
        for n in names:
            if dtype[n].kind == "f":
                out[n] = np.nan      # a number missing from a message
        if stamp:
            out["t"] = np.asarray(times, np.float64) / 1e9
        for i, data in enumerate(datas):
            try:
                values = json_numbers(json.loads(data))
            except ValueError:
                continue
            for n in names:
                if n in values:
                    out[n][i] = values[n]
        return out
    return decode


def json_event_decoder(limit: int) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        return json.loads(data) if len(data) <= limit else SKIP
    return decode


def have_pillow() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def frame_decoder(kind: str, is_json: bool, shape: tuple[int, ...], dtype: np.dtype) -> Callable[[bytes], np.ndarray | None]:
    def decode(data: bytes) -> np.ndarray | None:
        if kind == "PointCloud":
            array = cloud_points(*cloud_message(data, is_json))
        elif kind == "RawImage":
            array = image_array(*image_message(data, is_json))
        else:
            array = decompress(compressed_message(data, is_json)[1])
        if array is None or array.dtype != dtype or array.shape[1:] != shape[1:] or len(array) > shape[0]:
            return None   # does not fit the channel the first message sized: skipped
        return array
    return decode


def log_decoder(is_json: bool) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        if not is_json:
            return log_event(data)
        m = json.loads(data)
        return log_fields(_get(m, "level", 2), _get(m, "message", ""), _get(m, "name", ""), _get(m, "file", ""),
                           _get(m, "line", 0))
    return decode
