"""The bridge server: a thin Flask-SocketIO adapter around the sans-I/O Hub (hub.py), which
holds one BridgeCore (core.py) per device served.

Handlers pass each client's event to the hub and send what it returns (a command's handler
first watches a quick device's reply queue for a moment); one task ticks the hub and waits on
the data doorbell until its next deadline; another routes the devices' replies.
Every call into the hub holds one lock and sends the hub's messages, in order, before
letting go, so the hub needs no locking of its own in either async mode. The eventlet /
threading differences stay here and in netio.py (listening socket, running and stopping
the WSGI server); http_api.py has the routes.

Tasks (``socketio.start_background_task``, so eventlet and threading both work):
* relay: ticks the core (the relay first, its messages sent before the rest of the tick)
  at the deadlines the core gives (a regular tick 1.5/rate after the last one, rounded up to
  the next POLL_GRID while a publish is expected to ring; a paced subscriber's next send) and in between when it says so; when a subscriber waits for new
  data it also wakes on the data doorbell, which the device rings at its next publish
  (device_agent.channels.Waker) and a handler rings when a client's confirmation lets a
  subscription send again;
* replies: waits on the bridge's doorbell and routes the devices' replies;
* devices (``--attach all`` only): adds the devices that start later.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from typing import Any, Callable
from urllib.parse import quote

from device_agent.attach import REPLY_SPIN_S, live_devices
from device_agent.doorbell import Doorbell, Ringer
from device_agent.settings import Use, is_loopback, make_settings_class, settings_for
from flask import Flask, request
from flask_socketio import ConnectionRefusedError, SocketIO, disconnect

from . import logs, netio, outbox, resources, sched
from .bundles import parse_bundle_option
from .clients import HostGuard, role_for, token_from
from .commands import Ticket
from .core import BridgeCore, CoreSettings
from .device_link import DeviceLink
from .gcwatch import GcWatch, freeze_startup
from .hub import ALL, Hub, attach_names
from .packets import MALFORMED, SafePacket
from .protocol import error
from .record_control import RecordControl
from .views import ViewCatalog

log = logging.getLogger("bridge")
# The largest message a client may send (bytes); a larger websocket frame closes its connection
# before it is read. Command args are at most 4 KiB; eventlet unmasks a frame in Python at
# ~1 µs a byte, during which nobody else is served.
MAX_MESSAGE = 16 * 1024
VIEWS_PERIOD = 0.5           # seconds between scans of the specs directory
POLL_GRID = 0.1              # s: while a publish is expected to ring, regular polls fall on multiples of this
# seconds between the reply task's checks for late answers and room in the device's queue
# while commands wait, and at most while none does (every wake-up costs CPU: docs/bridge.md)
REPLY_POLL, IDLE_REPLY_POLL = 0.05, 0.5
CLIENT_EVENTS = ("subscribe", "unsubscribe", "consumed", "ping", "command")
DISCOVER_PERIOD = 1.0        # seconds between looks for new devices (--attach all)


# The settings table (device_agent/settings.py) makes these fields, `monbridge serve`'s
# options and MON's keys, with one default each; serve() fills in specs, static and token.
Options = make_settings_class(
    "Options", __name__, Use.OPTIONS, extra=(("require_token", bool, False),),
    doc="The bridge's settings: ``require_token`` (refuse connections without the token: a "
        "non-loopback bind), then one field per setting marked Use.OPTIONS in device_agent/settings.py.",
)


def socketio_options(async_mode: str) -> dict[str, Any]:
    """The bridge's Flask-SocketIO settings (bench.relay's bare server uses them too)."""
    return dict(
        async_mode=async_mode,
        max_http_buffer_size=MAX_MESSAGE,
        ping_interval=10,
        ping_timeout=10,
        serializer=SafePacket,  # msgpack; undecodable packets become the event MALFORMED (packets.py)
        # a client's events are handled one at a time, in arrival order, where they are
        # read: commands reach the device's queue in the order the client sent them
        async_handlers=False,
        # Logger objects, so that the libraries add no handler of their own: their
        # records go through the bridge's rate limit (logs.py)
        logger=logging.getLogger("socketio.server"),
        engineio_logger=logging.getLogger("engineio.server"),
    )


class Bridge:
    def __init__(self, options: Any) -> None:
        self.options = options
        self.started = time.time()
        self.url = ""
        self.app = Flask("monbridge", static_folder=None)
        self.app.config["bridge"] = self
        self.socketio = SocketIO(self.app, **socketio_options(options.async_mode))
        self.server = self.socketio.server
        self.outbox_problem = outbox.check_library()
        if self.outbox_problem:
            log.warning("cannot see what is queued for each client (%s): a client that stops reading "
                        "will not be detected as congested", self.outbox_problem)
        names = attach_names(options.attach)   # None: one device (a name or auto)
        self.hub = Hub(
            CoreSettings(max_rate=options.rate, command_timeout=options.command_timeout,
                         command_rate=options.command_rate, exit_with_device=options.exit_with_device),
            make_event=self.server.eio.create_event, multi=names is not None,
            outbox=lambda sid: outbox.queued(self.server, sid), clock=time.monotonic,
            drop_closed=options.attach == ALL)
        self.doorbell = Doorbell("bridge")
        self.data_doorbell = Doorbell("bridge-data")
        self.hub.bridge_info.update({"url": "", "pid": os.getpid(), "doorbell": self.doorbell.address,
                                     "data_doorbell": self.data_doorbell.address})
        self._ringer = Ringer()  # rings data_doorbell from a handler: a confirmation freed a subscription
        self.views = ViewCatalog(options.specs)
        self.views.scan()
        self.hub.views = self.views.views()
        # an edge serves copies of devices kept up to date from Redis (bridge/fleet/edge.py), one each;
        # an origin also publishes each device into Redis for edges (bridge/fleet/origin.py)
        self.edges: dict[str, Any] = {}
        self.origins: dict[str, tuple[Any, Any]] = {}   # key -> (OriginTap, OriginSender)
        for key in ([options.attach] if names is None else names):
            self.open_device(key, time.time())
        self._next_views_scan = 0.0
        self.gc_watch = GcWatch()   # installed by serve()
        self.lock = threading.RLock()  # one call into the core at a time (RLock: disconnect() re-enters)
        self._stop_requested = False
        self._stopper: Callable[[], None] | None = None
        # the recorder process of POST /api/record; waits through socketio.sleep, never blocking
        self.recording = RecordControl(options.record_dir, options.specs, sleep=self.socketio.sleep,
                                       start_task=self.socketio.start_background_task)
        self._register_handlers()
        from .http_api import api

        self.app.register_blueprint(api)

    # -- devices -----------------------------------------------------------------------

    def open_device(self, key: str, wall: float) -> BridgeCore:
        """Serve the device ``key`` (a name, or auto): a link to its shared memory, or on an
        edge to the copy an EdgeFollower keeps (the caller holds the lock, or none runs yet)."""
        opts = self.options
        if opts.edge:
            from .fleet.edge import EdgeFollower

            self.edges[key] = edge = EdgeFollower(opts.edge, key, opts.command_timeout,
                                                  start_task=self.socketio.start_background_task,
                                                  sleep=self.socketio.sleep, on_replies=self._route_replies)
            link = DeviceLink(key, offline_after=opts.offline_after, open_segment=edge.open_segment)
        else:
            link = DeviceLink(key, offline_after=opts.offline_after)
        if opts.publish:
            from .fleet.origin import OriginSender, OriginTap

            tap = OriginTap(key, rate=opts.rate, origin_label=netio.hostname(), all_frames=opts.publish_frames == "all")
            sender = OriginSender(opts.publish, key, submit=functools.partial(self._remote_command, key),
                                  on_reconnect=functools.partial(self._origin_resync, key),
                                  start_task=self.socketio.start_background_task, sleep=self.socketio.sleep,
                                  on_wants=functools.partial(self._origin_wants, key))
            self.origins[key] = (tap, sender)
        return self.hub.add_device(key, link, wall)

    def close_device(self, key: str) -> None:
        """A device the hub no longer serves (``--attach all``, it closed): let go of it."""
        edge = self.edges.pop(key, None)
        if edge is not None:
            edge.stop()
        origin = self.origins.pop(key, None)
        if origin is not None:
            origin[1].stop()

    @property
    def core(self) -> BridgeCore | None:
        """The only device's core, when the bridge serves one (None with several)."""
        cores = self.hub.cores
        return next(iter(cores.values())) if len(cores) == 1 and not self.hub.multi else None

    def discover_loop(self) -> None:
        """``--attach all``: serve each device that starts (on an edge: that an origin publishes)."""
        while not self._stop_requested:
            try:
                names = self._running_names()
                new = [n for n in names if n not in self.hub.cores]
                for name in new:
                    with self.lock:
                        self.open_device(name, time.time())
                        self._flush()
                    log.info("serving device %r too", name)
            except Exception as exc:
                log.warning("cannot list the running devices: %s", exc)
            self.socketio.sleep(DISCOVER_PERIOD)

    def _running_names(self) -> list[str]:
        if self.options.edge:
            from .fleet.edge import published_devices

            return published_devices(self.options.edge)
        return live_devices()

    # -- calling the hub -----------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the hub has queued, in order (the caller holds the lock)."""
        emit = self.server.emit  # python-socketio's: a message to several clients is encoded once
        for m in self.hub.take_messages():
            try:
                emit(m.event, m.data, to=m.to if len(m.to) > 1 else m.to[0], namespace="/")
            except Exception as exc:  # one message that cannot be encoded must not stop the others
                log.error("cannot send %s to %d client(s): %s: %s", m.event, len(m.to), type(exc).__name__, exc)
        if self.hub.take_wake():
            self._ringer.ring(self.data_doorbell.address)

    def _event(self, sid: str, event: str, args: tuple[Any, ...]) -> Any:
        with self.lock:
            ack = self.hub.on_event(sid, event, args, time.monotonic(), time.time())
            if event == "command" and not self.edges:
                self._catch_quick_reply()
            self._flush()
        return ack

    def _catch_quick_reply(self) -> None:
        """A client's command went to a device that answers quickly: watch its reply queue
        for up to REPLY_SPIN_S and route an answer that comes meanwhile at once, rather
        than wake the reply task for it (docs/bridge.md, "Commands"). The caller holds the lock."""
        devices = self.hub.quick_repliers(time.monotonic())
        if not devices:
            return
        deadline = time.perf_counter() + REPLY_SPIN_S
        while not any(d.replies_waiting() for d in devices):
            if time.perf_counter() >= deadline:
                return
            # the ring may have queued the device's dispatcher on this CPU (a socket's wake-up
            # is a "sync" one): let it run rather than wait out this task's slice
            sched.yield_cpu()
        self.hub.route_replies(time.monotonic())   # the device's ring still wakes the reply task: no loss

    # -- socket.io handlers ------------------------------------------------------------

    def _register_handlers(self) -> None:
        sio = self.socketio

        @sio.on("connect")
        def on_connect(auth: Any = None) -> Any:
            env = request.environ
            role = role_for(token_from(auth, env), self.options.token, self.options.require_token)
            if role is None:
                log.info("refused a connection from %s: missing or wrong token", env.get("REMOTE_ADDR"))
                raise ConnectionRefusedError(
                    "unauthorized: missing or wrong token; open the URL the bridge printed (it ends in ?token=...)"
                )
            try:
                bundle = parse_bundle_option(auth)
            except ValueError as exc:
                raise ConnectionRefusedError(f"bad_request: {exc}") from None
            with self.lock:
                self.hub.connect(request.sid, str(env.get("REMOTE_ADDR", "")), str(env.get("HTTP_USER_AGENT", "")),
                                  role, time.time(), bundle=bundle)
                self._flush()
            return True

        @sio.on("disconnect")
        def on_disconnect(*_: Any) -> None:
            with self.lock:
                self.hub.disconnect(request.sid)
                self._flush()

        for name in CLIENT_EVENTS:
            sio.on(name)(lambda *args, _name=name: self._event(request.sid, _name, args))

        @sio.on(MALFORMED)
        def on_malformed(reason: Any = None, *_: Any) -> None:
            sid = request.sid
            info = self.hub.clients.get(sid)
            log.warning("disconnecting client %s (%s): it sent a packet that cannot be decoded: %s",
                        sid, info[0] if info else "?", reason)
            self._event(sid, MALFORMED, (reason,))
            disconnect()

        @sio.on("*")
        def on_unknown(event: str, *args: Any) -> Any:
            return self._event(request.sid, event, args)

    # -- what the HTTP API uses --------------------------------------------------------

    def run_command(self, sid: str, payload: Any, client: dict[str, Any]) -> dict[str, Any]:
        """Submit a command from the HTTP API and wait for its answer."""
        with self.lock:
            core, ticket = self.hub.submit_http_command(client, payload, time.monotonic())
            self._flush()
        return core.broker.wait(ticket) if isinstance(ticket, Ticket) else ticket

    def _remote_command(self, key: str, command: Any, on_done: Callable[[dict[str, Any]], None]) -> None:
        """A command for device ``key`` an edge validated and passed on through Redis (origin):
        validated again here, queued for the device in the order Redis holds them; ``on_done(answer)``."""
        client = {**command.client, "edge": command.edge}
        payload = {"name": command.name, "args": command.args}
        with self.lock:
            core = self.hub.cores.get(key)
            if core is None:   # --attach all: the device closed meanwhile
                answer: Any = error("offline", f"device {key!r} closed before taking this command")
            else:
                answer = core.broker.submit(f"{command.edge}/{client.get('id', '')}", client, payload,
                                            now=time.monotonic(), on_done=on_done)
            self._flush()
        if not isinstance(answer, Ticket):
            on_done(answer)

    def _origin_resync(self, key: str, newest: dict[str, Any]) -> None:
        """Redis reached (again): device ``key``'s tap reads again from what Redis holds; what was
        queued meanwhile is dropped in the same step, so nothing goes out twice or out of order."""
        with self.lock:
            tap, sender = self.origins[key]
            sender.drop_pending()
            tap.resync(newest)

    def _origin_wants(self, key: str, channels: frozenset[str]) -> None:
        """What the edges' browsers subscribe to changed: device ``key``'s tap publishes those
        frame channels (from the next tick: ring the relay loop awake)."""
        with self.lock:
            origin = self.origins.get(key)
            if origin is not None:
                origin[0].want(channels)
        self._ringer.ring(self.data_doorbell.address)

    def state_snapshot(self) -> dict[str, dict[str, Any]]:
        """Each device's state, by name (the caller holds the lock)."""
        return {c.link.device_name: dict(c.state.values) for c in self.hub.cores.values() if c.link.device_name}

    # -- background tasks --------------------------------------------------------------

    def relay_loop(self) -> None:
        """Tick the core at its deadlines, and in between as soon as there is something to do:
        when the device publishes while a subscriber waits for new data (it rings the data
        doorbell; ``Waker`` in device_agent/channels.py), and when a client's ``consumed`` lets
        a subscription that had all its messages in flight send again (the handler rings the
        same doorbell). Scans the specs directory every VIEWS_PERIOD."""
        hub = self.hub
        while not self._stop_requested:
            started = time.monotonic()
            try:
                # the relay first, its messages sent before the rest of the tick (the device
                # link, state, status, the clients table: ~0.1 ms, docs/bridge.md)
                with self.lock:
                    sent = hub.relay_tick(started, time.time())
                    self._flush()
                if sent:
                    self.socketio.sleep(0)
                with self.lock:
                    result = hub.tick(started, time.time(), relay=False)
                    self._flush()
                    for key, follower in self.edges.items():   # edge: tell the origins what is watched here
                        if key in hub.cores:
                            follower.want(hub.cores[key].relay.subscribed_channels())
                    for key, (tap, sender) in self.origins.items():
                        if key in hub.cores:   # else dropped this tick (--attach all): closed below
                            link = hub.cores[key].link
                            sender.queue(tap.tick(link.device, link.online, link.status(), started, time.time()))
                for key in result.dropped:
                    self.close_device(key)
                for note in result.notes:
                    log.info("%s", note)
                if result.stop:
                    break
                if started >= self._next_views_scan:
                    self._next_views_scan = started + VIEWS_PERIOD
                    if self.views.scan():
                        with self.lock:
                            hub.set_views(self.views.views())
                            self._flush()
            except Exception:
                log.error("relay tick failed", exc_info=True)
            elapsed = time.monotonic() - started
            # snapshots: with --attach all, discover_loop adds devices (a thread in threading mode)
            cores, origins = list(hub.cores.items()), list(self.origins.items())
            for _, core in cores:
                core.tick_seconds = elapsed
            # the regular polls (each core's idle poll, the views scan) and the times something
            # is due (a paced subscription's next send, the origin's next read into Redis)
            polls = min([self._next_views_scan] + [c.next_deadline() for _, c in cores])
            due = [c.relay.next_send_at for _, c in cores if c.relay.next_send_at is not None]
            due += [tap.next_due for _, (tap, _sender) in origins]
            if min([polls, *due]) <= time.monotonic():
                self.socketio.sleep(0)  # let the sends and the handlers run first
                continue
            # the data doorbell also rings when a client's confirmation lets a subscription
            # send again, so wait on it in either case
            news = ring = False
            for _, core in cores:
                if core.waiting_for_data and core.link.device is not None:
                    core.link.device.want_wake()
                    ring = True
                    news = news or core.news()   # published before the request: nothing will ring
            devices = {key: core.link.device for key, core in cores}
            for key, (tap, _sender) in origins:
                dev = devices.get(key)
                if tap.waiting_for_data and dev is not None:
                    dev.want_wake()
                    ring = True
                    news = news or tap.news(dev)
            if news:
                self.socketio.sleep(0)
                continue
            if ring:   # a publish will most likely end this wait before the next poll
                polls = netio.poll_grid(polls, POLL_GRID)
            delay = min([polls, *due]) - time.monotonic()
            if netio.wait_readable(self.data_doorbell.fileno(), max(delay, 0.0)):
                self.data_doorbell.drain()
                # the device rang at its first publish and, on this CPU, may still be
                # publishing the rest of its burst: let it finish, so one tick reads it all
                sched.yield_cpu()
        self._shutdown()

    def _route_replies(self) -> None:
        """Route the devices' replies now (an edge's follower just put answers in its copy)."""
        with self.lock:
            self.hub.route_replies(time.monotonic())
            self._flush()

    def reply_loop(self) -> None:
        """Route the device's replies when it rings; meanwhile time out late commands and
        move waiting ones into the device's queue."""
        hub = self.hub
        idle_poll = min(IDLE_REPLY_POLL, self.options.command_timeout / 10)  # a new command's deadline is >= timeout away
        while not self._stop_requested:
            idle = all(c.broker.idle for c in list(hub.cores.values()))
            try:
                netio.wait_readable(self.doorbell.fileno(), idle_poll if idle else REPLY_POLL)
                self.doorbell.drain()
            except (OSError, ValueError):   # close() shut the doorbell while this task waited on it
                if self._stop_requested:
                    break
                raise
            try:
                with self.lock:
                    hub.route_replies(time.monotonic())
                    self._flush()
            except Exception:
                log.error("reply routing failed", exc_info=True)

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop_requested = True

    def _shutdown(self) -> None:
        self._stop_requested = True
        with self.lock:
            self.hub.shutdown()
            self._flush()
        if self._stopper is not None:
            self._stopper()

    def close(self) -> None:
        for key in set(self.edges) | set(self.origins):
            self.close_device(key)
        self.recording.close()  # a recording in progress is finished and renamed first
        for core in self.hub.cores.values():
            core.link.close()
        self.doorbell.close()
        self.data_doorbell.close()
        self._ringer.close()


