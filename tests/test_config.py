"""Tests of device_agent/config.py: turning the MON variable into a MonitorConfig.

Covers MON unset/""/"0" (off), "1" (defaults), inline ``k=v,k=v`` settings, a JSON
config file (by .json name or by a path without ``=``), config_from_dict on a base,
and every ConfigError: unknown key, bad port, bad rate, bad async_mode, bad name,
bad token, bad bridge flag, malformed pair, unintelligible value, non-object JSON,
unreadable JSON, missing file — each message names the bad part. Also the token rule
(settings.check_token) and ``monbridge serve``'s range checks, which come from the same
table of settings (tests/test_settings.py checks that table against every place it reaches).
"""

import json
import os

import pytest

from device_agent.config import MonitorConfig, config_from_dict, parse_mon
from device_agent.errors import ConfigError
from device_agent.settings import check_token

DEFAULTS = MonitorConfig(enabled=True)


def write_json(tmp_path, data, name="mon.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


# -- off and on -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", "0", "  ", " 0 "])
def test_unset_empty_or_zero_disables(value):
    cfg = parse_mon(value)
    assert cfg == MonitorConfig(enabled=False)
    assert cfg.enabled is False


@pytest.mark.parametrize("value", ["1", " 1 "])
def test_one_enables_with_defaults(value):
    cfg = parse_mon(value)
    assert cfg.enabled is True
    assert cfg == DEFAULTS
    # port None: the bridge tries DEFAULT_PORT and takes a free port if that is in use
    assert (cfg.host, cfg.port, cfg.rate, cfg.async_mode, cfg.bridge) == (
        "127.0.0.1", None, 60.0, "eventlet", True,
    )


# -- inline settings --------------------------------------------------------------------------

def test_inline_pairs():
    cfg = parse_mon("port=0,rate=30,name=cam-1,async_mode=threading,bridge=0")
    assert cfg.enabled is True
    assert (cfg.port, cfg.rate, cfg.name, cfg.async_mode, cfg.bridge) == (0, 30.0, "cam-1", "threading", False)
    assert isinstance(cfg.port, int) and isinstance(cfg.rate, float)
    assert cfg.host == DEFAULTS.host  # untouched keys keep their defaults


def test_inline_pairs_tolerate_spaces_and_empty_parts():
    cfg = parse_mon(" port = 9000 , , rate=1000,")
    assert (cfg.port, cfg.rate) == (9000, 1000.0)


def test_inline_values_may_contain_path_separators():
    cfg = parse_mon(f"specs={os.sep}srv{os.sep}specs,log=run{os.sep}bridge.log")
    assert cfg.specs == f"{os.sep}srv{os.sep}specs"
    assert cfg.log == f"run{os.sep}bridge.log"


@pytest.mark.parametrize("raw, expect", [("1", True), ("yes", True), ("ON", True), ("false", False), ("off", False)])
def test_bridge_flag_spellings(raw, expect):
    assert parse_mon(f"bridge={raw}").bridge is expect


def test_token_of_eight_characters_or_empty():
    assert parse_mon("token=abcdefgh").token == "abcdefgh"
    assert parse_mon("token=,port=0").token == ""


# -- JSON file --------------------------------------------------------------------------------

def test_json_file(tmp_path):
    path = write_json(tmp_path, {"port": 0, "rate": 12.5, "host": "0.0.0.0", "bridge": False, "name": "arm"})
    cfg = parse_mon(path)
    assert cfg.enabled is True
    assert (cfg.port, cfg.rate, cfg.host, cfg.bridge, cfg.name) == (0, 12.5, "0.0.0.0", False, "arm")


def test_json_file_without_the_json_suffix(tmp_path):
    path = write_json(tmp_path, {"rate": 5}, name="monitor-settings")
    assert parse_mon(path).rate == 5.0


def test_empty_json_object_gives_defaults(tmp_path):
    assert parse_mon(write_json(tmp_path, {})) == DEFAULTS


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="does not exist") as exc:
        parse_mon(path)
    assert path in str(exc.value)


