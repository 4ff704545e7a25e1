"""The MCAP side of a recording: a ``NAME.mcap.part`` file that becomes ``NAME.mcap``.

The only module of bridge.record that writes with ``mcap`` (the ``monbridge[record]`` extra:
its record classes serialise the rare records, and ``zstandard`` compresses; reader.py and
chunks.py read with it); it knows nothing of
devices or shared memory.

Messages are framed here, not by ``mcap.writer.Writer``: its ``add_message`` costs ~10 µs of
Python per message (a dataclass, six small writes, a seek), which capped a recorder at ~100k
records/s, and it copied every frame's bytes four more times into fresh memory. Here every
record is copied once, into one chunk buffer reused chunk after chunk (fresh memory costs a
page fault per 4 KiB: ~200 µs per 480 kB point cloud, more than the copy); a batch of
records is framed in that buffer with one numpy assignment per field (a Message record of a
fixed-size CDR payload is a fixed layout); the message index is written from numpy arrays.
The file is the MCAP the library writes (chunked, zstd, message and chunk indexes,
statistics, summary offsets, CRC-32s of the data section and of the summary; tests read it
with the ``mcap`` reader, CRCs checked) but for one field: a chunk's ``uncompressed_crc`` is 0
("not computed", as the spec allows) and its zstd frame carries zstd's own checksum of the
same bytes instead (XXH64, checked by every zstd decoder as it decompresses). CRC-32 over the
~1 GB a minute of the demo's uncompressed records cost the recorder ~0.6 % of a core and a
reader ~0.5 s a minute, more than decompressing; XXH64 is ~10x cheaper, and every byte on
disk is still under the data section's CRC-32.

Compression: zstd level 2 with a 4 MiB window, over chunks of up to 24 MiB (so at the
demo's ~18 MB/s a chunk is closed by ``flush()``, once a second). A point cloud or an image
that changes little from one frame to the next is then stored as matches against the
previous frame: ~25 MB a minute of the demo instead of ~85 MB with the library's level 3 on
4 MiB chunks, for no more CPU (docs/performance.md, "Recording and replay").

Crash safety: each chunk, with its message indexes, reaches the kernel in one ``writev``
the moment it is complete; ``flush()`` (the recorder calls it every ``chunk_seconds``) closes
the chunk in progress. After a SIGKILL the ``.part`` file therefore holds every chunk completed
before it, readable in order by ``mcap.stream_reader.StreamReader`` (it only lacks the summary
section). ``finish()`` writes the summary and footer, fsyncs, and renames.

Records as written (little-endian; ``mcap`` spec, "Records"):

| record | bytes |
|---|---|
| Message (0x05) | opcode u8 · length u64 (= 22 + n) · channel_id u16 · sequence u32 · log_time u64 · publish_time u64 · data[n] |
| Chunk (0x06) | opcode u8 · length u64 · message_start_time u64 · message_end_time u64 · uncompressed_size u64 · uncompressed_crc u32 (0) · compression (u32 length + "zstd") · records (u64 length + zstd bytes, with a content checksum) |
| MessageIndex (0x07) | opcode u8 · length u64 · channel_id u16 · entries_bytes u32 · entries (log_time u64 · offset of the Message in the uncompressed chunk u64)... |
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import zlib
from collections import defaultdict
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np
import zstandard
from mcap.data_stream import RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (Channel, ChunkIndex, DataEnd, Footer, Header, Metadata, MetadataIndex, Schema, Statistics,
                          SummaryOffset)

from device_agent.version import __version__

MAGIC = b"\x89MCAP0\r\n"
CHUNK_SIZE = 24 * 1024 * 1024   # bytes of messages per chunk (before compression): more than a second of the demo
MAX_PENDING = 64 * 1024 * 1024  # bytes handed to the writer thread and not yet written
ZSTD_LEVEL = 2
ZSTD_WINDOW_LOG = 22            # 4 MiB: a frame is matched against the previous ones in its chunk
COMPRESSION = "zstd"

_MESSAGE = struct.Struct("<BQHIQQ")          # the Message record up to its data (table above)
MESSAGE_HEAD = _MESSAGE.size                 # 31 bytes
_CHUNK = struct.Struct("<BQQQQII4sQ")        # the Chunk record up to its compressed records
_INDEX = struct.Struct("<BQHI")              # the MessageIndex record up to its entries
_ENTRY = np.dtype([("log_time", "<u8"), ("offset", "<u8")])


def message_dtype(payload_size: int) -> np.dtype:
    """Message records of ``payload_size``-byte payloads as one packed numpy dtype."""
    return np.dtype({"names": ["opcode", "length", "channel_id", "sequence", "log_time", "publish_time", "data"],
                     "formats": ["u1", "<u8", "<u2", "<u4", "<u8", "<u8", f"V{payload_size}"],
                     "offsets": [0, 1, 9, 11, 15, 23, 31], "itemsize": MESSAGE_HEAD + payload_size})


class OutputExists(FileExistsError):
    """The output file, or a ``.part`` left by an earlier recording, is already there."""


class McapFile:
    """One recording being written. Call ``finish()`` (rename to ``path``) or ``abandon()``
    (keep the ``.part``) exactly once. Not thread-safe: one thread calls it (BackgroundWriter's)."""

    def __init__(self, path: str, overwrite: bool = False, chunk_size: int = CHUNK_SIZE,
                 level: int = ZSTD_LEVEL) -> None:
        self.path = os.path.abspath(path)
        self.part = self.path + ".part"
        for existing in (self.path, self.part):
            if os.path.exists(existing) and not overwrite:
                what = "a recording that was killed? Read it, then move it away" if existing == self.part else "move it away"
                raise OutputExists(f"{existing} already exists ({what}, or pass --force to overwrite)")
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.closed = False
        self.chunk_size = chunk_size
        self._zstd = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters.from_level(
            level, window_log=ZSTD_WINDOW_LOG, write_checksum=True))
        self._buf = np.empty(chunk_size, np.uint8)   # the chunk's records, reused chunk after chunk
        self._pos = 0                 # bytes in the file
        self._data_crc = 0            # CRC-32 of the data section so far
        self._schemas: dict[tuple[str, str, bytes], int] = {}
        self._schema_records: list[Schema] = []
        self._channels: list[Channel] = []
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._counts: defaultdict[int, int] = defaultdict(int)   # messages per channel id
        self.messages = 0
        self._first = self._last = None   # log times of the whole file
        self._new_chunk()
        self._write(MAGIC, self._record(Header(profile="", library=f"monbridge {__version__} record")))

    # -- the chunk in progress -------------------------------------------------------------

    def _new_chunk(self) -> None:
        self._size = 0                            # bytes of the chunk's records in _buf
        self._index: dict[int, list[Any]] = {}    # channel id -> (log_time, offset) tuples, or arrays of _ENTRY
        self._chunk_messages = 0
        self._chunk_first = self._chunk_last = 0

    def _room(self, n: int) -> int:
        """Where ``n`` more bytes of records go: at the end of the chunk, or at the start of
        the next one if they would not fit (a record larger than a chunk grows the buffer)."""
        if self._size + n > len(self._buf):
            self._finish_chunk()
            if self._size + n > len(self._buf):
                bigger = np.empty(self._size + n, np.uint8)
                bigger[: self._size] = self._buf[: self._size]
                self._buf = bigger
        return self._size

    def _add(self, *buffers: Any) -> int:
        """Copy buffers (bytes-like) one after the other into the chunk; return the offset of the first."""
        views = [np.frombuffer(b, np.uint8) for b in buffers]
        pos = offset = self._room(sum(len(v) for v in views))
        for v in views:
            self._buf[pos : pos + len(v)] = v
            pos += len(v)
        self._size = pos
        return offset

    def _times(self, first: int, last: int, n: int) -> None:
        if self._chunk_messages:
            self._chunk_first, self._chunk_last = min(self._chunk_first, first), max(self._chunk_last, last)
        else:
            self._chunk_first, self._chunk_last = first, last
        self._chunk_messages += n
        self._first = first if self._first is None else min(self._first, first)
        self._last = last if self._last is None else max(self._last, last)
        self.messages += n

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (completed chunks and metadata)."""
        return self._pos

    def schema(self, name: str, encoding: str, data: bytes) -> int:
        key = (name, encoding, data)
        if key not in self._schemas:
            schema = Schema(id=len(self._schema_records) + 1, name=name, encoding=encoding, data=data)
            self._schema_records.append(schema)
            self._schemas[key] = schema.id
            self._add(self._record(schema))    # in the chunk: a .part file describes itself
        return self._schemas[key]

    def channel(self, topic: str, message_encoding: str, schema_id: int, metadata: dict[str, str] | None = None) -> int:
        channel = Channel(id=len(self._channels) + 1, topic=topic, message_encoding=message_encoding,
                          schema_id=schema_id, metadata=metadata or {})
        self._channels.append(channel)
        self._add(self._record(channel))
        return channel.id

    def message(self, channel_id: int, log_time: int, data: Any, publish_time: int | None = None,
                sequence: int = 0, release: Callable[[], None] | None = None) -> None:
        """One message; ``data``: bytes-like, or a list of them to write one after the other.
        ``release`` is called once they are copied (their buffers may then be reused)."""
        parts = data if isinstance(data, (list, tuple)) else (data,)
        n = sum(len(b) if isinstance(b, (bytes, bytearray)) else memoryview(b).nbytes for b in parts)
        # MCAP sequence numbers are u32; ring sequence numbers are u64 (they wrap here
        # after 2**32 records, ~5 days at 10 kHz)
        head = _MESSAGE.pack(Opcode.MESSAGE, 22 + n, channel_id, sequence & 0xFFFFFFFF, log_time,
                             log_time if publish_time is None else publish_time)
        offset = self._add(head, *parts)
        if release is not None:
            release()
        self._index.setdefault(channel_id, []).append((log_time, offset))
        self._counts[channel_id] += 1
        self._times(log_time, log_time, 1)

    def records(self, channel_id: int, stamps: np.ndarray, payloads: np.ndarray, first_sequence: int) -> None:
        """Messages ``first_sequence``, ``first_sequence + 1``... of one channel, one per row
        of ``payloads`` (an array of fixed-size rows: each row's bytes are a message's data),
        each with log_time = publish_time = its ``stamps`` entry (int64 ns). Framed in
        place, in the chunk, one numpy assignment per field of the Message record."""
        n = len(payloads)
        if not n:
            return
        size = payloads.dtype.itemsize
        dtype = message_dtype(size)
        offset = self._room(n * dtype.itemsize)
        self._size = offset + n * dtype.itemsize
        out = self._buf[offset : self._size].view(dtype)
        out["opcode"] = Opcode.MESSAGE
        out["length"] = 22 + size
        out["channel_id"] = channel_id
        out["sequence"] = np.arange(first_sequence, first_sequence + n, dtype=np.uint64) & 0xFFFFFFFF
        out["log_time"] = stamps
        out["publish_time"] = stamps
        out["data"] = payloads.view(f"V{size}").reshape(n)
        entries = np.empty(n, _ENTRY)
        entries["log_time"] = stamps
        entries["offset"] = np.arange(offset, self._size, dtype.itemsize, dtype=np.uint64)
        self._index.setdefault(channel_id, []).append(entries)
        self._counts[channel_id] += n
        self._times(int(stamps.min()), int(stamps.max()), n)

    def _finish_chunk(self) -> None:
        """Compress the chunk in progress and write it with its message indexes in one call
        (nothing if it holds no message: its schemas and channels wait for the next one)."""
        if not self._chunk_messages:
            return
        records = self._buf[: self._size]
        packed = self._zstd.compress(records)
        start = self._pos
        head = _CHUNK.pack(Opcode.CHUNK, _CHUNK.size - 9 + len(packed), self._chunk_first, self._chunk_last,
                           self._size, 0, len(COMPRESSION), COMPRESSION.encode(), len(packed))   # 0: zstd's checksum instead
        buffers: list[Any] = [head, packed]
        index_start = offset = start + len(head) + len(packed)
        offsets: dict[int, int] = {}
        for channel_id, items in self._index.items():
            if isinstance(items[0], tuple):
                entries = np.array(items, _ENTRY)
            else:
                entries = np.concatenate(items) if len(items) > 1 else items[0]
            body = entries.tobytes()
            buffers += [_INDEX.pack(Opcode.MESSAGE_INDEX, 6 + len(body), channel_id, len(body)), body]
            offsets[channel_id] = offset
            offset += _INDEX.size + len(body)
        self._write(*buffers)
        self._chunk_indexes.append(ChunkIndex(
            message_start_time=self._chunk_first, message_end_time=self._chunk_last, chunk_start_offset=start,
            chunk_length=len(head) + len(packed), message_index_offsets=offsets, message_index_length=offset - index_start,
            compression=COMPRESSION, compressed_size=len(packed), uncompressed_size=self._size))
        self._new_chunk()

    # -- records outside chunks ------------------------------------------------------------

    @staticmethod
    def _record(record: Any) -> bytes:
        builder = RecordBuilder()
        record.write(builder)
        return builder.end()

    def _write(self, *buffers: Any, data_section: bool = True) -> None:
        """Append to the file in one system call (more only if the kernel takes part of it)."""
        views = [memoryview(b).cast("B") for b in buffers]
        if data_section:
            for v in views:
                self._data_crc = zlib.crc32(v, self._data_crc)
        total = sum(v.nbytes for v in views)
        done = os.writev(self._fd, views)
        if done < total:
            rest = b"".join(views)[done:]
            while rest:
                rest = rest[os.write(self._fd, rest):]
        self._pos += total

    def metadata(self, name: str, data: dict[str, str]) -> None:
        record = self._record(Metadata(name=name, metadata=data))
        self._metadata_indexes.append(MetadataIndex(offset=self._pos, length=len(record), name=name))
        self._write(record)

    def flush(self) -> None:
        """Close the chunk in progress: what was added so far survives a SIGKILL."""
        self._finish_chunk()

    def _summary(self) -> None:
        """Data end, the summary section (as mcap.writer.Writer lays it out), footer, magic."""
        self._write(self._record(DataEnd(data_section_crc=self._data_crc)))
        start = self._pos
        builder = RecordBuilder()
        offsets: list[SummaryOffset] = []
        stats = Statistics(message_count=self.messages, schema_count=len(self._schema_records),
                           channel_count=len(self._channels), attachment_count=0,
                           metadata_count=len(self._metadata_indexes), chunk_count=len(self._chunk_indexes),
                           message_start_time=self._first if self._first is not None else 0,
                           message_end_time=self._last if self._last is not None else 0,
                           channel_message_counts=dict(self._counts))
        for opcode, group in ((Opcode.SCHEMA, self._schema_records), (Opcode.CHANNEL, self._channels),
                              (Opcode.STATISTICS, [stats]), (Opcode.CHUNK_INDEX, self._chunk_indexes),
                              (Opcode.ATTACHMENT_INDEX, []), (Opcode.METADATA_INDEX, self._metadata_indexes)):
            group_start = builder.count
            for record in group:
                record.write(builder)
            offsets.append(SummaryOffset(group_opcode=opcode, group_start=start + group_start,
                                         group_length=builder.count - group_start))
        offset_start = start + builder.count
        for o in offsets:
            o.write(builder)
        summary = builder.end()
        crc = zlib.crc32(struct.pack("<BQQQ", Opcode.FOOTER, 8 + 8 + 4, start, offset_start), zlib.crc32(summary))
        footer = self._record(Footer(summary_start=start, summary_offset_start=offset_start, summary_crc=crc))
        self._write(summary, footer, MAGIC, data_section=False)

    def finish(self) -> str:
        """Write the last chunk, the summary and footer, fsync, rename ``.part`` to the final name."""
        self._finish_chunk()
        self._summary()
        os.fsync(self._fd)
        os.close(self._fd)
        self.closed = True
        os.replace(self.part, self.path)
        return self.path

    def abandon(self) -> None:
        """Close without a summary: the ``.part`` stays, readable up to its last chunk."""
        if not self.closed:
            self.closed = True
            try:
                self._finish_chunk()
            finally:
                os.close(self._fd)


class WriterFailed(RuntimeError):
    """The writer thread failed (disk full...); the cause is chained."""


class BackgroundWriter:
    """Runs an ``McapFile``'s calls, in the order they are made, on a thread of its own.

    Compressing a chunk takes ~10-30 ms (zstd releases the GIL meanwhile), longer than a
    frame period: done on the reading thread it would let frames go by unread. Messages
    are queued without waiting, up to ``max_pending`` bytes (then the caller waits and the
    device's rings, not this process's memory, absorb the backlog: anything overwritten
    is counted as missed). ``schema``, ``channel`` and ``finish`` wait for their result.
    A failure on the thread is raised, as ``WriterFailed``, by the next call.
    """

    def __init__(self, file: McapFile, max_pending: int = MAX_PENDING) -> None:
        self.file = file
        self.part, self.path = file.part, file.path
        self._max_pending = max_pending
        self._pending = 0
        self._cond = threading.Condition()
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any] | None, tuple[Any, ...], int, Future | None]] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mcap-writer", daemon=True)
        self._thread.start()

    @property
    def bytes_written(self) -> int:
        return self.file.bytes_written

    def _run(self) -> None:
        while True:
            fn, args, size, done = self._queue.get()
            if fn is None:
                return
            try:
                result = fn(*args) if self._error is None else None
            except BaseException as exc:  # reported to the caller by the next call
                self._error = exc
                if done is not None:
                    done.set_exception(exc)
            else:
                if done is not None:
                    done.set_result(result)
            if size:
                with self._cond:
                    self._pending -= size
                    self._cond.notify_all()

    def _call(self, fn: Callable[..., Any], *args: Any, size: int = 0, wait: bool = False) -> Any:
        if self._error is not None:
            raise WriterFailed(f"writing {self.part} failed: {self._error!r}") from self._error
        if size:
            with self._cond:
                while self._pending > self._max_pending and self._error is None:
                    self._cond.wait(0.1)
                self._pending += size
        done: Future | None = Future() if wait else None
        self._queue.put((fn, args, size, done))
        return done.result() if done is not None else None

    def schema(self, name: str, encoding: str, data: bytes) -> int:
        return self._call(self.file.schema, name, encoding, data, wait=True)

    def channel(self, topic: str, message_encoding: str, schema_id: int, metadata: dict[str, str] | None = None) -> int:
        return self._call(self.file.channel, topic, message_encoding, schema_id, metadata, wait=True)

    def message(self, channel_id: int, log_time: int, data: Any, publish_time: int | None = None,
                sequence: int = 0, release: Callable[[], None] | None = None) -> None:
        parts = data if isinstance(data, (list, tuple)) else (data,)
        self._call(self.file.message, channel_id, log_time, data, publish_time, sequence, release,
                   size=sum(memoryview(b).nbytes for b in parts))

    def records(self, channel_id: int, stamps: np.ndarray, payloads: np.ndarray, first_sequence: int) -> None:
        self._call(self.file.records, channel_id, stamps, payloads, first_sequence, size=payloads.nbytes)

    def metadata(self, name: str, data: dict[str, str]) -> None:
        self._call(self.file.metadata, name, data)

    def flush(self) -> None:
        self._call(self.file.flush)

    def _stop(self) -> None:
        self._queue.put((None, (), 0, None))
        self._thread.join()

    def finish(self) -> str:
        try:
            return self._call(self.file.finish, wait=True)
        finally:
            self._stop()

    def abandon(self) -> None:
        """Write what is queued as far as possible, close, keep the ``.part``."""
        if self._thread.is_alive():
            self._stop()
        self.file.abandon()
