"""Channels between a real device process (the writer) and the test process (the reader).

The device script below publishes on request (lines on its stdin); the test reads through
``device_agent.attach.DeviceAttachment`` exactly as the bridge will.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from device_agent.attach import json_list_prefix
from device_agent.errors import ChannelError

DEVICE = r"""
import json, sys, threading
import numpy as np
import device_agent

mon = device_agent.start(sys.argv[1])
capacity = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
telemetry = mon.records("telemetry", {"seq": "i8", "neg": "i8", "half": "f8"}, capacity=capacity)
vectors = mon.records("vectors", [("seq", "i8"), ("v", "f8", (32,))], capacity=capacity)
img = mon.frame("img", shape=(64, 1024), dtype="f4")
log = mon.events("log", capacity=8, max_bytes=256)
stop = threading.Event()
streamer = None


def pub(n):
    # every field is derived from seq, so a torn record cannot pass the reader's checks
    publish = telemetry.publish
    s0 = telemetry.count
    for s in range(s0, s0 + n):
        publish(seq=s, neg=-s, half=s * 0.5)


def many(n, batch):
    s, end = vectors.count, vectors.count + n
    while s < end:
        k = min(batch, end - s)
        arr = np.zeros(k, vectors.dtype)
        arr["seq"] = np.arange(s, s + k)
        arr["v"] = arr["seq"][:, None]
        vectors.publish_many(arr)
        s += k


def stream_frames():
    # frame k (1-based, = its sequence number) has 1 + 7k % 64 rows, every element == k
    buf = np.empty(img.shape, img.dtype)
    k = img.count
    while not stop.is_set():
        k += 1
        rows = 1 + (k * 7) % img.shape[0]
        buf[:rows] = k
        img.publish(buf[:rows])


print("ready", flush=True)
for line in sys.stdin:
    cmd, _, rest = line.strip().partition(" ")
    if cmd == "pub":
        pub(int(rest))
        print("published", telemetry.count, flush=True)
    elif cmd == "many":
        n, batch = map(int, rest.split())
        many(n, batch)
        print("published", vectors.count, flush=True)
    elif cmd == "frames":
        streamer = threading.Thread(target=stream_frames)
        streamer.start()
        print("streaming", flush=True)
    elif cmd == "frames_stop":
        stop.set()
        streamer.join()
        print("frames_stopped", img.count, flush=True)
    elif cmd == "event":
        message, to = json.loads(rest)
        log.publish(message, to=to)
        print("event", log.count, flush=True)
    elif cmd == "event_too_large":
        try:
            log.publish("x" * 300)
        except device_agent.MessageTooLarge as exc:
            print("refused", exc, flush=True)
    elif cmd == "state":
        mon.state.update(json.loads(rest))
        print("state", json.dumps(dict(mon.state)), flush=True)
    elif cmd == "add":
        late = mon.records("late", {"x": "f8"}, capacity=16)
        for x in (1.0, 2.0, 3.0):
            late.publish(x=x)
        mon.frame("late_frame", shape=4, dtype="i4").publish(np.arange(4, dtype="i4"))
        mon.events("late_log").publish("late hello")
        print("added", flush=True)
    elif cmd == "clients":
        print("clients", json.dumps(mon.clients), flush=True)
