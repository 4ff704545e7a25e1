"""``monbridge serve --publish`` / ``--edge`` refuse what cannot work, before anything starts,
with a message that says what to do: not a Redis URL, both at once, redis-py missing, no
Redis to list devices from with ``--attach auto``. The working paths run end to end in
tests/test_fleet_bridges.py."""

from __future__ import annotations

import json
import socket

from bridge.cli import build_parser, check_serve_args
from bridge.server import Options, _attach_problem


def options(**kw: object) -> Options:
    return Options(**kw)


def closed_port() -> int:
    with socket.socket() as s:   # bound, never listening: connecting is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_that_is_not_redis_is_refused_naming_the_option(monkeypatch):
    monkeypatch.delenv("MONBRIDGE_PUBLISH", raising=False)
    args = build_parser().parse_args(["serve", "--attach", "arm", "--publish", "http://redis:6379"])
    problem = check_serve_args(args)
    assert problem is not None and "--publish" in problem and "is not a Redis URL" in problem
    assert "redis://HOST:PORT" in problem


def test_a_url_from_the_environment_is_checked_too(monkeypatch):
    monkeypatch.setenv("MONBRIDGE_EDGE", "localhost:6379")
    args = build_parser().parse_args(["serve"])
    problem = check_serve_args(args)
    assert problem is not None and "MONBRIDGE_EDGE" in problem and "not a Redis URL" in problem


def test_publish_and_edge_together_are_refused():
    problem = _attach_problem(options(attach="arm", publish="redis://a:1", edge="redis://b:2"))
    assert problem is not None and "--publish and --edge together" in problem


def test_neither_is_no_problem_and_a_named_device_is_kept():
    assert _attach_problem(options()) is None
    named = options(attach="arm", edge="redis://127.0.0.1:1")
    assert _attach_problem(named) is None and named.attach == "arm"


def test_an_edge_with_attach_auto_and_no_redis_says_so():
    problem = _attach_problem(options(edge=f"redis://127.0.0.1:{closed_port()}"))
    assert problem is not None and "cannot reach Redis" in problem and "--attach NAME" in problem


def test_without_redis_py_the_message_says_what_to_install(run_python):
    done = run_python("""
        import json, sys
        sys.modules["redis"] = None          # as if redis-py were not installed
        from bridge.server import Options, _attach_problem
        print(json.dumps([_attach_problem(Options(attach="arm", publish="redis://127.0.0.1:6379")),
                          _attach_problem(Options(attach="arm", edge="redis://127.0.0.1:6379"))]))
    """)
    assert done.returncode == 0, done.stderr
    publish, edge = json.loads(done.stdout)
    assert publish.startswith("--publish needs redis-py") and 'pip install "monbridge[fleet]"' in publish
    assert edge.startswith("--edge needs redis-py")


def test_a_url_is_shown_without_its_user_and_password():
    from bridge.fleet.streams import shown_url

    assert shown_url("redis://edge:S3CRET@redis.lab:6379/0") == "redis://redis.lab:6379/0"
    assert shown_url("rediss://redis.lab:6380") == "rediss://redis.lab:6380"


def test_an_attach_that_is_not_names_or_several_devices_with_exit_with_device_are_refused():
    problem = _attach_problem(options(attach="arm1,arm 2"))
    assert problem is not None and "--attach 'arm1,arm 2'" in problem and "separated by commas" in problem
    problem = _attach_problem(options(attach="a/b"))
    assert problem is not None and "1-48 letters" in problem
    problem = _attach_problem(options(attach="all", exit_with_device=True))
    assert problem is not None and "--exit-with-device serves one device" in problem
    assert _attach_problem(options(attach="arm1,cam2")) is None and _attach_problem(options(attach="all")) is None


def test_publish_frames_is_watched_or_all_and_only_for_an_origin(monkeypatch, capsys):
    monkeypatch.delenv("MONBRIDGE_PUBLISH", raising=False)
    assert build_parser().parse_args(["serve", "--publish-frames", "all"]).publish_frames == "all"
    assert build_parser().parse_args(["serve"]).publish_frames == "watched"
    try:
        build_parser().parse_args(["serve", "--publish-frames", "some"])
    except SystemExit as exc:
        assert exc.code == 2 and "invalid choice: 'some'" in capsys.readouterr().err
    else:
        raise AssertionError("--publish-frames some was accepted")
    problem = _attach_problem(options(attach="arm", publish_frames="all"))
    assert problem is not None and "--publish-frames is for an origin" in problem
    assert _attach_problem(options(attach="arm", publish="redis://a:1", publish_frames="all")) is None
