"""The origin's side of a fleet: ``monbridge serve --attach NAME --publish redis://HOST:PORT``.

``OriginTap`` runs inside the bridge's relay loop, in step with it: when due (at most ``rate``
times a second) it reads every channel of the attached device after cursors of its own and
makes the Redis writes of that tick — one ``XADD`` per channel with something new, the
manifest and state when they change, the heartbeat once a second. Records and events
channels always (edges backfill late joiners from them); a frame channel only while some
edge's browsers subscribe to it (the edges say so in the wants stream), so an unwatched
camera costs nothing between machines (unless ``--publish-frames all``). ``OriginSender``
(a thread) sends the queued ticks' writes in one write, so a slow or absent Redis never
holds up the relay or the local browsers; it also reads the edges' commands (writing back
their answers) and their wants.
What reaches Redis grows with channels × rate, never with the number of viewers.

Layout and entry fields: ``bridge.fleet.streams`` and docs/scaling.md. Imports redis only
inside OriginSender (the ``[fleet]`` extra); no Flask or socketio.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from device_agent.attach import DeviceAttachment, EventsReader, FrameReader, RecordsReader

from . import streams
from .streams import Command, Retention

log = logging.getLogger("bridge.fleet")

QUEUED_TICKS = 64          # ticks of writes waiting for Redis at most; older ones are dropped (edges count them)
RETRY_PERIOD = 1.0         # seconds between attempts to reach a Redis that is down
COMMANDS_BLOCK_MS = 500    # the commands reader's XREAD BLOCK
TICK_FRACTION = 0.75       # a channel is read again after this much of 1/rate: ticks fall into step with publishes


PACK_CUTOFF = 6000         # bytes: larger values go to the socket as they are, not copied (as redis-py does)
_PIECES: dict[str, bytes] = {}   # a str argument's RESP bulk string (keys, field names, command words)


def xadd_args(key: str, fields: dict[str, Any], maxlen: int) -> tuple[Any, ...]:
    """``XADD key MAXLEN ~ maxlen * field value...``, as redis-py's ``xadd(approximate=True)`` sends it."""
    args: list[Any] = ["XADD", key, "MAXLEN", "~", maxlen, "*"]
    for item in fields.items():
        args += item
    return tuple(args)


