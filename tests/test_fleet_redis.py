"""The fleet's stream layout (bridge/fleet/streams.py) through a real redis-server, with
redis-py as the origin and the edges will use it: XADD one entry per channel per tick, XREAD
BLOCK with explicit IDs across several streams, MAXLEN/MINID trimming, a Redis restart.
Checks bytes, sequence continuity and exact ``missed``.

The origin and the edge here are a few lines each (``publish``, ``Edge``), not the bridge's:
they prove the layout and the arithmetic the bridge will be wired to. Every wait has a
deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import redis

from bridge.fleet import streams as fs
from bridge.protocol import encode_frame, encode_records
from conftest import wait_for
from device_agent.attach import Event
from redis_support import RedisServer, redis_server, redis_server_binary, redis_server_module  # noqa: F401

pytestmark = pytest.mark.timeout(120)

DEVICE = "arm1"
RUN = "4242.1718000000"
DTYPE = np.dtype([("t", "<f8"), ("seq", "<i8"), ("value", "<f4"), ("pos", "<f4", (3,))])
DEADLINE = 15.0


@pytest.fixture
def r(redis_server_module: RedisServer) -> Iterator[redis.Redis]:
    """A client of the module's Redis, emptied for this test."""
    redis_server_module.flush()
    client = redis.Redis.from_url(redis_server_module.url)
    yield client
    client.close()


def rows(first: int, n: int) -> np.ndarray:
    out = np.zeros(n, DTYPE)
    seqs = np.arange(first, first + n)
    out["t"], out["seq"], out["value"] = 1_795_303_759.0 + seqs / 60, seqs, np.cos(seqs)
    out["pos"] = np.stack([seqs, -seqs, seqs * 2], axis=1)
    return out


def retrying(call: Callable[[], Any], what: str) -> Any:
    """``call()``, again while Redis is not back yet (a restart in progress), to a deadline."""
    return wait_for(lambda: (call(),), DEADLINE, what, interval=0.02,
                    ignore=(redis.ConnectionError, redis.TimeoutError))[0]


@dataclass
class Channel:
    name: str
    position: fs.Position = field(default_factory=fs.Position)
    delivered: list[int] = field(default_factory=list)     # sequence numbers, in delivery order
    missed: int = 0
    restarts: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Edge:
    """What an edge does with the streams: XREAD BLOCK from explicit IDs over every channel
    of a device, ``fs.step`` per entry, and ``after_redis_restart`` when Redis's run_id changes."""

    def __init__(self, url: str, channels: list[str]) -> None:
        self.r = redis.Redis.from_url(url, socket_timeout=5)
        self.channels = {fs.channel_key(DEVICE, c): Channel(c) for c in channels}
        self.run_id: str | None = None
        self.errors = 0
        self.idle = threading.Event()   # follow() saw ``paused`` and reads nothing until it clears

    def check_redis(self) -> None:
        run_id = self.r.info("server")["run_id"]
        if self.run_id is not None and run_id != self.run_id:
            for ch in self.channels.values():
                ch.position = ch.position.after_redis_restart()
        self.run_id = run_id

    def read(self, block_ms: int = 100) -> int:
        """One XREAD over every channel; returns the entries handled."""
        got = self.r.xread({key: ch.position.stream_id for key, ch in self.channels.items()}, block=block_ms)
        handled = 0
        for key, entries in got or []:
            ch = self.channels[key.decode()]
            for entry_id, fields in entries:
                entry = fs.decode_entry(fields)
                s = fs.step(ch.position, entry_id, entry)
                ch.position = s.position
                ch.missed += s.missed
                ch.restarts += s.restarted
                handled += 1
                if s.duplicate:
                    continue
                ch.delivered += range(entry.first + s.skip, entry.next_seq)
                if entry.kind == "events":
                    ch.events += [e for e in fs.events_of(entry) if e.seq >= entry.first + s.skip]
                else:
                    ch.messages.append(fs.message(ch.name, entry, s.missed))
        return handled

    def follow(self, stop: threading.Event, paused: threading.Event) -> None:
        """Read until ``stop``; survive Redis going away (count the errors, check its run_id)."""
        while not stop.is_set():
            if paused.is_set():
                self.idle.set()
                stop.wait(0.005)
                continue
            self.idle.clear()
            try:
                self.check_redis()
                self.read(block_ms=50)
            except (redis.ConnectionError, redis.TimeoutError):
                self.errors += 1
                stop.wait(0.02)    # Redis is restarting: try again shortly

    def close(self) -> None:
        self.r.close()


