"""Parse the MON environment variable into a MonitorConfig.

The keys, their defaults and their rules come from settings.py (the one table of settings);
this module reads MON's forms. Sans-I/O apart from reading a JSON config file named by MON.
Standard library only.

MON forms:
    unset, "" or "0"        monitoring off: every call is a cheap no-op
    "1"                     on, with defaults
    a path to a .json file  on, settings from the file (an object with the keys below)
    "k=v,k=v"               on, settings inline, e.g. MON=port=0,rate=30

Keys: the settings marked Use.MON in settings.SETTINGS (name, host, port, rate, specs, token,
async_mode, log, bridge, command_timeout, offline_after, command_rate, cpu_slice, publish,
publish_frames).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from .errors import ConfigError
from .settings import Use, convert, make_settings_class, settings_for

MonitorConfig = make_settings_class(
    "MonitorConfig", __name__, Use.MON, frozen=True, extra=(("enabled", bool, False),),
    doc="A device's monitor settings: ``enabled``, then one field per MON key (settings.SETTINGS).",
)

_KEYS = [s.name for s in settings_for(Use.MON)]


def parse_mon(value: str | None) -> MonitorConfig:
    """Turn the text of MON into a config; raise ConfigError naming the bad part."""
    if value is None or value.strip() in ("", "0"):
        return MonitorConfig(enabled=False)
    text = value.strip()
    if text == "1":
        return MonitorConfig(enabled=True)
    if "=" not in text and (text.endswith(".json") or os.path.sep in text):
        return _from_file(text)
    if "=" not in text:
        raise ConfigError(
            f"MON={value!r} is not understood: use 1, a path to a .json file, or key=value pairs "
            f"separated by commas (keys: {', '.join(_KEYS)})"
        )
    settings: dict[str, str] = {}
    for part in value.split(","):  # not text: a token of spaces must be seen, not trimmed away
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"MON: {part!r} is not key=value (keys: {', '.join(_KEYS)})")
        settings[key] = val if key == "token" else val.strip()  # a token's spaces are an error, not trimmed
    return config_from_dict(settings, source="MON")


def _from_file(path: str) -> MonitorConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"MON names the config file {path!r}, which does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"MON config file {path!r} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"MON config file {path!r} must hold a JSON object, not {type(data).__name__}")
    return config_from_dict(data, source=path)


def config_from_dict(settings: dict[str, Any], source: str = "config", base: MonitorConfig | None = None) -> MonitorConfig:
    """Validate settings (strings or JSON values) on top of ``base``; raise ConfigError."""
    out = {key: convert(key, raw, source) for key, raw in settings.items()}
    return replace(base or MonitorConfig(), enabled=True, **out)
