"""Faults on the device side (issue 11): a device SIGKILLed half-way through writing a frame,
under a bridge that outlives it; a device replaced by a new process under the same name while
a client stays connected.

Real processes throughout: the bridge is started by hand (``mb.serve``) and the devices with
MON=bridge=0 (fault_support.STREAM_DEVICE), so the bridge is not the device's child and lives
on when it dies. Clients are python-socketio AsyncClients on one event loop
(fault_support.ClientLoop).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bridge_support import http, mb, pid_gone, wait_attached  # noqa: F401  (mb: fixture)
from conftest import REPO, TIMEOUT, segments_of, wait_for
from device_agent.attach import DeviceAttachment
from device_agent.shm import unlink_segment
from fault_support import (STREAM_DEVICE, FrameProbe, RawClient, account_frames, account_records,  # noqa: F401
                           client_loop, freeze_mid_write, resource_tracker_of, start_device)

OFFLINE_WITHIN = 2.0  # seconds from the device's death to every client's 'device' offline event


@pytest.mark.timeout(90)
def test_device_sigkilled_mid_write_with_its_tracker(mb, client_loop):
    """8 MiB frames flat out and 1 kHz records; the device and its resource tracker are
    SIGKILLed while a frame is half-written. Clients hear 'offline' within 2 s, never saw a
    torn frame, got every record up to the kill (or were told exactly what they missed), and
    `monbridge cleanup` then removes every segment the dead device left."""
    name = mb.new_name()
    bridge = mb.serve(name)
    dev = start_device(mb, STREAM_DEVICE, name, "rate=1000", "frame=2048x1024", "frame_hz=0")
    wait_attached(bridge.url, dev.pid)
    plain, paced = clients = client_loop.connect(bridge.url, 2)
    paced.confirm.add("big")  # the dashboard's way: in_flight, confirming each frame
    client_loop.subscribe([plain], ["big"], rate=10)
    client_loop.subscribe([paced], ["big"], rate=10, in_flight=1)
    client_loop.subscribe(clients, ["rec"], rate=30)
    for c in clients:
        c.wait_for(lambda c=c: len(c.data("big")) >= 20 and len(c.data("rec")) >= 30, timeout=30,
                   what="20 frames and 30 records messages")

    tracker = resource_tracker_of(dev.pid)
    probe = FrameProbe(name, "big")
    try:
        # stop it with frame k half-written (stamp 2k+1), then kill it and its tracker there
        stopped_at, writing = freeze_mid_write(dev.pid, probe)
        marks = [c.mark() for c in clients]
        os.kill(tracker, signal.SIGKILL)  # first, so nothing unlinks the segments
        os.kill(dev.pid, signal.SIGKILL)
    finally:
        probe.close()
    assert dev.proc.wait() == -signal.SIGKILL
    wait_for(lambda: pid_gone(tracker), what="the resource tracker to die")

    for c, mark in zip(clients, marks):
        status, at = c.wait_event("device", lambda d: d["status"] == "offline", since=mark, timeout=10)
        assert status["name"] == name and status["pid"] == dev.pid, status
        print(f"'offline' {at - stopped_at:.3f} s after the device stopped (frame {writing} half-written)")
        assert at - stopped_at <= OFFLINE_WITHIN, \
            f"'offline' came {at - stopped_at:.2f} s after the device stopped, more than {OFFLINE_WITHIN} s"

    # the segments outlive both processes; read what the device left in them
    with DeviceAttachment(name) as att:
        published = att.channel("rec").write_count
        last_frame = att.channel("big").latest
    assert last_frame == writing - 1, f"frame {writing} was half-written, yet the newest frame is {last_frame}"
    assert published >= 1000, f"only {published} records were published"

    for who, c in zip(("plain", "paced"), clients):
        frames = c.data("big")
        account_frames(frames, f"{who} client")  # none torn: all elements equal to k
        assert len(frames) >= 20 and frames[-1].seq0 <= last_frame, [f.seq0 for f in frames[-3:]]
        recs = c.data("rec")
        ledger = account_records(recs, f"{who} client's records")
        # records went out until the bridge declared the device offline: the last one the
        # device wrote came before the 'offline' event, on the same ordered connection
        assert ledger.last == published - 1, \
            f"{who}: the last record sent was {ledger.last}, the device wrote up to {published - 1} ({ledger})"
        assert c.sio.connected and c.disconnects == 0
        print(f"{who}: {len(frames)} frames, none torn; records {ledger}")
    status, _, health = http(bridge.url, "/api/health")
    assert status == 200 and health["device"]["status"] == "offline", health

    # nothing removed the segments (the tracker died first); `monbridge cleanup` does
    ours = sorted(f"monbridge.{name}.{s}" for s in ("ctl", "ch.big", "ch.rec"))
    assert segments_of(name) == ours
    env = {k: v for k, v in os.environ.items() if k != "MON"}
    run = subprocess.run([sys.executable, "-m", "bridge", "cleanup"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    for seg in ours:
        assert f"removed /dev/shm/{seg}" in run.stdout, run.stdout
    assert segments_of(name) == []
    assert bridge.terminate() == 0  # it survived the device and stops cleanly


@pytest.mark.timeout(90)
def test_records_skipped_just_before_the_device_dies_are_still_counted(mb):
    """A congested client's records cursor skips ahead and the count waits for its next
    message; when the device dies first, there is none. The bridge then sends the count in a
    message without rows, so every record up to the last one written is still accounted for."""
    name = mb.new_name()
    bridge = mb.serve(name)
    dev = start_device(mb, STREAM_DEVICE, name, "rate=1000", "frame=256x1024", "frame_hz=30")
    wait_attached(bridge.url, dev.pid)
    raw = RawClient(bridge.url, rcvbuf=65536)
    try:
        assert raw.call("subscribe", {"channels": ["rec", "big"], "rate": 30})["ok"]
        wait_for(lambda: len(raw.data("rec")) >= 10, what="records before the stall")
        raw.pause()   # 1 MiB frames at 30 Hz fill its outbox: the bridge skips its records
        wait_for(lambda: (_subscription(bridge.url, raw.sid, "rec") or {}).get("skipped", 0) > 0,
                 timeout=30, what="the bridge to skip the stalled client's records")
        tracker = resource_tracker_of(dev.pid)
        os.kill(tracker, signal.SIGKILL)
        os.kill(dev.pid, signal.SIGKILL)
        assert dev.proc.wait() == -signal.SIGKILL
        wait_for(lambda: pid_gone(tracker), what="the resource tracker to die")
        wait_for(lambda: http(bridge.url, "/api/health")[2]["device"]["status"] == "offline",
                 what="the bridge to see the device offline")
        with DeviceAttachment(name) as att:
            published = att.channel("rec").write_count
        raw.resume()
        wait_for(lambda: any(e == "device" and d["status"] == "offline" for e, d, _ in list(raw.events)),
                 timeout=30, what="the stalled client to read up to 'offline'")
        ledger = account_records(raw.data("rec"), "the stalled client's records")
        assert ledger.missed > 0, f"the client was never skipped: {ledger}"
        assert ledger.last == published - 1, f"records up to {published - 1} were written; the client heard of {ledger}"
    finally:
        raw.close()
    for seg in segments_of(name):
        unlink_segment(seg)


def _subscription(bridge_url, sid: str, channel: str) -> dict | None:
    _, _, body = http(bridge_url, "/api/clients")
    for row in body["clients"]:
        if row["id"] == sid:
            return next((sub for sub in row["subscriptions"] if sub["channel"] == channel), None)
    return None


def _unconfirmed(bridge_url, sid: str, channel: str) -> int | None:
    _, _, body = http(bridge_url, "/api/clients")
    for row in body["clients"]:
        if row["id"] == sid:
            for sub in row["subscriptions"]:
                if sub["channel"] == channel:
                    return sub["unconfirmed"]
    return None


def _state_after(c, full: dict) -> dict:
    """The state a page holds: the full state ``full`` with the changes received after it."""
    states = [d for e, d in c.since(0) if e == "state"]
    values = {}
    for d in states[next(i for i, d in enumerate(states) if d is full):]:
        values.update(d["values"])
    return values


@pytest.mark.timeout(90)
@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_device_replaced_under_the_same_name_keeps_the_connection(mb, client_loop, ending):
    """A device ends (a clean exit, or SIGKILL with its tracker, leaving its segments) and a
    new process starts under the same name. The same Socket.IO connection — same sid, no
    disconnect, no second hello — gets 'offline', then 'online', the new 'channels', a full
    'state' and the new device's data, although two of the old device's messages were left
    unconfirmed (in_flight=2): the bridge forgets them."""
    name = mb.new_name()
    bridge = mb.serve(name)
    first = start_device(mb, STREAM_DEVICE, name, "rate=200", "gen=1")
    wait_attached(bridge.url, first.pid)
    (c,) = client_loop.connect(bridge.url)
    sid = c.sid
    hello = c.of("hello")[0]
    assert hello["sid"] == sid and [ch["name"] for ch in hello["channels"]] == ["rec"], hello
    first_full, _ = c.wait_event("state", lambda d: d["full"])
    c.wait_for(lambda: _state_after(c, first_full) == {"generation": 1, "gen1": True}, what="the first state")
    c.confirm.add("rec")
    client_loop.subscribe([c], ["rec"], rate=30, in_flight=2)
    c.wait_for(lambda: len(c.data("rec")) >= 5, what="data from the first device")
    c.confirm.discard("rec")  # like a page that stopped drawing: two messages stay unconfirmed
    wait_for(lambda: _unconfirmed(bridge.url, sid, "rec") == 2, what="two unconfirmed messages")

    mark = c.mark()
    if ending == "exit":
        first.proc.stop()  # EOF: the device closes and removes its segments
        assert segments_of(name) == []
    else:
        tracker = resource_tracker_of(first.pid)
        os.kill(tracker, signal.SIGKILL)
        os.kill(first.pid, signal.SIGKILL)
        assert first.proc.wait_gone() == -signal.SIGKILL
        assert segments_of(name), "the killed device's segments should be left for the next start to reclaim"
    off, t_off = c.wait_event("device", lambda d: d["status"] == "offline", since=mark)
    assert off["pid"] == first.pid, off

    second = start_device(mb, STREAM_DEVICE, name, "rate=200", "gen=2", "extra=1")
    if ending == "kill":  # it reclaimed what the killed one left
        wait_for(lambda: f"stale segment(s) of {name!r}" in "".join(second.proc.stderr),
                 what="the new device to say it removed the stale segments")
    on, t_on = c.wait_event("device", lambda d: d["status"] == "online" and d["pid"] == second.pid, since=mark)
    catalog, _ = c.wait_event("channels", lambda d: {ch["name"] for ch in d["channels"]} == {"rec", "extra"},
                              since=mark)
    # the bridge may attach before the new device writes its state: then the full state is
    # empty and the values follow as a change; either way nothing is kept of the old device
    full, _ = c.wait_event("state", lambda d: d["full"], since=mark)
    c.wait_for(lambda: _state_after(c, full).get("generation") == 2, what="the new device's state")
    assert _state_after(c, full) == {"generation": 2, "gen2": True}, c.of("state", mark)
    assert t_off < t_on
    new_data = lambda: [m for m in c.data("rec", mark) if set(m.columns["gen"]) == {2}]  # noqa: E731
    c.wait_for(new_data, timeout=TIMEOUT, what="data from the new device (two old messages still unconfirmed)")
    c.confirm.add("rec")  # confirm from now on, and what came so far
    ack = client_loop.call(c, "consumed", {"channel": "rec", "seq": c.data("rec")[-1].seq1})
    assert ack == {"ok": True}, ack
    c.wait_for(lambda: len(new_data()) >= 10, what="the new device's data to keep flowing")

    # in order on the one connection: the new catalog and state before the new data, and
    # no old data after the new
    after = c.since(mark)
    first_new = next(i for i, (e, d) in enumerate(after)
                     if e == "data" and d.channel == "rec" and set(d.columns["gen"]) == {2})
    assert any(e == "channels" and d is catalog for e, d in after[:first_new])
    assert any(e == "state" and d is full for e, d in after[:first_new])
    later = [d for e, d in after[first_new:] if e == "data"]
    assert all(set(d.columns["gen"]) == {2} for d in later), "data of the old device after the new one's"
    msgs = [d for d in later if d.channel == "rec"]
    assert msgs[0].missed == 0, msgs[0]
    # numbering restarts with the new ring: the seq column the new device wrote (its own
    # count from 0) is exactly each message's seq range
    ledger = account_records(msgs, "the new device's records")
    assert ledger.missed == 0, ledger

    # the same connection throughout
    assert c.sid == sid and c.sio.connected
    assert (c.connects, c.disconnects, len(c.of("hello"))) == (1, 0, 1), "the client was made to reconnect"
    assert _unconfirmed(bridge.url, sid, "rec") is not None  # still subscribed, as the same client

    second.proc.stop()
    assert bridge.terminate() == 0
    assert segments_of(name) == []
