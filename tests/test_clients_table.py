"""bridge.clients.table_for_device: what of the clients table the device's 64 KiB copy holds.
Unit tests of one function, on plain rows."""

from __future__ import annotations

import json

from bridge.clients import table_for_device


def rows(clients: int, subscriptions: int) -> list[dict]:
    return [{"id": f"c{i:03d}", "address": "127.0.0.1", "role": "viewer",
             "subscriptions": [{"channel": f"ch{j:03d}", "rate": 60.0, "sent": 12345, "skipped": 6}
                               for j in range(subscriptions)], "queued": 0}
            for i in range(clients)]


def size(table: list[dict]) -> int:
    return len(json.dumps(table, separators=(",", ":")).encode())


def test_a_table_that_fits_is_written_in_full():
    table = rows(3, 2)
    data, shown, fit = table_for_device(table, 64 * 1024)
    assert (json.loads(data), shown, fit) == (table, 3, "full")


def test_too_many_subscriptions_keep_every_client_with_channel_names_only():
    table = rows(20, 128)
    assert size(table) > 64 * 1024
    data, shown, fit = table_for_device(table, 64 * 1024)
    out = json.loads(data)
    assert fit == "brief" and shown == 20
    assert [r["id"] for r in out] == [r["id"] for r in table]
    assert out[0]["subscriptions"][:2] == [{"channel": "ch000"}, {"channel": "ch001"}]
    assert all(r["role"] == "viewer" and r["queued"] == 0 for r in out)
    assert size(out) <= 64 * 1024 and len(data) <= 64 * 1024
    assert table[0]["subscriptions"][0]["rate"] == 60.0  # the caller's rows are left alone


def test_too_many_clients_keep_the_ones_connected_longest():
    table = rows(2000, 1)
    data, shown, fit = table_for_device(table, 64 * 1024)
    out = json.loads(data)
    assert fit == "cut"
    assert 0 < len(out) == shown < 2000
    assert [r["id"] for r in out] == [r["id"] for r in table[: len(out)]]
    assert size(out) <= 64 * 1024 and len(data) <= 64 * 1024
    next_row = dict(table[len(out)], subscriptions=[{"channel": "ch000"}])
    assert size(out + [next_row]) > 64 * 1024  # as many as fit
