"""Commands through the bridge: round trips, every way to get one wrong, roles, rate limits,
an offline device, a device that does not answer, and ordering.

"Nothing enqueued" is checked on the device itself: DEVICE logs the name of every command
it takes from its queue, and the ``queue_log`` command returns that log.
"""

from __future__ import annotations

import re
import signal
import time

from bridge_support import check_error, http, mb, wait_attached  # noqa: F401  (mb: fixture)


def metric(url, name: str) -> float:
    _, _, text = http(url, "/metrics")
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics:\n{text}"
    return float(m.group(1))


def test_command_round_trip_and_the_handler_sees_the_client(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        assert c.command("add", a=2, b=3) == {"ok": True, "result": 5}
        assert c.command("add", a=41) == {"ok": True, "result": 42}  # the default fills b
        assert c.command("echo", value={"nested": [1, 2.5, None, "x"]}) == \
            {"ok": True, "result": {"nested": [1, 2.5, None, "x"]}}
        assert c.call("command", {"name": "history"}) == {"ok": True, "result": []}  # args may be left out
        who = c.command("whoami")
        assert who == {"ok": True, "result": {"id": c.sid, "address": "127.0.0.1", "role": "operator"}}
        big = "y" * 4000  # just under the bridge's 4096-byte args limit: fits the queue slot
        assert c.command("echo", value=big) == {"ok": True, "result": big}
        assert c.command("queue_log")["result"] == ["add", "add", "echo", "history", "whoami", "echo",
                                                    "queue_log"]


BAD_COMMANDS = [
    # (payload, code, words the message must contain)
    ({"name": "launch_rockets", "args": {}}, "unknown_command", ["'launch_rockets'", "add"]),
    ({"name": "add", "args": {}}, "invalid_args", ["missing argument 'a'"]),
    ({"name": "add", "args": {"a": 1, "c": 2}}, "invalid_args", ["unexpected argument 'c'"]),
    ({"name": "add", "args": {"a": "1"}}, "invalid_args", ["'a'", "integer", "str"]),
    ({"name": "add", "args": {"a": True}}, "invalid_args", ["'a'", "integer", "bool"]),
    ({"name": "add", "args": {"a": 1.5}}, "invalid_args", ["'a'", "integer", "float"]),
    ({"name": "set_speed", "args": {"value": 11}}, "invalid_args", ["'value'", "<= 10", "11"]),
    ({"name": "set_speed", "args": {"value": -1}}, "invalid_args", ["'value'", ">= 0"]),
    ({"name": "set_speed", "args": {"value": "fast"}}, "invalid_args", ["'value'", "number"]),
    ({"name": "echo", "args": {"value": "x" * 5000}}, "too_large", ["bytes", "limit is 4096"]),
    ({"name": "add", "args": [1, 2]}, "invalid_args", ["'args'", "object", "list"]),
    ({"args": {"a": 1}}, "bad_request", ["'name'"]),
    ({"name": "", "args": {}}, "bad_request", ["'name'"]),
    ("add", "bad_request", ["object", "str"]),
]


def test_every_bad_command_gets_an_error_ack_naming_the_problem_and_nothing_is_enqueued(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        assert c.command("queue_log") == {"ok": True, "result": ["queue_log"]}
        failures = []
        for payload, code, words in BAD_COMMANDS:
            started = time.monotonic()
            ack = c.call("command", payload)
            try:
                check_error(ack, code, *words)
            except AssertionError as exc:
                failures.append(f"{payload!r:.60}: {exc}")
            assert time.monotonic() - started < 3, f"{payload!r:.60} was not answered at once"
        assert not failures, "\n".join(failures)
        # nothing reached the device's queue; the bridge counted them as rejected
        assert c.command("queue_log") == {"ok": True, "result": ["queue_log", "queue_log"]}
        assert metric(dev.url, f'monbridge_commands_total{{device="{dev.name}",outcome="accepted"}}') == 2
        assert metric(dev.url, f'monbridge_commands_total{{device="{dev.name}",outcome="rejected"}}') == len(BAD_COMMANDS)
        assert c.command("add", a=1) == {"ok": True, "result": 2}  # the connection is still fine


def test_a_handler_that_raises_answers_handler_error(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        # 'notify' indexes client["id"]: fine; 'nap' with a negative time raises ValueError
        ack = c.command("nap", seconds=-1)
        check_error(ack, "handler_error", "nap", "ValueError")
        assert c.command("add", a=1)["ok"]


def test_rate_limit_answers_rate_limited_and_enqueues_nothing(mb):
    name = mb.new_name()
    bridge = mb.serve(name, "--command-rate", "5")  # 5/s per client, bursts of 10
    mb.device(name, mon="bridge=0")
    wait_attached(bridge.url)
    with mb.connected(bridge.url) as c, mb.connected(bridge.url) as other:
        acks = []
        for i in range(40):
            c.fire("command", {"name": "echo", "args": {"value": i}}, acks, key=i)
        c.wait_for(lambda: len(acks) == 40, what="40 acks")
        ok = sorted(k for k, a in acks if a["ok"])
        limited = [a for _, a in acks if not a["ok"]]
        assert 10 <= len(ok) <= 20, acks  # the burst, plus what refilled meanwhile
        assert len(ok) + len(limited) == 40
        for a in limited:
            check_error(a, "rate_limited", "echo", "5 commands/s")
        # the limit is per client
        assert other.command("queue_log")["ok"]
        # once tokens refill, commands pass again (poll: each try may itself be limited)
        log = c.wait_for(lambda: (a := c.command("queue_log"))["ok"] and a["result"], what="a refill")
        assert log.count("echo") == len(ok), "rate-limited commands reached the device"
        assert sorted(k for k, a in acks if a["ok"] and a["result"] == k) == ok


def test_a_viewer_may_watch_but_not_command(mb):
    dev = mb.device()
    with mb.connected(dev.url, token=None) as viewer, mb.connected(dev.url) as op:
        assert viewer.hello["role"] == "viewer"
        check_error(viewer.command("add", a=1), "forbidden", "operator token")
        check_error(viewer.command("launch_rockets"), "forbidden")  # role is checked first
        assert op.command("queue_log") == {"ok": True, "result": ["queue_log"]}
        viewer.subscribe("telemetry")
        dev.request("pub 5", "published")
        viewer.wait_for(lambda: (m := viewer.records("telemetry")) and m[-1]["seq"][1] == 4, what="data")


def test_no_device_yet_answers_offline_at_once(mb):
    bridge = mb.serve(mb.new_name())
    with mb.connected(bridge.url) as c:
        assert c.hello["device"]["status"] == "offline" and c.hello["channels"] == []
        started = time.monotonic()
        check_error(c.command("add", a=1), "offline", "add", "offline")
        assert time.monotonic() - started < 2.0


def test_killed_device_answers_offline_at_once(mb):
    name = mb.new_name()
    bridge = mb.serve(name)
    dev = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, dev.pid)
    with mb.connected(bridge.url) as c:
        assert c.command("add", a=1)["ok"]
        mark = c.mark()
        dev.proc.proc.send_signal(signal.SIGKILL)  # the device only; its resource tracker cleans up
        c.wait_event("device", lambda d: d["status"] == "offline", since=mark)
        started = time.monotonic()
        check_error(c.command("add", a=1), "offline", "offline")
        assert time.monotonic() - started < 2.0  # not the 5 s command timeout
        dev.proc.wait_gone()


def test_a_device_that_never_takes_the_command_times_out(mb):
    name = mb.new_name()
    bridge = mb.serve(name, "--command-timeout", "1")
    dev = mb.device(name, "manual", mon="bridge=0")  # commands wait for mon.poll(), which never comes
    wait_attached(bridge.url)
    with mb.connected(bridge.url) as c:
        started = time.monotonic()
        check_error(c.command("add", a=1), "timeout", "add", "1 s")
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 4, elapsed
        # the late reply to the timed-out command is dropped; the next one gets its own
        acks = []
        c.fire("command", {"name": "add", "args": {"a": 5}}, acks)
        polled = 0
        deadline = time.monotonic() + 10
        while not acks and time.monotonic() < deadline:
            polled += int(dev.request("poll", "polled"))
        assert acks, "no ack after the device polled"
        assert polled == 2  # the timed-out command was still queued; both ran
        assert acks == [(None, {"ok": True, "result": 6})]


def test_a_handler_slower_than_the_timeout_answers_timeout_not_offline(mb):
    """A device busy in a handler still runs: the client should hear 'timeout'."""
    name = mb.new_name()
    bridge = mb.serve(name, "--command-timeout", "2")
    dev = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, dev.pid)
    with mb.connected(bridge.url) as c:
        mark = c.mark()
        started = time.monotonic()
        ack = c.command("nap", seconds=3.5, timeout=15)
        elapsed = time.monotonic() - started
        offline = [d for d in c.of("device", mark) if d["status"] == "offline"]
        assert ack["ok"] is False and ack["error"]["code"] == "timeout", \
            f"after {elapsed:.1f} s: {ack}; device events: {c.of('device', mark)}"
        assert not offline, f"a device busy in a handler was reported offline: {offline}"
        assert c.wait_for(lambda: (a := c.command("add", a=1))["ok"] and a, what="the device to answer again")


def test_commands_from_one_client_reach_the_device_in_the_order_sent(mb):
    dev = mb.device()
    with mb.connected(dev.url) as c:
        acks = []
        for i in range(200):
            c.fire("command", {"name": "record", "args": {"n": i}}, acks, key=i)
        c.wait_for(lambda: len(acks) == 200, timeout=30, what="200 acks")
        assert c.command("history") == {"ok": True, "result": list(range(200))}
        # and every one of them was answered with its own result
        bad = [(k, a) for k, a in acks if a != {"ok": True, "result": k}]
        assert not bad, f"{len(bad)} of 200 commands that ran were not acknowledged ok: " \
                        f"n={[k for k, _ in bad][:3]}..{bad[-1][0]}: {bad[0][1]}"


def test_a_burst_beyond_the_device_queue_waits_in_order_instead_of_failing(mb):
    """128 commands fit in the device's queue; a burst of 150 behind a busy handler must
    still all run, in order, each answered ok (the rest wait in the bridge's backlog)."""
    dev = mb.device()
    with mb.connected(dev.url) as c:
        acks = []
        c.fire("command", {"name": "nap", "args": {"seconds": 1.0}}, acks, key="nap")
        for i in range(150):
            c.fire("command", {"name": "record", "args": {"n": i}}, acks, key=i)
        c.wait_for(lambda: len(acks) == 151, timeout=30, what="151 acks")
        assert c.command("history") == {"ok": True, "result": list(range(150))}
        bad = [(k, a) for k, a in acks if k != "nap" and a != {"ok": True, "result": k}]
        assert not bad, f"{len(bad)} commands not acknowledged ok, first: {bad[0]}"
