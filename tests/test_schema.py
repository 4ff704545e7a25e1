"""Tests of device_agent/schema.py: command parameter schemas and argument validation.

Covers params built from annotations (float/int/bool/str/Literal, defaults, a skipped
``client`` parameter, unannotated → any, unsupported annotations and parameter kinds),
explicit ``params`` dicts, and validate_args: missing, extra, wrong type, enum,
minimum/maximum, NaN/inf, defaults filled in, args that are not an object. Every
rejection is a CommandError with code ``invalid_args`` whose message names the
argument and the bad value.
"""

import math
from typing import Any, Literal, Optional

import pytest

from device_agent.errors import CommandError
from device_agent.schema import (
    check_param,
    params_from_dict,
    params_from_signature,
    validate_args,
)


# -- params from annotations ----------------------------------------------------------------

def test_basic_annotations_map_to_schema_types():
    def move(speed: float, steps: int, enabled: bool, label: str):
        pass

    assert params_from_signature(move) == [
        {"name": "speed", "type": "number"},
        {"name": "steps", "type": "integer"},
        {"name": "enabled", "type": "boolean"},
        {"name": "label", "type": "string"},
    ]


def test_defaults_make_parameters_optional():
    def set_speed(value: float = 1.0, unit: str = "m/s", repeat: int = 3, on: bool = False):
        pass

    params = params_from_signature(set_speed)
    assert [(p["name"], p["default"]) for p in params] == [
        ("value", 1.0), ("unit", "m/s"), ("repeat", 3), ("on", False),
    ]
    assert validate_args("set_speed", params, {}) == {
        "value": 1.0, "unit": "m/s", "repeat": 3, "on": False,
    }


def test_literal_becomes_an_enum():
    def mode(m: Literal["fast", "slow"], gear: Literal[1, 2, 3] = 2):
        pass

    assert params_from_signature(mode) == [
        {"name": "m", "type": "string", "enum": ["fast", "slow"]},
        {"name": "gear", "type": "integer", "enum": [1, 2, 3], "default": 2},
    ]


def test_mixed_literal_is_refused_naming_the_parameter():
    def bad(m: Literal["a", 1]):
        pass

    with pytest.raises(TypeError, match=r"'bad'.*Literal choices of 'm'"):
        params_from_signature(bad)


def test_client_parameter_is_skipped():
    def greet(name: str, client):
        pass

    assert params_from_signature(greet) == [{"name": "name", "type": "string"}]


def test_unannotated_and_any_become_any():
    def anything(x, y: Any, z=5):
        pass

    assert params_from_signature(anything) == [
        {"name": "x", "type": "any"},
        {"name": "y", "type": "any"},
        {"name": "z", "type": "any", "default": 5},
    ]


def test_string_annotations_are_resolved():
    def later(value: "float", n: "int" = 1):
        pass

    assert params_from_signature(later) == [
        {"name": "value", "type": "number"},
        {"name": "n", "type": "integer", "default": 1},
    ]


def test_unresolvable_annotation_is_a_type_error():
    def broken(value: "NoSuchType"):  # noqa: F821
        pass

    with pytest.raises(TypeError, match=r"'broken'.*cannot read annotations"):
        params_from_signature(broken)


@pytest.mark.parametrize("annotation", [list, dict, Optional[float], list[int], bytes])
def test_unsupported_annotation_names_the_parameter(annotation):
    def cmd(good: int, odd_one=None):
        pass

    cmd.__annotations__["odd_one"] = annotation
    with pytest.raises(TypeError) as exc:
        params_from_signature(cmd)
    msg = str(exc.value)
    assert "'cmd'" in msg and "'odd_one'" in msg and "unsupported annotation" in msg


