"""Command declarations and argument validation.

Sans-I/O, standard library only. The device builds a catalog entry per command from the
handler's annotations (or an explicit ``params`` dict); the bridge validates every
incoming command against the catalog before it reaches the device, and the device
validates again (defence in depth). Both use ``validate_args``.

Catalog entry (JSON, published in the manifest):

    {"name": "set_speed", "doc": "...", "coalesce": true,
     "params": [{"name": "value", "type": "number", "minimum": 0, "maximum": 2,
                 "default": 1.0}]}

Parameter types: "number" (int or float, not bool), "integer", "boolean", "string",
"any" (any JSON value). Optional keys: "default" (makes it optional), "enum",
"minimum", "maximum".
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Callable

from .errors import CommandError

TYPES = ("number", "integer", "boolean", "string", "any")
_ANNOTATION_TYPES = {float: "number", int: "integer", bool: "boolean", str: "string"}
CLIENT_PARAM = "client"


def params_from_signature(fn: Callable[..., Any]) -> list[dict[str, Any]]:
    """Build parameter schemas from ``fn``'s annotations. A ``client`` parameter is skipped."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # an annotation that cannot be evaluated
        raise TypeError(f"command {fn.__name__!r}: cannot read annotations: {exc}") from exc
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == CLIENT_PARAM:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(
                f"command {fn.__name__!r}: parameter {p.name!r} must be a plain named parameter"
            )
        spec: dict[str, Any] = {"name": p.name}
        ann = hints.get(p.name, inspect.Parameter.empty)
        if ann is inspect.Parameter.empty or ann is Any:
            spec["type"] = "any"
        elif typing.get_origin(ann) is typing.Literal:
            choices = list(typing.get_args(ann))
            kinds = {_ANNOTATION_TYPES.get(type(c)) for c in choices}
            if None in kinds or len(kinds) != 1:
                raise TypeError(
                    f"command {fn.__name__!r}: Literal choices of {p.name!r} must all be "
                    f"str, int, float or bool, got {choices!r}"
                )
            spec["type"] = kinds.pop()
            spec["enum"] = choices
        elif ann in _ANNOTATION_TYPES:
            spec["type"] = _ANNOTATION_TYPES[ann]
        else:
            raise TypeError(
                f"command {fn.__name__!r}: parameter {p.name!r} has unsupported annotation "
                f"{ann!r}; use float, int, bool, str, Literal[...] or pass params= to @mon.command"
            )
        if p.default is not inspect.Parameter.empty:
            spec["default"] = p.default
        params.append(check_param(fn.__name__, spec))
    return params


def params_from_dict(command: str, params: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Explicit schema: ``{"value": {"type": "number", "minimum": 0}}`` → catalog params."""
    if not isinstance(params, dict):
        raise TypeError(f"command {command!r}: 'params' must be a dict of name -> schema")
    return [check_param(command, {"name": name, **spec}) for name, spec in params.items()]


def check_param(command: str, spec: dict[str, Any]) -> dict[str, Any]:
    where = f"command {command!r}, parameter {spec.get('name')!r}"
    if spec.get("type") not in TYPES:
        raise TypeError(f"{where}: 'type' must be one of {', '.join(TYPES)}, got {spec.get('type')!r}")
    unknown = set(spec) - {"name", "type", "default", "enum", "minimum", "maximum", "doc"}
    if unknown:
        raise TypeError(f"{where}: unknown schema keys {sorted(unknown)}")
    for bound in ("minimum", "maximum"):
        if bound in spec:
            value = spec[bound]
            if spec["type"] not in ("number", "integer"):
                raise TypeError(f"{where}: {bound!r} applies only to number and integer parameters")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
                raise TypeError(f"{where}: {bound!r} must be a finite number, got {value!r}")
    if "default" in spec:
        try:
            _check_value(spec, spec["default"])
        except CommandError as exc:
            raise TypeError(f"{where}: default does not fit: {exc.message}") from None
    return spec


def validate_args(command: str, params: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    """Return ``args`` with defaults filled in, or raise CommandError('invalid_args', ...)."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise CommandError("invalid_args", f"{command}: 'args' must be an object, got {type(args).__name__}")
    names = [p["name"] for p in params]
    extra = [k for k in args if k not in names]
    if extra:
        raise CommandError(
            "invalid_args",
            f"{command}: unexpected argument {extra[0]!r} (expects: {', '.join(names) or 'no arguments'})",
        )
    out = {}
    for p in params:
        if p["name"] in args:
            out[p["name"]] = _check_value(p, args[p["name"]], command)
        elif "default" in p:
            out[p["name"]] = p["default"]
        else:
            raise CommandError("invalid_args", f"{command}: missing argument {p['name']!r}")
    return out


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check_value(p: dict[str, Any], value: Any, command: str = "") -> Any:
    prefix = f"{command}: " if command else ""
    t = p["type"]
    ok = {
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "any": True,
    }[t]
    if not ok:
        raise CommandError(
            "invalid_args", f"{prefix}argument {p['name']!r} must be {t}, got {type(value).__name__} {value!r:.40}"
        )
    if t == "number" and not _finite(value):
        raise CommandError("invalid_args", f"{prefix}argument {p['name']!r} must be finite, got {value!r}")
    if "enum" in p and value not in p["enum"]:
        raise CommandError("invalid_args", f"{prefix}argument {p['name']!r} must be one of {p['enum']!r}, got {value!r}")
    if "minimum" in p and value < p["minimum"]:
        raise CommandError("invalid_args", f"{prefix}argument {p['name']!r} must be >= {p['minimum']}, got {value!r}")
    if "maximum" in p and value > p["maximum"]:
        raise CommandError("invalid_args", f"{prefix}argument {p['name']!r} must be <= {p['maximum']}, got {value!r}")
    return value
