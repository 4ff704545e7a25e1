"""Relay.consumed(): it says exactly when a confirmation lets a subscription send again, which
is when the bridge wakes its relay loop (server.on_consumed). A unit test of one method: the
device link is a stand-in with no device attached."""

from __future__ import annotations

from types import SimpleNamespace

from bridge.protocol import Subscribe
from bridge.relay import Relay


def relay_with(in_flight: int | None) -> Relay:
    relay = Relay(SimpleNamespace(device=None, online=False), emit=lambda *a: None, congested=lambda sid: False,
                  max_rate=60.0)
    relay.subscribe("sid", Subscribe(("img",), 30.0, None, None, in_flight))
    return relay


def test_consumed_frees_a_subscription_only_when_it_had_all_its_messages_in_flight():
    relay = relay_with(in_flight=2)
    sub = relay.subs["img"]["sid"]
    sub.unconfirmed.extend([1, 2])           # two messages out: the limit
    assert sub.waiting_for_client()
    assert relay.consumed("sid", "img", 0, 0.0) is False   # confirms nothing sent
    assert relay.consumed("sid", "img", 1, 0.0) is True    # one slot free again: may send
    assert relay.consumed("sid", "img", 1, 0.0) is False   # the same again: nothing changes
    assert relay.consumed("sid", "img", 2, 0.0) is False   # it could send already
    assert not sub.unconfirmed


def test_consumed_without_flow_control_or_subscription_frees_nothing():
    relay = relay_with(in_flight=None)
    assert relay.consumed("sid", "img", 5, 0.0) is False
    assert relay.consumed("other", "img", 5, 0.0) is False
    assert relay.consumed("sid", "cloud", 5, 0.0) is False
