"""The MCAP side of a recording: a ``NAME.mcap.part`` file that becomes ``NAME.mcap``.

The only module of bridge.record that imports ``mcap`` (the ``monbridge[record]`` extra);
it knows nothing of devices or shared memory.

Crash safety: the file is opened unbuffered and handed to ``mcap.writer.Writer`` through
a thin wrapper, so each completed chunk reaches the kernel in the same call that writes
it; ``flush()`` (the recorder calls it every ``chunk_seconds``) closes the chunk in
progress. After a SIGKILL the ``.part`` file therefore holds every chunk completed before
it, readable in order by ``mcap.stream_reader.StreamReader`` (it only lacks the summary
section). ``finish()`` writes the summary and footer, fsyncs, and renames.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

from mcap.writer import CompressionType, IndexType, Writer

from device_agent.version import __version__

CHUNK_SIZE = 4 * 1024 * 1024   # bytes of messages per chunk (before compression)
MAX_PENDING = 64 * 1024 * 1024  # bytes handed to the writer thread and not yet written


class OutputExists(FileExistsError):
    """The output file, or a ``.part`` left by an earlier recording, is already there."""


class _Unbuffered:
    """What ``Writer`` writes through: every ``write`` goes straight to the file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self._pos += done
        return done

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass


class McapFile:
    """One recording being written. Call ``finish()`` (rename to ``path``) or ``abandon()``
    (keep the ``.part``) exactly once."""

    def __init__(self, path: str, overwrite: bool = False, chunk_size: int = CHUNK_SIZE) -> None:
        self.path = os.path.abspath(path)
        self.part = self.path + ".part"
        for existing in (self.path, self.part):
            if os.path.exists(existing) and not overwrite:
                what = "a recording that was killed? Read it, then move it away" if existing == self.part else "move it away"
                raise OutputExists(f"{existing} already exists ({what}, or pass --force to overwrite)")
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._out = _Unbuffered(self._fd)
        self._writer = Writer(self._out, chunk_size=chunk_size, compression=CompressionType.ZSTD,
                              index_types=IndexType.ALL, enable_crcs=True, enable_data_crcs=True)
        self._writer.start(profile="", library=f"monbridge {__version__} record")
        self._schemas: dict[tuple[str, str, bytes], int] = {}
        self.messages = 0
        self.closed = False

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (completed chunks and metadata)."""
        return self._out.tell()

    def schema(self, name: str, encoding: str, data: bytes) -> int:
        key = (name, encoding, data)
        if key not in self._schemas:
            self._schemas[key] = self._writer.register_schema(name=name, encoding=encoding, data=data)
        return self._schemas[key]

    def channel(self, topic: str, message_encoding: str, schema_id: int, metadata: dict[str, str] | None = None) -> int:
        return self._writer.register_channel(topic=topic, message_encoding=message_encoding,
                                             schema_id=schema_id, metadata=metadata or {})

    def message(self, channel_id: int, log_time: int, data: bytes, publish_time: int | None = None,
                sequence: int = 0) -> None:
        # MCAP sequence numbers are u32; ring sequence numbers are u64 (they wrap here
        # after 2**32 records, ~5 days at 10 kHz)
        self._writer.add_message(channel_id=channel_id, log_time=log_time, data=data,
                                 publish_time=log_time if publish_time is None else publish_time,
                                 sequence=sequence & 0xFFFFFFFF)
        self.messages += 1

    def messages_from(self, channel_id: int, stamps: list[int], datas: list[bytes], first_sequence: int) -> None:
        """Messages ``first_sequence``, ``first_sequence + 1``... of one channel, each
        with log_time = publish_time = its stamp."""
        add = self._writer.add_message
        for i, data in enumerate(datas):
            add(channel_id=channel_id, log_time=stamps[i], data=data, publish_time=stamps[i],
                sequence=(first_sequence + i) & 0xFFFFFFFF)
        self.messages += len(datas)

    def metadata(self, name: str, data: dict[str, str]) -> None:
        self._writer.add_metadata(name, data)

    def flush(self) -> None:
        """Close the chunk in progress: what was added so far survives a SIGKILL."""
        self._writer.flush()

    def finish(self) -> str:
        """Write the summary and footer, fsync, rename ``.part`` to the final name."""
        self._writer.finish()
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
                self._writer.flush()
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

    def message(self, channel_id: int, log_time: int, data: bytes, publish_time: int | None = None,
                sequence: int = 0) -> None:
        self._call(self.file.message, channel_id, log_time, data, publish_time, sequence, size=len(data))

    def messages_from(self, channel_id: int, stamps: list[int], datas: list[bytes], first_sequence: int) -> None:
        self._call(self.file.messages_from, channel_id, stamps, datas, first_sequence,
                   size=sum(len(d) for d in datas))

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
