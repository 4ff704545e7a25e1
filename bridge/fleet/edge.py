"""The edge's side of a fleet: ``monbridge serve --edge redis://HOST:PORT --attach NAME``.

``EdgeFollower`` keeps a copy of the origin's device in this process (``mirror.MemoryDevice``)
up to date from Redis, so the bridge serves it with its usual DeviceLink, relay and broker:
* data: one thread ``XREAD BLOCK``s the device's manifest, state and channel streams with
  explicit IDs and writes each entry into the copy with the origin's sequence numbers
  (``streams.step``: a gap is missed exactly; a new ``run`` is a device restart);
* liveness: it beats the copy's heartbeat while the origin's heartbeat key says online; when
  the key expires (origin or Redis gone) the bridge shows the device offline;
* commands: a thread waits on the copy's doorbell (rung by the bridge's broker), XADDs the
  commands the broker validated to the device's commands stream, in order; another reads
  this edge's replies stream and hands each answer back to the broker;
* wants: the same thread XADDs the channels this edge's browsers subscribe to (``want()``,
  from the relay loop) when they change and every WANTS_EVERY s: origins publish frame
  channels only while some edge wants them;
* Redis restarts (its ``run_id`` changes): every stream is read again from the start;
  sequence numbers keep what was delivered from coming twice.

Imports redis (the ``[fleet]`` extra); no Flask or socketio: the bridge passes its own
``start_task`` and ``sleep``, so eventlet and threading modes both work.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any, Callable

from device_agent.doorbell import Doorbell, Ringer

from . import streams
from .follow import Follower
from .mirror import MemorySegment
from .streams import Command

log = logging.getLogger("bridge.fleet")

BLOCK_MS = 200             # XREAD BLOCK: also how often the heartbeat key is looked at
READ_COUNT = 64            # entries per stream per XREAD
RETRY_PERIOD = 0.5         # seconds between attempts to reach a Redis that is down
RUN_ID_EVERY = 1.0         # seconds between checks that Redis did not restart
BEAT_EVERY = 0.25          # seconds between looks at the origin's heartbeat key (the copy beats then)


def published_devices(url: str) -> list[str]:
    """The devices origins publish into the Redis at ``url`` now (their heartbeat key is
    there): what ``--attach auto`` on an edge chooses from."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        names = sorted(streams.text(n) for n in client.smembers(streams.DEVICES_KEY))
        return [n for n in names if client.exists(streams.heartbeat_key(n))]   # an origin publishes them now
    finally:
        client.close()


