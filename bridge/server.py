"""The bridge server: a thin Flask-SocketIO adapter around the sans-I/O BridgeCore (core.py).

Handlers pass each client's event to the core and send what it returns; one task ticks the
core and waits on the doorbells until its next deadline; another routes the device's replies.
Every call into the core holds one lock and sends the core's messages, in order, before
letting go, so the core needs no locking of its own in either async mode. The eventlet /
threading differences stay here and in netio.py (listening socket, running and stopping
the WSGI server); http_api.py has the routes.

Tasks (``socketio.start_background_task``, so eventlet and threading both work):
* relay: ticks the core several times per 1/rate s and in between when it says so; when a
  subscriber waits for new data it also wakes on the data doorbell, which the device rings at
  its next publish (device_agent.channels.Waker) and a handler rings when a client's
  confirmation lets a subscription send again;
* replies: waits on the bridge's doorbell and routes the device's replies.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable
from urllib.parse import quote

from device_agent.doorbell import Doorbell, Ringer
from device_agent.settings import Use, is_loopback, make_settings_class, settings_for
from flask import Flask, request
from flask_socketio import ConnectionRefusedError, SocketIO, disconnect

from . import logs, netio, outbox, resources
from .clients import HostGuard, role_for, token_from
from .commands import Ticket
from .core import BridgeCore, CoreSettings
from .device_link import DeviceLink
from .packets import MALFORMED, SafePacket
from .record_control import RecordControl
from .views import ViewCatalog

log = logging.getLogger("bridge")
# The largest message a client may send (bytes); a larger websocket frame closes its connection
# before it is read. Command args are at most 4 KiB; eventlet unmasks a frame in Python at
# ~1 µs a byte, during which nobody else is served.
MAX_MESSAGE = 16 * 1024
VIEWS_PERIOD = 0.5           # seconds between scans of the specs directory
# seconds between the reply task's checks for late answers and room in the device's queue
# while commands wait, and at most while none does (every wake-up costs CPU: docs/bridge.md)
REPLY_POLL, IDLE_REPLY_POLL = 0.05, 0.5
CLIENT_EVENTS = ("subscribe", "unsubscribe", "consumed", "ping", "command")


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
        # an edge serves a copy of the device kept up to date from Redis (bridge/fleet/edge.py)
        self.edge = None
        if options.edge:
            from .fleet.edge import EdgeFollower

            self.edge = EdgeFollower(options.edge, options.attach, options.command_timeout,
                                     start_task=self.socketio.start_background_task, sleep=self.socketio.sleep)
            self.link = DeviceLink(options.attach, offline_after=options.offline_after,
                                   open_segment=self.edge.open_segment)
        else:
            self.link = DeviceLink(options.attach, offline_after=options.offline_after)
        self.core = BridgeCore(
            self.link,
            CoreSettings(max_rate=options.rate, command_timeout=options.command_timeout,
                         command_rate=options.command_rate, exit_with_device=options.exit_with_device),
            make_event=self.server.eio.create_event,
            outbox=lambda sid: outbox.queued(self.server, sid),
            clock=time.monotonic,
        )
        self.doorbell = Doorbell("bridge")
        self.data_doorbell = Doorbell("bridge-data")
        self.core.bridge_info = {"url": "", "pid": os.getpid(), "doorbell": self.doorbell.address,
                                 "data_doorbell": self.data_doorbell.address}
        self._ringer = Ringer()  # rings data_doorbell from a handler: a confirmation freed a subscription
        self.views = ViewCatalog(options.specs)
        self.views.scan()
        self.core.views = self.views.views()
        self._next_views_scan = 0.0
        self.lock = threading.RLock()  # one call into the core at a time (RLock: disconnect() re-enters)
        self._stop_requested = False
        self._stopper: Callable[[], None] | None = None
        # the recorder process of POST /api/record; waits through socketio.sleep, never blocking
        self.recording = RecordControl(options.record_dir, options.specs, sleep=self.socketio.sleep,
                                       start_task=self.socketio.start_background_task)
        # an origin also publishes the device into Redis for edges (bridge/fleet/origin.py)
        self.origin_tap = self.origin_sender = None
        if options.publish:
            from .fleet.origin import OriginSender, OriginTap

            self.origin_tap = OriginTap(options.attach, rate=options.rate, origin_label=netio.hostname())
            self.origin_sender = OriginSender(options.publish, options.attach, submit=self._remote_command,
                                              on_reconnect=self._origin_resync,
                                              start_task=self.socketio.start_background_task, sleep=self.socketio.sleep)
        self._register_handlers()
        from .http_api import api

        self.app.register_blueprint(api)

    # -- calling the core ----------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the core has queued, in order (the caller holds the lock)."""
        emit = self.server.emit  # python-socketio's: a message to several clients is encoded once
        for m in self.core.take_messages():
            try:
                emit(m.event, m.data, to=m.to if len(m.to) > 1 else m.to[0], namespace="/")
            except Exception as exc:  # one message that cannot be encoded must not stop the others
                log.error("cannot send %s to %d client(s): %s: %s", m.event, len(m.to), type(exc).__name__, exc)
        if self.core.take_wake():
            self._ringer.ring(self.data_doorbell.address)

    def _event(self, sid: str, event: str, args: tuple[Any, ...]) -> Any:
        with self.lock:
            ack = self.core.on_event(sid, event, args, time.monotonic(), time.time())
            self._flush()
        return ack

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
            with self.lock:
                self.core.connect(request.sid, str(env.get("REMOTE_ADDR", "")), str(env.get("HTTP_USER_AGENT", "")),
                                  role, time.time())
                self._flush()
            return True

        @sio.on("disconnect")
        def on_disconnect(*_: Any) -> None:
            with self.lock:
                self.core.disconnect(request.sid)
                self._flush()

        for name in CLIENT_EVENTS:
            sio.on(name)(lambda *args, _name=name: self._event(request.sid, _name, args))

        @sio.on(MALFORMED)
        def on_malformed(reason: Any = None, *_: Any) -> None:
            sid = request.sid
            info = self.core.clients.get(sid)
            log.warning("disconnecting client %s (%s): it sent a packet that cannot be decoded: %s",
                        sid, info.address if info else "?", reason)
            self._event(sid, MALFORMED, (reason,))
            disconnect()

        @sio.on("*")
        def on_unknown(event: str, *args: Any) -> Any:
            return self._event(request.sid, event, args)

    # -- what the HTTP API uses --------------------------------------------------------

    def run_command(self, sid: str, payload: Any, client: dict[str, Any]) -> dict[str, Any]:
        """Submit a command from the HTTP API and wait for its answer."""
        with self.lock:
            ticket = self.core.submit_http_command(client, payload, time.monotonic())
            self._flush()
        return self.core.broker.wait(ticket) if isinstance(ticket, Ticket) else ticket

    def _remote_command(self, command: Any, on_done: Callable[[dict[str, Any]], None]) -> None:
        """A command an edge validated and passed on through Redis (origin): validated again
        here, queued for the device in the order Redis holds them; ``on_done(answer)``."""
        client = {**command.client, "edge": command.edge}
        payload = {"name": command.name, "args": command.args}
        with self.lock:
            answer = self.core.broker.submit(f"{command.edge}/{client.get('id', '')}", client, payload,
                                             now=time.monotonic(), on_done=on_done)
            self._flush()
        if not isinstance(answer, Ticket):
            on_done(answer)

    def _origin_resync(self, newest: dict[str, Any]) -> None:
        """Redis reached (again): the tap reads again from what Redis holds; what was queued
        meanwhile is dropped in the same step, so nothing goes out twice or out of order."""
        with self.lock:
            self.origin_sender.drop_pending()
            self.origin_tap.resync(newest)

    def state_snapshot(self) -> dict[str, Any]:
        return dict(self.core.state.values)

    # -- background tasks --------------------------------------------------------------

    def relay_loop(self) -> None:
        """Tick the core at its deadlines, and in between as soon as there is something to do:
        when the device publishes while a subscriber waits for new data (it rings the data
        doorbell; ``Waker`` in device_agent/channels.py), and when a client's ``consumed`` lets
        a subscription that had all its messages in flight send again (the handler rings the
        same doorbell). Scans the specs directory every VIEWS_PERIOD."""
        core, tap = self.core, self.origin_tap
        while not self._stop_requested:
            started = time.monotonic()
            try:
                with self.lock:
                    result = core.tick(started, time.time())
                    self._flush()
                    if tap is not None:
                        self.origin_sender.queue(tap.tick(self.link.device, self.link.online, self.link.status(),
                                                          started, time.time()))
                for note in result.notes:
                    log.info("%s", note)
                if result.stop:
                    break
                if started >= self._next_views_scan:
                    self._next_views_scan = started + VIEWS_PERIOD
                    if self.views.scan():
                        with self.lock:
                            core.set_views(self.views.views())
                            self._flush()
            except Exception:
                log.error("relay tick failed", exc_info=True)
            core.tick_seconds = time.monotonic() - started
            deadline = core.next_deadline()
            if tap is not None and not tap.waiting_for_data:
                deadline = min(deadline, tap.next_due)  # the origin's next read into Redis
            delay = deadline - time.monotonic()
            if delay <= 0:
                self.socketio.sleep(0)  # let the sends and the handlers run first
                continue
            # the data doorbell also rings when a client's confirmation lets a subscription
            # send again, so wait on it in either case
            dev = self.link.device
            tap_waits = tap is not None and tap.waiting_for_data
            if (core.waiting_for_data or tap_waits) and dev is not None:
                dev.want_wake()
                if core.news() or (tap_waits and tap.news(dev)):  # published before the request: nothing will ring
                    self.socketio.sleep(0)
                    continue
            if netio.wait_readable(self.data_doorbell.fileno(), delay):
                self.data_doorbell.drain()
        self._shutdown()

    def reply_loop(self) -> None:
        """Route the device's replies when it rings; meanwhile time out late commands and
        move waiting ones into the device's queue."""
        broker = self.core.broker
        idle_poll = min(IDLE_REPLY_POLL, broker.timeout / 10)  # a new command's deadline is >= timeout away
        while not self._stop_requested:
            netio.wait_readable(self.doorbell.fileno(), idle_poll if broker.idle else REPLY_POLL)
            self.doorbell.drain()
            try:
                with self.lock:
                    self.core.route_replies(time.monotonic())
                    self._flush()
            except Exception:
                log.error("reply routing failed", exc_info=True)

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop_requested = True

    def _shutdown(self) -> None:
        self._stop_requested = True
        with self.lock:
            self.core.shutdown()
            self._flush()
        if self._stopper is not None:
            self._stopper()

    def close(self) -> None:
        if self.origin_sender is not None:
            self.origin_sender.stop()
        if self.edge is not None:
            self.edge.stop()
        self.recording.close()  # a recording in progress is finished and renamed first
        self.link.close()
        self.doorbell.close()
        self.data_doorbell.close()
        self._ringer.close()