@pytest.mark.parametrize(
    "fn_src",
    [
        "def cmd(*values: float): pass",
        "def cmd(**options: float): pass",
        "def cmd(value: float, /): pass",
    ],
)
def test_non_plain_parameters_are_refused(fn_src):
    ns = {}
    exec(fn_src, ns)
    with pytest.raises(TypeError, match=r"must be a plain named parameter"):
        params_from_signature(ns["cmd"])


@pytest.mark.parametrize(
    "fn_src, name",
    [
        ("def cmd(speed: float = 'fast'): pass", "speed"),
        ("def cmd(steps: int = 1.5): pass", "steps"),
        ("def cmd(flag: bool = 0): pass", "flag"),
        ("def cmd(m: Literal['a', 'b'] = 'c'): pass", "m"),
    ],
)
def test_default_that_does_not_fit_is_refused(fn_src, name):
    ns = {"Literal": Literal}
    exec(fn_src, ns)
    with pytest.raises(TypeError, match=rf"parameter '{name}': default does not fit"):
        params_from_signature(ns["cmd"])


# -- explicit params ------------------------------------------------------------------------

def test_explicit_params_dict():
    params = params_from_dict(
        "set_speed",
        {"value": {"type": "number", "minimum": 0, "maximum": 2, "default": 1.0},
         "note": {"type": "string", "doc": "free text"}},
    )
    assert params == [
        {"name": "value", "type": "number", "minimum": 0, "maximum": 2, "default": 1.0},
        {"name": "note", "type": "string", "doc": "free text"},
    ]
    assert validate_args("set_speed", params, {"note": "hi"}) == {"value": 1.0, "note": "hi"}


def test_explicit_params_must_be_a_dict():
    with pytest.raises(TypeError, match=r"'params' must be a dict"):
        params_from_dict("cmd", [("value", {"type": "number"})])


def test_explicit_param_with_an_unknown_type():
    with pytest.raises(TypeError, match=r"parameter 'value': 'type' must be one of .*got 'float'"):
        params_from_dict("cmd", {"value": {"type": "float"}})


def test_explicit_param_with_an_unknown_key():
    with pytest.raises(TypeError, match=r"parameter 'value': unknown schema keys \['max'\]"):
        params_from_dict("cmd", {"value": {"type": "number", "max": 3}})


def test_explicit_param_with_a_default_out_of_range():
    with pytest.raises(TypeError, match=r"parameter 'value': default does not fit.*>= 0"):
        params_from_dict("cmd", {"value": {"type": "number", "minimum": 0, "default": -1}})


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "number", "minimum": "0"},
        {"type": "integer", "maximum": None},
        {"type": "string", "minimum": 3},
    ],
)
def test_explicit_param_with_a_bound_that_cannot_be_compared_is_refused(spec):
    # A bad bound must be caught when the command is declared, not blow up later in
    # validate_args with a bare TypeError instead of a CommandError.
    with pytest.raises(TypeError, match=r"parameter 'value'"):
        check_param("cmd", {"name": "value", **spec})


# -- validate_args --------------------------------------------------------------------------

SPEED = [{"name": "value", "type": "number", "minimum": 0, "maximum": 2}]


def invalid(command, params, args):
    with pytest.raises(CommandError) as exc:
        validate_args(command, params, args)
    assert exc.value.code == "invalid_args"
    assert exc.value.to_dict() == {"code": "invalid_args", "message": str(exc.value)}
    return str(exc.value)


def test_valid_args_pass_through():
    assert validate_args("set_speed", SPEED, {"value": 1.5}) == {"value": 1.5}


def test_no_params_accepts_none_and_empty():
    assert validate_args("ping", [], None) == {}
    assert validate_args("ping", [], {}) == {}


def test_missing_argument():
    msg = invalid("set_speed", SPEED, {})
    assert "set_speed" in msg and "missing argument 'value'" in msg
    msg = invalid("set_speed", SPEED, None)
    assert "missing argument 'value'" in msg


