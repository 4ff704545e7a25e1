"""``bundle`` messages end to end: a real device and bridge, real Socket.IO clients, one that
asks for bundles in its auth and one that does not (docs/protocol.md §2, §4.9)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import socketio

from bridge_support import concat_records, mb, value_of  # noqa: F401  (mb: fixture)

ROUNDS = 6
PER_ROUND = 20


def records_of(client: Any, channel: str) -> list[dict[str, Any]]:
    """Every records message of ``channel`` that ``client`` got, alone or in a bundle, in order."""
    out = []
    for event, data, _ in list(client.events):
        items = data if event == "bundle" else [data] if event == "data" else []
        out += [m for m in items if m.get("channel") == channel and m.get("kind") == "records"]
    return out


def test_a_client_that_asks_gets_both_channels_in_bundles_and_loses_nothing(mb):
    dev = mb.device(None, "pair")
    bundled = mb.client(dev.url, bundle=True)
    plain = mb.client(dev.url)
    for c in (bundled, plain):
        # one subscription at 2 Hz: both channels become due together, each with news
        c.subscribe("telemetry", "extra", rate=2)
    total = ROUNDS * PER_ROUND
    for _ in range(ROUNDS):
        dev.request(f"pubpair {PER_ROUND}", "published")
    for c in (bundled, plain):
        c.wait_for(lambda c=c: all((m := records_of(c, ch)) and m[-1]["seq"][1] == total - 1 for ch in ("telemetry", "extra")),
                   what=f"both channels up to seq {total - 1}")
    bundles = bundled.of("bundle")
    assert bundles, [e for e, _, _ in bundled.events]
    for b in bundles:
        assert isinstance(b, list) and len(b) >= 2
        assert all(m["kind"] == "records" and m["device"] == dev.name for m in b), b
    assert not plain.of("bundle")
    for c in (bundled, plain):
        for ch in ("telemetry", "extra"):
            msgs = records_of(c, ch)
            assert [m["seq"][0] for m in msgs] == [0] + [m["seq"][1] + 1 for m in msgs[:-1]]
            assert all(m["missed"] == 0 for m in msgs)
            got = concat_records(msgs)
            np.testing.assert_array_equal(got["seq"], np.arange(total))
            np.testing.assert_array_equal(got["value"], value_of(np.arange(total)).astype("f4"))


@pytest.mark.parametrize("value", ["yes", 1])
def test_a_bundle_option_that_is_not_a_boolean_is_refused_with_why(mb, value):
    dev = mb.device()
    refused = socketio.Client(reconnection=False, serializer="msgpack")
    errors = []
    refused.on("connect_error", lambda data=None: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(dev.url.base, auth={"token": dev.url.token, "bundle": value}, transports=["websocket"],
                        wait_timeout=10)
    assert errors and f"bad_request: auth 'bundle' must be true or false, got {value!r}" in str(errors[0]), errors
    with mb.connected(dev.url) as c:   # the bridge goes on serving
        assert c.hello["protocol"] == 5