class EdgeFollower:
    def __init__(self, url: str, device: str, command_timeout: float,
                 start_task: Callable[..., Any], sleep: Callable[[float], None], edge_id: str | None = None,
                 on_replies: Callable[[], None] | None = None) -> None:
        """``on_replies``: called after answers were put in the copy's replies queue, to route
        them at once (the bridge's reply task would wake for them too, one wake-up later)."""
        import redis   # the [fleet] extra

        self.url = url
        self.device = device
        self.edge_id = edge_id or f"{os.uname().nodename[:24]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.command_timeout = command_timeout
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._replies_redis = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._errors = (redis.RedisError, OSError)
        self._sleep = sleep
        self._on_replies = on_replies
        self.doorbell = Doorbell(f"{device}.edge")
        self.follower = Follower(device, self.doorbell)
        self._ringer = Ringer()
        self._wanted: frozenset[str] = frozenset()
        self._wants_sent: frozenset[str] | None = None
        self._next_wants = 0.0
        self._wants_failing = False
        self._layout_seen: Any = streams.LAYOUT   # the origin's layout, as last logged about
        self._run_id: str | None = None
        self._next_run_id_check = 0.0
        self._next_beat = 0.0
        self._down_since: float | None = None
        self._stop = False
        self.redis_restarts = 0
        start_task(self._data_loop)
        start_task(self._commands_loop)
        start_task(self._replies_loop)

    def open_segment(self, seg_name: str) -> MemorySegment:
        """What DeviceLink opens segments with (FileNotFoundError until the device is known)."""
        try:
            return MemorySegment(self.follower.segments[seg_name])
        except KeyError:
            raise FileNotFoundError(seg_name) from None

    def stop(self) -> None:
        self._stop = True
        self.doorbell.close()
        self._ringer.close()

    def want(self, channels: frozenset[str]) -> None:
        """The channels this edge's browsers subscribe to now (the relay loop calls it each tick)."""
        if channels != self._wanted:
            self._wanted = channels
            self._ringer.ring(self.doorbell.address)

    # -- data ------------------------------------------------------------------------

    def _data_loop(self) -> None:
        while not self._stop:
            try:
                self._check_run_id()
                self._beat()   # first: it also says when the origin writes another layout
                if self.follower.mirror is None and not self._start():
                    self._sleep(RETRY_PERIOD)
                    continue
                self._read_once()
                self._up()
            except self._errors as exc:
                self._down(exc)
                self._sleep(RETRY_PERIOD)
            except Exception:   # a bug here must not stop the edge for good
                log.error("edge follower failed; starting over", exc_info=True)
                self.follower.after_redis_restart()
                self._sleep(RETRY_PERIOD)

    def _check_run_id(self) -> None:
        now = time.monotonic()
        if now < self._next_run_id_check:
            return
        self._next_run_id_check = now + RUN_ID_EVERY
        run_id = self._redis.info("server").get("run_id")
        if self._run_id is not None and run_id != self._run_id:
            self.redis_restarts += 1
            log.warning("Redis at %s restarted: reading %r's streams again from their start", streams.shown_url(self.url), self.device)
            self.follower.after_redis_restart()
        self._run_id = run_id

    def _start(self) -> bool:
        """Build the copy from the newest manifest and state; False while there is none."""
        r, follower = self._redis, self.follower
        got = r.xrevrange(follower.manifest_key, count=1)
        if not got:
            return False
        manifest_id, fields = streams.text(got[0][0]), got[0][1]
        frame_starts = {}
        for name in follower.frame_channels(fields):
            newest = r.xrevrange(streams.channel_key(self.device, name), count=1)
            if newest:
                frame_starts[name] = streams.text(newest[0][0])
        state = r.xrevrange(follower.state_key, count=1)
        follower.start(manifest_id, fields, (streams.text(state[0][0]), state[0][1]) if state else None, time.time(),
                       frame_starts)
        return True

    def _read_once(self) -> None:
        positions = self.follower.positions
        got = self._redis.xread({k: p.stream_id for k, p in positions.items()}, count=READ_COUNT, block=BLOCK_MS)
        for key, entries in got or []:
            key = streams.text(key)
            for entry_id, fields in entries:
                self.follower.apply(key, streams.text(entry_id), fields, time.time())

    def _beat(self) -> None:
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + BEAT_EVERY
        beat = streams.decode_heartbeat(self._redis.get(streams.heartbeat_key(self.device)))
        layout = beat.get("layout") if beat is not None else streams.LAYOUT
        if layout != self._layout_seen:   # said once per change
            self._layout_seen = layout
            if layout != streams.LAYOUT:
                log.warning("the origin of %r writes Redis layout %s, this edge reads layout %d: run the same "
                            "monbridge version on origins and edges (docs/scaling.md)", self.device,
                            layout or "1 (an older monbridge)", streams.LAYOUT)
        if beat is not None and beat.get("status") == "online" and self.follower.mirror is not None:
            self.follower.mirror.beat(time.time())

    # -- commands ----------------------------------------------------------------------

    def _commands_loop(self) -> None:
        """The broker's commands, to the device's commands stream in the order it queued them."""
        while not self._stop:
            try:
                self.doorbell.wait(0.5)
            except OSError:
                return   # closed: stopping
            self._send_wants()
            mirror = self.follower.mirror
            if mirror is None:
                continue
            taken = mirror.take_commands()
            if not taken:
                continue
            deadline = time.time() + self.command_timeout
            try:
                pipe = self._redis.pipeline(transaction=False)
                for cmd in taken:
                    pipe.xadd(streams.commands_key(self.device), streams.command_entry(Command(
                        self.edge_id, int(cmd["id"]), cmd["name"], cmd.get("args") or {}, cmd.get("client") or {},
                        deadline)), maxlen=streams.COMMANDS_MAXLEN, approximate=True)
                pipe.execute()
            except self._errors as exc:
                for cmd in taken:
                    mirror.put_reply({"id": cmd["id"], "ok": False,
                                      "error": {"code": "offline", "message": f"cannot reach Redis: {exc}"}})

    def _send_wants(self) -> None:
        """XADD what this edge's browsers subscribe to when it changed, and every WANTS_EVERY
        while it is not nothing (an origin forgets it WANTS_TTL after the last entry)."""
        wanted, now = self._wanted, time.monotonic()
        if wanted == self._wants_sent and (not wanted or now < self._next_wants):
            return
        try:
            self._redis.xadd(streams.wants_key(self.device), streams.wants_entry(self.edge_id, wanted),
                             maxlen=streams.WANTS_MAXLEN, approximate=True)
        except self._errors as exc:   # tried again at the next wake-up (at most 0.5 s); said once
            if not self._wants_failing:
                self._wants_failing = True
                log.warning("cannot write %r's wants stream in Redis (%s: %s): origins will not send this "
                            "edge's browsers the frame channels they watch (an edge's ACL user needs write access "
                            "to monbridge:{*}:wants, docs/scaling.md)", self.device, type(exc).__name__, exc)
            return
        if self._wants_failing:
            self._wants_failing = False
            log.warning("%r's wants stream in Redis is writable again", self.device)
        self._wants_sent, self._next_wants = wanted, now + streams.WANTS_EVERY

    def _replies_loop(self) -> None:
        key = streams.replies_key(self.device, self.edge_id)
        last = streams.FIRST_ID   # this edge's own stream (its id is new): every entry is an answer to us
        while not self._stop:
            try:
                got = self._replies_redis.xread({key: last}, count=100, block=500)
            except self._errors:
                self._sleep(RETRY_PERIOD)
                last = streams.FIRST_ID   # the stream expires with its last reply: read all of a new one
                continue
            for _key, entries in got or []:
                for entry_id, fields in entries:
                    last = streams.text(entry_id)
                    try:
                        request, answer = streams.decode_reply(fields)
                    except ValueError as exc:
                        log.warning("ignoring a malformed reply %s: %s", last, exc)
                        continue
                    if self.follower.mirror is not None:
                        self.follower.mirror.put_reply({"id": request, **answer})
            if got and self._on_replies is not None:
                try:
                    self._on_replies()
                except Exception:   # the bridge's reply task routes them anyway
                    log.error("routing replies failed", exc_info=True)

    # -- status ------------------------------------------------------------------------

    def _up(self) -> None:
        if self._down_since is not None:
            log.warning("Redis at %s is back after %.1f s", streams.shown_url(self.url), time.monotonic() - self._down_since)
            self._down_since = None

    def _down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("cannot reach Redis at %s (%s): %r shows offline until it is back; retrying every %g s",
                        streams.shown_url(self.url), exc, self.device, RETRY_PERIOD)

