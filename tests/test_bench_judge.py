"""bench.common.judge: how every benchmark decides whether a figure met its target."""

from __future__ import annotations

import math

from bench.common import judge

TARGETS = {"rate": {"min": 5.0}, "lag_ms": {"max": 40.0}, "heap_pct": {"max": 10.0}}


def test_min_and_max_targets_are_inclusive():
    assert judge({"rate": 5.0, "lag_ms": 40.0, "heap_pct": 10.5}, TARGETS) == \
        {"rate": True, "lag_ms": True, "heap_pct": False}
    assert judge({"rate": 4.9, "lag_ms": 12, "heap_pct": -3.0}, TARGETS) == \
        {"rate": False, "lag_ms": True, "heap_pct": True}


def test_an_unmeasurable_figure_fails_and_a_missing_one_is_left_out_unless_asked():
    result = {"rate": math.nan, "lag_ms": 30.0}
    assert judge(result, TARGETS) == {"rate": False, "lag_ms": True}
    assert judge(result, TARGETS, missing_fails=True) == {"rate": False, "lag_ms": True, "heap_pct": False}
    assert judge({"rate": True, "lag_ms": None}, TARGETS, missing_fails=True)["rate"] is False  # not a number
