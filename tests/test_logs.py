"""bridge/logs.py: the rate limit on the bridge's log, with a clock the test moves."""

from __future__ import annotations

import logging
import sys

from bridge.logs import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args or None, exc_info)


def test_one_record_per_template_per_period_then_a_count_of_the_rest():
    clock = Clock()
    limit = RateLimit(period=10.0, clock=clock)
    assert limit.filter(record("bridge", "client %s sent junk", "a"))
    for i in range(50):
        clock.now += 0.1
        assert not limit.filter(record("bridge", "client %s sent junk", str(i)))
    assert limit.filter(record("bridge", "another message"))       # other templates pass
    clock.now = 10.0
    passed = record("bridge", "client %s sent junk", "z")
    assert limit.filter(passed)
    assert passed.getMessage() == "client z sent junk (50 more like this in the last 10 s)"
    clock.now = 20.5
    quiet = record("bridge", "client %s sent junk", "y")
    assert limit.filter(quiet) and quiet.getMessage() == "client y sent junk"


def test_library_records_lose_their_traceback_ours_keep_it():
    limit = RateLimit(clock=Clock())
    lib = record("engineio.server", "message handler error", exc=ValueError("Unexpected binary attachment"))
    assert limit.filter(lib)
    assert lib.exc_info is None
    assert lib.getMessage() == "message handler error: ValueError: Unexpected binary attachment"
    ours = record("bridge", "handler %s failed", "on_x", exc=KeyError("k"))
    assert limit.filter(ours)
    assert ours.exc_info is not None


def test_the_table_of_templates_stays_bounded():
    clock = Clock()
    limit = RateLimit(clock=clock, max_templates=100)
    for i in range(1000):
        assert limit.filter(record("bridge", f"distinct {i}"))
    assert len(limit) <= 100
