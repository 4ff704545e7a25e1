"""Reading an MCAP file back: the device channels it holds, and their messages decoded into
what a device publishes (a records batch, a frame, an event, a state).

Imports ``mcap`` (the ``monbridge[record]`` extra), numpy, the standard library and
bridge.record's cdr.py, chunks.py, recorder.py and replay.py constants and foreign.py
(decoders of Foxglove's schemas); never device_agent's writing side (replay_cli.py creates the replay device) nor the web stack.

    rec = open_recording("run.mcap")        # metadata, tracks and the state timeline
    rec.tracks["joints"].declare            # {"fields": dtype, "capacity": 65536}: mon.records(name, **declare)
    for item in rec.messages(rec.start_ns): # Item(log_time, sequence, topic, data), in log_time order
        track = rec.by_topic[item.topic]    # track.decode_records / decode_frame / decode_event
    rec.close()

Where the tracks (the device channels to recreate) come from:

| file | track | from |
|---|---|---|
| written by ``monbridge record`` | one per recorded channel, exactly as declared (name, kind, dtype, shape, capacity, slots, max_bytes) | the ``monbridge.channel.NAME`` metadata |
| any MCAP file | ``foxglove.PointCloud`` → frame N×3 f4 (N×6 with red/green/blue, 0..1) | schema name, cdr or json |
| | ``foxglove.RawImage`` → frame H×W[×C] (mono8/16, 8UC1-4, 16UC1, 32FC1, 64FC1, rgb8/bgr8, rgba8/bgra8 → rgb) | |
| | ``foxglove.CompressedImage`` → frame H×W×3 u1, only when Pillow is installed; else skipped | |
| | ``foxglove.Log`` → events ``{"level", "msg"[, "name", "file", "line"]}`` | |
| | any other json channel: objects with numbers → records (one f8/bool field per number, ``t`` = log time), else events | |
| | anything else (protobuf, other ros2msg types...) | skipped, with the reason in ``skipped`` |

A file with a summary section is read through its chunk index (``messages()`` seeks); a
``.part`` file left by a killed recorder, or any file without an index, is read whole into
memory first, up to its last complete record.
"""

from __future__ import annotations

import bisect
import json
import os
import queue
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import SeekingReader
from mcap.records import Channel, Chunk, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk

from device_agent.payloads import dtype_from_json

from . import foreign
from .cdr import CdrError, CdrReader, RecordLayout
from .chunks import Item, indexed_messages
from .recorder import SNAPSHOT_TOPIC, STATE_TOPIC
from .replay import DECODE_ERRORS, SKIP

MONBRIDGE_TOPICS = "/monbridge/"
EVENT_MAX_BYTES = 4096           # events channels made for foreign topics
FOREIGN_CAPACITY = 8192          # records channels made for foreign json topics


# what the mcap stream reader raises at the cut-off end of a killed recording
TRUNCATED = (McapError, struct.error, EOFError, ValueError)


class RecordingError(ValueError):
    """A file that cannot be replayed: not MCAP, unreadable, or nothing in it to play."""


@dataclass
class Track:
    """One device channel of the replay and how its messages are decoded.

    ``declare``: the keyword arguments of ``mon.records`` / ``mon.frame`` / ``mon.events``
    after the name. ``topics``: the MCAP topics it is made of (a monbridge events channel has
    two: its foxglove.Log lines and its other JSON events). ``decoders``: topic → decoder;
    records decoders take ``(datas, log_times)`` and return a structured array, frame decoders
    take ``data`` and return an array (or None to skip it), event decoders ``data`` → the
    message (or ``SKIP``).
    """

    name: str
    kind: str
    declare: dict[str, Any]
    decoders: dict[str, Callable[..., Any]]
    origin: str

    @property
    def topics(self) -> list[str]:
        return list(self.decoders)