# -- several streams, one XREAD, bytes intact -----------------------------------------------------

def test_an_edge_reading_several_streams_gets_every_entry_intact(r, redis_server_module):
    """An origin thread XADDs records, frames and events into three streams, interleaved, while
    an edge XREAD BLOCKs across all three with explicit IDs: every entry arrives once, in
    order, and rebuilds the very message the relay's encoders made."""
    edge = Edge(redis_server_module.url, ["temps", "camera", "log"])
    expected: dict[str, list[Any]] = {"temps": [], "camera": [], "log": []}
    rng = np.random.default_rng(15)

    def origin() -> None:
        seq = 0
        for k in range(1, 61):
            batch = rows(seq, int(rng.integers(1, 9)))
            r.xadd(fs.channel_key(DEVICE, "temps"), fs.entry_for_records(RUN, batch, seq))
            expected["temps"].append(encode_records("temps", batch, seq, 0))
            seq += len(batch)
            if k % 2 == 0:
                image = rng.random((48, 64), dtype=np.float32)
                r.xadd(fs.channel_key(DEVICE, "camera"), fs.entry_for_frame(RUN, k // 2, 1e9 + k, image))
                expected["camera"].append(encode_frame("camera", k // 2, 1e9 + k, image, 0))
            if k % 3 == 0:
                events = [Event(k - 3, 1e9 + k, {"text": f"tick {k}"}, None), Event(k - 1, 1e9 + k, "x", "sid-a")]
                r.xadd(fs.channel_key(DEVICE, "log"), fs.entry_for_events(RUN, events, k - 3, k))
                expected["log"] += events

    stop, paused = threading.Event(), threading.Event()
    reader = threading.Thread(target=edge.follow, args=(stop, paused), daemon=True)
    reader.start()
    try:
        origin()
        chans = {ch.name: ch for ch in edge.channels.values()}
        wait_for(lambda: len(chans["temps"].messages) == 60 and len(chans["camera"].messages) == 30
                 and len(chans["log"].events) == 40, DEADLINE, "the edge to read every entry")
    finally:
        stop.set()
        reader.join(DEADLINE)
        edge.close()
    assert chans["temps"].messages == expected["temps"]
    assert chans["camera"].messages == expected["camera"]
    assert chans["log"].events == expected["log"]
    temps = chans["temps"]
    assert temps.delivered == list(range(temps.delivered[-1] + 1)) and temps.missed == 0
    assert chans["camera"].delivered == list(range(1, 31)) and chans["camera"].missed == 0
    assert chans["log"].delivered == list(range(60)) and edge.errors == 0
    back = np.concatenate([fs.records_of(fs.decode_entry(f), DTYPE)
                           for _, f in r.xrange(fs.channel_key(DEVICE, "temps"))])
    assert np.array_equal(back["seq"], np.arange(len(back)))


def test_a_megabyte_frame_is_stored_once_and_trimmed_exactly(r, redis_server_module):
    """1 MiB frames: each is one entry of one listpack node, so MAXLEN ~ keeps exactly the
    frames asked for; an edge that fell behind gets the newest with the exact ``missed``."""
    key = fs.channel_key(DEVICE, "camera")
    frames = [np.full((1024, 1024), k, np.uint8) for k in range(1, 11)]
    keep = fs.maxlen("frame", 30, 2**20, fs.Retention(frame_seconds=0.1))
    assert keep == 4
    edge = Edge(redis_server_module.url, ["camera"])
    try:
        for k in (1, 2):
            r.xadd(key, fs.entry_for_frame(RUN, k, float(k), frames[k - 1]), maxlen=keep, approximate=True)
        assert edge.read() == 2
        for k in range(3, 11):
            r.xadd(key, fs.entry_for_frame(RUN, k, float(k), frames[k - 1]), maxlen=keep, approximate=True)
        assert r.xlen(key) == keep
        assert edge.read() == keep
    finally:
        edge.close()
    (ch,) = edge.channels.values()
    assert [m["seq"][0] for m in ch.messages] == [1, 2, 7, 8, 9, 10]
    assert [m["missed"] for m in ch.messages] == [0, 0, 4, 0, 0, 0] and ch.missed == 4
    assert all(m["data"] == frames[m["seq"][0] - 1].tobytes() for m in ch.messages)


# -- trimming ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("approximate", [True, False])
def test_records_trimmed_while_an_edge_was_away_are_missed_exactly(r, redis_server_module, approximate):
    key = fs.channel_key(DEVICE, "temps")
    edge = Edge(redis_server_module.url, ["temps"])
    seq = 0

    def publish(entries: int) -> None:
        nonlocal seq
        pipe = r.pipeline(transaction=False)
        for _ in range(entries):
            pipe.xadd(key, fs.entry_for_records(RUN, rows(seq, 3), seq), maxlen=50, approximate=approximate)
            seq += 3
        pipe.execute()

    try:
        publish(10)
        assert edge.read() == 10
        publish(1000)                       # the edge is away; Redis keeps ~50 of them
        length = r.xlen(key)
        assert length == 50 if not approximate else 50 <= length <= 50 + 100   # whole nodes of 100
        while edge.read(block_ms=1):
            pass
    finally:
        edge.close()
    (ch,) = edge.channels.values()
    assert ch.missed == 3 * (1010 - length - 10)
    assert ch.delivered == list(range(30)) + list(range(3 * (1010 - length), 3030))
    assert len(ch.delivered) + ch.missed == 3030


def test_minid_keeps_a_time_window_by_the_servers_ids(r):
    """Retention by time: MINID ~ from the newest ID XADD returned (Redis's clock, not the
    origin's). Explicit IDs stand in for a minute of 1 Hz ticks."""
    key = fs.channel_key(DEVICE, "slow")
    for s in range(60):
        new_id = r.xadd(key, fs.entry_for_records(RUN, rows(s, 1), s), id=f"{1_000_000 + s * 1000}-0")
        r.xtrim(key, minid=fs.min_id(new_id, 10), approximate=False)
    ids = [fs.parse_id(i) for i, _ in r.xrange(key)]
    assert ids[0] == (1_049_000, 0) and ids[-1] == (1_059_000, 0) and len(ids) == 11


# -- Redis restarts -----------------------------------------------------------------------------------

def test_after_a_redis_restart_the_edge_reports_the_gap_exactly(redis_server):
    """Entries in Redis when it restarts are gone (nothing persisted). An edge following the
    stream — paused, then blocked in XREAD during a second restart — must not crash, must
    count exactly the records it will never get, and must deliver nothing twice."""
    origin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    key = fs.channel_key(DEVICE, "temps")
    edge = Edge(redis_server.url, ["temps"])
    (ch,) = edge.channels.values()
    stop, paused = threading.Event(), threading.Event()
    reader = threading.Thread(target=edge.follow, args=(stop, paused), daemon=True)
    seq = 0

    def publish(entries: int) -> None:
        nonlocal seq
        for _ in range(entries):
            fields = fs.entry_for_records(RUN, rows(seq, 3), seq)
            retrying(lambda: origin.xadd(key, fields, maxlen=600, approximate=True), "XADD after the restart")
            seq += 3

    try:
        edge.check_redis()
        first_run_id = edge.run_id
        reader.start()
        publish(20)
        wait_for(lambda: len(ch.delivered) == 60, DEADLINE, "records 0..59 at the edge")
        paused.set()
        wait_for(edge.idle.is_set, DEADLINE, "the edge to pause")
        publish(10)                                   # 60..89: in Redis, never read
        redis_server.restart()                        # ... and gone
        publish(10)                                   # 90..119, into the new Redis
        paused.clear()
        wait_for(lambda: len(ch.delivered) == 90, DEADLINE, "records 90..119 at the edge")
        assert ch.missed == 30 and edge.run_id != first_run_id
        redis_server.restart()                        # the edge is blocked in XREAD meanwhile
        publish(10)                                   # 120..149
        wait_for(lambda: len(ch.delivered) == 120, DEADLINE, "records 120..149 at the edge")
    finally:
        stop.set()
        reader.join(DEADLINE)
        edge.close()
        origin.close()
    assert not reader.is_alive()
    assert ch.delivered == list(range(60)) + list(range(90, 150))
    assert ch.missed == 30 and ch.restarts == 0
    assert [m["missed"] for m in ch.messages].count(30) == 1 and sum(m["missed"] for m in ch.messages) == 30
    assert redis_server.starts == 3


def test_a_new_device_process_behind_the_same_stream_restarts_the_numbering(r, redis_server_module):
    key = fs.channel_key(DEVICE, "temps")
    edge = Edge(redis_server_module.url, ["temps"])
    try:
        r.xadd(key, fs.entry_for_records(RUN, rows(0, 5), 0))
        r.xadd(key, fs.entry_for_records("4243.1718000100", rows(0, 2), 0))
        assert edge.read() == 2
    finally:
        edge.close()
    (ch,) = edge.channels.values()
    assert ch.delivered == [0, 1, 2, 3, 4, 0, 1] and ch.missed == 0 and ch.restarts == 1


# -- control streams ---------------------------------------------------------------------------------

def test_commands_from_two_edges_reach_the_origin_in_order_and_replies_only_their_edge(r):
    commands, position = fs.commands_key(DEVICE), fs.FIRST_ID
    sent = []
    for i in range(6):
        edge = f"edge-{i % 2}"
        command = fs.Command(edge, i, "set_speed", {"value": i / 2}, {"id": f"sid-{i}", "role": "operator"},
                             time.time() + 5)
        r.xadd(commands, fs.command_entry(command), maxlen=fs.COMMANDS_MAXLEN, approximate=True)
        sent.append(command)
    got = []
    for entry_id, fields in r.xread({commands: position}, count=100, block=1000)[0][1]:
        got.append(fs.decode_command(fields))
        position = entry_id
        reply = fs.replies_key(DEVICE, got[-1].edge)
        pipe = r.pipeline()
        pipe.xadd(reply, fs.reply_entry(got[-1].request, {"ok": True, "result": got[-1].args["value"]}),
                  maxlen=fs.REPLIES_MAXLEN, approximate=True)
        pipe.pexpire(reply, fs.REPLIES_TTL_MS)
        pipe.execute()
    assert got == sent
    for edge in ("edge-0", "edge-1"):
        replies = [fs.decode_reply(f) for _, f in r.xrange(fs.replies_key(DEVICE, edge))]
        mine = [c.request for c in sent if c.edge == edge]
        assert replies == [(i, {"ok": True, "result": i / 2}) for i in mine]
        assert 0 < r.pttl(fs.replies_key(DEVICE, edge)) <= fs.REPLIES_TTL_MS


def test_manifest_state_and_heartbeat_for_a_late_edge(r):
    r.xadd(fs.manifest_key(DEVICE), fs.manifest_entry(RUN, {"device": DEVICE, "pid": 7, "channels": []}),
           maxlen=fs.MANIFEST_MAXLEN)
    for version in range(1, 4):
        r.xadd(fs.state_key(DEVICE), fs.state_entry(RUN, version, {"speed": version}), maxlen=fs.STATE_MAXLEN)
    r.set(fs.heartbeat_key(DEVICE), fs.heartbeat_value(RUN, 7, "online", 0.01, "origin-1", time.time()), px=300)
    r.sadd(fs.DEVICES_KEY, DEVICE)
    (_, newest), = r.xrevrange(fs.state_key(DEVICE), count=1)
    assert fs.decode_state(newest) == (RUN, 3, {"speed": 3})
    (_, manifest), = r.xrevrange(fs.manifest_key(DEVICE), count=1)
    assert fs.decode_manifest(manifest)[1]["device"] == DEVICE
    assert fs.decode_heartbeat(r.get(fs.heartbeat_key(DEVICE)))["status"] == "online"
    assert r.smembers(fs.DEVICES_KEY) == {DEVICE.encode()}
    wait_for(lambda: fs.decode_heartbeat(r.get(fs.heartbeat_key(DEVICE))) is None, DEADLINE,
             "the heartbeat to expire (the origin stopped refreshing it)")


# -- the fixture itself ------------------------------------------------------------------------------

def test_restart_keeps_the_port_and_empties_redis(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("k", b"v")
        pid, run_id = redis_server.pid, client.info("server")["run_id"]
        redis_server.restart()
        assert redis_server.pid != pid and redis_server.url.endswith(f":{redis_server.port}/0")
        assert retrying(lambda: client.get("k"), "GET after the restart") is None
        assert client.info("server")["run_id"] != run_id
        assert client.config_get("save") == {"save": ""} and client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def test_no_redis_server_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.delenv("MONBRIDGE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))                     # nothing to run there
    with pytest.raises(pytest.fail.Exception, match=r"^redis-server is not installed.*apt-get install redis-server"):
        redis_server_binary()
    monkeypatch.setenv("MONBRIDGE_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(pytest.fail.Exception, match=r"'/nonexistent/redis-server' is not a program.*apt-get install"):
        redis_server_binary()
