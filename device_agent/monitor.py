"""Monitor: what ``device_agent.start()`` returns when MON is set.

Imports only numpy and the standard library; it launches the bridge with ``subprocess``
(a fresh interpreter, never fork) and never imports it.

Threads (daemons): a heartbeat thread beats every HEARTBEAT_PERIOD and follows the bridge
(prints its URL, a replacement's too, and says when it is gone); with dispatch="thread" a
dispatcher thread wakes on the command doorbell and runs command handlers one at a time, in
arrival order. The device's own loop only ever writes to shared memory.
"""

from __future__ import annotations

import atexit
import html
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import weakref
from typing import Any, Callable

import numpy as np

from . import layout
from .channels import EventsChannel, FrameChannel, RecordsChannel, SharedState, Waker, records_dtype
from .commands import Dispatcher, make_spec
from .config import MonitorConfig
from .control import CONTROL_SIZE, BridgeInfo, ControlLayout
from .doorbell import Doorbell, Ringer
from .errors import ChannelError, DeviceNameInUse
from .frames import MIN_SLOTS, slots_bytes
from .layout import HEADER_SIZE, SegmentKind, channel_segment_name, check_name, control_segment_name
from .messages import device_logger
from .payloads import dtype_to_json, event_record_size
from .records import ring_bytes
from .settings import BY_NAME, LAUNCHER_TAG, TOKEN_ENV, bridge_launcher, is_loopback, serve_args
from .shm import create_segment, destroy_segment, list_segments, pid_alive, segment_owner, unlink_segment

log = device_logger()
HEARTBEAT_PERIOD = 0.1
BRIDGE_EXIT_WAIT = 3.0

Channel = RecordsChannel | FrameChannel | EventsChannel