@dataclass
class Recording:
    path: str
    device: str                        # the recorded device's name (foreign files: the file's stem)
    monbridge: bool                    # written by monbridge record
    complete: bool                     # has a summary (False: a .part or unindexed file, read into memory)
    start_ns: int
    end_ns: int
    tracks: dict[str, Track]
    specs: dict[str, str]              # view spec files kept in the file
    skipped: list[tuple[str, str]]     # (topic, why it is not replayed)
    states: list[tuple[int, dict[str, Any]]] = field(default_factory=list)   # (log_time, whole state)
    commands: list[Any] = field(default_factory=list)   # the recorded device's command catalog (not replayed)
    _source: Any = None

    @property
    def duration_ns(self) -> int:
        return max(self.end_ns - self.start_ns, 0)

    @property
    def by_topic(self) -> dict[str, Track]:
        return {topic: t for t in self.tracks.values() for topic in t.topics}

    def messages(self, start_ns: int) -> Iterator[Item]:
        """The tracks' messages from ``start_ns`` (log time, inclusive) on, in log-time order.
        One iteration at a time: starting another abandons the previous one."""
        return self._source.iter_from(start_ns)

    def state_at(self, log_time: int) -> dict[str, Any] | None:
        """The whole recorded state as it was at ``log_time``, or None before the first."""
        i = bisect.bisect_right([t for t, _ in self.states], log_time)
        return self.states[i - 1][1] if i else None

    def close(self) -> None:
        self._source.close()


# -- sources: where messages come from --------------------------------------------------

class _IndexedSource:
    """Messages through the file's chunk index (a seek costs a few chunks, not a scan), read
    ahead on a thread of their own: decompressing and splitting a 4 MiB chunk takes ~0.1 s,
    which on the playing thread would make every message due meanwhile late. The thread
    also decodes records ahead (``decode_ahead``, set by open_recording): a batch's records
    in one numpy call per topic instead of a few rows per tick."""

    def __init__(self, path: str, topics: list[str]) -> None:
        self._path = path
        self._topics = topics
        self._current: _Prefetch | None = None
        self.decode_ahead: Callable[[list[Item]], list[Item]] | None = None

    def iter_from(self, start_ns: int) -> Iterator[Item]:
        if self._current is not None:
            self._current.stop()
        self._current = _Prefetch(self._path, self._topics, max(start_ns, 0), self.decode_ahead)
        return iter(self._current)

    def close(self) -> None:
        if self._current is not None:
            self._current.stop(wait=5.0)
            self._current = None


class _Prefetch:
    """One read of the file from a log time on: a daemon thread fills a bounded queue with
    batches of Items (passed through ``decode_ahead``), the iterator empties it. ``stop()``
    ends the thread (and its file)."""

    BATCH_ITEMS = 512
    BATCH_BYTES = 4 * 1024 * 1024
    QUEUED_BATCHES = 8          # at most ~32 MiB read ahead

    def __init__(self, path: str, topics: list[str], start_ns: int,
                 decode_ahead: Callable[[list[Item]], list[Item]] | None = None) -> None:
        self._queue: queue.Queue[list[Item] | BaseException | None] = queue.Queue(self.QUEUED_BATCHES)
        self._stop = threading.Event()
        self._decode_ahead = decode_ahead or (lambda batch: batch)
        self._thread = threading.Thread(target=self._read, args=(path, topics, start_ns),
                                        name="mcap-prefetch", daemon=True)
        self._thread.start()

    def _put(self, value: list[Item] | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, path: str, topics: list[str], start_ns: int) -> None:
        try:
            with open(path, "rb") as f:
                batch: list[Item] = []
                size = 0
                if topics:
                    for item in indexed_messages(f, SeekingReader(f).get_summary(), topics, start_ns):
                        batch.append(item)
                        size += len(item.data)
                        if len(batch) >= self.BATCH_ITEMS or size >= self.BATCH_BYTES:
                            if not self._put(self._decode_ahead(batch)):
                                return
                            batch, size = [], 0
                if batch and not self._put(self._decode_ahead(batch)):
                    return
            self._put(None)
        except Exception as exc:   # handed to the iterating thread
            self._put(exc)

    def __iter__(self) -> Iterator[Item]:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if isinstance(batch, BaseException):
                raise RecordingError(f"reading the recording failed: {batch!r}") from batch
            yield from batch

    def stop(self, wait: float = 0.0) -> None:
        """End the read: the thread exits after the chunk it is splitting (``wait``: seconds
        to wait for that; a seek does not wait)."""
        self._stop.set()
        if wait:
            self._thread.join(wait)