def _fleet_problem(options: Any) -> str | None:
    """Check --publish / --edge and name the device they need (``options.attach``, when
    'auto' picks one); return what is wrong, or None."""
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
        from device_agent.attach import running_devices

        names, where = running_devices(), "running on this machine"
    if len(names) != 1:
        listed = f" ({', '.join(sorted(names))})" if names else ""
        return f"{len(names) or 'no'} device{'s' if len(names) != 1 else ''} {where}{listed}: choose one with --attach NAME"
    options.attach = names[0]
    return None


def serve(args: Any) -> int:
    """Run the bridge until the device closes (with --exit-with-device), SIGINT or SIGTERM."""
    # launched by a device: its terminal is the user's, so only warnings unless logging to a file
    logs.configure(logging.WARNING if args.exit_with_device and not args.log else logging.INFO, args.log)
    require_token = not is_loopback(args.host)
    if require_token and not args.token:
        log.error("refusing to listen on %s without a token: anyone on the network could connect. "
                  "Pass --token (or MON=token=...), or bind 127.0.0.1.", args.host)
        return 2
    import secrets

    options = Options(require_token=require_token, **{s.name: getattr(args, s.name) for s in settings_for(Use.OPTIONS)})
    problem = _fleet_problem(options)
    if problem:
        log.error("%s", problem)
        return 2
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
    bridge.url = bridge.core.bridge_info["url"] = f"http://{host_shown}:{port}/?token={quote(options.token, safe='')}"
    if bridge.link.device is None:
        for note in bridge.link.poll().notes:
            log.info("%s", note)
    if bridge.link.device is not None:
        bridge.link.device.publish_bridge(**bridge.core.bridge_info)
    if not options.exit_with_device:  # a device that launched us prints the URL itself
        from .fleet.streams import shown_url

        via = (f" (from Redis at {shown_url(options.edge)})" if options.edge else
               f" (publishing into Redis at {shown_url(options.publish)})" if options.publish else "")
        print(f"monbridge: serving {bridge.link.device_name or options.attach!r} at {bridge.url}{via}", flush=True)
    run, stop = netio.server(options.async_mode, listener,
                             HostGuard(bridge.app, options.host, options.require_token))
    bridge._stopper = stop
    signal.signal(signal.SIGTERM, bridge.request_stop)
    signal.signal(signal.SIGINT, bridge.request_stop)
    bridge.socketio.start_background_task(bridge.relay_loop)
    bridge.socketio.start_background_task(bridge.reply_loop)
    try:
        run()
    finally:
        bridge.close()
    log.info("bridge stopped")
    return 0