class Monitor:
    """A running monitor: channels, shared state, commands, and the bridge beside it."""

    enabled = True

    def __init__(self, config: MonitorConfig, name: str, dispatch: str = "thread") -> None:
        if dispatch not in ("thread", "manual"):
            raise ValueError(f"'dispatch' must be 'thread' or 'manual', got {dispatch!r}")
        self.name = check_name("device", name)
        previous = _live_monitors.get(self.name)
        if previous is not None and previous._pid == os.getpid():  # e.g. a notebook cell run again
            log.info("monbridge: closing this process's previous monitor %r to start it again", self.name)
            previous.close()
        self._pid = os.getpid()  # the owner: only it closes (see close)
        self.config = config
        self.token = config.token or secrets.token_urlsafe(16)
        self._closed = False
        self._lock = threading.RLock()
        self._segments: dict[str, Any] = {}  # segment name -> SharedMemory, all created by us
        self._channels: dict[str, Channel] = {}
        self._manifest_channels: list[dict[str, Any]] = []
        self._ctl_shm = self._create(control_segment_name(self.name), CONTROL_SIZE, SegmentKind.CONTROL)
        try:
            self._ctl = ControlLayout(self._ctl_shm.buf, format=True)
            self._doorbell = Doorbell(f"{self.name}.device")
        except Exception:
            self._drop_segment(control_segment_name(self.name))
            raise
        self._ringer = Ringer()
        self._waker = Waker(self._ctl.wake, self._ring_bridge_data)
        self._dispatcher = Dispatcher(self._ctl.commands, self._ctl.replies)
        self._manual = dispatch == "manual"
        self.state = SharedState(self._ctl.state)
        self.state.update()
        self._clients_cache: tuple[int, tuple[dict[str, Any], ...]] = (-1, ())
        self._bridge_seen = BridgeInfo(self._ctl.bridge)
        self._publish_manifest()
        self._bridge: subprocess.Popen | None = None
        self.url: str | None = None     # the dashboard of the bridge serving now; None when none does
        self._bridge_reported = False   # the launched bridge's fate (serving, or exited) was told
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._beat, name=f"monbridge-{self.name}-heartbeat", daemon=True)]
        if not self._manual:
            self._threads.append(
                threading.Thread(target=self._dispatch, name=f"monbridge-{self.name}-commands", daemon=True))
        for thread in self._threads:
            thread.start()
        if config.bridge:
            self._launch_bridge()
        _live_monitors[self.name] = self
        atexit.register(_close_ref, weakref.ref(self))
        _install_sigterm(self)

    # -- channels ----------------------------------------------------------------------

    def records(self, name: str, fields: Any, capacity: int = 8192) -> RecordsChannel:
        """A ring of fixed-size records, e.g. ``records("temps", {"t": "f8", "v": "f4"})``."""
        dtype = records_dtype(fields)
        spec = {"name": name, "kind": "records", "dtype": dtype_to_json(dtype), "capacity": capacity}
        existing = self._existing(name, spec)
        if existing is not None:
            return existing
        size = HEADER_SIZE + ring_bytes(_positive("capacity", capacity), dtype.itemsize)

        def make(buf: memoryview) -> RecordsChannel:
            from .records import RecordRing

            RecordRing.format(buf, HEADER_SIZE, capacity, dtype.itemsize)
            return RecordsChannel(name, dtype, buf, self._waker)

        return self._add_channel(name, spec, size, SegmentKind.RECORDS, make)

    def frame(self, name: str, shape: tuple[int, ...] | int, dtype: Any = "f4", slots: int = MIN_SLOTS) -> FrameChannel:
        """The latest N-D array, e.g. ``frame("cloud", shape=(20000, 3), dtype="f4")``."""
        shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        if not shape or any(d <= 0 for d in shape):
            raise ChannelError(f"frame {name!r}: 'shape' must be positive dimensions, got {shape!r}")
        try:
            dt = np.dtype(dtype).newbyteorder("=")
        except TypeError as exc:
            raise ChannelError(f"frame {name!r}: bad dtype {dtype!r}: {exc}") from None
        if dt.names is not None or dt.hasobject or dt.kind not in "fiub":
            raise ChannelError(f"frame {name!r}: dtype must be a plain numeric type, got {dt}")
        nbytes = int(np.prod(shape)) * dt.itemsize
        spec = {"name": name, "kind": "frame", "dtype": dt.str, "shape": list(shape), "slots": slots}
        existing = self._existing(name, spec)
        if existing is not None:
            return existing
        size = HEADER_SIZE + slots_bytes(_positive("slots", slots), nbytes)

        def make(buf: memoryview) -> FrameChannel:
            from .frames import FrameSlots

            FrameSlots.format(buf, HEADER_SIZE, slots, nbytes)
            return FrameChannel(name, shape, dt, buf, self._waker)

        return self._add_channel(name, spec, size, SegmentKind.FRAME, make)

    def events(self, name: str, capacity: int = 1024, max_bytes: int = 4096) -> EventsChannel:
        """Variable-size JSON messages, at most ``max_bytes`` each; the oldest are overwritten."""
        spec = {"name": name, "kind": "events", "capacity": capacity, "max_bytes": max_bytes}
        existing = self._existing(name, spec)
        if existing is not None:
            return existing
        record = event_record_size(_positive("max_bytes", max_bytes))
        size = HEADER_SIZE + ring_bytes(_positive("capacity", capacity), record)

        def make(buf: memoryview) -> EventsChannel:
            from .records import RecordRing

            RecordRing.format(buf, HEADER_SIZE, capacity, record)
            return EventsChannel(name, max_bytes, buf, self._waker)

        return self._add_channel(name, spec, size, SegmentKind.EVENTS, make)

    def _existing(self, name: str, spec: dict[str, Any]) -> Channel | None:
        check_name("channel", name)
        with self._lock:
            if self._closed:
                raise ChannelError(f"monitor {self.name!r} is closed")
            for known in self._manifest_channels:
                if known["name"] == name:
                    if {k: v for k, v in known.items() if k != "segment"} != spec:
                        raise ChannelError(f"channel {name!r} already exists with a different spec: {known}")
                    return self._channels[name]
        return None

    def _add_channel(self, name: str, spec: dict, size: int, kind: SegmentKind, make: Callable) -> Any:
        with self._lock:
            seg_name = channel_segment_name(self.name, name)
            shm = self._create(seg_name, size, kind)
            try:
                channel = make(shm.buf)
            except Exception:
                self._drop_segment(seg_name)
                raise
            self._channels[name] = channel
            self._manifest_channels.append({**spec, "segment": seg_name})
            self._publish_manifest()
            return channel

    # -- commands, clients -------------------------------------------------------------

    def command(self, fn: Callable | None = None, *, name: str | None = None,
                params: dict[str, dict[str, Any]] | None = None, coalesce: bool = False) -> Any:
        """Declare a command handler: ``@mon.command`` or ``@mon.command(coalesce=True)``."""

        def register(f: Callable) -> Callable:
            spec = make_spec(f, name, params, coalesce)
            with self._lock:
                self._dispatcher.commands[spec.name] = spec
                self._publish_manifest()
            return f

        return register(fn) if fn is not None else register

    def poll(self, limit: int | None = None) -> int:
        """Run waiting commands now (for ``dispatch="manual"``); return how many ran."""
        with self._lock:
            if self._closed:
                return 0
            n = self._dispatcher.run_pending(limit)
            if n:
                self._ring_bridge()
        return n

    @property
    def clients(self) -> tuple[dict[str, Any], ...]:
        """The bridge's clients table (read-only snapshot; empty when no bridge is attached)."""
        if self._closed:
            return ()
        version = self._ctl.clients.version
        if version != self._clients_cache[0]:
            version, data = self._ctl.clients.read()
            try:
                table = tuple(json.loads(data)) if data else ()
            except ValueError:
                table = ()
            self._clients_cache = (version, table)
        return self._clients_cache[1]

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop publishing, tell the bridge, remove every segment. Safe to call twice.

        In a forked child (multiprocessing's fork start method, os.fork) it does nothing: the
        segments, the bridge and the threads belong to the process that started the monitor,
        and the child's exit (atexit, a Pool's SIGTERM) must not take them away from it."""
        with self._lock:
            if self._closed or os.getpid() != self._pid:
                return
            self._closed = True
        self._stop.set()
        self._ringer.ring(self._doorbell.address)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        layout.mark_closed(self._ctl_shm.buf)
        self._ring_bridge()
        for channel in self._channels.values():
            channel._detach()
        self.state._detach()
        self._channels.clear()
        self._dispatcher.inbox = self._dispatcher.outbox = None  # drop every view of the segment
        self._waker.close()
        self._bridge_seen.release()
        del self._ctl
        for seg_name in list(self._segments):
            self._drop_segment(seg_name)
        self._doorbell.close()
        self._ringer.close()
        if self._bridge is not None and self._bridge.poll() is None:
            try:
                self._bridge.wait(timeout=BRIDGE_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                self._bridge.terminate()
                try:
                    self._bridge.wait(timeout=BRIDGE_EXIT_WAIT)
                except subprocess.TimeoutExpired:
                    self._bridge.kill()

    def dashboard(self, height: int = 600) -> "Dashboard":
        """The dashboard, shown inline by Jupyter (waits up to 15 s for the bridge's URL)."""
        return Dashboard(self.wait_url() if self.url is None else self.url, self.name, height)

    def _repr_html_(self) -> str:
        return self.dashboard()._repr_html_()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _create(self, seg_name: str, size: int, kind: SegmentKind) -> Any:
        size = (size + 4095) // 4096 * 4096
        try:
            shm = create_segment(seg_name, size)
        except FileExistsError:
            shm = None
        if shm is None:  # outside the except block, so a refusal carries no FileExistsError chain
            _remove_stale(self.name, seg_name)
            shm = create_segment(seg_name, size)
        layout.write_header(shm.buf, kind, os.getpid(), time.time())
        self._segments[seg_name] = shm
        return shm

    def _drop_segment(self, seg_name: str) -> None:
        destroy_segment(self._segments.pop(seg_name))

    def _publish_manifest(self) -> None:
        manifest = {
            "device": self.name,
            "pid": os.getpid(),
            "doorbell": self._doorbell.address,
            "heartbeat_period": HEARTBEAT_PERIOD,
            "channels": self._manifest_channels,
            "commands": [spec.catalog_entry() for spec in self._dispatcher.commands.values()],
        }
        self._ctl.manifest.write(json.dumps(manifest, separators=(",", ":")).encode())

    def _beat(self) -> None:
        """Heartbeat thread: beats every HEARTBEAT_PERIOD and follows the bridge (_watch_bridge).

        Kept apart from command handlers so that a slow handler never makes the device
        look offline.
        """
        buf = self._ctl_shm.buf
        while not self._stop.is_set():
            layout.write_heartbeat(buf, time.time())
            try:
                self._watch_bridge()
            except Exception:  # never let the heartbeat die
                log.exception("monbridge heartbeat thread")
            self._stop.wait(HEARTBEAT_PERIOD)

    def _dispatch(self) -> None:
        """Dispatcher thread (dispatch="thread"): wakes on the doorbell, runs handlers in order."""
        while not self._stop.is_set():
            self._doorbell.wait(HEARTBEAT_PERIOD)
            if self._stop.is_set():
                break
            try:
                if self._dispatcher.run_pending():
                    self._ring_bridge()
            except Exception:  # never let the dispatcher die
                log.exception("monbridge command dispatcher")

    def _bridge_info(self) -> dict[str, Any]:
        return self._bridge_seen.get()

    def _ring_bridge_data(self) -> None:
        """Called by a publish the bridge was waiting for (channels.Waker), on any thread."""
        address = self._bridge_info().get("data_doorbell")
        if address:
            self._ringer.ring(address)

    def _ring_bridge(self) -> None:
        if not hasattr(self, "_ctl"):
            return
        address = self._bridge_info().get("doorbell")
        if address:
            self._ringer.ring(address)

    def _watch_bridge(self) -> None:
        """Follow the bridge serving this device (the control segment's bridge blob): print
        its URL when one starts serving, a replacement included, and say so when it is gone.

        A bridge this process launched is judged by its exit (``poll`` also reaps it); any
        other by its pid. Nothing restarts a bridge: whoever stopped it usually meant to.
        """
        info = self._bridge_info()
        url, pid = info.get("url"), info.get("pid")
        alive = isinstance(pid, int) and self._bridge_alive(pid)
        if url and alive and url != self.url:
            self.url = url
            self._bridge_reported = True
            log.info("monbridge: dashboard for %r at %s", self.name, url)
        elif self.url is not None and not alive:
            self.url = None
            code = ""
            if self._bridge is not None and self._bridge.pid == pid:
                code = f", exit code {self._bridge.returncode}"
            log.warning("monbridge: the bridge for %r (pid %s%s) is gone; the device keeps running without a "
                        "dashboard. Start another with: monbridge serve --attach %s", self.name, pid, code, self.name)
        elif not self._bridge_reported and self._bridge is not None and self._bridge.poll() is not None:
            self._bridge_reported = True
            log.warning("monbridge: the bridge exited with code %s before serving (see its message above); "
                        "the device keeps running without a dashboard", self._bridge.returncode)

    def _bridge_alive(self, pid: int) -> bool:
        if self._bridge is not None and self._bridge.pid == pid:
            return self._bridge.poll() is None
        return pid_alive(pid)

    def _launch_bridge(self) -> None:
        c = self.config
        if not is_loopback(c.host) and not c.token:
            log.warning("monbridge: not serving on %s without a token: anyone on the network could connect "
                        "and command. Set one (MON=host=%s,token=...) or leave host at 127.0.0.1; the device "
                        "keeps running without a dashboard", c.host, c.host)
            return
        running = running_bridge(self.name)
        if running:  # a bridge launched by this device's previous run outlived it (kill -9)
            log.info("monbridge: a bridge for %r is already running (pid %s); it attaches to this run",
                     self.name, running)
            return
        # the settings that differ from their defaults (settings.serve_args): both sides take
        # their defaults from the same table, so one left out means the same to the bridge
        cmd = [*bridge_launcher(), "serve", f"--attach={self.name}", *serve_args(c), "--exit-with-device"]
        env = {k: v for k, v in os.environ.items() if k != "MON"}
        if c.publish:
            env[BY_NAME["publish"].env] = c.publish  # a Redis URL may hold a password: not on the command line
        env[TOKEN_ENV] = self.token  # not on the command line, where `ps` shows it
        self._bridge = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, close_fds=True)

    def wait_url(self, timeout: float = 15.0) -> str | None:
        """Block until the bridge reports its URL (or ``timeout``); return it or None."""
        deadline = time.monotonic() + timeout
        while self.url is None and time.monotonic() < deadline:
            if self._bridge is not None and self._bridge.poll() is not None:
                break
            time.sleep(0.02)
        return self.url