class _MemorySource:
    """Messages held in a list sorted by log time (a file without an index)."""

    def __init__(self, items: list[Item]) -> None:
        self._items = sorted(items, key=lambda i: i.log_time)   # stable: file order among equals
        self._times = [i.log_time for i in self._items]

    def iter_from(self, start_ns: int) -> Iterator[Item]:
        return iter(self._items[bisect.bisect_left(self._times, start_ns):])

    def close(self) -> None:
        pass


def decode_ahead(tracks: dict[str, Track]) -> Callable[[list[Item]], list[Item]]:
    """What the read-ahead thread does to a batch of Items: each records topic's messages
    decoded in one call, each item then carrying ``(block, row)``. What does not decode is
    left as it is: the player decodes it again when it is due and counts it as undecodable.
    Frames are decoded when due: only the newest of a tick is (at 10x most are skipped)."""
    records = {topic: t.decoders[topic] for t in tracks.values() if t.kind == "records" for topic in t.topics}

    def decode(batch: list[Item]) -> list[Item]:
        where: dict[str, list[int]] = {}
        for i, item in enumerate(batch):
            if item.topic in records:
                where.setdefault(item.topic, []).append(i)
        for topic, rows in where.items():
            try:
                block = records[topic]([batch[i].data for i in rows], [batch[i].log_time for i in rows])
            except DECODE_ERRORS:
                continue
            if len(block) == len(rows):    # else one did not decode: all are decoded when due
                for row, i in enumerate(rows):
                    item = batch[i]        # (not item._replace: twice as slow, and there may be 100k a second)
                    batch[i] = Item(item.log_time, item.sequence, item.topic, item.data, (block, row))
        return batch
    return decode


@dataclass
class _Contents:
    """What is known of a file before its tracks are made."""
    schemas: dict[int, Schema]
    channels: dict[int, Channel]
    metadata: dict[str, dict[str, str]]     # the last record of each name
    start_ns: int
    end_ns: int
    counts: dict[int, int]                   # messages per channel id
    complete: bool
    items: list[tuple[int, Message]] | None = None   # (channel id, message) of an unindexed file


