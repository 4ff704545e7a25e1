"""The ``monbridge`` command: serve, list, cleanup.

Parses arguments only; heavy imports (flask, eventlet) happen inside ``serve``.
"""

from __future__ import annotations

import argparse
import os
import sys

from device_agent.config import DEFAULT_PORT, check_token
from device_agent.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monbridge", description="Watch and steer a device from a browser.")
    sub = parser.add_subparsers(dest="cmd", required=True)

    serve = sub.add_parser("serve", help="run the bridge for a running device")
    serve.add_argument("--attach", default="auto", metavar="NAME|auto",
                       help="device name to attach to; 'auto' picks the only running device (default)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None,
                       help=f"port (default {DEFAULT_PORT}, or a free one if that is taken; 0 picks a free one)")
    serve.add_argument("--rate", type=float, default=60.0, help="maximum relay rate in Hz (default 60)")
    serve.add_argument("--async-mode", choices=("eventlet", "threading"), default="eventlet")
    serve.add_argument("--specs", default="", help="directory of view files (default ./specs)")
    serve.add_argument("--static", default=None, help="directory of the built web UI (default webui/static)")
    serve.add_argument("--token", default=None,
                       help="access token (default: $MONBRIDGE_TOKEN, else a random one)")
    serve.add_argument("--log", default="", help="log file (default stderr)")
    serve.add_argument("--command-timeout", type=float, default=5.0, help="seconds to wait for a reply (default 5)")
    serve.add_argument("--offline-after", type=float, default=1.0,
                       help="heartbeat age in seconds after which the device counts as offline (default 1)")
    serve.add_argument("--command-rate", type=float, default=100.0, help="commands per second per client; bursts of max(10, twice that) (default 100)")
    serve.add_argument("--exit-with-device", action="store_true",
                       help="exit when the device closes (used when a device launches its bridge)")

    sub.add_parser("list", help="list devices that have shared memory in /dev/shm")
    clean = sub.add_parser("cleanup", help="remove shared memory left by devices that are gone")
    clean.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    return parser


SERVE_RANGES = [  # (flag, low, high, unit) checked before anything starts
    ("--rate", 1, 1000, "Hz"),
    ("--command-timeout", 0.1, 3600, "s"),
    ("--offline-after", 0.2, 3600, "s"),
    ("--command-rate", 0.1, 100_000, "commands/s"),
]


def _green() -> None:
    """Monkey-patch for eventlet before flask, socketio or our own servers are imported."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EventletDeprecationWarning: known, see DESIGN.md
        import eventlet

        eventlet.monkey_patch()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        for flag, low, high, unit in SERVE_RANGES:
            got = getattr(args, flag.lstrip("-").replace("-", "_"))
            if not low <= got <= high:  # NaN fails too
                parser.exit(2, f"monbridge serve: {flag} must be from {low:g} to {high:g} {unit}, got {got:g}\n")
    if args.cmd == "serve" and args.async_mode == "eventlet":
        _green()
    if args.cmd == "cleanup":
        from device_agent.cleanup import main as cleanup_main

        return cleanup_main(["--dry-run"] if args.dry_run else [])
    if args.cmd == "list":
        from device_agent.cleanup import scan

        devices = scan()
        for dev in devices:
            status = "running" if dev.alive else "gone (run: monbridge cleanup)"
            print(f"{dev.device}\tpid {dev.pid}\t{status}\t{len(dev.segments)} segments")
        if not devices:
            print("no devices")
        return 0
    if args.token is None:
        args.token, source = os.environ.get("MONBRIDGE_TOKEN", ""), "MONBRIDGE_TOKEN"
    else:
        source = "--token"
    try:
        check_token(args.token, source)
    except ConfigError as exc:
        parser.exit(2, f"monbridge serve: {exc}\n")
    from bridge.server import serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
