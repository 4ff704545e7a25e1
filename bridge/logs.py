"""The bridge's logging: where it goes, and a rate limit that keeps it from flooding.

Standard library only. A bridge launched by a device writes to the device's terminal, so
what a client can provoke must stay short there: every message is limited per (logger,
message template) to one per ``RateLimit.period`` seconds, and the libraries' messages
(engineio, socketio, werkzeug, eventlet) lose their tracebacks. The next message of a
template that was held back says how many were.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

LIBRARY_LOGGERS = ("werkzeug", "engineio", "socketio", "geventwebsocket", "eventlet")
OWN_LOGGER = "bridge"


class RateLimit(logging.Filter):
    """A ``logging.Filter`` for a handler: one record per template per ``period`` seconds,
    library records as one line (their exception's type and message instead of a traceback)."""

    def __init__(self, period: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_templates: int = 1000) -> None:
        super().__init__()
        self.period = period
        self.clock = clock
        self.max_templates = max_templates  # so a stream of distinct messages cannot grow the table
        self._last: dict[tuple[str, int, str], float] = {}   # template -> when one last passed
        self._held: dict[tuple[str, int, str], int] = {}     # template -> records held back since
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many templates it remembers."""
        return len(self._last)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            if len(self._last) >= self.max_templates:
                self._last.clear()
                self._held.clear()
            self._last[key] = now
            held = self._held.pop(key, 0)
        if not _own(record.name) and record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {str(exc)[:200]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this in the last {self.period:g} s)"
            record.args = None
        return True


def _own(name: str) -> bool:
    return name == OWN_LOGGER or name.startswith(OWN_LOGGER + ".")


def configure(level: int, filename: str | None) -> None:
    """Log to ``filename`` (or stderr) at ``level``, through the rate limit; the libraries
    say only warnings and errors."""
    logging.basicConfig(level=level, filename=filename or None,
                        format="%(asctime)s monbridge %(levelname)s %(message)s")
    limit = RateLimit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