def _scan(path: str) -> _Contents:
    """Every record of a file without a usable summary, in file order, up to a truncated end."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    metadata: dict[str, dict[str, str]] = {}
    items: list[tuple[int, Message]] = []
    try:
        with open(path, "rb") as f:
            for record in StreamReader(f, validate_crcs=True).records:
                _keep(record, items, channels, schemas, metadata)
    except TRUNCATED:
        if not channels and not metadata:
            raise RecordingError(f"{path} holds no readable MCAP records") from None
        # the end of a killed recording: keep what came before it
    times = [m.log_time for _, m in items]
    counts: dict[int, int] = {}
    for cid, _ in items:
        counts[cid] = counts.get(cid, 0) + 1
    return _Contents(schemas, channels, metadata, min(times, default=0), max(times, default=0), counts, False, items)


def _keep(record: Any, items: list[tuple[int, Message]], channels: dict[int, Channel], schemas: dict[int, Schema],
          metadata: dict[str, dict[str, str]]) -> None:
    if isinstance(record, Message):
        items.append((record.channel_id, record))
    elif isinstance(record, Channel):
        channels[record.id] = record
    elif isinstance(record, Schema):
        schemas[record.id] = record
    elif isinstance(record, Metadata):
        metadata[record.name] = dict(record.metadata)


def _contents(path: str) -> tuple[_Contents, SeekingReader | None, Any]:
    f = open(path, "rb")
    try:
        head = f.read(8)
        if head != b"\x89MCAP0\r\n":
            raise RecordingError(f"{path} is not an MCAP file (it starts with {head[:8]!r}); "
                                 "give a file written by monbridge record or another MCAP writer")
        f.seek(0)
        reader = SeekingReader(f)
        try:
            summary = reader.get_summary()
        except (McapError, EOFError, ValueError, OSError):
            summary = None   # no footer: a .part, or a file cut short
        if summary is None or not summary.chunk_indexes:
            f.close()
            return _scan(path), None, None
        stats = summary.statistics
        metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        start = stats.message_start_time if stats else min(c.message_start_time for c in summary.chunk_indexes)
        end = stats.message_end_time if stats else max(c.message_end_time for c in summary.chunk_indexes)
        counts = dict(stats.channel_message_counts) if stats else {cid: 1 for cid in summary.channels}
        return _Contents(dict(summary.schemas), dict(summary.channels), metadata, start, end, counts, True), reader, f
    except BaseException:
        f.close()
        raise


def _messages_of(contents: _Contents, reader: SeekingReader | None, topics: list[str],
                 log_time_order: bool = True) -> Iterator[tuple[Channel, Message]]:
    if reader is None:
        wanted = {cid for cid, c in contents.channels.items() if c.topic in topics}
        for cid, m in contents.items or []:
            if cid in wanted:
                yield contents.channels[cid], m
        return
    if topics:
        for _, channel, m in reader.iter_messages(topics=topics, log_time_order=log_time_order):
            yield channel, m


def open_recording(path: str) -> Recording:
    """Read a file's metadata, make its tracks and state timeline (see the module docstring).
    Raises RecordingError (not MCAP, unreadable), OSError (cannot open)."""
    contents, reader, f = _contents(path)
    try:
        meta = contents.metadata
        monbridge = "monbridge.recording" in meta
        stem = os.path.basename(path).split(".")[0]
        device = meta.get("monbridge.recording", {}).get("device") or foreign.channel_name(stem, set()) or "replay"
        skipped: list[tuple[str, str]] = []
        if monbridge:
            tracks = _monbridge_tracks(contents, skipped)
        else:
            tracks = _foreign_tracks(contents, reader, skipped)
        states = _state_timeline(contents, reader) if monbridge else []
        specs = dict(meta.get("monbridge.specs", {}))
        commands = json.loads(meta.get("monbridge.commands", {}).get("json", "[]"))
    finally:
        if f is not None:
            f.close()
    topics = [t for track in tracks.values() for t in track.topics]
    if contents.complete:
        source: Any = _IndexedSource(path, topics)
        source.decode_ahead = decode_ahead(tracks)
    else:
        wanted = set(topics)
        source = _MemorySource([Item(m.log_time, m.sequence, contents.channels[cid].topic, m.data)
                                for cid, m in contents.items or [] if contents.channels.get(cid)
                                and contents.channels[cid].topic in wanted])
        contents.items = None
    return Recording(os.path.abspath(path), device, monbridge, contents.complete, contents.start_ns,
                     contents.end_ns, tracks, specs, skipped, states, commands, source)


def _state_timeline(contents: _Contents, reader: SeekingReader | None) -> list[tuple[int, dict[str, Any]]]:
    """(log_time, whole state) after each recorded snapshot or change."""
    out: list[tuple[int, dict[str, Any]]] = []
    state: dict[str, Any] = {}
    for channel, m in _messages_of(contents, reader, [STATE_TOPIC, SNAPSHOT_TOPIC]):
        try:
            value = json.loads(m.data)
        except ValueError:
            continue
        if channel.topic == SNAPSHOT_TOPIC and isinstance(value, dict):
            state = value
        elif isinstance(value, dict):
            state = {k: v for k, v in {**state, **value.get("changed", {})}.items() if k not in value.get("removed", ())}
        if not out or out[-1][1] != state:
            out.append((m.log_time, state))
    return out


# -- files written by monbridge record -----------------------------------------------------

def _meta_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _monbridge_tracks(contents: _Contents, skipped: list[tuple[str, str]]) -> dict[str, Track]:
    tracks: dict[str, Track] = {}
    for key, meta in contents.metadata.items():
        if not key.startswith("monbridge.channel."):
            continue
        name, kind = meta.get("name", key[len("monbridge.channel."):]), meta.get("kind")
        try:
            if kind == "records":
                dtype = dtype_from_json(_meta_value(meta["dtype"]))
                renamed = _meta_value(meta.get("renamed", "{}")) or {}
                layout = RecordLayout(dtype, [renamed.get(n, n) for n in dtype.names])
                tracks[name] = Track(name, kind, {"fields": dtype, "capacity": int(_meta_value(meta["capacity"]))},
                                     {meta["topic"]: _records_decoder(layout)}, "recorded")
            elif kind == "frame":
                dtype, shape = np.dtype(meta["dtype"]), tuple(_meta_value(meta["shape"]))
                declare = {"shape": shape, "dtype": dtype, "slots": int(_meta_value(meta.get("slots", "3")))}
                tracks[name] = Track(name, kind, declare, {meta["topic"]: _frame_decoder(meta.get("frame_kind", ""),
                                                                                         dtype, shape)}, "recorded")
            elif kind == "events":
                declare = {"capacity": int(_meta_value(meta["capacity"])), "max_bytes": int(_meta_value(meta["max_bytes"]))}
                decoders = {meta["topic"]: foreign.log_event, meta.get("json_topic", f"/{name}/json"): _recorded_event}
                tracks[name] = Track(name, kind, declare, decoders, "recorded")
            else:
                skipped.append((meta.get("topic", name), f"unknown channel kind {kind!r}"))
        except (KeyError, TypeError, ValueError, CdrError) as exc:
            skipped.append((meta.get("topic", name), f"its metadata cannot be read: {exc!r}"))
    return tracks


def _records_decoder(layout: RecordLayout) -> Callable[[list[bytes], list[int]], np.ndarray]:
    def decode(datas: list[bytes], _times: list[int]) -> np.ndarray:
        return layout.decode_array(b"".join(d for d in datas if len(d) == layout.size))
    return decode


def _frame_decoder(frame_kind: str, dtype: np.dtype, shape: tuple[int, ...]) -> Callable[[bytes], np.ndarray | None]:
    little = dtype.newbyteorder("<")

    def decode(data: bytes) -> np.ndarray | None:
        r = CdrReader(data)
        r.time()
        if frame_kind == "array":
            stored, dims = np.dtype(r.string()), r.sequence_u32()
            return np.frombuffer(r.sequence_u8(), stored).reshape(dims).astype(dtype, copy=False)
        r.string()                     # frame_id
        if frame_kind == "cloud":
            for _ in range(7):         # pose
                r.float64()
            r.uint32()                 # point_stride
            for _ in range(r.uint32()):
                r.string(), r.uint32(), r.uint8()
        else:                          # image: width, height, encoding, step
            r.uint32(), r.uint32(), r.string(), r.uint32()
        return np.frombuffer(r.sequence_u8(), little).reshape((-1, *shape[1:])).astype(dtype, copy=False)
    return decode


def _recorded_event(data: bytes) -> Any:
    value = json.loads(data)
    if not isinstance(value, dict) or "message" not in value or "to" in value:
        return SKIP   # an event for one client of the recorded run: nobody to send it to
    return value["message"]


# -- any MCAP file: Foxglove's well-known schemas and JSON (decoders in foreign.py) ------

def _foreign_tracks(contents: _Contents, reader: SeekingReader | None,
                    skipped: list[tuple[str, str]]) -> dict[str, Track]:
    """Tracks for a file monbridge did not write; reads the messages of the topics it can
    play once, to size their channels (largest cloud and image, the json numbers)."""
    kinds: dict[str, tuple[str, bool]] = {}       # topic -> (schema kind, json encoded)
    for cid, channel in sorted(contents.channels.items()):
        if channel.topic.startswith(MONBRIDGE_TOPICS) or not contents.counts.get(cid):
            continue
        schema = contents.schemas.get(channel.schema_id)
        kind = foreign.schema_kind(schema, channel.message_encoding)
        what = f"{schema.name if schema else 'no schema'} ({channel.message_encoding})"
        if kind is None:
            skipped.append((channel.topic, f"{what}: not a Foxglove schema monbridge plays, nor json"))
        elif kind == "CompressedImage" and not foreign.have_pillow():
            skipped.append((channel.topic, f"{what}: decoding it needs Pillow (pip install pillow)"))
        elif channel.topic not in kinds:
            kinds[channel.topic] = (kind, channel.message_encoding == "json")
    scan: dict[str, dict[str, Any]] = {t: {"rows": 0, "shape": None, "fields": {}, "bad": 0} for t in kinds}
    for channel, m in _messages_of(contents, reader, list(kinds), log_time_order=False):
        kind, is_json = kinds[channel.topic]
        s = scan[channel.topic]
        try:
            if kind == "PointCloud":
                stride, fields, data = foreign.cloud_message(m.data, is_json)
                pts = foreign.cloud_points(stride, fields, data)
                if pts is None:
                    s["bad"] += 1
                    continue
                s["rows"] = max(s["rows"], len(pts))
                s["shape"] = s["shape"] or pts.shape[1:]
            elif kind in ("RawImage", "CompressedImage"):
                if s["shape"] is None:   # the first image fixes width, depth and type
                    image = (foreign.image_array(*foreign.image_message(m.data, is_json)) if kind == "RawImage"
                             else foreign.decompress(foreign.compressed_message(m.data, is_json)[1]))
                    if image is None:
                        s["bad"] += 1
                        continue
                    s["shape"], s["dtype"], s["rows"] = image.shape[1:], image.dtype, image.shape[0]
                elif kind == "RawImage":
                    s["rows"] = max(s["rows"], foreign.image_message(m.data, is_json)[1])
            elif kind == "json":
                fields = s["fields"]
                for k, v in foreign.json_numbers(json.loads(m.data)).items():
                    if k in fields or len(fields) < foreign.MAX_JSON_FIELDS:
                        fields[k] = "?" if isinstance(v, bool) and fields.get(k, "?") == "?" else "f8"
        except (ValueError, CdrError, OSError) as exc:   # OSError: Pillow cannot read it
            s["bad"] += 1
            s["error"] = repr(exc)
    taken: set[str] = set()
    tracks: dict[str, Track] = {}
    for topic, (kind, is_json) in kinds.items():
        s = scan[topic]
        name = foreign.channel_name(topic, taken)
        if kind in ("PointCloud", "RawImage", "CompressedImage"):
            if s["shape"] is None or not s["rows"]:
                skipped.append((topic, f"foxglove.{kind}: no message could be decoded ({s.get('error', 'unsupported fields or encoding')})"))
                continue
            shape = (s["rows"], *s["shape"])
            dtype = np.dtype(np.float32) if kind == "PointCloud" else s["dtype"]
            tracks[name] = Track(name, "frame", {"shape": shape, "dtype": dtype, "slots": 3},
                                 {topic: foreign.frame_decoder(kind, is_json, shape, dtype)}, f"foxglove.{kind}")
        elif kind == "Log":
            tracks[name] = Track(name, "events", {"capacity": 1024, "max_bytes": EVENT_MAX_BYTES},
                                 {topic: foreign.log_decoder(is_json)}, "foxglove.Log")
        elif s["fields"]:
            fields, stamp = dict(s["fields"]), "t" not in s["fields"]
            if stamp:
                fields = {"t": "f8", **fields}
            dtype = np.dtype(list(fields.items()))
            tracks[name] = Track(name, "records", {"fields": dtype, "capacity": FOREIGN_CAPACITY},
                                 {topic: foreign.json_records_decoder(dtype, stamp)}, "json numbers")
        else:
            tracks[name] = Track(name, "events", {"capacity": 1024, "max_bytes": EVENT_MAX_BYTES},
                                 {topic: foreign.json_event_decoder(EVENT_MAX_BYTES - 64)}, "json")
    return tracks


# -- listing -----------------------------------------------------------------------------

def describe(path: str) -> dict[str, Any]:
    """What ``monbridge recordings`` shows of one file: size, duration, device, channels.
    A finished file is read from its summary and metadata index; a ``.part`` is scanned
    (chunk headers, and the chunks themselves only for a file monbridge did not write)."""
    info: dict[str, Any] = {"file": os.path.basename(path), "path": os.path.abspath(path),
                            "size": os.path.getsize(path), "complete": False, "duration_s": None,
                            "device": None, "channels": [], "messages": None, "error": None}
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89MCAP0\r\n":
                raise RecordingError("not an MCAP file")
            f.seek(0)
            reader = SeekingReader(f)
            try:
                summary = reader.get_summary()
            except (McapError, EOFError, ValueError, OSError):
                summary = None
            if summary is not None:
                meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
                stats = summary.statistics
                info["complete"] = True
                if stats:
                    info["duration_s"] = round((stats.message_end_time - stats.message_start_time) / 1e9, 3)
                    info["messages"] = stats.message_count
                topics = sorted({c.topic for c in summary.channels.values()})
            else:
                meta, topics, times = _scan_part(path)
                info["duration_s"] = round((times[1] - times[0]) / 1e9, 3) if times else 0.0
    except (RecordingError, McapError, OSError, EOFError, ValueError) as exc:
        info["error"] = str(exc) or type(exc).__name__
        return info
    recording = meta.get("monbridge.recording")
    if recording:
        info["device"] = recording.get("device")
        info["channels"] = sorted(k[len("monbridge.channel."):] for k in meta if k.startswith("monbridge.channel."))
        info["started"] = recording.get("started")
    else:
        info["channels"] = [t for t in topics if not t.startswith(MONBRIDGE_TOPICS)]
    return info


def _scan_part(path: str) -> tuple[dict[str, dict[str, str]], list[str], tuple[int, int] | None]:
    """(metadata, topics, (first, last) log time) of a file without a summary: chunk headers
    give the times; chunks are decompressed only to find the topics of a foreign file."""
    meta: dict[str, dict[str, str]] = {}
    topics: set[str] = set()
    chunks: list[Chunk] = []
    times: list[int] = []
    with open(path, "rb") as f:
        for record in _records_until_truncated(f):
            if isinstance(record, Chunk):
                times += [record.message_start_time, record.message_end_time]
                if not meta.get("monbridge.recording"):
                    chunks.append(record)
            elif isinstance(record, Metadata):
                meta[record.name] = dict(record.metadata)
            elif isinstance(record, Channel):
                topics.add(record.topic)
            elif isinstance(record, Message):
                times.append(record.log_time)
    if "monbridge.recording" not in meta:
        for chunk in chunks:
            try:
                topics.update(r.topic for r in breakup_chunk(chunk) if isinstance(r, Channel))
            except (McapError, ValueError):
                continue
    return meta, sorted(topics), (min(times), max(times)) if times else None


def _records_until_truncated(f: Any) -> Iterator[Any]:
    """Top-level records (chunks not broken up) until the truncated end of a killed recording."""
    try:
        yield from StreamReader(f, emit_chunks=True).records
    except TRUNCATED:
        return
