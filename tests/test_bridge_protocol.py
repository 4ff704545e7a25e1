"""The Socket.IO protocol end to end: a real device launching its real bridge, real clients.

hello, subscribe/unsubscribe, binary ``data`` messages (records and frames) with exact
values and ``seq``/``missed``, decimation, ``state`` for live and late clients, ``event``
messages addressed to everyone or one client, ping, and ``mon.clients`` in the device.
"""

from __future__ import annotations

import json
import time

import numpy as np

from bridge_support import (
    check_error,
    concat_records,
    decode_frame,
    decode_records,
    image,
    mb,  # noqa: F401  (fixture)
    value_of,
)
from conftest import wait_for


def test_device_prints_url_and_hello_describes_the_device(mb):
    dev = mb.device()
    assert dev.url.base.startswith("http://127.0.0.1:") and dev.url.port > 0
    assert dev.request("url", "url") == dev.url.url  # mon.wait_url() agrees with the printed line
    with mb.connected(dev.url) as c:
        hello = c.hello
        assert hello["protocol"] == 5 and hello["multi"] is False
        # one device: the top level describes it, as its entry in ``devices`` does
        assert hello["devices"] == [{"name": dev.name, "device": hello["device"], "channels": hello["channels"],
                                     "commands": hello["commands"]}]
        assert hello["sid"] == c.sid
        assert hello["role"] == "operator"
        assert hello["device"]["name"] == dev.name
        assert hello["device"]["status"] == "online"
        assert hello["device"]["pid"] == dev.pid
        channels = {ch["name"]: ch for ch in hello["channels"]}
        assert set(channels) == {"telemetry", "img", "log"}
        assert channels["telemetry"]["kind"] == "records"
        assert channels["img"] == {"name": "img", "kind": "frame", "dtype": "<f4", "shape": [48, 64], "slots": 3}
        assert all("segment" not in ch for ch in hello["channels"])  # shm names stay inside
        commands = {cmd["name"]: cmd for cmd in hello["commands"]}
        assert commands["add"]["params"] == [{"name": "a", "type": "integer"},
                                             {"name": "b", "type": "integer", "default": 1}]
        assert commands["add"]["doc"] == "Add two integers."
        assert "client" not in [p["name"] for p in commands["whoami"]["params"]]
        # the shared state comes right after hello, in full
        assert c.wait_event("state") == {"device": dev.name, "full": True, "values": {"mode": "idle", "speed": 0.0}}
        assert [e for e, _, _ in c.events[:2]] == ["hello", "state"]


