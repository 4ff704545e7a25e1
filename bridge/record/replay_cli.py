"""``monbridge replay`` (a device process that plays a recording again) and ``monbridge
recordings`` (list the recordings in a folder).

``add_parsers`` is imported by bridge/cli.py for every ``monbridge`` command, so this module
imports only the standard library at the top; ``run_replay`` imports reader.py (and with
it ``mcap``, the ``monbridge[record]`` extra) and device_agent when a replay starts.

The replay is an ordinary device: it calls ``device_agent.start()``, which creates the
channels' shared memory and launches the unchanged bridge. Monitoring is always on — a
replay nobody can watch is pointless — so an unset, empty or ``0`` ``MON`` counts as
``MON=1``; every other ``MON`` (``port=0``, ``bridge=0``, a JSON file...) is used as it is,
and ``--port``/``--host``/``--token``/``--rate`` override it.

Exit codes:

| code | meaning |
|---|---|
| 0 | stopped (Ctrl-C, SIGTERM), or ``--exit-at-end`` and the end was reached |
| 1 | failed: the mcap package missing, the device could not publish |
| 2 | bad arguments: no such file, not an MCAP file, nothing in it to play, a device name in use |
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POLL_PERIOD = 0.02     # s: the longest sleep of the loop, so commands wait at most this long
MIN_TICK = 0.0125      # s: the shortest time between two ticks, so records go out in batches: the cost
                       # of a tick is mostly waking up (0.1-0.5 ms here), whatever it publishes; messages
                       # go out within half of this of their due time (Player's lead): p99 ~6.7 ms
COMMANDS_EVERY = 0.02  # s between two looks at the command queue: a command waits at most this long
STATUS_EVERY = 0.25    # s between updates of the replay_* state keys while playing
SPEED_LIMITS = "0.1 to 20"


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("replay", help="play a recording again as a device, into the dashboard",
                       description="Play an MCAP recording (monbridge's, or any file with Foxglove schemas or "
                                   "JSON numbers) as a device on its recorded timing; the bridge serves it and "
                                   "prints the dashboard URL. Commands: pause, resume, seek(t), speed(value). "
                                   "Needs: pip install 'monbridge[record]'.")
    p.add_argument("file", help="the recording: run.mcap, or a run.mcap.part left by a killed recorder")
    p.add_argument("--speed", metavar="X", type=speed_arg, default=1.0,
                   help=f"times the recorded pace, {SPEED_LIMITS} (default 1); max: as fast as the file can be "
                        f"read (frames: the newest of each quarter second of the recording)")
    p.add_argument("--loop", action="store_true", help="start again from the beginning at the end")
    p.add_argument("--paused", action="store_true", help="start paused at the beginning (resume from the dashboard)")
    p.add_argument("--exit-at-end", action="store_true",
                   help="exit when the end is reached (default: stay paused at the end, serving the dashboard)")
    p.add_argument("--name", metavar="NAME", default=None,
                   help="the device name (default: MON's name, else the recorded device's name)")
    p.add_argument("--specs", metavar="DIR", default=None,
                   help="serve these view specs instead of the ones kept in the recording")
    p.add_argument("--specs-out", metavar="DIR", default=None,
                   help="write the recording's view specs to DIR (created) and serve them from there, to keep "
                        "or edit them (default: a temporary directory, removed at exit)")
    for flag, kind, what in (("--port", int, "the bridge's port (0: a free one)"), ("--host", str, "the bridge's address"),
                             ("--token", str, "the dashboard's access token"), ("--rate", float, "the bridge's relay rate, Hz")):
        p.add_argument(flag, type=kind, default=None, help=f"{what}; overrides MON's {flag[2:]}")

    r = sub.add_parser("recordings", help="list the MCAP recordings in a folder",
                       description="List the *.mcap files (and *.mcap.part files of recordings that did not finish) "
                                   "in a folder, with size, duration, device and channels.")
    r.add_argument("folder", nargs="?", default=".", help="the folder (default: the current one)")
    r.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def say(text: str) -> None:
    print(f"monbridge replay: {text}", file=sys.stderr, flush=True)


def speed_arg(text: str) -> float:
    """--speed: a number, or ``max`` (inf: replay.FLAT_OUT); the range is checked by run_replay."""
    if text.strip().lower() == "max":
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, nor max") from None


# -- what a replay publishes into --------------------------------------------------------

class DeviceOutput:
    """The replay's ``Output`` (replay.py): the channels of a ``device_agent`` monitor.
    ``refused`` counts what the device would not take (an event over ``max_bytes``...)."""

    def __init__(self, mon: Any, channels: dict[str, Any]) -> None:
        from device_agent.errors import ChannelError

        self._errors = (ChannelError,)
        self.mon = mon
        self.channels = channels
        self.refused: dict[str, int] = {}

    def _refuse(self, track: str) -> None:
        self.refused[track] = self.refused.get(track, 0) + 1

    def records(self, track: str, rows: Any) -> None:
        self.channels[track].publish_many(rows)

    def frame(self, track: str, array: Any, t: float) -> None:
        try:
            self.channels[track].publish(array, t=t)
        except self._errors:
            self._refuse(track)

    def event(self, track: str, message: Any, t: float) -> None:
        try:
            self.channels[track].publish(message, t=t)
        except self._errors:
            self._refuse(track)

    def state(self, values: dict[str, Any]) -> None:
        # a recording of a replay: its replay_* keys are this replay's own
        values = {k: v for k, v in values.items() if not k.startswith("replay_")}
        if values:
            try:
                self.mon.state.update(values)
            except self._errors:
                self._refuse("state")


# -- views -------------------------------------------------------------------------------

def generated_specs(tracks: dict[str, Any]) -> dict[str, str]:
    """Views for a recording that keeps none (a file monbridge did not write): a line chart
    per records channel, a 3D scene with the clouds and 8-bit images, a log per events channel."""
    specs: dict[str, str] = {}
    objects: list[dict[str, Any]] = []
    for order, (name, track) in enumerate(sorted(tracks.items()), start=1):
        if track.kind == "records":
            dtype = track.declare["fields"]
            fields = [n for n in dtype.names if n != "t" and not dtype[n].shape][:12]
            specs[f"{name}.vl.json"] = json.dumps({
                "usermeta": {"title": name, "order": order, "window": {"seconds": 10}, "rate": 30},
                "width": "container", "height": 300, "autosize": {"type": "fit-x", "contains": "padding"},
                "data": {"name": name}, "transform": [{"fold": fields, "as": ["field", "value"]}],
                "mark": "line",
                "encoding": {"x": {"field": "time", "type": "temporal", "title": "recorded time"},
                             "y": {"field": "value", "type": "quantitative"},
                             "color": {"field": "field", "type": "nominal", "title": None}}}, indent=1)
        elif track.kind == "events":
            specs[f"{name}.vl.json"] = json.dumps({
                "usermeta": {"title": name, "order": order, "window": {"rows": 20}, "rate": 10},
                "width": "container", "height": 400, "autosize": {"type": "fit-x", "contains": "padding"},
                "data": {"name": name},
                "transform": [{"window": [{"op": "row_number", "as": "row"}], "sort": [{"field": "seq", "order": "descending"}]},
                              {"calculate": "datum.msg ? datum.msg : datum.message", "as": "line"}],
                "mark": {"type": "text", "align": "left"},
                "encoding": {"y": {"field": "row", "type": "ordinal", "axis": None}, "x": {"value": 0},
                             "text": {"field": "line"}}}, indent=1)
        else:
            shape, dtype = track.declare["shape"], track.declare["dtype"]
            if dtype.kind == "f" and len(shape) == 2 and shape[1] in (3, 6):
                objects.append({"type": "points", "channel": name, "size": 0.02})
            elif dtype.kind == "u" and dtype.itemsize == 1 and len(shape) in (2, 3):
                objects.append({"type": "image", "channel": name, "position": [0, 2 + len(objects), 1], "width": 2})
    if objects:
        specs["replay.scene.json"] = json.dumps({
            "title": "3D", "order": 0, "rate": 30,
            "objects": [{"type": "grid", "size": 10, "divisions": 20, "plane": "xy"}, {"type": "axes", "size": 1}, *objects]},
            indent=1)
    return specs


def write_specs(specs: dict[str, str], folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, text in specs.items():
        if os.path.basename(name) != name or name.startswith("."):
            continue   # a name that would leave the folder
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)


# -- monbridge replay --------------------------------------------------------------------

def monitor_settings(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> tuple[str, dict[str, Any]]:
    """(MON text, keyword settings) for device_agent.start(): MON as given, or "1" when it
    leaves monitoring off; the flags that were given override it."""
    mon = environ.get("MON", "")
    if mon.strip() in ("", "0"):
        mon = "1"
    settings = {k: getattr(args, k) for k in ("port", "host", "token", "rate") if getattr(args, k) is not None}
    return mon, settings


def run_replay(args: argparse.Namespace) -> int:
    try:
        from .replay import check_speed
        check_speed(args.speed, flat_out=True)
    except ValueError as exc:
        say(f"--speed: {exc}")
        return EXIT_USAGE
    if not os.path.isfile(args.file):
        say(f"no such file: {args.file} (list the recordings of a folder with: monbridge recordings DIR)")
        return EXIT_USAGE
    if args.specs is not None and not os.path.isdir(args.specs):
        say(f"--specs {args.specs} is not a directory")
        return EXIT_USAGE
    try:
        from .reader import RecordingError, open_recording
    except ImportError as exc:
        say(f"replay needs the mcap package ({exc.name} is missing): pip install 'monbridge[record]'")
        return EXIT_FAILED
    try:
        recording = open_recording(args.file)
    except (RecordingError, OSError) as exc:
        say(f"cannot replay {args.file}: {exc}")
        return EXIT_USAGE
    try:
        if not recording.tracks and not recording.states:
            why = "; ".join(f"{topic}: {reason}" for topic, reason in recording.skipped) or "it holds no messages"
            say(f"nothing to replay in {args.file}: {why}")
            return EXIT_USAGE
        return _replay(args, recording)
    finally:
        recording.close()


def _replay(args: argparse.Namespace, recording: Any) -> int:
    import device_agent   # the one device_agent import of the bridge that is not the reading side (tests/test_layers.py)
    from device_agent.errors import ChannelError, ConfigError, DeviceNameInUse

    from .reader import RecordingError
    from .replay import Player, PlaybackClock

    stop: list[str] = []
    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signal.Signals(signum).name)
    # our own handlers, set before start(): device_agent then leaves SIGTERM to us, and the
    # loop ends, closes the monitor and removes the temporary specs
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    temp_specs: str | None = None
    mon = None
    try:
        specs_dir = args.specs
        if specs_dir is None:
            specs = recording.specs or generated_specs(recording.tracks)
            if args.specs_out is not None:
                specs_dir = args.specs_out
            else:
                specs_dir = temp_specs = tempfile.mkdtemp(prefix="monbridge-replay-specs-")
            write_specs(specs, specs_dir)
        mon_text, settings = monitor_settings(args, os.environ)
        try:
            name = args.name or device_agent.parse_mon(mon_text).name or recording.device
            mon = device_agent.start(name, dispatch="manual", mon=mon_text, specs=os.path.abspath(specs_dir), **settings)
            channels = _declare(mon, recording)
        except (ConfigError, ChannelError) as exc:
            say(str(exc))
            return EXIT_USAGE
        except DeviceNameInUse as exc:
            say(f"{exc}; or replay under another name with --name")
            return EXIT_USAGE
        output = DeviceOutput(mon, channels)
        clock = PlaybackClock(recording.duration_ns, time.monotonic(), speed=args.speed, playing=False)
        player = Player(recording, output, clock, loop=args.loop, lead=MIN_TICK / 2)
        player.prepare(time.monotonic())   # the recorded state at the start; the first messages read
        if not args.paused:
            clock.resume(time.monotonic())
        changed = _declare_commands(mon, clock, recording.duration_ns)
        mon.state.update(player.status(time.monotonic()), replay_file=os.path.basename(recording.path))
        _say_start(recording, mon.name, specs_dir if args.specs or args.specs_out else None)
        try:
            return _loop(args, mon, player, clock, changed, stop)
        except RecordingError as exc:
            say(f"stopped: {exc}")
            return EXIT_FAILED
    finally:
        if mon is not None:
            mon.close()
        if temp_specs is not None:
            shutil.rmtree(temp_specs, ignore_errors=True)
        for s, handler in old.items():
            signal.signal(s, handler)


def _declare(mon: Any, recording: Any) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for name, track in recording.tracks.items():
        if track.kind == "records":
            channels[name] = mon.records(name, track.declare["fields"], capacity=track.declare["capacity"])
        elif track.kind == "frame":
            channels[name] = mon.frame(name, track.declare["shape"], dtype=track.declare["dtype"],
                                       slots=track.declare["slots"])
        else:
            channels[name] = mon.events(name, capacity=track.declare["capacity"], max_bytes=track.declare["max_bytes"])
    return channels


def _declare_commands(mon: Any, clock: Any, duration_ns: int) -> list[bool]:
    """The replay's commands; they run in the loop's thread (dispatch="manual"), between two
    ticks. The returned flag is set when one changed the clock (the loop then publishes the
    replay_* keys at once)."""
    changed = [False]
    duration = duration_ns / 1e9

    @mon.command
    def pause() -> float:
        """Pause the replay; returns the position in seconds."""
        now = time.monotonic()
        clock.pause(now)
        changed[0] = True
        return round(clock.position(now) / 1e9, 3)

    @mon.command
    def resume() -> float:
        """Play on (from the start when at the end); returns the position in seconds."""
        now = time.monotonic()
        clock.resume(now)
        changed[0] = True
        return round(clock.position(now) / 1e9, 3)

    @mon.command(coalesce=True, params={"t": {"type": "number", "minimum": 0, "maximum": duration,
                                              "doc": "seconds from the start of the recording"}})
    def seek(t: float) -> float:
        """Jump to t seconds from the start; charts should clear (replay_epoch changes)."""
        clock.seek(round(t * 1e9), time.monotonic())
        changed[0] = True
        return round(t, 3)

    @mon.command(coalesce=True, params={"value": {"type": "number", "minimum": 0.1, "maximum": 20,
                                                  "doc": "times the recorded pace"}})
    def speed(value: float) -> float:
        """Play at value times the recorded pace (0.1 to 20)."""
        clock.set_speed(value, time.monotonic())
        changed[0] = True
        return clock.speed

    return changed


def _say_start(recording: Any, name: str, specs_dir: str | None) -> None:
    kinds = ", ".join(f"{n} ({t.kind}{'' if t.origin == 'recorded' else ', ' + t.origin})"
                      for n, t in recording.tracks.items())
    what = f"device {recording.device!r}" if recording.monbridge else "a file monbridge did not write"
    say(f"playing {recording.path} ({what}, {recording.duration_ns / 1e9:.1f} s"
        f"{'' if recording.complete else ', unfinished: read into memory'}) as device {name!r}: "
        f"{kinds or 'state only'}; commands pause, resume, seek(t), speed(value); stop with Ctrl-C")
    for topic, reason in recording.skipped:
        say(f"not replayed: {topic}: {reason}")
    if specs_dir:
        say(f"views from {specs_dir}")


def _loop(args: argparse.Namespace, mon: Any, player: Any, clock: Any, changed: list[bool], stop: list[str]) -> int:
    last_status = started = time.monotonic()
    sent = player.status(last_status)
    announced_end = False
    next_commands = 0.0
    while not stop:
        now = time.monotonic()
        if now >= next_commands:
            mon.poll()
            now, next_commands = time.monotonic(), now + COMMANDS_EVERY
        wait = player.tick(now)
        if changed[0] or now - last_status >= STATUS_EVERY or player.ended != announced_end:
            changed[0] = False
            last_status = now
            status = player.status(now)
            news = {k: v for k, v in status.items() if sent.get(k) != v or type(sent.get(k)) is not type(v)}
            if news:            # nothing while paused: the state is written only when it changes
                mon.state.update(news)
                sent = status
        if player.ended and not announced_end:
            say(f"reached the end ({clock.duration_ns / 1e9:.1f} s of recording, {now - started:.2f} s since the replay "
                f"began); "
                + ("exiting (--exit-at-end)" if args.exit_at_end else "paused there: seek or resume to play again"))
        announced_end = player.ended
        if player.ended and args.exit_at_end:
            break
        if clock.speed == math.inf and clock.playing:
            time.sleep(0)         # flat out: no pause between ticks (the reader sets the pace)
        else:
            time.sleep(min(max(wait, MIN_TICK), POLL_PERIOD) if not math.isinf(wait) else POLL_PERIOD)
    timing = player.timing()
    refused = {k: v for k, v in mon_refused(player).items() if v}
    say(f"stopped ({'by ' + stop[0] if stop else 'end reached'}): {sum(player.published.values())} messages published"
        f"{f', {player.loops} loops' if player.loops else ''}; publish time vs recorded: p50 {timing['p50_ms']:.1f} ms, "
        f"p99 {timing['p99_ms']:.1f} ms, max {timing['max_ms']:.1f} ms"
        + (f"; not published: {', '.join(f'{k} {v}' for k, v in refused.items())}" if refused else ""))
    return EXIT_OK


def mon_refused(player: Any) -> dict[str, int]:
    """Messages not published, per track: undecodable, or refused by the device."""
    out = dict(player.undecodable)
    for k, v in getattr(player.output, "refused", {}).items():
        out[k] = out.get(k, 0) + v
    return out


# -- monbridge recordings ----------------------------------------------------------------

def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def run_recordings(args: argparse.Namespace) -> int:
    folder = args.folder
    if not os.path.isdir(folder):
        print(f"monbridge recordings: {folder} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        from .reader import describe
    except ImportError as exc:
        print(f"monbridge recordings: needs the mcap package ({exc.name} is missing): pip install 'monbridge[record]'",
              file=sys.stderr)
        return EXIT_FAILED
    names = sorted(n for n in os.listdir(folder) if n.endswith((".mcap", ".mcap.part"))
                   and os.path.isfile(os.path.join(folder, n)))
    rows = [describe(os.path.join(folder, n)) for n in names]
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print(f"no recordings in {os.path.abspath(folder)} (*.mcap, *.mcap.part)")
        return EXIT_OK
    table = [("FILE", "SIZE", "DURATION", "DEVICE", "CHANNELS")]
    for r in rows:
        if r["error"]:
            table.append((r["file"], _size(r["size"]), "-", "-", f"unreadable: {r['error']}"))
            continue
        duration = f"{r['duration_s']:.1f} s" if r["duration_s"] is not None else "-"
        if not r["complete"]:
            duration += " (unfinished)"
        channels = f"{len(r['channels'])}: {', '.join(r['channels'])}"
        table.append((r["file"], _size(r["size"]), duration, r["device"] or "-", channels))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    return EXIT_OK