mon.close()
"""


def check_telemetry(batch, cursor):
    """Assert one read is self-consistent and exactly accounts for what it skipped."""
    recs = batch.records
    assert batch.first == cursor + batch.missed, (cursor, batch.first, batch.missed)
    assert batch.next_cursor == batch.first + len(recs)
    seq = recs["seq"]
    np.testing.assert_array_equal(seq, np.arange(batch.first, batch.first + len(recs)))
    np.testing.assert_array_equal(recs["neg"], -seq)
    np.testing.assert_array_equal(recs["half"], seq * 0.5)


def test_records_arrive_in_order_untorn_while_writer_streams(launch, attach, device_name):
    dev = launch(DEVICE, device_name, "1024")
    att = attach(device_name)
    reader = att.channel("telemetry")
    total = 300_000
    dev.send(f"pub {total}")
    cursor = received = missed = nonempty = 0
    deadline = time.monotonic() + 60
    while cursor < total:
        assert time.monotonic() < deadline, f"reader stuck at {cursor} of {total}"
        batch = reader.read(cursor)
        check_telemetry(batch, cursor)
        received += len(batch.records)
        missed += batch.missed
        nonempty += bool(len(batch.records))
        cursor = batch.next_cursor
    assert dev.expect("published") == str(total)
    assert cursor == total and received + missed == total
    assert received >= 1024  # at least the final ring's worth
    assert nonempty >= 2, "the reader never overlapped the writer"
    dev.stop()


def test_lagging_reader_gets_exact_missed_counts(launch, attach, device_name):
    dev = launch(DEVICE, device_name, "16")
    att = attach(device_name)
    telemetry = att.channel("telemetry")

    assert dev.request("pub 40", "published") == "40"
    b = telemetry.read(0)
    check_telemetry(b, 0)
    assert (b.first, b.missed, len(b.records), b.next_cursor) == (24, 24, 16, 40)

    assert dev.request("pub 5", "published") == "45"
    b = telemetry.read(40)
    check_telemetry(b, 40)
    assert (b.missed, len(b.records), b.next_cursor) == (0, 5, 45)

    b = telemetry.read(45)  # nothing new
    assert (b.missed, len(b.records), b.next_cursor) == (0, 0, 45)

    assert dev.request("pub 100", "published") == "145"
    b = telemetry.read(45)
    check_telemetry(b, 45)
    assert (b.first, b.missed, len(b.records)) == (129, 84, 16)

    b = telemetry.read(0, max_records=4)  # only the newest 4, the rest counted as missed
    check_telemetry(b, 0)
    assert (b.first, b.missed, len(b.records)) == (141, 141, 4)

    # publish_many: in small batches, and one batch larger than the ring
    vectors = att.channel("vectors")
    assert dev.request("many 50 7", "published") == "50"
    b = vectors.read(0)
    assert (b.first, b.missed, len(b.records)) == (34, 34, 16)
    np.testing.assert_array_equal(b.records["seq"], np.arange(34, 50))
    assert (b.records["v"] == b.records["seq"][:, None]).all()
    assert dev.request("many 40 40", "published") == "90"
    b = vectors.read(50)
    assert (b.first, b.missed, len(b.records)) == (74, 24, 16)
    np.testing.assert_array_equal(b.records["seq"], np.arange(74, 90))
    assert (b.records["v"] == b.records["seq"][:, None]).all()
    dev.stop()


def test_reader_always_gets_a_complete_frame(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    img = att.channel("img")
    assert img.read_latest() is None  # nothing published yet
    dev.request("frames", "streaming")
    last = 0
    frames = 0
    until = time.monotonic() + 3  # bounds the test's length; it does not synchronise anything
    while time.monotonic() < until and frames < 400:
        f = img.read_latest(after=last)
        if f is None:
            continue
        rows = 1 + (f.seq * 7) % 64
        assert f.array.shape == (rows, 1024), (f.seq, f.array.shape)
        assert f.array.dtype == np.float32
        lo, hi = f.array.min(), f.array.max()
        assert lo == hi == f.seq, f"frame {f.seq} is torn: values {lo}..{hi}"
        assert f.seq > last
        last = f.seq
        frames += 1
    stopped_at = int(dev.request("frames_stop", "frames_stopped"))
    assert frames >= 20, f"only {frames} frames read in 3 s"
    assert stopped_at >= last
    f = img.read_latest()
    assert f.seq == stopped_at and (f.array == stopped_at).all()
    assert img.read_latest(after=stopped_at) is None
    dev.stop()


def test_events_in_order_with_addressed_messages(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    log = att.channel("log")
    sent = [
        ("hello", None),
        ({"level": "warn", "n": 1}, None),
        ({"x": 1}, "client-7"),
        ([1, 2.5, "three"], "client-8"),
    ]
    for message, to in sent:
        dev.request(f"event {json.dumps([message, to])}", "event")
    events, missed, cursor = log.read(0)
    assert missed == 0 and cursor == 4
    assert [(e.seq, e.message, e.to) for e in events] == [(i, m, to) for i, (m, to) in enumerate(sent)]
    assert all(e.t > 0 for e in events)

    # the ring holds 8: 20 more events lose exactly 12
    for i in range(20):
        dev.request(f"event {json.dumps([{'n': i}, None])}", "event")
    events, missed, cursor = log.read(4)
    assert (missed, cursor) == (12, 24)
    assert [e.message for e in events] == [{"n": i} for i in range(12, 20)]
    assert [e.seq for e in events] == list(range(16, 24))

    refused = dev.request("event_too_large", "refused")
    assert "256" in refused and "max_bytes" in refused
    assert log.read(24)[0] == []  # nothing was written
    dev.stop()


def test_state_updates_visible_to_attacher(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    v0, state = att.state()
    assert state == {}
    dev.request('state {"speed": 1.5, "mode": "auto"}', "state")
    v1, state = att.state()
    assert state == {"speed": 1.5, "mode": "auto"}
    dev.request('state {"speed": 2}', "state")
    v2, state = att.state()
    assert state == {"speed": 2, "mode": "auto"}  # merged; the latest value wins
    assert v0 < v1 < v2 and v2 % 2 == 0
    assert att.state_version == v2
    dev.stop()


def test_channel_added_after_attach_is_picked_up_by_refresh(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    assert att.refresh() is False  # nothing changed since attaching
    with pytest.raises(ChannelError, match="late"):
        att.channel("late")
    dev.request("add", "added")
    assert att.refresh() is True
    assert att.refresh() is False
    assert {"late", "late_frame", "late_log"} <= set(att.channels)
    assert {c["name"] for c in att.manifest["channels"]} >= {"late", "late_frame", "late_log"}
    batch = att.channel("late").read(0)
    assert batch.records["x"].tolist() == [1.0, 2.0, 3.0]
    frame = att.channel("late_frame").read_latest()
    assert frame.array.tolist() == [0, 1, 2, 3]
    events, _, _ = att.channel("late_log").read(0)
    assert [e.message for e in events] == ["late hello"]
    dev.stop()


def test_clients_table_written_by_attacher_reaches_device(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    assert json.loads(dev.request("clients", "clients")) == []
    table = [{"id": "a1", "address": "127.0.0.1:5000", "role": "operator"}]
    att.publish_clients(table)
    assert json.loads(dev.request("clients", "clients")) == table
    table = table + [{"id": "b2", "address": "127.0.0.1:5001", "role": "viewer"}]
    att.publish_clients(table)
    assert json.loads(dev.request("clients", "clients")) == table
    att.publish_clients([])
    assert json.loads(dev.request("clients", "clients")) == []
    dev.stop()


def test_a_clients_table_too_large_for_the_device_keeps_its_first_rows(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    table = [{"id": f"client{i:04d}", "address": "127.0.0.1", "role": "viewer", "pad": "x" * 200}
             for i in range(400)]  # ~100 KB of JSON, the blob holds 64 KiB
    shown = att.publish_clients(table)
    assert 200 < shown < 400
    assert json.loads(dev.request("clients", "clients")) == table[:shown]
    assert att.publish_clients(table[:3]) == 3  # and back to the whole table once it fits
    assert json.loads(dev.request("clients", "clients")) == table[:3]
    dev.stop()


@pytest.mark.parametrize("n, capacity, expect", [
    (0, 2, 0),        # "[]"
    (3, 1000, 3),     # all fit
    (3, 2, 0),        # not even one: "[]"
    (3, 10, 1),       # '[{"i":0}]' is 9 bytes, two are 17
    (3, 17, 2),       # exactly two
    (3, 16, 1),
])
def test_json_list_prefix(n, capacity, expect):
    items = [{"i": i} for i in range(n)]
    data, rows = json_list_prefix(items, capacity)
    assert rows == expect
    assert json.loads(data) == items[:expect]
    assert len(data) <= capacity
