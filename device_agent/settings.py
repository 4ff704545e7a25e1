"""The settings of a device's monitor and of its bridge: one table, for both processes.

Each setting is described once, in SETTINGS: its name, type, default, allowed values, help
and where it applies. Everything else is made from that table:

* the MON keys and ``MonitorConfig`` (config.py),
* the ``monbridge serve`` options (bridge/cli.py),
* the bridge's ``Options`` (bridge/server.py),
* the options a device passes to the bridge it launches (``serve_args``, used by monitor.py).

Also here, because both processes use them: DEFAULT_PORT, ``is_loopback``, the token rule
``check_token``, and ``bridge_launcher`` (how a device starts its bridge, and a bridge its
recorder).

Standard library only: the device imports it, so it must never import flask, socketio,
eventlet or bridge. The bridge may import it.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable

from .errors import ConfigError

DEFAULT_PORT = 8050          # the bridge's port when none is set (a free one if it is taken)
MIN_TOKEN_CHARS = 8
TOKEN_ENV = "MONBRIDGE_TOKEN"
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,48}")
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds"}  # a unit as MON's messages spell it out


class Use(enum.Flag):
    """Where a setting applies."""

    MON = enum.auto()      # a key of MON, of a MON JSON file, and of start(**settings)
    CLI = enum.auto()      # a ``monbridge serve`` option
    OPTIONS = enum.auto()  # a field of the bridge's Options


ALL = Use.MON | Use.CLI | Use.OPTIONS
BRIDGE = Use.CLI | Use.OPTIONS


@dataclass(frozen=True)
class Setting:
    """One setting. Its MON key and Options field are ``name``; its option is ``flag``."""

    name: str
    type: type                           # str, int, float or bool
    default: Any                         # the one default, for every place the setting applies
    help: str                            # one line, for ``--help``
    use: Use
    low: float | None = None             # int and float: the allowed range, both ends included
    high: float | None = None
    unit: str = ""                       # of the range, in messages: "Hz", "s"
    choices: tuple[str, ...] = ()        # str: the only allowed values
    check: Callable[[str, str], str] | None = None  # str: check(value, source) -> value, or ConfigError
    env: str = ""                        # CLI: read this variable when the option is absent
    default_help: str = ""               # the default as a person reads it, when not the value itself
    metavar: str | None = None           # CLI: the value's name in ``--help``

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def annotation(self) -> Any:
        return self.type if self.default is not None else self.type | None

    def shown_default(self) -> str:
        return self.default_help or (f"{self.default:g}" if isinstance(self.default, float) else str(self.default))

    def range_problem(self, value: float) -> str | None:
        """``None`` if ``value`` is inside [low, high] (or the setting has no range), else the
        rule as ``monbridge serve`` states it: 'must be from 1 to 1000 Hz'."""
        if self.low is None or self.high is None:
            return None
        if self.low <= value <= self.high:  # NaN fails too
            return None
        return f"must be from {self.low:g} to {self.high:g} {self.unit}".rstrip()


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


def check_device_name(name: str, source: str) -> str:
    """The device name, if it is one (it becomes part of shared-memory segment names); empty
    means none was given (the main script's file name is used)."""
    if name and not _NAME_RE.fullmatch(name):
        raise ConfigError(f"{source}: name={name!r} is invalid: use 1-48 letters, digits, '_' or '-'")
    return name


def check_redis_url(url: str, source: str) -> str:
    """A Redis URL as redis-py takes it (redis://, rediss:// with TLS, unix://), or empty."""
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{source}: {url[:60]!r} is not a Redis URL: use redis://HOST:PORT (rediss:// for TLS, "
                          f"redis://USER:PASSWORD@HOST:PORT with an ACL user; docs/scaling.md)")
    return url


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SETTINGS: tuple[Setting, ...] = (
    Setting("name", str, "", "device name", Use.MON, check=check_device_name,
            default_help="the main script's file name"),
    Setting("attach", str, "auto", "device name to attach to; 'auto' picks the only running device", BRIDGE,
            metavar="NAME|auto"),
    Setting("host", str, "127.0.0.1", "address to bind", ALL),
    Setting("port", int, None, "port to listen on", ALL, low=0, high=65535,
            default_help=f"{DEFAULT_PORT}, or a free one if that is taken; 0 picks a free one"),
    Setting("rate", float, 60.0, "maximum relay rate in Hz", ALL, low=1, high=1000, unit="Hz"),
    Setting("specs", str, "", "directory of view files", ALL,
            default_help="./specs if it exists, else the views monbridge ships with"),
    Setting("static", str, "", "directory of the built web UI", BRIDGE, default_help="the one monbridge ships with"),
    Setting("token", str, "", "access token", ALL, check=check_token, env=TOKEN_ENV,
            default_help=f"${TOKEN_ENV}, else a random one"),
    Setting("async_mode", str, "eventlet", "server mode", ALL, choices=("eventlet", "threading")),
    Setting("log", str, "", "log file", ALL, default_help="stderr"),
    Setting("bridge", bool, True, "launch the bridge beside the device", Use.MON),
    Setting("command_timeout", float, 5.0, "seconds to wait for a reply", ALL, low=0.1, high=3600, unit="s",
            metavar="SECONDS"),
    Setting("offline_after", float, 1.0, "heartbeat age in seconds after which the device counts as offline",
            ALL, low=0.2, high=3600, unit="s", metavar="SECONDS"),
    Setting("command_rate", float, 100.0, "commands per second per client; bursts of max(10, twice that)",
            ALL, low=0.1, high=100_000, unit="commands/s", metavar="N"),
    Setting("cpu_slice", float, 0.3, "CPU time slice in ms the bridge asks Linux 6.12+ for: a short one sends sooner "
            "(docs/bridge.md); below 0.1 counts as 0.1, and 0 keeps the kernel's default", ALL, low=0, high=100,
            unit="ms", metavar="MS"),
    Setting("exit_with_device", bool, False,
            "exit when the device closes (used when a device launches its bridge)", BRIDGE),
    Setting("publish", str, "", "Redis URL to publish the device into, for edge bridges elsewhere (an origin)", ALL,
            check=check_redis_url, env="MONBRIDGE_PUBLISH", default_help="$MONBRIDGE_PUBLISH, else none",
            metavar="redis://HOST:PORT"),
    Setting("publish_frames", str, "watched", "frame channels an origin publishes: those a browser on some edge "
            "watches, or all of them", ALL, choices=("watched", "all")),
    Setting("edge", str, "", "Redis URL to serve a device from, published there by an origin bridge (an edge)",
            BRIDGE, check=check_redis_url, env="MONBRIDGE_EDGE", default_help="$MONBRIDGE_EDGE, else none: shared memory",
            metavar="redis://HOST:PORT"),
    Setting("record_dir", str, "", "directory of the recordings started from the dashboard or POST /api/record",
            BRIDGE, default_help="./recordings in the bridge's working directory, made on first use",
            metavar="DIR"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def settings_for(use: Use) -> list[Setting]:
    """The settings that apply to ``use`` (Use.MON, Use.CLI or Use.OPTIONS), in table order."""
    return [s for s in SETTINGS if use in s.use]


def make_settings_class(name: str, module: str, use: Use, doc: str,
                        extra: tuple[tuple[str, type, Any], ...] = (), frozen: bool = False) -> type:
    """A dataclass named ``name`` in ``module``: the ``extra`` (name, type, default) fields,
    then one field per setting of ``use``, with its default. How MonitorConfig (config.py)
    and the bridge's Options (bridge/server.py) are made."""
    specs = [(n, t, field(default=d)) for n, t, d in extra]
    specs += [(s.name, s.annotation, field(default=s.default)) for s in settings_for(use)]
    cls = make_dataclass(name, specs, frozen=frozen)
    cls.__module__ = module
    cls.__doc__ = doc
    return cls


def convert(name: str, raw: Any, source: str) -> Any:
    """The value of MON key ``name`` from ``raw`` (text, or a JSON value); ConfigError if it is
    not allowed, naming ``source``, the key and the value."""
    s = BY_NAME.get(name)
    if s is None or Use.MON not in s.use:
        known = ", ".join(x.name for x in settings_for(Use.MON))
        raise ConfigError(f"{source}: unknown key {name!r} (known: {known})")
    bad = f"{source}: {name}={raw!r} is invalid"
    if s.type in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{bad}: must be a number, not a boolean")
        if s.type is int:
            rule = f"must be an integer {s.low:g}-{s.high:g}"
            value: Any = None if isinstance(raw, float) else _number(int, raw)
        else:
            rule = f"must be a number of {_UNIT_NAMES.get(s.unit, s.unit)}, {s.low:g}-{s.high:g}"
            value = _number(float, raw)
        if value is None or s.range_problem(value):
            raise ConfigError(f"{bad}: {rule}")
        return value
    if s.type is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{bad}: must be 0 or 1")
    if s.choices:
        if raw not in s.choices:
            raise ConfigError(f"{bad}: must be {' or '.join(s.choices)}")
        return raw
    if not isinstance(raw, str):
        raise ConfigError(f"{bad}: must be a string")
    return s.check(raw, source) if s.check else raw


def _number(kind: type, raw: Any) -> Any:
    """``kind(raw)``, or None if ``raw`` is not a number (NaN is one: the range refuses it)."""
    try:
        return kind(raw)
    except (TypeError, ValueError):
        return None


def serve_args(config: Any) -> list[str]:
    """The ``monbridge serve`` options that carry ``config``'s settings (a MonitorConfig) to
    the bridge a device launches: each setting that is both a MON key and an option, when it
    differs from the default. Not the token (its ``env`` variable carries it: the command
    line is visible to every user in ``ps``), nor --attach and --exit-with-device (the
    monitor adds them)."""
    args: list[str] = []
    for s in settings_for(Use.MON | Use.CLI):
        value = getattr(config, s.name)
        if s.env or value == s.default:
            continue
        if s.type is bool:
            args.append(s.flag)  # a CLI bool is a switch, off by default
        else:
            args += [s.flag, str(value)]
    return args


# How a device starts its bridge, and a bridge its recorder: ``python -c LAUNCHER serve ...``.
# LAUNCHER puts the directory this monbridge is installed in first on sys.path and drops the
# working directory, so a bridge.py or device_agent.py there or on PYTHONPATH cannot stand in
# for it (``python -m bridge`` would run those). Its last word is "bridge", for `ps` and
# monitor.running_bridge.
LAUNCHER_TAG = "# monbridge bridge"


def bridge_launcher() -> list[str]:
    """The argv that starts this installation's ``monbridge`` command line (bridge/cli.py) in a
    fresh interpreter; append the command and its options."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path[:] = [{root!r}] + [p for p in sys.path if p]; "
            f"from bridge.cli import main; sys.exit(main())  {LAUNCHER_TAG}")
    return [sys.executable, "-c", code]
