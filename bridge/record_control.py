"""RecordControl: the recorder process the bridge starts and stops (``POST /api/record``).

A recording is ``monbridge record --attach DEVICE -o DIR/NAME.mcap --status-file F
--stop-with-parent`` in a fresh interpreter, started with ``settings.bridge_launcher`` (as a
device starts its bridge). The recorder rewrites F with its progress every half second and
with its outcome at the end (bridge/record/cli.py); its stderr goes to an unnamed temporary
file, read for its last message when it exits. Stopping is SIGTERM, then waiting while the
recorder finishes the file and renames ``NAME.mcap.part`` to ``NAME.mcap``. A recorder that
ends by itself (the device closed: exit 0; the device stopped beating: exit 4) is noticed by
a watcher task and becomes ``last``, like a stopped one.

Nothing here blocks the server: every wait polls the process and F with the ``sleep`` the
bridge passes in (``socketio.sleep``: green under eventlet), and no lock is held meanwhile.
Imports the standard library, device_agent.settings / layout / errors and protocol.shown: never flask,
socketio, eventlet or mcap (the recorder imports mcap, in its own process).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from device_agent.errors import ChannelError
from device_agent.layout import check_name
from device_agent.settings import TOKEN_ENV, bridge_launcher

from .protocol import shown

log = logging.getLogger("bridge")

DEFAULT_DIR = "recordings"   # under the bridge's working directory, when --record-dir is not given
START_TIMEOUT = 30.0         # s for a fresh interpreter to import numpy and mcap and attach (2 busy cores)
STOP_TIMEOUT = 30.0          # s for the recorder to finish the file after SIGTERM, before SIGKILL
POLL = 0.05                  # s between checks while a request waits for the recorder
WATCH_PERIOD = 0.25          # s between the watcher's checks of a running recorder
MAX_CHANNELS = 256
_STEM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_PREFIX = "monbridge record: "
# the recorder's exit codes (bridge/record/cli.py) -> the error code a failed start answers with
_START_ERRORS = {1: "record_failed", 2: "invalid_args", 3: "offline"}


class RecordError(Exception):
    """A request the recorder control refuses, or a recorder that failed to start.
    ``code`` is the API's error code (http_api.py maps it to an HTTP status)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def file_stem(name: Any) -> str:
    """The file name a client asked for, without ``.mcap``: 1-100 letters, digits, ``_``,
    ``-`` or ``.``, starting with a letter, digit or ``_``; no ``/`` and no ``..``."""
    if not isinstance(name, str):
        raise RecordError("invalid_args", f"'name' must be a string (a file name), got {type(name).__name__}")
    stem = name[: -len(".mcap")] if name.endswith(".mcap") else name
    if not _STEM_RE.fullmatch(stem) or ".." in stem:
        raise RecordError("invalid_args", f"'name' {shown(name)} is not a plain file name: use 1-100 letters, digits, "
                                          f"'_', '-' or '.', starting with a letter, digit or '_' (no '/', no '..')")
    return stem


def channel_list(channels: Any) -> list[str] | None:
    """The channels a client asked for (None: all), each a valid channel name."""
    if channels is None:
        return None
    if not isinstance(channels, list) or not channels or len(channels) > MAX_CHANNELS:
        raise RecordError("invalid_args", f"'channels' must be a list of 1 to {MAX_CHANNELS} channel names, "
                                          f"or absent for all of them")
    try:
        return [check_name("channel", c) for c in channels]
    except ChannelError as exc:
        raise RecordError("invalid_args", f"'channels': {exc}") from None


