"""Exceptions raised by device_agent.

Imports nothing; most modules here and the bridge import it.

    MonitorError
     ├── ConfigError          MON, a start() argument or a monbridge serve setting is malformed
     ├── LayoutError          a segment is not ours, is corrupt, or has another layout version
     ├── ChannelError         a channel name/spec is bad, or a publish does not fit the channel
     │    └── MessageTooLarge  an event, command or reply exceeds its slot
     ├── QueueFull            a command/reply queue has no free slot (nothing was written)
     ├── DeviceNameInUse      another live process already publishes under this device name
     └── CommandError         a command was rejected; carries a machine-readable ``code``
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base class of every error raised by device_agent."""


class ConfigError(MonitorError, ValueError):
    """The MON variable or a start() argument is malformed."""


class LayoutError(MonitorError):
    """A shared-memory segment is not ours, is corrupt, or has another layout version."""


class ChannelError(MonitorError, ValueError):
    """A channel name or spec is bad, or a published value does not fit the channel."""


class MessageTooLarge(ChannelError):
    """An event, command or reply is larger than its slot."""


class QueueFull(MonitorError):
    """A command or reply queue has no free slot; nothing was written."""


class DeviceNameInUse(MonitorError):
    """Another live process already publishes under this device name."""


class CommandError(MonitorError):
    """A command was rejected or failed.

    ``code`` is one of the protocol's error codes (``unknown_command``,
    ``invalid_args``, ``handler_error``, ``bad_result``, ``too_large``, ...).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
