"""bridge/protocol.py's request checks, in memory: values no client may slip past them."""

from __future__ import annotations

import math

import pytest

from bridge.protocol import MAX_DEPTH, ProtocolError, parse_ping, parse_subscribe, shown, unsendable


@pytest.mark.parametrize("t", [math.nan, math.inf, -math.inf])
def test_ping_refuses_non_finite_times(t):
    with pytest.raises(ProtocolError, match="'t' must be a finite number") as exc:
        parse_ping({"t": t})
    assert exc.value.code == "bad_request"


def test_ping_takes_any_integer_and_subscribe_refuses_huge_ones_without_overflowing():
    assert parse_ping({"t": 10**400}) == 10**400          # math.isfinite would raise OverflowError
    with pytest.raises(ProtocolError, match=r"'rate' must be a number from 0.1 to 1000, got 1000000000000"):
        parse_subscribe({"channels": ["a"], "rate": 10**400}, {"a"}, 60.0)


def test_values_quoted_in_errors_are_cut():
    assert shown("x" * 1000) == "'" + "x" * 56 + "..."
    assert len(shown(10**4400)) <= 60                      # too long for int -> str: no ValueError
    with pytest.raises(ProtocolError) as exc:
        parse_subscribe({"channels": ["a"], "k" * 10_000: 1}, {"a"}, 60.0)
    assert len(exc.value.message) < 120


def test_unsendable_counts_levels_of_lists_and_dicts_without_recursing_and_big_integers():
    def nested(levels):
        value = 0
        for i in range(levels):
            value = [value] if i % 2 else {"a": value}
        return value
    assert unsendable(nested(MAX_DEPTH)) is None
    assert "levels deep" in unsendable(nested(MAX_DEPTH + 1))
    assert "levels deep" in unsendable(nested(100_000))      # a recursive walk would overflow the stack
    assert unsendable("x" * 10_000) is None and unsendable(5) is None
    assert unsendable([2**64 - 1, -(2**63), True]) is None
    assert "64 bits" in unsendable({"a": [2**64]}) and "64 bits" in unsendable(-(2**63) - 1)