def resp_commands(commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` (arguments: str, int, or bytes-like) as RESP arrays of bulk strings, the
    bytes redis-py's packer makes, ready for ``Connection.send_packed_command``: small pieces
    joined, a value over PACK_CUTOFF bytes passed as it is (a frame is not copied). ~3x less
    CPU than redis-py's packer per XADD: the str arguments repeat, their pieces are kept."""
    out: list[Any] = []
    small: list[bytes] = []
    for args in commands:
        small.append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, str):
                piece = _PIECES.get(arg)
                if piece is None:
                    data = arg.encode()
                    piece = b"$%d\r\n%b\r\n" % (len(data), data)
                    if len(_PIECES) < 4096:
                        _PIECES[arg] = piece
                small.append(piece)
            elif isinstance(arg, int):
                data = b"%d" % arg
                small.append(b"$%d\r\n%b\r\n" % (len(data), data))
            else:
                n = len(arg) if isinstance(arg, bytes) else memoryview(arg).nbytes
                if n > PACK_CUTOFF:
                    small.append(b"$%d\r\n" % n)
                    out += [b"".join(small), arg]
                    small = [b"\r\n"]
                else:
                    small.append(b"$%d\r\n%b\r\n" % (n, arg))
    if small:
        out.append(b"".join(small))
    return out


@dataclass
class Write:
    """One Redis call: ``op`` is "xadd" (key, fields, maxlen), "set" (key, value, px) or
    "sadd" (key, member)."""

    op: str
    key: str
    value: Any
    arg: int = 0


@dataclass
class _Cursor:
    kind: str
    next: int = 0          # records/events: the next sequence number; frame: the last frame sent
    rate: float = 60.0     # entries a second, for MAXLEN (the tick rate: at most one per tick)
    floor: int = 0         # records/events: where this tap began reading this device process
    due: float = 0.0       # monotonic: read again from then on
    waiting: bool = False  # read at the next publish (its ring), not at ``due``
    slow: bool = False     # published less often than it may be read: after a read, wait for the
                           # next publish rather than wake at ``due`` to find nothing


@dataclass
class OriginTap:
    """The publishing half that runs in the relay loop (no Redis, no clock of its own)."""

    device_name: str
    rate: float = 60.0
    retention: Retention = field(default_factory=Retention)
    origin_label: str = ""
    next_due: float = 0.0            # monotonic: a channel is due then (inf: none until a publish)
    waiting_for_data: bool = False   # a due channel had nothing new: wake on a publish
    _dev: Any = None
    _run: str = ""
    _cursors: dict[str, _Cursor] = field(default_factory=dict)
    _manifest_sent: str = ""
    _manifest_seen: Any = None
    _state_sent: int = -1
    _next_beat: float = 0.0
    _resume: dict[str, streams.Entry | None] = field(default_factory=dict)
    frames_wanted: frozenset[str] = frozenset()   # frame channels some edge's browsers subscribe to
    all_frames: bool = False                      # --publish-frames all: every frame channel, always

    @property
    def run(self) -> str:
        return self._run

    def want(self, channels: frozenset[str]) -> None:
        """What the edges' browsers subscribe to now: a frame channel wanted anew is read at
        the next tick, so its newest frame reaches the edges at once."""
        for name in channels - self.frames_wanted:
            cursor = self._cursors.get(name)
            if cursor is not None:
                cursor.due, cursor.waiting = 0.0, False
                self.next_due = 0.0
        self.frames_wanted = channels

    def _publishes(self, channel: str, cursor: _Cursor) -> bool:
        return cursor.kind != "frame" or self.all_frames or channel in self.frames_wanted

    def resync(self, newest: dict[str, streams.Entry | None] | None = None) -> None:
        """Redis is reachable again, or for the first time (the sender dropped the writes it
        had not sent): send the manifest and state again, and read each records and events
        channel again from after its stream's newest entry when that came from this device
        process, else from where this tap began (the ring's own ``missed`` counts what it no
        longer holds); frames from the newest. ``newest``: each channel stream's newest entry."""
        self._manifest_sent, self._manifest_seen, self._state_sent, self._next_beat = "", None, -1, 0.0
        self._resume = dict(newest or {})
        if self._dev is None:
            return
        for name, cursor in self._cursors.items():
            reader = self._dev.channels.get(name)
            if cursor.kind == "frame":
                cursor.next = 0
                continue
            if reader is None:
                continue
            entry = self._resume.get(name)
            same = entry is not None and entry.run == self._run and entry.kind == cursor.kind
            cursor.next = entry.next_seq if same and entry.next_seq <= reader.write_count else cursor.floor
        self._resume = {}

    def _reset_cursors(self, dev: DeviceAttachment) -> None:
        """Cursors for a device process this tap has not read yet: after the stream's newest
        entry if it is this process's (another origin published it), else from now."""
        self._cursors = {}
        for name, reader in dev.channels.items():
            if isinstance(reader, FrameReader):
                self._cursors[name] = _Cursor("frame", 0, self.rate / TICK_FRACTION)
            else:
                kind = "records" if isinstance(reader, RecordsReader) else "events"
                start = streams.origin_cursor(self._resume.get(name), self._run, reader.write_count)
                self._cursors[name] = _Cursor(kind, start, self.rate / TICK_FRACTION, start)
        self._resume = {}

    def tick(self, dev: DeviceAttachment | None, online: bool, status: dict[str, Any], now: float,
             wall: float) -> list[Write]:
        """The writes of this tick (empty when not due). ``dev``: the relay's attachment (None
        while there is none); ``status``: DeviceLink.status(), for the heartbeat."""
        writes: list[Write] = []
        name = self.device_name
        if dev is not None and dev is not self._dev:
            self._dev = dev
            self._run = f"{dev.writer_pid}.{dev.header.created:.6f}"
            self._manifest_sent, self._manifest_seen, self._state_sent = "", None, -1
            self._reset_cursors(dev)
        if now >= self._next_beat:
            self._next_beat = now + streams.HEARTBEAT_PERIOD
            beat = streams.heartbeat_value(self._run or None, status.get("pid"), "online" if online else "offline",
                                           status.get("heartbeat_age"), self.origin_label, wall)
            writes += [Write("set", streams.heartbeat_key(name), beat, streams.HEARTBEAT_TTL_MS),
                       Write("sadd", streams.DEVICES_KEY, name)]
        if dev is None or not online:
            self.waiting_for_data = False
            self.next_due = now + 1.0 / self.rate
            if dev is None:
                return writes
        if dev.manifest is not self._manifest_seen:   # refresh() puts a new dict there when it changes
            self._manifest_seen = dev.manifest
            manifest = json.dumps(streams.public_manifest(dev.manifest), sort_keys=True)
        else:
            manifest = self._manifest_sent
        if manifest != self._manifest_sent:
            self._manifest_sent = manifest
            if set(self._cursors) != set(dev.channels):   # a channel declared since
                known = self._cursors
                self._reset_cursors(dev)
                self._cursors.update({k: v for k, v in known.items() if k in self._cursors})
            writes.append(Write("xadd", streams.manifest_key(name), streams.manifest_entry(self._run, dev.manifest),
                                streams.MANIFEST_MAXLEN))
        if dev.state_version != self._state_sent:
            version, values = dev.state()
            self._state_sent = version
            writes.append(Write("xadd", streams.state_key(name), streams.state_entry(self._run, version, values), 64))
        if not online:
            return writes
        # each channel on its own schedule, as each subscription in the relay: one published a
        # moment after another is read at its publish, not a tick later
        for channel, cursor in self._cursors.items():
            if not self._publishes(channel, cursor):
                cursor.waiting = False
                continue
            reader = dev.channels.get(channel)
            if now < cursor.due:
                if cursor.waiting and reader is not None and _published_after(reader, cursor):
                    cursor.waiting = cursor.slow = False   # published before it was due: read at due
                continue
            entry = self._read(reader, cursor) if reader is not None else None
            if entry is None:
                cursor.waiting = cursor.slow = True
            else:
                size = streams.entry_bytes(entry)
                maxlen = streams.maxlen(cursor.kind, cursor.rate, size, self.retention)
                writes.append(Write("xadd", streams.channel_key(name, channel), entry, maxlen))
                cursor.due = now + TICK_FRACTION / self.rate
                cursor.waiting = cursor.slow
        self.waiting_for_data = any(c.waiting for c in self._cursors.values())
        self.next_due = min((c.due for n, c in self._cursors.items() if not c.waiting and self._publishes(n, c)),
                            default=float("inf"))
        return writes

    def news(self, dev: DeviceAttachment) -> bool:
        """Something was published after the cursor of a channel that waits for it (checked
        after asking the device to ring: a publish in between would ring nobody)."""
        for channel, cursor in self._cursors.items():
            if cursor.waiting and self._publishes(channel, cursor):
                reader = dev.channels.get(channel)
                if reader is not None and _published_after(reader, cursor):
                    return True
        return False

    def _read(self, reader: Any, cursor: _Cursor) -> dict[str, bytes] | None:
        if isinstance(reader, RecordsReader):
            batch = reader.read(cursor.next)
            if not len(batch.records):
                return None
            cursor.next = batch.next_cursor
            return streams.entry_for_records(self._run, batch.records, batch.first)
        if isinstance(reader, FrameReader):
            frame = reader.read_latest(after=cursor.next)
            if frame is None:
                return None
            cursor.next = frame.seq
            return streams.entry_for_frame(self._run, frame.seq, frame.t, frame.array)
        if isinstance(reader, EventsReader):
            start = cursor.next
            events, missed, next_cursor = reader.read(start)
            if next_cursor <= start:
                return None
            cursor.next = next_cursor
            return streams.entry_for_events(self._run, events, start + missed, next_cursor)
        return None


def _published_after(reader: Any, cursor: _Cursor) -> bool:
    if isinstance(reader, FrameReader):
        return reader.latest > cursor.next
    return reader.write_count > cursor.next


class OriginSender:
    """Sends the tap's writes to Redis on a thread of its own, reads the edges' commands and
    writes back their answers. ``submit(command, on_done)`` hands a command to the bridge's
    broker (validated again there) and arranges for ``on_done(answer)`` once it is answered.

    Redis down: the writes of at most QUEUED_TICKS ticks wait, older ones are dropped (the
    edges count what they lose from sequence numbers), and the sender retries every
    RETRY_PERIOD; once back, the tap sends the manifest and state again (``on_reconnect``)."""

    def __init__(self, url: str, device_name: str, submit: Callable[[Command, Callable[[dict[str, Any]], None]], None],
                 on_reconnect: Callable[[dict[str, streams.Entry | None]], None],
                 start_task: Callable[..., Any], sleep: Callable[[float], None],
                 on_wants: Callable[[frozenset[str]], None] = lambda channels: None) -> None:
        import redis   # the [fleet] extra

        self.url = url
        self.device_name = device_name
        # the writes are packed here (resp_commands): with hiredis installed redis-py would copy
        # each XADD's frame whole into one buffer, ~3x the CPU for big frames (docs/scaling.md)
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._commands_redis = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=None)
        self._errors = (redis.RedisError, OSError)
        self._reply_error = redis.ResponseError
        self._conn: Any = None      # the sender's own connection (_flush)
        self._unread = 0            # commands sent on it whose replies are not read yet
        self._submit = submit
        self._on_reconnect = on_reconnect
        self._on_wants = on_wants
        self._wants = streams.EdgeWants()
        self._wanted: frozenset[str] = frozenset()
        self._sleep = sleep
        self._ticks: collections.deque[list[Write]] = collections.deque()
        self._replies: collections.deque[tuple[str, int, dict[str, Any]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self.connected = False
        self.dropped_ticks = 0
        self.refused = 0            # writes Redis refused
        self._refusals_said: set[str] = set()
        self._down_since: float | None = None
        start_task(self._send_loop)
        start_task(self._commands_loop)

    # -- called from the relay loop and the broker -----------------------------------

    def queue(self, writes: list[Write]) -> None:
        if not writes:
            return
        if len(self._ticks) >= QUEUED_TICKS:
            self._ticks.popleft()
            self.dropped_ticks += 1
        self._ticks.append(writes)
        self._wake.set()

    def drop_pending(self) -> None:
        """Forget the writes not sent yet (called with the tap's resync, under the bridge's
        lock: the tap reads those channels again)."""
        self._ticks.clear()

    def reply(self, edge: str, request: int, answer: dict[str, Any]) -> None:
        self._replies.append((edge, request, answer))
        self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    # -- the sending thread ------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop:
            self._wake.wait()   # no timeout: each one ended early would wake the process again (eventlet)
            self._wake.clear()
            if not self.connected and not self._connect():
                self._wait_retry()
                continue
            try:
                self._flush()
            except self._errors as exc:
                self._went_down(exc)
        self._drop_connection()

    def _wait_retry(self) -> None:
        deadline = time.monotonic() + RETRY_PERIOD
        while not self._stop and time.monotonic() < deadline:
            self._sleep(0.1)

    def _connect(self) -> bool:
        try:
            self._redis.ping()
            newest = {}
            manifest = self._redis.xrevrange(streams.manifest_key(self.device_name), count=1)
            channels = streams.decode_manifest(manifest[0][1])[1]["channels"] if manifest else []
            for ch in channels:
                got = self._redis.xrevrange(streams.channel_key(self.device_name, ch["name"]), count=1)
                newest[ch["name"]] = streams.decode_entry(got[0][1]) if got else None
        except self._errors as exc:
            self._went_down(exc)
            return False
        except (ValueError, KeyError, TypeError):
            newest = {}
        if self._down_since is not None:
            log.warning("Redis at %s is back after %.1f s: publishing %r again", streams.shown_url(self.url),
                        time.monotonic() - self._down_since, self.device_name)
        self._down_since = None
        self.connected = True
        self._on_reconnect(newest)
        return True

    def _refused(self, exc: BaseException) -> None:
        """Say once what Redis refused (each kind of refusal), and count them."""
        self.refused += 1
        why = f"{type(exc).__name__}: {exc}"
        if why not in self._refusals_said and len(self._refusals_said) < 16:
            self._refusals_said.add(why)
            log.warning("Redis at %s refused a write for %r (%s): edges miss what it refused; the origin's Redis "
                        "user needs the rights docs/scaling.md lists", streams.shown_url(self.url), self.device_name, why)

    def _went_down(self, exc: BaseException) -> None:
        self.connected = False
        self._drop_connection()
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("cannot reach Redis at %s (%s): edges show %r offline meanwhile; the local dashboard "
                        "keeps working; retrying every %g s", streams.shown_url(self.url), exc, self.device_name, RETRY_PERIOD)


    def _flush(self) -> None:
        """Send what is queued (replies and small writes first, frames last, so Redis has every
        record and answer before a big frame's bytes) as one write on the sender's own
        connection. The replies are read at the next flush, by then already arrived: waiting
        for them now would wake the process once more per tick (redis-py's pipeline does)."""
        while self._ticks or self._replies:
            commands: list[tuple[Any, ...]] = []
            frames: list[tuple[Any, ...]] = []
            while self._replies and len(commands) < 256:
                edge, request, answer = self._replies.popleft()
                key = streams.replies_key(self.device_name, edge)
                commands.append(xadd_args(key, streams.reply_entry(request, answer), streams.REPLIES_MAXLEN))
                commands.append(("PEXPIRE", key, streams.REPLIES_TTL_MS))
            while self._ticks and len(commands) < 256:
                for w in self._ticks.popleft():
                    if w.op == "xadd":
                        (frames if w.value.get("kind") == b"frame" else commands).append(xadd_args(w.key, w.value, w.arg))
                    elif w.op == "set":
                        commands.append(("SET", w.key, w.value, "PX", w.arg))
                    else:
                        commands.append(("SADD", w.key, w.value))
            commands += frames
            conn = self._connection()
            self._read_replies(conn)
            conn.send_packed_command(resp_commands(commands), check_health=False)
            self._unread += len(commands)

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._redis.connection_pool.get_connection()
            self._unread = 0
        return self._conn

    def _read_replies(self, conn: Any) -> None:
        """Read the replies of what was sent before, every one (the connection stays in step);
        a refused command is said and counted, not taken for Redis being down."""
        while self._unread:
            self._unread -= 1
            try:
                conn.read_response()
            except self._reply_error as exc:    # NOPERM from an ACL, a wrong type...
                self._refused(exc)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._redis.connection_pool.release(self._conn)
            self._conn, self._unread = None, 0

    # -- the commands thread ----------------------------------------------------------

    def _commands_loop(self) -> None:
        """The edges' commands, and what their browsers subscribe to (the wants stream)."""
        key, wants_key = streams.commands_key(self.device_name), streams.wants_key(self.device_name)
        last: str | None = None
        last_wants = streams.FIRST_ID   # every edge's recent entries: those older than WANTS_TTL expire
        while not self._stop:
            try:
                if last is None:   # start after what is there: older commands were answered `timeout` already
                    got = self._commands_redis.xrevrange(key, count=1)
                    last = streams.text(got[0][0]) if got else streams.FIRST_ID
                answer = self._commands_redis.xread({key: last, wants_key: last_wants}, block=COMMANDS_BLOCK_MS,
                                                    count=100)
            except self._errors:
                last, last_wants = None, streams.FIRST_ID
                self._wait_retry()
                continue
            for stream, entries in answer or []:
                if streams.text(stream) == wants_key:
                    last_wants = self._read_wants(entries)
                    continue
                for entry_id, fields in entries:
                    last = streams.text(entry_id)
                    try:
                        command = streams.decode_command(fields)
                    except ValueError as exc:
                        log.warning("ignoring a malformed command entry %s in Redis: %s", last, exc)
                        continue
                    if command.deadline < time.time():
                        continue   # its edge has answered `timeout` already
                    self._submit(command, lambda answer, c=command: self.reply(c.edge, c.request, answer))
            wanted = self._wants.channels(time.monotonic())
            if wanted != self._wanted:
                self._wanted = wanted
                self._on_wants(wanted)

    def _read_wants(self, entries: list[Any]) -> str:
        """Take the edges' wants entries in; return the last entry's id."""
        last = streams.FIRST_ID
        for entry_id, fields in entries:
            last = streams.text(entry_id)
            try:
                edge, channels = streams.decode_wants(fields)
            except ValueError as exc:
                log.warning("ignoring a malformed wants entry %s in Redis: %s", last, exc)
                continue
            self._wants.update(edge, channels, time.monotonic())
        return last
