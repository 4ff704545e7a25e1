"""The ``monbridge`` command: serve, list, cleanup, record, replay, recordings.

Parses and checks arguments only; heavy imports (flask, eventlet) happen inside ``serve``,
and mcap (the ``monbridge[record]`` extra) only inside ``record`` (bridge/record/cli.py),
``replay`` and ``recordings`` (bridge/record/replay_cli.py).
The ``serve`` options, their defaults and their rules come from device_agent/settings.py,
the one table of settings that MON and the bridge's Options are made from too.
"""

from __future__ import annotations

import argparse
import os
import sys

from device_agent.errors import ConfigError
from device_agent.settings import Use, settings_for
from device_agent.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monbridge", description="Watch and steer a device from a browser.")
    parser.add_argument("--version", action="version", version=f"monbridge {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)

    serve = sub.add_parser("serve", help="run the bridge for a running device")
    for s in settings_for(Use.CLI):
        if s.type is bool:  # a switch, off by default (tests/test_settings.py)
            serve.add_argument(s.flag, action="store_true", help=s.help)
        else:
            # a setting read from the environment defaults to None here: "not given"
            serve.add_argument(s.flag, type=s.type, default=None if s.env else s.default,
                               help=f"{s.help} (default {s.shown_default()})",
                               choices=s.choices or None, metavar=s.metavar)

    sub.add_parser("list", help="list devices that have shared memory in /dev/shm")
    clean = sub.add_parser("cleanup", help="remove shared memory left by devices that are gone")
    clean.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    from bridge.record.cli import add_parser as add_record_parser  # standard library only

    add_record_parser(sub)
    from bridge.record.replay_cli import add_parsers as add_replay_parsers  # standard library only

    add_replay_parsers(sub)
    return parser


def check_serve_args(args: argparse.Namespace) -> str | None:
    """Check ``serve``'s settings before anything starts, filling those read from the
    environment; return what is wrong (the whole message), or None."""
    for s in settings_for(Use.CLI):
        value = getattr(args, s.name)
        source = s.flag
        if value is None and s.env:
            value, source = os.environ.get(s.env, ""), s.env
            setattr(args, s.name, value)
        if value is None or isinstance(value, bool):
            continue
        if s.type in (int, float):
            problem = s.range_problem(value)
            if problem:
                return f"monbridge serve: {s.flag} {problem}, got {value:g}"
        if s.check is not None:
            try:
                s.check(value, source)
            except ConfigError as exc:
                return f"monbridge serve: {exc}"
    return None


def _green() -> None:
    """Monkey-patch for eventlet before flask, socketio or our own servers are imported."""
    import warnings

    with warnings.catch_warnings():
        # EventletDeprecationWarning: known and harmless (docs/troubleshooting.md#eventletdeprecationwarning)
        warnings.simplefilter("ignore")
        import eventlet

        eventlet.monkey_patch()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        problem = check_serve_args(args)
        if problem:
            parser.exit(2, problem + "\n")
    if args.cmd == "serve" and args.async_mode == "eventlet":
        _green()
    if args.cmd == "cleanup":
        from device_agent.cleanup import main as cleanup_main

        return cleanup_main(["--dry-run"] if args.dry_run else [])
    if args.cmd == "record":
        from bridge.record.cli import run as record

        return record(args)
    if args.cmd == "replay":
        from bridge.record.replay_cli import run_replay

        return run_replay(args)
    if args.cmd == "recordings":
        from bridge.record.replay_cli import run_recordings

        return run_recordings(args)
    if args.cmd == "list":
        from device_agent.cleanup import scan

        devices = scan()
        for dev in devices:
            status = "running" if dev.alive else "gone (run: monbridge cleanup)"
            print(f"{dev.device}\tpid {dev.pid}\t{status}\t{len(dev.segments)} segments")
        if not devices:
            print("no devices")
        return 0
    from bridge.server import serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
