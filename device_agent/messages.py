"""The device's messages to its user: the ``monbridge.device`` logger and its default output.

Until the program configures logging (puts a handler on the root logger), the messages go to
stderr as plain lines, the dashboard URL among them (INFO), problems at WARNING. A program that
configures logging gets them through its own handlers instead. Silence them with
``logging.getLogger("monbridge.device").setLevel(logging.WARNING)`` (problems only) or
``.disabled = True``. Imports only the standard library.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "monbridge.device"


class DefaultOutput(logging.StreamHandler):
    """Writes to the current ``sys.stderr``, and only while the root logger has no handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return  # the program configured logging: the record reaches its handlers
        self.setStream(sys.stderr)
        super().emit(record)


def device_logger() -> logging.Logger:
    """The ``monbridge.device`` logger, at INFO unless the program set a level, with the default output."""
    log = logging.getLogger(LOGGER_NAME)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not any(isinstance(h, DefaultOutput) for h in log.handlers):
        log.addHandler(DefaultOutput())
    return log
