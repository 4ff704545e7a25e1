"""device_agent: publish a device's state to shared memory for the monbridge dashboard.

    import device_agent
    mon = device_agent.start()          # reads MON; a no-op monitor when MON is unset/""/"0"
    temps = mon.records("temps", {"t": "f8", "motor1": "f4"})
    temps.publish(t=now, motor1=41.5)

Imports only the standard library and numpy — never flask, socketio or eventlet
(tests/test_import_hygiene.py checks this).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from .api import MonitorAPI
from .config import MonitorConfig, config_from_dict, parse_mon
from .disabled import DisabledMonitor
from .errors import (
    ChannelError,
    CommandError,
    ConfigError,
    DeviceNameInUse,
    LayoutError,
    MessageTooLarge,
    MonitorError,
    QueueFull,
)
from .version import __version__

__all__ = [
    "start", "MonitorAPI", "MonitorConfig", "parse_mon", "MonitorError", "ConfigError", "LayoutError",
    "ChannelError", "MessageTooLarge", "QueueFull", "DeviceNameInUse", "CommandError", "__version__",
]


def start(name: str | None = None, *, dispatch: str = "thread", mon: str | None = None, **settings: Any) -> MonitorAPI:
    """Start monitoring if MON says so; return a Monitor, or a no-op DisabledMonitor.

    ``name``: the device name (default: the main script's file name). ``dispatch``:
    "thread" runs command handlers on a background thread; "manual" leaves them for
    ``mon.poll()`` in your loop. ``mon`` overrides the MON variable's text; keyword
    ``settings`` (any MON key but name: host, port, rate, ...; see settings.py) override both.
    """
    config = parse_mon(os.environ.get("MON") if mon is None else mon)
    if not config.enabled:
        return DisabledMonitor()
    if settings:
        config = config_from_dict(settings, source="start()", base=config)
    from .monitor import Monitor

    return Monitor(config, name or config.name or default_device_name(), dispatch=dispatch)


def default_device_name() -> str:
    """The main script's file name, made into a valid device name."""
    main = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "")
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(main)[0])[:48].strip("_-")
    return stem or "device"
