"""An indexed MCAP file's messages in log-time order, read chunk by chunk, for replay.

Imports ``mcap`` and ``zstandard`` (the ``monbridge[record]`` extra) and the standard library;
never device_agent nor the web stack. reader.py's read-ahead thread uses it.

``mcap.reader.SeekingReader.iter_messages`` splits a chunk into one dataclass per record
through a dozen small reads each (~8 µs a message) and sorts through a heap: a minute of the
demo (60k messages) took ~1 s, so a replay could not go past ~20x, and a seek waited for the
whole chunk to be split while holding the GIL. Here a chunk's Message records are walked with
one ``struct.unpack_from`` each (the layout is in writer.py's docstring), only the wanted
topics from ``start_ns`` on are kept, and messages from chunks whose time ranges overlap are
merged in log-time order (ties in file order). CRCs are not checked: replay reads for speed;
``mcap``'s readers check them (``validate_crcs=True``).
"""

from __future__ import annotations

import bisect
import struct
from typing import Any, Iterator, NamedTuple

import zstandard
from mcap.data_stream import ReadDataStream
from mcap.exceptions import UnsupportedCompressionError
from mcap.records import Chunk, ChunkIndex

_RECORD = struct.Struct("<BQ")          # opcode, length
_MESSAGE = struct.Struct("<HIQ")        # channel_id, sequence, log_time (publish_time and data follow)
MESSAGE = 0x05
_DATA = 9 + 2 + 4 + 8 + 8               # a Message record's data starts this far from its opcode
VIEW_FROM = 64 * 1024                   # bytes: a larger binary message is a view of its chunk, not a copy


class Item(NamedTuple):
    log_time: int       # ns
    sequence: int
    topic: str
    data: bytes | memoryview   # a memoryview for large messages of binary encodings (frames)
    decoded: Any = None        # a records message decoded ahead by reader.py's read-ahead thread:
                               # (block, row); None: the player decodes ``data`` when it is due


def chunk_records(f: Any, index: ChunkIndex) -> bytes:
    """The uncompressed records of the chunk ``index`` points at."""
    f.seek(index.chunk_start_offset + 9)
    chunk = Chunk.read(ReadDataStream(f))
    if chunk.compression == "zstd":
        return zstandard.decompress(chunk.data, max_output_size=chunk.uncompressed_size)
    if chunk.compression == "lz4":
        try:
            import lz4.frame
        except ImportError:
            raise UnsupportedCompressionError("lz4") from None
        return lz4.frame.decompress(chunk.data)
    if chunk.compression:
        raise UnsupportedCompressionError(chunk.compression)
    return chunk.data


def chunk_messages(records: bytes, topics: dict[int, tuple[str, bool]], start_ns: int) -> list[Item]:
    """The messages of ``topics`` (channel id -> (topic, json encoded)) at or after
    ``start_ns``, in file order. A large message that is not JSON (``json.loads`` takes no
    memoryview) is a view of ``records``: copying a frame per message is most of the work."""
    out: list[Item] = []
    unpack_record, unpack_message = _RECORD.unpack_from, _MESSAGE.unpack_from
    view = memoryview(records)
    pos, end = 0, len(records)
    while pos < end:
        opcode, length = unpack_record(records, pos)
        if opcode == MESSAGE:
            channel_id, sequence, log_time = unpack_message(records, pos + 9)
            wanted = topics.get(channel_id)
            if wanted is not None and log_time >= start_ns:
                data = (view if length >= VIEW_FROM and not wanted[1] else records)[pos + _DATA : pos + 9 + length]
                out.append(Item(log_time, sequence, wanted[0], data))
        pos += 9 + length
    return out


def _log_time(item: Item) -> int:
    return item.log_time


def indexed_messages(f: Any, summary: Any, topics: list[str], start_ns: int) -> Iterator[Item]:
    """The messages of ``topics`` from ``start_ns`` on, in log-time order, from a file with a
    summary (``summary``: ``SeekingReader(f).get_summary()``). Chunks are read in the order of
    their first message; what comes before the next chunk's first message is yielded first."""
    wanted = {cid: (c.topic, c.message_encoding == "json") for cid, c in summary.channels.items() if c.topic in set(topics)}
    chunks = sorted((c for c in summary.chunk_indexes if c.message_end_time >= start_ns
                     and (not c.message_index_offsets or wanted.keys() & c.message_index_offsets.keys())),
                    key=lambda c: (c.message_start_time, c.chunk_start_offset))
    pending: list[Item] = []       # read, not yet yielded, sorted by log time
    for index in chunks:
        ready = bisect.bisect_left(pending, index.message_start_time, key=_log_time)
        yield from pending[:ready]
        pending = pending[ready:] + chunk_messages(chunk_records(f, index), wanted, start_ns)
        pending.sort(key=_log_time)   # stable: file order among equal times; runs already sorted are cheap
    yield from pending