def test_records_arrive_as_binary_columns_with_exact_values_and_contiguous_seq(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        ack = c.subscribe("telemetry", rate=60)
        assert ack == {"ok": True, "device": dev.name, "channels": ["telemetry"], "rate": 60, "max_points": None,
                       "points_per_update": None, "in_flight": None}
        for _ in range(5):  # several publishes, so the batches usually span several ticks
            dev.request("pub 100", "published")
        msgs = c.wait_for(lambda: (m := c.records("telemetry")) and m[-1]["seq"][1] == 499 and m,
                          what="records up to seq 499")
        expected_first = 0
        for m in msgs:
            assert m["kind"] == "records" and m["missed"] == 0 and m["decimated"] is False
            assert m["seq"][0] == expected_first, [x["seq"] for x in msgs]
            assert m["count"] == m["seq"][1] - m["seq"][0] + 1
            assert isinstance(m["data"], bytes)
            assert [f["name"] for f in m["fields"]] == ["t", "seq", "value"]
            assert [f["dtype"] for f in m["fields"]] == ["f8", "i8", "f4"]
            cols = decode_records(m)
            assert m["t"] == cols["t"][-1]  # the device time of the newest record
            expected_first = m["seq"][1] + 1
        got = concat_records(msgs)
        seq = np.arange(500)
        np.testing.assert_array_equal(got["seq"], seq)
        np.testing.assert_array_equal(got["value"], value_of(seq).astype("f4"))
        np.testing.assert_array_equal(got["t"], 1000.0 + seq * 0.001)


def test_overwritten_records_are_reported_as_missed(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        c.subscribe("telemetry")
        dev.request("bulk 70000", "published")  # one write, larger than the 65536-record ring
        msgs = c.wait_for(lambda: (m := c.records("telemetry")) and m[-1]["seq"][1] == 69_999 and m,
                          what="the bulk batch")
        first = 70_000 - 65_536
        assert msgs[0]["seq"][0] == first
        assert msgs[0]["missed"] == first
        assert sum(m["missed"] for m in msgs) == first
        got = concat_records(msgs)
        np.testing.assert_array_equal(got["seq"], np.arange(first, 70_000))
        np.testing.assert_array_equal(got["value"], value_of(np.arange(first, 70_000)).astype("f4"))


def test_max_points_decimation_keeps_a_single_sample_spike(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        ack = c.subscribe("telemetry", max_points=64)
        assert ack["max_points"] == 64 and ack["points_per_update"] == 64
        dev.request("spike 5000 2345 1000000", "published")  # values 0..6, one sample at 1e6
        msgs = c.wait_for(lambda: (m := c.records("telemetry")) and m[-1]["seq"][1] == 4999 and m,
                          what="the spiked batch")
        assert msgs[0]["seq"][0] == 0
        for prev, m in zip(msgs, msgs[1:]):
            assert m["seq"][0] == prev["seq"][1] + 1  # seq spans cover every record, none missed
        assert all(m["missed"] == 0 and m["count"] <= 64 for m in msgs)
        assert any(m["decimated"] for m in msgs)
        got = concat_records(msgs)
        assert len(got["seq"]) < 5000
        spikes = got["seq"][got["value"] == 1_000_000]
        assert spikes.tolist() == [2345], "the single-sample spike was dropped by decimation"
        assert got["value"].min() == 0
        # with a window, the budget is per update: 600 points over 10 s at 30 Hz -> 2 per message
        ack = c.subscribe("telemetry", max_points=600, window=10, rate=30)
        assert ack["points_per_update"] == 2 and ack["rate"] == 30
        # decimation keeps real rows: each kept row still has its own values
        np.testing.assert_array_equal(got["t"], 1000.0 + got["seq"] * 0.001)
        assert np.all(np.diff(got["seq"]) > 0)


def test_frames_decode_to_the_published_array_and_count_skipped_frames(mb):
    dev = mb.device()
    dev.request("frame 7", "framed")  # before anyone subscribes
    with mb.connected(dev.url) as c:
        c.subscribe("img")
        first = c.wait_event("data", lambda d: d["channel"] == "img")  # the current frame, at once
        assert first["kind"] == "frame" and first["dtype"] == "f4" and first["shape"] == [48, 64]
        assert first["seq"] == [1, 1] and first["missed"] == 0
        np.testing.assert_array_equal(decode_frame(first), image(7))
        mark = c.mark()
        dev.request("frame 8 9 10", "framed")
        last = c.wait_event("data", lambda d: d["channel"] == "img" and d["seq"][0] == 4, since=mark)
        np.testing.assert_array_equal(decode_frame(last), image(10))
        later = c.data("img", mark)
        # every frame published is either delivered or counted in 'missed' (latest wins)
        assert sum(m["missed"] + 1 for m in later) == 3
        prev = 1
        for m in later:
            assert m["missed"] == m["seq"][0] - prev - 1
            np.testing.assert_array_equal(decode_frame(m), image(6 + m["seq"][0]))  # frame k has seq k - 6
            prev = m["seq"][0]


def test_in_flight_holds_messages_until_the_client_confirms_them(mb):
    dev = mb.device()
    dev.request("frame 1", "framed")
    with mb.connected(dev.url) as paced, mb.connected(dev.url) as plain:
        ack = paced.subscribe("img", in_flight=1)
        assert ack["in_flight"] == 1
        first = paced.wait_event("data", lambda d: d["channel"] == "img")
        assert first["seq"] == [1, 1]
        plain.subscribe("img")
        dev.request("frame 2 3 4", "framed")
        plain.wait_event("data", lambda d: d["channel"] == "img" and d["seq"] == [4, 4])
        # the relay has had frame 4; a round trip on the paced connection flushes anything
        # it emitted to that client before (one connection delivers in order)
        assert paced.call("ping", {"t": 1})["ok"]
        assert [m["seq"] for m in paced.data("img")] == [[1, 1]]  # unconfirmed: nothing more
        mark = paced.mark()
        paced.emit("consumed", {"channel": "img", "seq": 1})  # as the dashboard does: no ack asked
        newest = paced.wait_event("data", lambda d: d["channel"] == "img", since=mark)
        assert newest["seq"] == [4, 4] and newest["missed"] == 2  # the newest frame, not a backlog
        np.testing.assert_array_equal(decode_frame(newest), image(4))
        # records wait at the cursor instead: confirmed late, nothing is lost
        paced.subscribe("telemetry", in_flight=1)
        dev.request("pub 5", "published")
        got = paced.wait_event("data", lambda d: d["channel"] == "telemetry")
        total = int(dev.request("pub 7", "published"))
        assert paced.call("consumed", {"channel": "telemetry", "seq": got["seq"][1]}) == {"ok": True}
        rest = paced.wait_event("data", lambda d: d["channel"] == "telemetry" and d["seq"][1] == total - 1)
        assert rest["seq"][0] == got["seq"][1] + 1 and rest["missed"] == 0


def test_bad_flow_control_requests_get_error_acks(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        for bad in (0, 65, 1.5, True, "2"):
            check_error(c.call("subscribe", {"channels": ["img"], "in_flight": bad}), "bad_request", "'in_flight'")
        c.subscribe("img", in_flight=2)
        check_error(c.call("consumed", {"channel": "log", "seq": 1}), "unknown_channel", "'log'")
        check_error(c.call("consumed", {"channel": "img"}), "bad_request", "'seq'")
        check_error(c.call("consumed", {"channel": "img", "seq": -1}), "bad_request", "'seq'")
        check_error(c.call("consumed", {"channel": "img", "seq": 1, "x": 1}), "bad_request", "'x'")
        check_error(c.call("consumed", ["img", 1]), "bad_request", "object")
        assert c.call("consumed", {"channel": "img", "seq": 10**6}) == {"ok": True}  # ahead of anything sent: harmless
        assert c.call("ping", {"t": 2})["ok"]  # and the connection is still fine


def test_state_changes_reach_clients_and_a_late_joiner_gets_the_full_state(mb):
    dev = mb.device()
    with mb.connected(dev.url) as early:
        mark = early.mark()
        dev.request('state {"mode": "run", "n": 1}', "stated")
        changed = early.wait_event("state", since=mark)
        assert changed == {"device": dev.name, "full": False, "values": {"mode": "run", "n": 1}}
        mark = early.mark()
        dev.request('state {"n": 2}', "stated")
        assert early.wait_event("state", since=mark) == {"device": dev.name, "full": False, "values": {"n": 2}}
        with mb.connected(dev.url) as late:
            assert late.wait_event("state") == {"device": dev.name, "full": True,
                                                "values": {"mode": "run", "n": 2, "speed": 0.0}}
            # a command's state change is pushed to every client
            marks = early.mark(), late.mark()
            assert early.command("set_speed", value=3.5) == {"ok": True, "result": 3.5}
            for client, since in zip((early, late), marks):
                assert client.wait_event("state", lambda d: "speed" in d["values"], since=since) == \
                    {"device": dev.name, "full": False, "values": {"speed": 3.5}}


def test_ping_echoes_and_bad_requests_get_error_acks(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        before = time.time()
        ack = c.call("ping", {"t": 12.5})
        assert ack["ok"] is True and ack["t"] == 12.5
        assert before - 5 < ack["server_t"] < time.time() + 5
        ack = c.call("ping")
        assert ack["ok"] is True and ack["t"] is None
        check_error(c.call("ping", {"t": "soon"}), "bad_request", "'t'", "str")
        check_error(c.call("ping", [1]), "bad_request", "object", "list")
        check_error(c.call("bogus", {}), "bad_request", "'bogus'")
        check_error(c.call("subscribe", {"channels": ["nope"]}), "unknown_channel", "'nope'", "telemetry")
        check_error(c.call("subscribe", {"channels": "telemetry"}), "bad_request", "'channels'")
        check_error(c.call("subscribe", {"channels": []}), "bad_request", "'channels'")
        check_error(c.call("subscribe", {"channels": ["telemetry"], "rate": 0}), "bad_request", "'rate'", "0")
        check_error(c.call("subscribe", {"channels": ["telemetry"], "rate": 5000}), "bad_request", "'rate'")
        check_error(c.call("subscribe", {"channels": ["telemetry"], "max_points": 1}), "bad_request", "'max_points'")
        check_error(c.call("subscribe", {"channels": ["telemetry"], "colour": 1}), "bad_request", "'colour'")
        check_error(c.call("unsubscribe", {"channels": ["nope"]}), "unknown_channel", "'nope'")
        # none of that subscribed anything, and the connection still works
        assert c.call("ping", {"t": 1})["ok"] is True
        dev.request("pub 3", "published")
        c.subscribe("log")
        dev.request('event {"n": 1}', "evented")
        c.wait_event("event", lambda d: d["events"][0]["message"] == {"n": 1})
        assert c.records("telemetry") == []


def test_unsubscribe_stops_data(mb):
    dev = mb.device()
    with mb.connected(dev.url) as a, mb.connected(dev.url) as witness:
        a.subscribe("telemetry")
        witness.subscribe("telemetry")
        dev.request("pub 10", "published")
        a.wait_for(lambda: (m := a.records("telemetry")) and m[-1]["seq"][1] == 9, what="seq 9")
        assert a.call("unsubscribe", {"channels": ["telemetry"]}) == {"ok": True, "device": dev.name,
                                                                     "channels": ["telemetry"]}
        mark = a.mark()
        dev.request("pub 10", "published")
        witness.wait_for(lambda: (m := witness.records("telemetry")) and m[-1]["seq"][1] == 19, what="seq 19")
        # anything the relay sent to ``a`` in that tick is ahead of this ack on a's socket
        assert a.call("ping")["ok"]
        assert a.records("telemetry", mark) == []


def test_events_reach_everyone_or_only_the_addressed_client(mb):
    dev = mb.device()
    with mb.connected(dev.url) as a, mb.connected(dev.url) as b:
        a.subscribe("log")
        b.subscribe("log")
        dev.request('event {"n": 1}', "evented")
        dev.request(f'eventto {a.sid} {{"secret": "for a"}}', "evented")
        dev.request(f'eventto {b.sid} {{"secret": "for b"}}', "evented")
        assert a.command("notify", text="hi a") == {"ok": True, "result": True}  # to=client["id"]
        dev.request('event {"n": 2}', "evented")

        def messages(c):
            return [e["message"] for d in c.of("event") for e in d["events"]]

        for c in (a, b):
            c.wait_for(lambda c=c: {"n": 2} in messages(c), what="the last broadcast")
            assert c.call("ping")["ok"]
        assert messages(a) == [{"n": 1}, {"secret": "for a"}, {"text": "hi a"}, {"n": 2}]
        assert messages(b) == [{"n": 1}, {"secret": "for b"}, {"n": 2}]
        for d in a.of("event") + b.of("event"):
            assert d["channel"] == "log" and d["kind"] == "events" and d["missed"] == 0
            assert d["seq"] == [d["events"][0]["seq"], d["events"][-1]["seq"]]
            assert all(isinstance(e["t"], float) for e in d["events"])


def _device_clients(dev):
    return json.loads(dev.request("clients", "clients"))


def test_mon_clients_in_the_device_follows_connections(mb):
    dev = mb.device()
    with mb.connected(dev.url) as op:
        viewer = mb.client(dev.url, token=None)
        table = wait_for(lambda: (t := _device_clients(dev)) and len(t) == 2 and t, what="two clients in mon.clients")
        rows = {r["id"]: r for r in table}
        assert set(rows) == {op.sid, viewer.sid}
        assert rows[op.sid]["role"] == "operator" and rows[viewer.sid]["role"] == "viewer"
        assert all(r["address"] == "127.0.0.1" for r in rows.values())
        assert all(isinstance(r["connected_at"], float) for r in rows.values())
        viewer.close()
        table = wait_for(lambda: (t := _device_clients(dev)) and len(t) == 1 and t, what="the viewer to leave")
        assert table[0]["id"] == op.sid
    wait_for(lambda: _device_clients(dev) == [], what="mon.clients to empty")


def test_long_user_agents_cannot_crowd_clients_out_of_mon_clients(mb):
    # 10 × 7,000-character User-Agents would be ~70 KB of JSON, more than the device's 64 KiB
    dev = mb.device()
    agent = "A" * 7000
    clients = [mb.client(dev.url, headers={"User-Agent": agent}) for _ in range(10)]
    table = wait_for(lambda: (t := _device_clients(dev)) and len(t) == 10 and t, what="ten clients in mon.clients")
    assert {r["id"] for r in table} == {c.sid for c in clients}
    assert all(r["user_agent"] == agent[:200] for r in table)


def test_mon_clients_shows_subscriptions(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        wait_for(lambda: [r["id"] for r in _device_clients(dev)] == [c.sid], what="the client in mon.clients")
        c.subscribe("telemetry", rate=30)
        row = wait_for(lambda: (rows := _device_clients(dev)) and rows[0]["subscriptions"] and rows[0],
                       timeout=5, what="the subscription to show in mon.clients")
        assert [s["channel"] for s in row["subscriptions"]] == ["telemetry"]
        assert row["subscriptions"][0]["rate"] == 30

