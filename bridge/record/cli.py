"""``monbridge record``: arguments, the device lookup, signals, progress lines, exit codes.

``add_parser`` is imported by bridge/cli.py for every ``monbridge`` command, so this
module imports only the standard library at the top; ``run`` imports the recorder and
writer.py, and with the writer ``mcap`` (the ``monbridge[record]`` extra), when a recording
actually starts.

Exit codes (docs/recording.md):

| code | meaning |
|---|---|
| 0 | finished: stopped (Ctrl-C, SIGTERM), ``--duration`` reached, or the device closed; the file is renamed |
| 1 | recording failed (disk full, the mcap package missing...); what was written stays in ``NAME.mcap.part`` |
| 2 | bad arguments: an unknown channel, an output file that exists, a bad name |
| 3 | the device is not running (no such name, or only the memory of a device that is gone) |
| 4 | the device stopped beating mid-recording (killed?); the file is finished and holds everything until then |

``--status-file PATH`` is for a program that runs the recorder (the bridge's record button,
bridge/record_control.py): PATH is rewritten atomically (PATH.tmp, then a rename) every
STATUS_PERIOD with ``{"state": "recording", "file", "part", "bytes", "seconds",
"records_per_s", "messages", "missed": {channel: n}, ...}``, and once at the end with
``"state": "finished"`` (plus ``"reason"``, ``"exit_code"``) or ``"failed"`` (plus ``"error"``).
A file beats a pipe: the reader polls it when it likes, and the recorder never blocks on it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import time
from typing import Any

STATUS_PERIOD = 0.5   # s between rewrites of --status-file
RATE_WINDOW = 2.0     # s over which --status-file's records_per_s is measured
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DEVICE, EXIT_DEVICE_LOST = 0, 1, 2, 3, 4


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("record", help="record a running device's channels and state to an MCAP file",
                       description="Record a running device to MCAP (open it in Foxglove or Lichtblick). "
                                   "Written as FILE.part, renamed to FILE when it stops (Ctrl-C, SIGTERM, "
                                   "--duration, or the device closing). Needs: pip install 'monbridge[record]'.")
    p.add_argument("--attach", metavar="NAME", default="auto",
                   help="the device to record (default: the only one running)")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the MCAP file to write, e.g. run.mcap")
    p.add_argument("--channels", metavar="A,B", default=None,
                   help="record only these channels (default: all, including ones the device adds later); "
                        "the state is always recorded")
    p.add_argument("--duration", metavar="S", type=float, default=None, help="stop after S seconds")
    p.add_argument("--specs", metavar="DIR", default=None,
                   help="the view specs to keep in the file (default: as the bridge: ./specs, else the built-in ones)")
    p.add_argument("--progress", metavar="S", type=float, default=5.0, help="seconds between progress lines (default 5)")
    p.add_argument("--chunk-seconds", metavar="S", type=float, default=1.0,
                   help="close a chunk at least this often: at most this much is lost if the recorder is killed (default 1)")
    p.add_argument("--snapshot-every", metavar="S", type=float, default=5.0,
                   help="seconds between full state snapshots (default 5)")
    p.add_argument("--force", action="store_true", help="overwrite FILE and FILE.part if they exist")
    p.add_argument("--status-file", metavar="PATH", default=None,
                   help=f"rewrite PATH with the progress as JSON every {STATUS_PERIOD:g} s, and with the outcome "
                        f"at the end (for programs that run the recorder)")
    p.add_argument("--stop-with-parent", action="store_true",
                   help="stop (and finish the file) when the process that started this one exits")
    return p


class StatusFile:
    """The recording's progress as one JSON object in ``path``, replaced atomically."""

    def __init__(self, path: str | None) -> None:
        self.path = os.path.abspath(path) if path else None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()  # (monotonic, messages)

    def write(self, doc: dict[str, Any]) -> None:
        if self.path is None:
            return
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as exc:  # the status is a courtesy: the recording goes on without it
            say(f"cannot write --status-file {self.path}: {exc}")
            self.path = None

    def rate(self, now: float, messages: int) -> float:
        """Messages per second over the last RATE_WINDOW seconds."""
        self._samples.append((now, messages))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        t0, m0 = self._samples[0]
        return (messages - m0) / (now - t0) if now > t0 else 0.0


def say(text: str) -> None:
    print(f"monbridge record: {text}", file=sys.stderr, flush=True)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def read_specs(directory: str) -> dict[str, str]:
    """{file name: text} of the view specs (*.json) in ``directory``."""
    out: dict[str, str] = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(".json") and os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    out[name] = f.read()
    return out


def open_device(name: str) -> Any:
    """A DeviceAttachment for a running device, or a SystemExit-style (code, message)."""
    from device_agent import layout
    from device_agent.attach import DeviceAttachment, live_devices
    from device_agent.errors import ChannelError, LayoutError

    from .recorder import OFFLINE_AFTER

    live = sorted(live_devices())
    if name == "auto":
        if len(live) != 1:
            return (EXIT_NO_DEVICE, "no device is running; start one (MON=1 python my_device.py) or name it with --attach"
                    if not live else f"several devices are running ({', '.join(live)}): choose one with --attach NAME")
        name = live[0]
    try:
        layout.check_name("device", name)
    except ChannelError as exc:
        return (EXIT_USAGE, f"--attach: {exc}")
    running = f"running: {', '.join(live)}" if live else "no device is running"
    try:
        dev = DeviceAttachment(name)
    except FileNotFoundError:
        return (EXIT_NO_DEVICE, f"no device named {name!r} is running ({running}); check the name with: monbridge list")
    except LayoutError as exc:
        return (EXIT_NO_DEVICE, f"cannot attach to device {name!r}: {exc}")
    if dev.closed or dev.heartbeat_age() > OFFLINE_AFTER:
        pid = dev.writer_pid
        dev.close()
        return (EXIT_NO_DEVICE, f"device {name!r} is not running: its shared memory is left from process {pid}, "
                                f"which is gone ({running}; remove it with: monbridge cleanup)")
    return dev