@pytest.mark.parametrize("data, type_name", [([1, 2], "list"), ("port=1", "str"), (3, "int"), (None, "NoneType")])
def test_json_that_is_not_an_object(tmp_path, data, type_name):
    path = write_json(tmp_path, data)
    with pytest.raises(ConfigError, match=rf"must hold a JSON object, not {type_name}") as exc:
        parse_mon(path)
    assert path in str(exc.value)


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"port": 1,', encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be read") as exc:
        parse_mon(str(path))
    assert str(path) in str(exc.value)


def test_bad_value_in_a_json_file_names_the_file_and_key(tmp_path):
    path = write_json(tmp_path, {"rate": 0})
    with pytest.raises(ConfigError) as exc:
        parse_mon(path)
    assert path in str(exc.value) and "rate=0" in str(exc.value)


@pytest.mark.parametrize("data", [{"port": True}, {"port": 8050.5}, {"rate": True}, {"command_rate": True}])
def test_json_booleans_and_fractions_are_not_ports_or_rates(tmp_path, data):
    # JSON carries real types: true is not port 1 or 1 Hz, 8050.5 is not port 8050.
    with pytest.raises(ConfigError) as exc:
        parse_mon(write_json(tmp_path, data))
    assert next(iter(data)) in str(exc.value)


# -- errors, each naming the bad part ---------------------------------------------------------

def test_unknown_key():
    with pytest.raises(ConfigError, match=r"unknown key 'colour'") as exc:
        parse_mon("port=0,colour=red")
    assert "port" in str(exc.value).split("known:")[1]  # lists the valid keys


def test_enabled_is_not_a_settable_key():
    with pytest.raises(ConfigError, match=r"unknown key 'enabled'"):
        parse_mon("enabled=0")


@pytest.mark.parametrize("port", ["65536", "-1", "http", "80.5", ""])
def test_bad_port(port):
    with pytest.raises(ConfigError, match=r"must be an integer 0-65535") as exc:
        parse_mon(f"port={port}")
    assert f"port={port!r}" in str(exc.value)


@pytest.mark.parametrize("port", ["0", "65535"])
def test_port_limits(port):
    assert parse_mon(f"port={port}").port == int(port)


@pytest.mark.parametrize("rate", ["0", "0.5", "1001", "fast", "nan", "inf"])
def test_bad_rate(rate):
    with pytest.raises(ConfigError, match=r"must be a number of Hz, 1-1000") as exc:
        parse_mon(f"rate={rate}")
    assert f"rate={rate!r}" in str(exc.value)


@pytest.mark.parametrize("mode", ["gevent", "Eventlet", "asyncio", ""])
def test_bad_async_mode(mode):
    with pytest.raises(ConfigError, match=r"must be eventlet or threading") as exc:
        parse_mon(f"async_mode={mode}")
    assert f"async_mode={mode!r}" in str(exc.value)


@pytest.mark.parametrize("name", ["my cam", "a.b", "x" * 49, "é"])
def test_bad_name(name):
    with pytest.raises(ConfigError, match=r"letters, digits") as exc:
        parse_mon(f"name={name}")
    assert repr(name) in str(exc.value)


def test_name_with_a_trailing_newline_is_refused():
    # It would end up inside shared-memory segment names.
    with pytest.raises(ConfigError, match="name="):
        config_from_dict({"name": "cam\n"})


def test_short_token():
    with pytest.raises(ConfigError, match=r"MON: the token is 5 characters, too short; use at least 8 characters"):
        parse_mon("token=short")