def _attach_problem(options: Any) -> str | None:
    """Check --attach (one name, auto, a list or all) and --publish / --edge; name the device
    an origin or edge needs (``options.attach``, when 'auto' picks one); return what is
    wrong, or None."""
    try:
        several = attach_names(options.attach) is not None
    except ValueError as exc:
        return str(exc)
    if several and options.exit_with_device:
        return "--exit-with-device serves one device: give --attach one NAME"
    if options.publish_frames != "watched" and not options.publish:
        return "--publish-frames is for an origin: use it with --publish redis://HOST:PORT"
    if not (options.publish or options.edge):
        return None
    if options.publish and options.edge:
        return ("--publish and --edge together: an edge serves from Redis what an origin publishes; "
                "run an origin beside the device and edges elsewhere")
    try:
        import redis  # noqa: F401  (the [fleet] extra)
    except ImportError:
        return f"{'--publish' if options.publish else '--edge'} needs redis-py: pip install \"monbridge[fleet]\""
    if options.attach != "auto":
        return None
    if options.edge:
        from .fleet.edge import published_devices

        try:
            names = published_devices(options.edge)
        except Exception as exc:   # redis-py's errors: the message says what
            return f"--edge: cannot reach Redis to list its devices ({exc}); name one with --attach NAME"
        where = "published in that Redis"
    else:
        names, where = live_devices(), "running on this machine"
    if len(names) != 1:
        listed = f" ({', '.join(sorted(names))})" if names else ""
        return (f"{len(names) or 'no'} device{'s' if len(names) != 1 else ''} {where}{listed}: choose one with "
                "--attach NAME, or serve them all with --attach all")
    options.attach = names[0]
    return None