def run(args: argparse.Namespace) -> int:
    if args.duration is not None and not args.duration > 0:
        say(f"--duration must be a positive number of seconds, got {args.duration:g}")
        return EXIT_USAGE
    for flag, value in (("--progress", args.progress), ("--chunk-seconds", args.chunk_seconds),
                        ("--snapshot-every", args.snapshot_every)):
        if not value > 0:
            say(f"{flag} must be a positive number of seconds, got {value:g}")
            return EXIT_USAGE
    from bridge.sched import request_slice

    request_slice(0)   # the kernel's slice, not the short one of a bridge that started this recorder
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels is not None else None
    if channels is not None and not channels:
        say("--channels is empty: name one or more channels, e.g. --channels joints,camera")
        return EXIT_USAGE
    try:
        from .recorder import Recorder, check_channels
        from .writer import BackgroundWriter, McapFile, OutputExists
    except ImportError as exc:
        say(f"recording needs the mcap package ({exc.name} is missing): pip install 'monbridge[record]'")
        return EXIT_FAILED
    from bridge.resources import specs_dir

    dev = open_device(args.attach)
    if isinstance(dev, tuple):
        say(dev[1])
        return dev[0]
    try:
        try:
            check_channels(dev, channels)
        except ValueError as exc:
            say(str(exc))
            return EXIT_USAGE
        return _record(args, dev, channels, Recorder, lambda path, force: BackgroundWriter(McapFile(path, force)),
                       OutputExists, read_specs(specs_dir(args.specs)))
    finally:
        dev.close()


def _record(args: argparse.Namespace, dev: Any, channels: list[str] | None, Recorder: Any, open_file: Any,
            OutputExists: Any, specs: dict[str, str]) -> int:
    try:
        sink = open_file(args.output, args.force)
    except OutputExists as exc:
        say(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        say(f"cannot write {args.output}: {exc}")
        return EXIT_FAILED
    rec = Recorder(dev, sink, channels, specs, snapshot_every=args.snapshot_every)
    status = StatusFile(args.status_file)
    output = os.path.abspath(args.output)
    parent = os.getppid()
    stop: list[str] = []
    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signal.Signals(signum).name)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    try:
        rec.begin()
        say(f"recording device {dev.device!r} ({', '.join(rec.taps) or 'no channels yet'}) to {sink.part}; "
            f"stop with Ctrl-C")
        start = last_line = last_flush = time.monotonic()
        last_messages = 0
        next_status = start
        while not stop and not rec.stopped:
            rec.poll()
            now = time.monotonic()
            if args.duration is not None and now - start >= args.duration:
                stop.append("duration")
                break
            if now >= next_status:
                next_status = now + STATUS_PERIOD
                if args.stop_with_parent and os.getppid() != parent:  # re-parented: the parent is gone
                    stop.append("parent")
                    break
                if status.path:
                    messages, missed = rec.counts()
                    status.write({"state": "recording", "pid": os.getpid(), "device": dev.device, "file": output,
                                  "part": sink.part, "bytes": sink.bytes_written, "seconds": round(now - start, 3),
                                  "records_per_s": round(status.rate(now, messages), 1), "messages": messages,
                                  "missed": missed, "channels": sorted(rec.taps)})
            if now - last_flush >= args.chunk_seconds:
                sink.flush()
                last_flush = now
            if now - last_line >= args.progress:
                messages, missed = rec.counts()
                rate = (messages - last_messages) / (now - last_line)
                rec.write_status()
                lost = {k: v for k, v in missed.items() if v}
                say(f"{_megabytes(sink.bytes_written)}, {now - start:.1f} s, {rate:.0f} records/s, "
                    f"missed {sum(missed.values())}" + (f" ({', '.join(f'{k} {v}' for k, v in lost.items())})" if lost else ""))
                last_line, last_messages = now, messages
            time.sleep(rec.poll_period)
        reason = rec.stopped or {"duration": "duration reached", "parent": "the process that started it exited"}.get(
            stop[0], f"stopped by {stop[0]}")
        summary = rec.end(reason)
        path = sink.finish()
    except Exception as exc:
        sink.abandon()
        say(f"recording failed: {exc!r}; what was written is in {sink.part}")
        status.write({"state": "failed", "pid": os.getpid(), "device": dev.device, "file": output, "part": sink.part,
                      "error": f"recording failed: {exc!r}", "exit_code": EXIT_FAILED})
        return EXIT_FAILED
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    messages = sum(summary["messages"].values())
    size = os.path.getsize(path)
    say(f"wrote {path} ({_megabytes(size)}, {summary['duration_s']:.1f} s, {messages} messages, "
        f"missed {summary['missed_total']}): {reason}")
    code = EXIT_DEVICE_LOST if rec.stopped and rec.stopped != "device closed" else EXIT_OK
    status.write({"state": "finished", "pid": os.getpid(), "device": dev.device, "file": os.path.abspath(path),
                  "bytes": size, "seconds": summary["duration_s"], "messages": messages, "missed": summary["missed"],
                  "reason": reason, "exit_code": code})
    return code