@dataclass
class _Run:
    """One recorder process and what it last reported."""

    proc: subprocess.Popen
    device: str
    path: str                  # DIR/NAME.mcap, as it will be when finished
    workdir: str               # a private temporary directory holding the status file
    stderr: IO[bytes]
    status: dict[str, Any] = field(default_factory=dict)   # the status file's last content
    stopping: bool = False
    done: bool = False

    @property
    def status_path(self) -> str:
        return os.path.join(self.workdir, "status.json")

    def read_status(self) -> dict[str, Any]:
        """Re-read the status file (replaced atomically: never half-written); keep the last
        good one if it is absent or unreadable."""
        try:
            with open(self.status_path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return self.status
        if isinstance(doc, dict):
            self.status = doc
        return self.status

    def last_message(self) -> str:
        """The recorder's last ``monbridge record:`` line on stderr (else its last line)."""
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 4000))
            text = self.stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        said = [line[len(_PREFIX):] for line in lines if line.startswith(_PREFIX)]
        return said[-1] if said else (lines[-1] if lines else "")


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class RecordControl:
    """At most one recording at a time. ``start``, ``stop`` and ``status`` are called from
    request handlers (any thread or greenlet), ``close`` once when the bridge exits."""

    def __init__(self, record_dir: str = "", specs: str | None = None, sleep: Callable[[float], Any] = time.sleep,
                 start_task: Callable[..., Any] | None = None, launcher: list[str] | None = None) -> None:
        """``record_dir``: where files go (made on first use; "" is ./recordings); ``specs``:
        the views the recorder keeps in the file; ``sleep`` and ``start_task``: the server's
        (socketio.sleep, socketio.start_background_task), so waits never block it."""
        self.record_dir = os.path.abspath(record_dir or DEFAULT_DIR)
        self.specs = specs
        self._sleep = sleep
        self._start_task = start_task or (lambda fn, *a: threading.Thread(target=fn, args=a, daemon=True).start())
        self._launcher = launcher or bridge_launcher()
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self.last: dict[str, Any] | None = None   # the outcome of the last recording that ran

    # -- what the API calls ------------------------------------------------------------------

    def start(self, device: str, name: Any = None, channels: Any = None) -> dict[str, Any]:
        """Start recording ``device`` to DIR/NAME.mcap; return the status once the recorder
        is recording. RecordError: a bad name or channel list, already recording, the file
        exists, or the recorder failed to start (with its own message)."""
        stem = file_stem(name) if name is not None else None
        wanted = channel_list(channels)
        with self._lock:
            if self._run is not None:
                raise RecordError("already_recording", f"already recording {os.path.basename(self._run.path)}; "
                                                       f"stop it first")
            try:
                os.makedirs(self.record_dir, exist_ok=True)
            except OSError as exc:
                raise RecordError("record_failed", f"cannot make the recordings directory {self.record_dir}: "
                                                   f"{exc.strerror}") from None
            path = self._free_path(stem, device)
            run = self._spawn(device, path, wanted)
            self._run = run
        log.info("recording device %r to %s (recorder pid %d)", device, path, run.proc.pid)
        try:
            self._wait_started(run)
        except RecordError:
            self._finish(run)
            raise
        self._start_task(self._watch, run)
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop the recording (SIGTERM), wait until the file is finished; return the status,
        whose ``last`` says what was written. RecordError ``not_recording`` if none runs."""
        with self._lock:
            run = self._run
            if run is None:
                raise RecordError("not_recording", "nothing is recording; start a recording first")
            run.stopping = True
        self._terminate(run)
        return self.status()

    def status(self) -> dict[str, Any]:
        """What is recording (``recording``, ``file``, ``bytes``, ``seconds``, ``records_per_s``,
        ``missed`` per channel...) and ``last``, the outcome of the last recording."""
        with self._lock:
            run = self._run
            out: dict[str, Any] = {"recording": run is not None, "dir": self.record_dir, "file": None, "path": None,
                                   "device": None, "bytes": None, "seconds": None, "records_per_s": None,
                                   "messages": None, "missed": {}, "channels": None, "stopping": False,
                                   "last": self.last}
            if run is not None:
                st = run.status
                out.update(file=os.path.basename(run.path), path=run.path, device=run.device,
                           bytes=st.get("bytes", 0), seconds=st.get("seconds", 0.0),
                           records_per_s=st.get("records_per_s", 0.0), messages=st.get("messages", 0),
                           missed=st.get("missed", {}), channels=st.get("channels"), stopping=run.stopping)
            return out

    def close(self) -> None:
        """The bridge is exiting: stop a running recording and wait for its file."""
        run = self._run
        if run is not None:
            run.stopping = True
            self._terminate(run)

    # -- the process -------------------------------------------------------------------------

    def _free_path(self, stem: str | None, device: str) -> str:
        """DIR/STEM.mcap, refused if it (or its .part) exists; without a stem,
        DEVICE-YYYYmmdd-HHMMSS.mcap, numbered -2, -3... if that is taken."""
        def taken(p: str) -> bool:
            return os.path.lexists(p) or os.path.lexists(p + ".part")

        if stem is not None:
            path = os.path.join(self.record_dir, stem + ".mcap")
            if taken(path):
                raise RecordError("file_exists", f"{os.path.basename(path)} (or its .part) already exists in "
                                                 f"{self.record_dir}; choose another name")
            return path
        base = f"{device}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = os.path.join(self.record_dir, base + ".mcap"), 1
        while taken(path):
            n += 1
            path = os.path.join(self.record_dir, f"{base}-{n}.mcap")
        return path

    def _spawn(self, device: str, path: str, channels: list[str] | None) -> _Run:
        workdir = tempfile.mkdtemp(prefix="monbridge-record-")
        stderr = tempfile.TemporaryFile()
        argv = [*self._launcher, "record", f"--attach={device}", "--output", path,
                "--status-file", os.path.join(workdir, "status.json"), "--stop-with-parent"]
        if self.specs:
            argv += ["--specs", self.specs]
        if channels:
            argv += ["--channels", ",".join(channels)]
        env = {k: v for k, v in os.environ.items() if k not in ("MON", TOKEN_ENV)}  # the recorder needs neither
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                    env=env, close_fds=True)
        except OSError as exc:
            stderr.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise RecordError("record_failed", f"cannot start the recorder: {exc}") from None
        return _Run(proc, device, path, workdir, stderr)

    def _wait_started(self, run: _Run) -> None:
        """Wait until the recorder reports that it records; RecordError if it exits first."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            state = run.read_status().get("state")
            if state == "recording":
                return
            code = run.proc.poll()
            if code is not None:
                if run.read_status().get("state") == "finished":
                    return   # recorded, and already ended (the device closed at once): the watcher reports it
                said = run.last_message() or "no message"
                raise RecordError(_START_ERRORS.get(code, "record_failed"),
                                  f"the recorder stopped ({_exit_text(code)}): {said}")
            if time.monotonic() > deadline:
                run.proc.kill()
                self._wait_exit(run, STOP_TIMEOUT)
                raise RecordError("record_failed", f"the recorder did not start within {START_TIMEOUT:g} s: "
                                                   f"{run.last_message() or 'no message'}")
            self._sleep(POLL)

    def _wait_exit(self, run: _Run, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while run.proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            self._sleep(POLL)
        return True

    def _terminate(self, run: _Run) -> None:
        """SIGTERM, wait for the recorder to finish the file (SIGKILL after STOP_TIMEOUT)."""
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            if not self._wait_exit(run, STOP_TIMEOUT):
                log.warning("the recorder (pid %d) did not finish within %g s of SIGTERM; killing it; what it "
                            "wrote stays in %s.part", run.proc.pid, STOP_TIMEOUT, run.path)
                run.proc.kill()
                self._wait_exit(run, STOP_TIMEOUT)
        self._finish(run)

    def _watch(self, run: _Run) -> None:
        """Background task: follow the recorder's status until it exits, then report it."""
        while not run.done and run.proc.poll() is None:
            run.read_status()
            self._sleep(WATCH_PERIOD)
        self._finish(run)

    def _finish(self, run: _Run) -> None:
        """The recorder has exited (or is being given up): record its outcome in ``last``
        (unless it never started recording) and clean up. Safe to call more than once."""
        with self._lock:
            if run.done:
                return
            run.done = True
            if self._run is run:
                self._run = None
            code = run.proc.poll()
            st = run.read_status()
            outcome = self._outcome(run, code, st) if st else None
            if outcome is not None:
                self.last = outcome
        run.stderr.close()
        shutil.rmtree(run.workdir, ignore_errors=True)
        if outcome is None:
            return
        if outcome["ok"]:
            log.info("recording finished: %s (%.1f MB, %.1f s, missed %d): %s", outcome["path"],
                     (outcome["bytes"] or 0) / 1e6, outcome["seconds"] or 0.0, sum(outcome["missed"].values()),
                     outcome["reason"])
        else:
            log.warning("recording failed: %s", outcome["reason"])

    def _outcome(self, run: _Run, code: int | None, st: dict[str, Any]) -> dict[str, Any]:
        missed = st.get("missed") if isinstance(st.get("missed"), dict) else {}
        if st.get("state") == "finished":
            path = str(st.get("file") or run.path)
            return {"ok": True, "file": os.path.basename(path), "path": path, "device": run.device,
                    "bytes": st.get("bytes"), "seconds": st.get("seconds"), "messages": st.get("messages"),
                    "missed": missed, "reason": st.get("reason", ""), "exit_code": code, "ended": time.time()}
        part = run.path + ".part"
        kept = part if os.path.exists(part) else run.path
        try:
            size: int | None = os.path.getsize(kept)
        except OSError:
            size = None
        said = st.get("error") if st.get("state") == "failed" else None
        reason = f"the recorder stopped ({_exit_text(code)}): {said or run.last_message() or 'no message'}"
        return {"ok": False, "file": os.path.basename(kept), "path": kept, "device": run.device, "bytes": size,
                "seconds": st.get("seconds"), "messages": st.get("messages"), "missed": missed, "reason": reason,
                "exit_code": code, "ended": time.time()}
