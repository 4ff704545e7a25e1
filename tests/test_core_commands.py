"""bridge/core.py's command broker (docs/protocol.md §6), driven in-process over a device in
bytearrays: rate limits, the device's queue and the bridge's backlog, what the device answers,
routing, and HTTP commands. The test plays the device's side of the queue."""

from __future__ import annotations

import logging

from bridge.commands import BACKLOG_LIMIT, Ticket
from device_agent.control import QUEUE_SLOTS
from test_core import Harness

OPERATOR = {"id": "http:127.0.0.1", "address": "127.0.0.1", "role": "operator"}


def ready(h: Harness, *sids: str) -> Harness:
    h.advance(1.0)  # a clock away from 0: the rate limiter's first stamp
    h.tick()
    for sid in sids:
        h.connect(sid)
    return h


def codes(results: list[dict]) -> list:
    return [(r["id"], r["error"]["code"] if not r["ok"] else None) for r in results]


def test_a_client_over_its_command_rate_is_refused_until_its_bucket_refills():
    h = Harness(command_rate=5)  # bursts of max(10, 2 × 5)
    h.dev.command("noop")
    ready(h, "op", "other")
    for i in range(12):
        h.event("op", "command", {"id": i, "name": "noop"})
    h.event("op", "command", {"id": 12, "name": "nope"})  # refused as rate_limited first
    h.event("other", "command", {"id": "o", "name": "noop"})  # per client: other is not limited
    assert codes(h.to("op", "result")) == [(10, "rate_limited"), (11, "rate_limited"), (12, "rate_limited")]
    assert h.to("other", "result") == []
    h.advance(0.25)  # 1.25 tokens back
    h.event("op", "command", {"id": 13, "name": "nope"})  # spends it: checks after step 2 cost a token
    h.event("op", "command", {"id": 14, "name": "noop"})
    assert codes(h.to("op", "result"))[3:] == [(13, "unknown_command"), (14, "rate_limited")]
    h.advance(0.2)  # 0.25 + 1
    h.event("op", "command", {"id": 15, "name": "noop"})
    assert len(h.to("op", "result")) == 5  # 15 accepted
    taken = h.dev.take_commands()
    assert [c["client"]["id"] for c in taken] == ["op"] * 10 + ["other", "op"]
    for c in taken:
        h.dev.reply(c["id"], "done")
    h.route()
    assert [r["id"] for r in h.to("op", "result") if r["ok"]] == list(range(10)) + [15]


def test_the_rate_limit_holds_whatever_the_clock_reads():
    h = Harness(command_rate=5)  # the harness's monotonic clock starts at 0.0
    h.dev.command("noop")
    h.tick()
    h.connect("op")
    for i in range(12):
        h.event("op", "command", {"id": i, "name": "noop"})
    assert codes(h.to("op", "result")) == [(10, "rate_limited"), (11, "rate_limited")]


def test_commands_beyond_the_device_queue_wait_in_order_and_move_on_as_the_device_frees_slots():
    h = ready(Harness(), "op", "op2")
    h.dev.command("n", [{"name": "i", "type": "integer"}])
    h.advance(0.01)
    h.tick()
    total = QUEUE_SLOTS + 2
    for i in range(total):
        h.event("op", "command", {"id": i, "name": "n", "args": {"i": i}})
    assert h.to("op", "result") == [] and h.core.broker.pending == total  # none refused
    taken = h.dev.take_commands(limit=100)
    assert [c["args"]["i"] for c in taken] == list(range(100))
    # the queue has room now, but two wait in the backlog: a new command queues behind them
    h.event("op2", "command", {"id": "late", "name": "n", "args": {"i": -1}})
    more = h.dev.take_commands()
    assert [c["args"]["i"] for c in more] == list(range(100, QUEUE_SLOTS))
    h.route()  # the reply pump moves the backlog on
    more2 = h.dev.take_commands()
    assert [c["args"]["i"] for c in more2] == [QUEUE_SLOTS, QUEUE_SLOTS + 1, -1]
    for batch in (taken, more + more2):  # the replies queue holds 128 too
        for c in batch:
            h.dev.reply(c["id"], c["args"]["i"] * 10)
        h.route()
    assert [(r["id"], r["result"]) for r in h.to("op", "result")] == [(i, i * 10) for i in range(total)]
    assert h.to("op2", "result") == [{"id": "late", "ok": True, "result": -10}]
    assert h.core.broker.pending == 0


def test_a_command_is_refused_with_queue_full_only_when_the_backlog_too_is_full():
    h = ready(Harness(command_rate=10_000), "op")
    h.dev.command("noop")
    h.advance(0.01)
    h.tick()
    room = QUEUE_SLOTS + BACKLOG_LIMIT
    for i in range(room + 1):
        h.event("op", "command", {"id": i, "name": "noop"})
    assert codes(h.to("op", "result")) == [(room, "queue_full")]
    assert h.core.broker.pending == room
    h.dev.take_commands(limit=1)
    h.route()  # one moves from the backlog to the device: room for one more
    h.event("op", "command", {"id": "again", "name": "noop"})
    assert len(h.to("op", "result")) == 1


