"""Parse the MON environment variable into a MonitorConfig.

Sans-I/O apart from reading a JSON config file named by MON. Standard library only.

MON forms:
    unset, "" or "0"        monitoring off: every call is a cheap no-op
    "1"                     on, with defaults
    a path to a .json file  on, settings from the file (an object with the keys below)
    "k=v,k=v"               on, settings inline, e.g. MON=port=0,rate=30

Keys: name, host, port, rate, specs, token, async_mode, log, bridge.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigError

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,48}")
DEFAULT_PORT = 8050


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = False
    name: str = ""               # device name; default: the main script's file name
    host: str = "127.0.0.1"      # the bridge's bind address
    port: int | None = None      # None: 8050, or a free port if that is taken; 0: a free port
    rate: float = 60.0           # the bridge's maximum relay rate, Hz
    specs: str = ""              # directory of view files; default: ./specs if present
    token: str = ""              # access token; default: a random one per run
    async_mode: str = "eventlet" # or "threading"
    log: str = ""                # bridge log file; default: stderr
    bridge: bool = True          # launch the bridge beside the device


_KEYS = [f.name for f in fields(MonitorConfig) if f.name != "enabled"]


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
    out: dict[str, Any] = {}
    for key, raw in settings.items():
        if key not in _KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        out[key] = _convert(key, raw, source)
    return replace(base or MonitorConfig(), enabled=True, **out)


def _convert(key: str, raw: Any, source: str) -> Any:
    bad = f"{source}: {key}={raw!r} is invalid"
    if key in ("port", "rate") and isinstance(raw, bool):
        raise ConfigError(f"{bad}: must be a number, not a boolean")
    if key == "port":
        if isinstance(raw, float):
            raise ConfigError(f"{bad}: must be an integer 0-65535")
        try:
            port = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{bad}: must be an integer 0-65535") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{bad}: must be an integer 0-65535")
        return port
    if key == "rate":
        try:
            rate = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{bad}: must be a number of Hz, 1-1000") from None
        if not 1 <= rate <= 1000:
            raise ConfigError(f"{bad}: must be a number of Hz, 1-1000")
        return rate
    if key == "bridge":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{bad}: must be 0 or 1")
    if key == "async_mode":
        if raw not in ("eventlet", "threading"):
            raise ConfigError(f"{bad}: must be eventlet or threading")
        return raw
    if key == "name":
        if not isinstance(raw, str) or not _NAME_RE.fullmatch(raw):
            raise ConfigError(f"{bad}: use 1-48 letters, digits, '_' or '-'")
        return raw
    if not isinstance(raw, str):
        raise ConfigError(f"{bad}: must be a string")
    if key == "token":
        return check_token(raw, source)
    return raw


MIN_TOKEN_CHARS = 8


def check_token(token: str, source: str) -> str:
    """The token, if it is one; raise ConfigError saying what is wrong with it.

    The one rule for MON's token, MONBRIDGE_TOKEN and ``monbridge serve --token``: empty
    means none was given (a random one is made); otherwise at least MIN_TOKEN_CHARS
    printable characters and no whitespace (it travels in URLs and headers, and a blank
    one must never pass for a secret)."""
    if token == "":
        return token
    fix = f"use at least {MIN_TOKEN_CHARS} characters without spaces, or leave it unset for a random one"
    if not token.strip():
        raise ConfigError(f"{source}: the token is blank; {fix}")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{source}: the token contains spaces or control characters; {fix}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{source}: the token is {len(token)} characters, too short; {fix}")
    return token


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
