"""device_agent/settings.py is the one description of the settings: MON's keys (MonitorConfig),
the ``monbridge serve`` options, the bridge's Options and the options a device passes to the
bridge it launches are all made from it, and docs/configuration.md lists exactly its keys
and options. These tests catch a setting that exists in one place and not another.
"""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from bridge.cli import build_parser, check_serve_args
from conftest import REPO
from device_agent.config import MonitorConfig, parse_mon
from device_agent.errors import ConfigError
from device_agent.settings import SETTINGS, TOKEN_ENV, Use, convert, serve_args, settings_for

MON_KEYS = [s.name for s in settings_for(Use.MON)]
CLI_FLAGS = [s.flag for s in settings_for(Use.CLI)]


def serve_namespace(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_names_are_unique_and_settings_apply_somewhere():
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    assert all(s.use for s in SETTINGS)


def test_every_number_has_a_range():
    assert [s.name for s in SETTINGS if s.type in (int, float) and (s.low is None or s.high is None)] == []


@pytest.mark.parametrize("s", settings_for(Use.MON), ids=lambda s: s.name)
def test_every_mon_default_passes_its_own_rule(s):
    if s.default is not None:
        assert convert(s.name, s.default, "test") == s.default


@pytest.mark.parametrize("s", settings_for(Use.CLI), ids=lambda s: s.name)
def test_every_cli_default_passes_its_own_rule(s):
    if isinstance(s.default, (int, float)) and not isinstance(s.default, bool):
        assert s.range_problem(s.default) is None
    if s.type is bool:
        assert s.default is False, f"{s.flag} is a switch: it must be off by default"


def test_monitor_config_has_a_field_per_mon_key_with_its_default():
    assert [f.name for f in fields(MonitorConfig)] == ["enabled", *MON_KEYS]
    config = MonitorConfig()
    assert all(getattr(config, s.name) == s.default for s in settings_for(Use.MON))


def test_bridge_options_have_a_field_per_setting_with_its_default():
    from bridge.server import Options

    assert [f.name for f in fields(Options)] == ["require_token", *[s.name for s in settings_for(Use.OPTIONS)]]
    options = Options()
    assert all(getattr(options, s.name) == s.default for s in settings_for(Use.OPTIONS))


def test_serve_has_an_option_per_cli_setting_with_its_default(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = serve_namespace()
    assert check_serve_args(args) is None
    for s in settings_for(Use.CLI):
        assert getattr(args, s.name) == s.default, s.flag


def test_every_option_goes_into_options():
    """serve() builds Options from the parsed options, so every option must be a field."""
    assert {s.name for s in settings_for(Use.CLI)} <= {s.name for s in settings_for(Use.OPTIONS)}


NON_DEFAULT = {  # a value other than the default for every setting that is a MON key and an option
    "host": "127.0.0.2", "port": 0, "rate": 30.0, "specs": "/srv/specs", "token": "abcdefghij",
    "async_mode": "threading", "log": "/tmp/bridge.log", "command_timeout": 2.5, "offline_after": 3.0,
    "command_rate": 7.5, "cpu_slice": 2.0, "publish": "redis://user:secret@127.0.0.1:6399", "publish_frames": "all",
}


def test_non_default_covers_every_setting_a_device_passes_on():
    assert set(NON_DEFAULT) == {s.name for s in settings_for(Use.MON | Use.CLI)}


def test_what_a_device_sets_reaches_the_bridge_it_launches(monkeypatch):
    """MON -> MonitorConfig -> serve_args (the launched bridge's argv) -> the bridge's options:
    every value arrives; the token travels in MONBRIDGE_TOKEN, never on the command line."""
    config = parse_mon(",".join(f"{k}={v}" for k, v in NON_DEFAULT.items()))
    argv = serve_args(config)
    assert NON_DEFAULT["token"] not in " ".join(argv) and "--token" not in argv
    assert "secret" not in " ".join(argv) and "--publish" not in argv   # a Redis password neither
    monkeypatch.setenv(TOKEN_ENV, config.token)
    monkeypatch.setenv("MONBRIDGE_PUBLISH", config.publish)   # as the monitor passes it (monitor.py)
    args = serve_namespace("--attach=dev", *argv)
    assert check_serve_args(args) is None
    assert {name: getattr(args, name) for name in NON_DEFAULT} == NON_DEFAULT


def test_a_device_at_the_defaults_passes_no_settings():
    assert serve_args(parse_mon("1")) == []


@pytest.mark.parametrize("key, good, bad, words", [
    ("command_rate", "5", "0", "must be a number of commands/s, 0.1-100000"),
    ("command_timeout", "0.5", "3601", "must be a number of seconds, 0.1-3600"),
    ("offline_after", "2", "0.1", "must be a number of seconds, 0.2-3600"),
    ("cpu_slice", "0", "-1", "must be a number of milliseconds, 0-100"),
])
def test_the_bridge_settings_are_mon_keys_too(key, good, bad, words):
    assert getattr(parse_mon(f"{key}={good}"), key) == float(good)
    with pytest.raises(ConfigError, match=re.escape(f"MON: {key}={bad!r} is invalid: {words}")):
        parse_mon(f"{key}={bad}")


def test_serve_refuses_a_port_out_of_range(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert check_serve_args(serve_namespace("--port", "65536")) == (
        "monbridge serve: --port must be from 0 to 65535, got 65536")


def test_serve_refuses_a_cpu_slice_out_of_range(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert check_serve_args(serve_namespace("--cpu-slice", "-1")) == (
        "monbridge serve: --cpu-slice must be from 0 to 100 ms, got -1")


def test_serve_reads_the_token_from_the_environment_only_without_the_option(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    args = serve_namespace()
    assert check_serve_args(args) is None and args.token == "from-the-environment"
    args = serve_namespace("--token", "")
    assert check_serve_args(args) is None and args.token == ""


# -- docs/configuration.md lists the same keys and options --------------------------------

def table_first_cells(section: str, level: str) -> list[str]:
    """The first code span of each row of the tables in ``section`` of docs/configuration.md."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    start = text.index(f"\n{level} {section}\n")
    end = text.find(f"\n{level} ", start + 1)
    body = text[start:end if end != -1 else None]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)`", body, re.MULTILINE)]


def test_the_docs_list_every_mon_key():
    assert table_first_cells("Keys", "###") == MON_KEYS


def test_the_docs_list_every_serve_option():
    documented = [cell.split()[0] for cell in table_first_cells("monbridge serve", "##")]
    assert documented == CLI_FLAGS