def test_a_backlogged_command_times_out_from_its_arrival():
    h = ready(Harness(command_timeout=2.0), "op")
    h.dev.command("noop")
    h.advance(0.01)
    h.tick()
    for i in range(QUEUE_SLOTS + 1):
        h.event("op", "command", {"id": i, "name": "noop"})
    h.advance(2.1)
    h.route()
    assert codes(h.to("op", "result")) == [(i, "timeout") for i in range(QUEUE_SLOTS + 1)]
    assert h.core.broker.pending == 0


def test_coalesced_and_failed_replies_reach_the_client_as_the_device_gave_them():
    h = ready(Harness(), "op")
    h.dev.command("set_speed", [{"name": "v", "type": "number"}], coalesce=True)
    h.advance(0.01)
    h.tick()
    for i, v in enumerate([1.0, 1.5, 2.0]):
        h.event("op", "command", {"id": f"s{i}", "name": "set_speed", "args": {"v": v}})
    s0, s1, s2 = h.dev.take_commands()
    h.dev.reply(s0["id"], None, coalesced=True)
    h.dev.reply(s1["id"], error={"code": "handler_error", "message": "set_speed: ValueError: no"})
    h.dev.reply(s2["id"], 2.0)
    h.route()
    assert h.to("op", "result") == [
        {"id": "s0", "ok": True, "result": None, "coalesced": True},
        {"id": "s1", "ok": False, "error": {"code": "handler_error", "message": "set_speed: ValueError: no"}},
        {"id": "s2", "ok": True, "result": 2.0}]


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_a_result_nested_too_deep_is_answered_bad_result():
    h = ready(Harness(), "op")
    h.dev.command("deep", [{"name": "n", "type": "integer"}])
    h.advance(0.01)
    h.tick()
    h.event("op", "command", {"id": 1, "name": "deep", "args": {"n": 64}})
    h.event("op", "command", {"id": 2, "name": "deep", "args": {"n": 65}})
    h.dev.answer(lambda name, args, client: nested(args["n"]))
    h.route()
    ok, bad = h.to("op", "result")
    assert ok == {"id": 1, "ok": True, "result": nested(64)}
    assert bad["id"] == 2 and bad["ok"] is False and bad["error"]["code"] == "bad_result"


def test_replies_go_to_the_client_that_sent_the_command_whatever_their_order_and_ids(caplog):
    h = ready(Harness(), "op1", "op2", "gone")
    h.dev.command("who", [{"name": "n", "type": "integer"}])
    h.advance(0.01)
    h.tick()
    for sid in ("op1", "op2", "gone"):  # the same client id from three connections
        h.event(sid, "command", {"id": 1, "name": "who", "args": {"n": 0}})
    h.event("op1", "command", {"id": 2, "name": "who", "args": {"n": 1}})
    taken = h.dev.take_commands()
    h.core.disconnect("gone")  # leaves before its answer comes
    mark = h.mark()
    with caplog.at_level(logging.WARNING, logger="bridge"):
        for c in reversed(taken):  # the device answers in another order
            h.dev.reply(c["id"], [c["client"]["id"], c["args"]["n"]])
        h.route()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert h.to("op1", "result", mark) == [{"id": 2, "ok": True, "result": ["op1", 1]},
                                          {"id": 1, "ok": True, "result": ["op1", 0]}]
    assert h.to("op2", "result", mark) == [{"id": 1, "ok": True, "result": ["op2", 0]}]
    assert h.core.broker.pending == 0
    assert all(m.data["result"][0] in m.to for m in h.sent[mark:])  # nobody got another's answer
    before = h.mark()
    h.dev.reply(taken[0]["id"], "twice")  # a reply nobody waits for any more: dropped
    h.route()
    assert h.mark() == before


def test_an_http_command_is_answered_through_its_ticket_not_as_a_message():
    h = ready(Harness(command_timeout=2.0), "op")
    h.dev.command("add", [{"name": "a", "type": "integer"}])
    h.advance(0.01)
    h.tick()
    ticket = h.core.submit_http_command(OPERATOR, {"name": "add", "args": {"a": 2}}, h.now)
    assert isinstance(ticket, Ticket) and not ticket.event.is_set()
    (cmd,) = h.dev.answer(lambda name, args, client: (args["a"] + 1, client["id"]))
    assert cmd["client"] == OPERATOR
    h.core.route_replies(h.now)
    assert h.core.take_messages() == []  # nothing for the Socket.IO clients
    assert ticket.event.is_set() and h.core.broker.wait(ticket) == {"ok": True, "result": [3, "http:127.0.0.1"]}
    viewer = dict(OPERATOR, role="viewer")
    assert h.core.submit_http_command(viewer, {"name": "add", "args": {"a": 1}}, h.now)["error"]["code"] == "forbidden"
    assert h.core.submit_http_command(OPERATOR, {"name": "sub"}, h.now)["error"]["code"] == "unknown_command"
    assert h.core.submit_http_command(OPERATOR, {"name": "add", "args": {"a": 1.5}}, h.now)["error"]["code"] \
        == "invalid_args"
    late = h.core.submit_http_command(OPERATOR, {"name": "add", "args": {"a": 5}}, h.now)
    h.advance(2.1)
    h.core.route_replies(h.now)
    assert late.event.is_set() and h.core.broker.wait(late)["error"]["code"] == "timeout"
    h.dev.answer(lambda name, args, client: 0)  # the late reply is dropped
    h.core.route_replies(h.now)
    assert h.core.take_messages() == [] and late.ack["error"]["code"] == "timeout"