class Dashboard:
    """A device's dashboard as Jupyter shows it: an iframe of the bridge's page."""

    def __init__(self, url: str | None, name: str, height: int = 600) -> None:
        self.url, self.name, self.height = url, name, int(height)

    def _repr_html_(self) -> str:
        if self.url is None:
            return f"<p>monbridge: no dashboard for {html.escape(self.name)!s} (the bridge is not serving)</p>"
        return (f'<iframe src="{html.escape(self.url, quote=True)}" title="monbridge: {html.escape(self.name)}" '
                f'width="100%" height="{self.height}" style="border:1px solid #ddd"></iframe>')

    def __repr__(self) -> str:
        return f"<monbridge dashboard of {self.name!r} at {self.url}>"


def running_bridge(device: str) -> int | None:
    """The pid of a running ``bridge serve --attach=DEVICE`` process, if any (Linux /proc)."""
    wanted = {f"--attach={device}".encode(), b"--attach\0" + device.encode()}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        launcher = any(a in (b"bridge", b"monbridge") or a.endswith((b"/monbridge", LAUNCHER_TAG.encode()))
                       for a in args)
        if launcher and b"serve" in args and (wanted & set(args) or b"--attach\0" + device.encode() + b"\0" in cmdline) \
                and pid_alive(pid):
            return pid
    return None