def serve(args: Any) -> int:
    """Run the bridge until the device closes (with --exit-with-device), SIGINT or SIGTERM."""
    # launched by a device: its terminal is the user's, so only warnings unless logging to a file
    logs.configure(logging.WARNING if args.exit_with_device and not args.log else logging.INFO, args.log)
    require_token = not is_loopback(args.host)
    if require_token and not args.token:
        log.error("refusing to listen on %s without a token: anyone on the network could connect. "
                  "Pass --token (or set $MONBRIDGE_TOKEN), or bind 127.0.0.1.", args.host)
        return 2
    import secrets

    options = Options(require_token=require_token, **{s.name: getattr(args, s.name) for s in settings_for(Use.OPTIONS)})
    problem = _attach_problem(options)
    if problem:
        log.error("%s", problem)
        return 2
    if options.cpu_slice:
        problem = sched.request_slice(options.cpu_slice / 1000)
        if problem:
            log.info("kept the kernel's CPU time slice: %s", problem)
    options.specs = resources.specs_dir(options.specs)
    options.static = os.path.abspath(options.static) if options.static else resources.static_dir()
    options.token = options.token or secrets.token_urlsafe(16)
    try:
        listener, port = netio.listen(options.host, options.port)
    except OSError as exc:
        log.error("%s", exc)
        return 2
    bridge = Bridge(options)
    host_shown = options.host if options.host not in ("0.0.0.0", "::") else netio.hostname()
    if ":" in host_shown:
        host_shown = f"[{host_shown}]"  # an IPv6 address in a URL
    bridge.url = bridge.hub.bridge_info["url"] = f"http://{host_shown}:{port}/?token={quote(options.token, safe='')}"
    for core in bridge.hub.cores.values():
        if core.link.device is None:
            for note in core.link.poll().notes:
                log.info("%s", note)
        if core.link.device is not None:
            core.link.device.publish_bridge(**bridge.hub.bridge_info)
    if not options.exit_with_device:  # a device that launched us prints the URL itself
        from .fleet.streams import shown_url

        via = (f" (from Redis at {shown_url(options.edge)})" if options.edge else
               f" (publishing into Redis at {shown_url(options.publish)})" if options.publish else "")
        what = ("every device" + (" published there" if options.edge else " on this machine")
                if options.attach == ALL else ", ".join(repr(c.link.device_name or k) for k, c in bridge.hub.cores.items()))
        print(f"monbridge: serving {what} at {bridge.url}{via}", flush=True)
    run, stop = netio.server(options.async_mode, listener,
                             HostGuard(bridge.app, options.host, options.require_token))
    bridge._stopper = stop
    signal.signal(signal.SIGTERM, bridge.request_stop)
    signal.signal(signal.SIGINT, bridge.request_stop)
    bridge.socketio.start_background_task(bridge.relay_loop)
    bridge.socketio.start_background_task(bridge.reply_loop)
    if options.attach == ALL:
        bridge.socketio.start_background_task(bridge.discover_loop)
    freeze_startup()   # startup's objects live as long as the bridge: no collection scans them again
    bridge.gc_watch.install()   # the collections from here on
    try:
        run()
    finally:
        bridge.close()
    log.info("bridge stopped")
    return 0