@pytest.mark.parametrize("mon, words", [
    ("token=        ", "the token is blank"),           # whitespace only, 8 of it
    ("token=   ,port=0", "the token is blank"),
    ("token=abcd efgh", "contains spaces"),
    ("token=abcdefgh\t", "contains spaces"),
    ("token= abcdefgh", "contains spaces"),              # not trimmed into a valid one
])
def test_blank_or_spaced_token_is_refused_in_mon(mon, words):
    with pytest.raises(ConfigError, match=words):
        parse_mon(mon)


def test_blank_token_is_refused_in_a_json_file():
    with pytest.raises(ConfigError, match="the token is blank"):
        config_from_dict({"token": " " * 12}, source="dev.json")


def test_check_token_rule():
    assert check_token("", "x") == ""                   # none given: a random one is made
    assert check_token("abcdefgh", "x") == "abcdefgh"
    for bad in ("       ", "\u00a0" * 9, "abc\x00defgh", "seven77"):
        with pytest.raises(ConfigError, match="^--token: the token"):
            check_token(bad, "--token")


def test_bad_bridge_flag():
    with pytest.raises(ConfigError, match=r"bridge='maybe'.*must be 0 or 1"):
        parse_mon("bridge=maybe")


def test_non_string_value_for_a_string_key():
    with pytest.raises(ConfigError, match=r"host=5 is invalid: must be a string"):
        config_from_dict({"host": 5}, source="f.json")


@pytest.mark.parametrize("value, part", [("port=0,verbose", "'verbose'"), ("rate=30,, debug ,port=0", "' debug '")])
def test_malformed_pair(value, part):
    with pytest.raises(ConfigError, match=r"is not key=value") as exc:
        parse_mon(value)
    assert part in str(exc.value)


@pytest.mark.parametrize("value", ["yes", "2", "true", "cam"])
def test_unintelligible_value(value):
    with pytest.raises(ConfigError, match=r"is not understood") as exc:
        parse_mon(value)
    assert f"MON={value!r}" in str(exc.value)


def test_config_errors_are_value_errors():
    # Callers that catch ValueError around start() keep working.
    with pytest.raises(ValueError):
        parse_mon("port=x")


# -- config_from_dict -------------------------------------------------------------------------

def test_config_from_dict_builds_on_a_base():
    base = MonitorConfig(enabled=False, port=1234, rate=10.0, name="dev")
    cfg = config_from_dict({"rate": "20"}, source="start()", base=base)
    assert (cfg.enabled, cfg.port, cfg.rate, cfg.name) == (True, 1234, 20.0, "dev")


def test_config_from_dict_error_names_the_source():
    with pytest.raises(ConfigError, match=r"^start\(\): unknown key 'prot'"):
        config_from_dict({"prot": 1}, source="start()")


def test_inline_settings_with_a_json_path_are_not_a_config_file():
    cfg = parse_mon("port=0,log=/tmp/bridge.json")
    assert (cfg.port, cfg.log) == (0, "/tmp/bridge.json")


@pytest.mark.parametrize("argv0, name", [("-c", "c"), ("", "device"), ("/x/my device.py", "my_device"), ("---", "device")])
def test_default_device_name_is_a_valid_name_that_cannot_be_read_as_an_option(monkeypatch, argv0, name):
    import device_agent
    from device_agent.layout import check_name

    monkeypatch.setattr("sys.argv", [argv0])
    assert device_agent.default_device_name() == name
    assert check_name("device", name) == name


@pytest.mark.parametrize("flag, value, words", [
    ("--rate", "5000", "--rate must be from 1 to 1000 Hz, got 5000"),
    ("--command-timeout", "0", "--command-timeout must be from 0.1 to 3600 s, got 0"),
    ("--offline-after", "-1", "--offline-after must be from 0.2 to 3600 s, got -1"),
    ("--command-rate", "nan", "--command-rate must be from 0.1 to 100000 commands/s, got nan"),
])
def test_serve_refuses_out_of_range_settings_before_starting(flag, value, words, capsys):
    from bridge.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--attach", "x", "--port", "0", flag, value])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err