def test_extra_argument():
    msg = invalid("set_speed", SPEED, {"value": 1, "turbo": True})
    assert "unexpected argument 'turbo'" in msg and "expects: value" in msg
    msg = invalid("ping", [], {"x": 1})
    assert "unexpected argument 'x'" in msg and "no arguments" in msg


@pytest.mark.parametrize("args", [[1.0], "value=1", 3, (1,)])
def test_args_must_be_an_object(args):
    msg = invalid("set_speed", SPEED, args)
    assert "'args' must be an object" in msg and type(args).__name__ in msg


@pytest.mark.parametrize(
    "ptype, value",
    [
        ("number", True),       # bool is not a number
        ("number", False),
        ("number", "1.0"),
        ("number", None),
        ("integer", 1.0),       # a float is not an integer, even a whole one
        ("integer", True),
        ("integer", "3"),
        ("boolean", 1),
        ("boolean", "true"),
        ("string", 5),
        ("string", None),
    ],
)
def test_wrong_type_names_argument_and_value(ptype, value):
    msg = invalid("cmd", [{"name": "arg", "type": ptype}], {"arg": value})
    assert f"argument 'arg' must be {ptype}" in msg
    assert f"got {type(value).__name__} {value!r}" in msg


def test_int_is_accepted_for_number():
    assert validate_args("cmd", [{"name": "x", "type": "number"}], {"x": 2}) == {"x": 2}


def test_any_accepts_any_json_value():
    params = [{"name": "x", "type": "any"}]
    for value in (None, 1, "s", [1, 2], {"a": 1}, True):
        assert validate_args("cmd", params, {"x": value}) == {"x": value}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_rejected(value):
    msg = invalid("cmd", [{"name": "x", "type": "number"}], {"x": value})
    assert "argument 'x' must be finite" in msg and repr(value) in msg


def test_int_too_large_for_a_float_is_rejected_cleanly():
    # JSON allows integers of any length; a float handler cannot take 10**400.
    msg = invalid("cmd", [{"name": "x", "type": "number"}], {"x": 10**400})
    assert "'x'" in msg


def test_enum():
    params = [{"name": "mode", "type": "string", "enum": ["fast", "slow"]}]
    assert validate_args("cmd", params, {"mode": "slow"}) == {"mode": "slow"}
    msg = invalid("cmd", params, {"mode": "warp"})
    assert "argument 'mode' must be one of ['fast', 'slow']" in msg and "'warp'" in msg


@pytest.mark.parametrize(
    "value, fragment",
    [(-0.5, "must be >= 0, got -0.5"), (2.5, "must be <= 2, got 2.5"), (3, "must be <= 2, got 3")],
)
def test_minimum_and_maximum(value, fragment):
    msg = invalid("set_speed", SPEED, {"value": value})
    assert "argument 'value'" in msg and fragment in msg


@pytest.mark.parametrize("value", [0, 2, 0.0, 2.0, 1])
def test_bounds_are_inclusive(value):
    assert validate_args("set_speed", SPEED, {"value": value}) == {"value": value}


def test_defaults_are_filled_and_given_values_win():
    params = [
        {"name": "a", "type": "integer"},
        {"name": "b", "type": "string", "default": "x"},
        {"name": "c", "type": "any", "default": None},
    ]
    assert validate_args("cmd", params, {"a": 1}) == {"a": 1, "b": "x", "c": None}
    assert validate_args("cmd", params, {"a": 1, "b": "y", "c": [1]}) == {"a": 1, "b": "y", "c": [1]}


def test_annotations_and_validation_together():
    def set_mode(mode: Literal["a", "b"], level: int = 0, client=None):
        pass

    params = params_from_signature(set_mode)
    assert validate_args("set_mode", params, {"mode": "b"}) == {"mode": "b", "level": 0}
    assert "'client'" in invalid("set_mode", params, {"mode": "a", "client": "c1"})
    assert "'level' must be integer" in invalid("set_mode", params, {"mode": "a", "level": 0.5})
