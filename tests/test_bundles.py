"""bridge/bundles.py: which messages become one ``bundle`` message, and the auth option."""

from __future__ import annotations

import pytest

from bridge.bundles import bundle_records, parse_bundle_option
from bridge.core import Message


def records(channel: str, to: tuple[str, ...], seq: int = 0) -> Message:
    return Message("data", {"channel": channel, "kind": "records", "seq": [seq, seq], "data": b"x"}, to)


def frame(channel: str, to: tuple[str, ...]) -> Message:
    return Message("data", {"channel": channel, "kind": "frame", "seq": [0, 0], "data": b"f"}, to)


def test_a_run_to_the_same_clients_becomes_one_bundle_in_order() -> None:
    msgs = [records("a", ("s1", "s2")), records("b", ("s2", "s1")), records("c", ("s1", "s2"))]
    out = bundle_records(msgs, {"s1", "s2"})
    assert len(out) == 1
    assert out[0].event == "bundle"
    assert [m["channel"] for m in out[0].data] == ["a", "b", "c"]
    assert set(out[0].to) == {"s1", "s2"}


def test_nothing_changes_without_bundling_clients() -> None:
    msgs = [records("a", ("s1",)), records("b", ("s1",))]
    assert bundle_records(msgs, set()) == msgs
    assert bundle_records(msgs, {"s2"}) == msgs


def test_a_client_that_did_not_ask_gets_each_message_alone_and_the_others_a_bundle() -> None:
    msgs = [records("a", ("s1", "s2", "s3")), records("b", ("s3", "s1", "s2")), records("c", ("s2",))]
    out = bundle_records(msgs, {"s1", "s3"})
    assert [(m.event, set(m.to)) for m in out] == [("data", {"s2"}), ("data", {"s2"}), ("data", {"s2"}),
                                                  ("bundle", {"s1", "s3"})]
    assert [m.data["channel"] for m in out[:3]] == ["a", "b", "c"]
    assert [m["channel"] for m in out[3].data] == ["a", "b"]


def test_a_single_records_message_is_sent_as_data() -> None:
    msgs = [records("a", ("s1",)), Message("state", {}, ("s1",)), records("b", ("s1",))]
    assert bundle_records(msgs, {"s1"}) == msgs


def test_other_messages_end_a_run_and_keep_their_place() -> None:
    state = Message("state", {"values": {}}, ("s1",))
    device = Message("device", {"status": "offline"}, ("s1",))
    msgs = [records("a", ("s1",)), records("b", ("s1",)), state, records("c", ("s1",)), records("d", ("s1",)),
            device, records("e", ("s1",))]
    out = bundle_records(msgs, {"s1"})
    assert [m.event for m in out] == ["bundle", "state", "bundle", "device", "data"]
    assert out[1] is state and out[3] is device and out[4].data["channel"] == "e"
    assert [[m["channel"] for m in b.data] for b in (out[0], out[2])] == [["a", "b"], ["c", "d"]]


def test_frames_and_events_of_other_channels_go_first_and_do_not_end_a_run() -> None:
    cloud = frame("cloud", ("s1",))
    event = Message("event", {"channel": "log", "events": []}, ("s1",))
    msgs = [records("a", ("s1",)), cloud, records("b", ("s1",)), event, records("c", ("s1",))]
    out = bundle_records(msgs, {"s1"})
    assert out[:2] == [cloud, event]
    assert [(m.event, [d["channel"] for d in m.data]) for m in out[2:]] == [("bundle", ["a", "b", "c"])]


def test_each_client_gets_its_messages_of_a_run_in_one_bundle_shared_with_those_that_get_the_same() -> None:
    msgs = [records("a", ("s1", "s2", "s3")), records("b", ("s3", "s1")), records("c", ("s2",)),
            records("d", ("s1", "s3")), records("e", ("s4",))]
    out = bundle_records(msgs, {"s1", "s2", "s3", "s4"})
    got = {frozenset(m.to): (m.event, [d["channel"] for d in (m.data if m.event == "bundle" else [m.data])])
           for m in out}
    assert got == {frozenset({"s1", "s3"}): ("bundle", ["a", "b", "d"]), frozenset({"s2"}): ("bundle", ["a", "c"]),
                   frozenset({"s4"}): ("data", ["e"])}
    assert len(out) == 3 and out[2] is msgs[4]


def test_one_channels_messages_keep_their_order_in_a_bundle() -> None:
    msgs = [records("a", ("s1",), 1), records("a", ("s1",), 2)]
    out = bundle_records(msgs, {"s1"})
    assert [m["seq"] for m in out[0].data] == [[1, 1], [2, 2]]


@pytest.mark.parametrize("auth, expected", [(None, False), ({}, False), ({"token": "t"}, False), ("tok", False),
                                            ({"bundle": True}, True), ({"bundle": False, "token": "t"}, False)])
def test_the_auth_option(auth: object, expected: bool) -> None:
    assert parse_bundle_option(auth) is expected


@pytest.mark.parametrize("value", [1, "yes", None, [True]])
def test_anything_but_a_boolean_is_refused_with_what_was_sent(value: object) -> None:
    with pytest.raises(ValueError, match=r"auth 'bundle' must be true or false, got " + repr(value).replace("[", r"\[")):
        parse_bundle_option({"bundle": value})