def _positive(what: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ChannelError(f"'{what}' must be a positive integer, got {value!r}")
    return value


def _remove_stale(device: str, seg_name: str) -> None:
    """``seg_name`` exists. Remove it if its owner is gone, else refuse.

    For the control segment, every leftover segment of the device goes with it.
    """
    owner = segment_owner(seg_name)
    if owner == os.getpid():
        raise DeviceNameInUse(
            f"this process already runs a monitor named {device!r}; reuse it, or pass another name"
        )
    if owner is not None:
        raise DeviceNameInUse(
            f"device name {device!r} is in use by process {owner}; stop it, or give this one another "
            f"name: MON=name=other, or device_agent.start(name=...) (segment {seg_name})"
        )
    if seg_name == control_segment_name(device):
        leftovers = list_segments(f"{layout.SEGMENT_PREFIX}{device}.")
    else:
        leftovers = [seg_name]
    removed = [n for n in leftovers if unlink_segment(n)]
    if removed:
        log.info("monbridge: removed %d stale segment(s) of %r left by a process that is gone", len(removed), device)


def _close_ref(ref: "weakref.ref[Monitor]") -> None:
    mon = ref()
    if mon is not None:
        mon.close()


_sigterm_monitors: "weakref.WeakSet[Monitor]" = weakref.WeakSet()
# this process's open monitors by device name: start() again under a name closes the old one
_live_monitors: "weakref.WeakValueDictionary[str, Monitor]" = weakref.WeakValueDictionary()


def _install_sigterm(mon: Monitor) -> None:
    """Close monitors on SIGTERM, if the program has not claimed SIGTERM itself."""
    _sigterm_monitors.add(mon)
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        for m in list(_sigterm_monitors):
            m.close()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
