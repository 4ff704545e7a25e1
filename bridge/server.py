"""The bridge server: Flask-SocketIO handlers and background tasks around the sans-I/O parts.

Wiring only. What each part does lives elsewhere: device_link.py (attach, online/offline,
restart), relay.py (subscriptions, the tick), commands.py (validation, queueing,
replies), clients.py (table, roles, tokens), protocol.py (messages), http_api.py
(routes), netio.py (listening socket, running and stopping the WSGI server per async mode).

Tasks (``socketio.start_background_task``, so eventlet and threading both work):
* relay: several times per 1/rate s — device status, state changes, channel data, clients
  table; when a subscriber waits for new data it also wakes on the data doorbell, which
  the device rings at its next publish (device_agent.channels.Waker);
* replies: waits on the bridge's doorbell and routes the device's replies.
No handler lets an exception escape: it is logged with exc_info and answered with an
``internal`` error acknowledgement.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from typing import Any, Callable
from urllib.parse import quote

from device_agent.control import CLIENTS_BYTES
from device_agent.doorbell import Doorbell, Ringer
from device_agent.settings import Use, is_loopback, make_settings_class, settings_for
from flask import Flask, request
from flask_socketio import ConnectionRefusedError, SocketIO, disconnect

from . import logs, netio, outbox
from .clients import ClientInfo, ClientTable, HostGuard, role_for, table_for_device, token_from
from .commands import CommandBroker, Ticket
from .device_link import DeviceLink
from .packets import MALFORMED, SafePacket
from .protocol import (MAX_DEPTH, PROTOCOL_VERSION, ProtocolError, check_one_payload, error, ok, parse_command_id,
                       parse_consumed, parse_ping, parse_subscribe, parse_unsubscribe, shown, too_deep, valid_command_id)
from .relay import Relay
from .views import ViewCatalog

log = logging.getLogger("bridge")
OUTBOX_LIMIT = 64            # engine.io packets queued for one client before it counts as congested
OUTBOX_BYTES = 8 * 1024 * 1024  # ... or bytes queued (big frames fill memory long before 64 packets)
# The largest message a client may send (bytes); a larger websocket frame closes its connection
# before it is read. Command args are at most 4 KiB; eventlet unmasks a frame in Python at
# ~1 µs a byte, during which nobody else is served.
MAX_MESSAGE = 16 * 1024
POLLS_PER_PERIOD = 4         # relay polls per 1/rate: new data waits at most 1/(4 rate) to be seen
MAX_POLL_HZ = 500
STATUS_PERIOD = 1.0          # seconds between 'device' status broadcasts and rate samples
VIEWS_PERIOD = 0.5           # seconds between scans of the specs directory
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "webui", "static")


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


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Never let a client's input crash a handler: a payload beyond the first is a
    'bad_request'; anything unexpected is logged and answered with 'internal'."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            check_one_payload(fn.__name__.removeprefix("on_"), len(args))
            return fn(*args)
        except ProtocolError as exc:
            return exc.ack()
        except Exception as exc:
            log.error("handler %s failed", fn.__name__, exc_info=True)
            return error("internal", f"the bridge failed to handle this: {type(exc).__name__}")

    return wrapper



class Bridge:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.started = time.time()
        self.url = ""
        self.app = Flask("monbridge", static_folder=None)
        self.app.config["bridge"] = self
        self.socketio = SocketIO(self.app, **socketio_options(options.async_mode))
        self.server = self.socketio.server
        self.link = DeviceLink(options.attach, offline_after=options.offline_after)
        self.clients = ClientTable()
        self.poll_period = 1.0 / min(MAX_POLL_HZ, POLLS_PER_PERIOD * options.rate)
        self.relay = Relay(self.link, self._emit, self._congested, options.rate, self.poll_period)
        self.broker = CommandBroker(self.link, self.server.eio.create_event, timeout=options.command_timeout,
                                    rate=options.command_rate, burst=max(10.0, options.command_rate * 2))
        self.doorbell = Doorbell("bridge")
        self.data_doorbell = Doorbell("bridge-data")
        self._ringer = Ringer()  # rings data_doorbell from here: a confirmation freed a subscription
        self.views = ViewCatalog(options.specs)
        self.views.scan()
        self._next_views_scan = 0.0
        self._state: dict[str, Any] = {}
        self._state_version = -1
        self._needs_full_state: set[str] = set()
        self._clients_fit = "full"  # how much of the clients table the device's copy holds (table_for_device)
        self._clients_version = -1
        self._stop_requested = False
        self._stopper: Callable[[], None] | None = None
        self.ticks = 0
        self.tick_seconds = 0.0
        self._outbox_problem = outbox.check_library()
        if self._outbox_problem:
            log.warning("cannot see what is queued for each client (%s): a client that stops reading "
                        "will not be detected as congested", self._outbox_problem)
        self._register_handlers()
        from .http_api import api

        self.app.register_blueprint(api)

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
            sid = request.sid
            self.clients.add(ClientInfo(sid, str(env.get("REMOTE_ADDR", "")), str(env.get("HTTP_USER_AGENT", "")), role))
            self._emit("hello", self.hello(sid, role), [sid])
            self._emit("state", {"full": True, "values": dict(self._state)}, [sid])
            return True

        @sio.on("disconnect")
        def on_disconnect(*_: Any) -> None:
            sid = request.sid
            self.relay.drop_client(sid)
            self.broker.forget_client(sid)
            self.clients.remove(sid)
            self._needs_full_state.discard(sid)

        @sio.on("subscribe")
        @_guarded
        def on_subscribe(payload: Any = None) -> Any:
            req = parse_subscribe(payload, self._channel_names(), self.options.rate)
            self.relay.subscribe(request.sid, req)
            self.clients.touch()  # the device's copy of the table lists subscriptions
            self._emit("state", {"full": True, "values": dict(self._state)}, [request.sid])
            return ok(channels=list(req.channels), rate=req.rate, max_points=req.max_points,
                      points_per_update=req.points_per_update(), in_flight=req.in_flight)

        @sio.on("unsubscribe")
        @_guarded
        def on_unsubscribe(payload: Any = None) -> Any:
            channels = parse_unsubscribe(payload, self._channel_names() | self._subscribed(request.sid))
            self.relay.unsubscribe(request.sid, channels)
            self.clients.touch()
            return ok(channels=list(channels))

        @sio.on("consumed")
        @_guarded
        def on_consumed(payload: Any = None) -> Any:
            channel, seq = parse_consumed(payload, self._subscribed(request.sid))
            if self.relay.consumed(request.sid, channel, seq):
                self._ringer.ring(self.data_doorbell.address)  # its next message may go now
            return ok()

        @sio.on("ping")
        @_guarded
        def on_ping(payload: Any = None) -> Any:
            return ok(t=parse_ping(payload), server_t=time.time())

        @sio.on("command")
        def on_command(payload: Any = None, *extra: Any) -> None:
            """Validate and queue at once (never blocks: this runs where the client's packets
            are read); the answer goes out as a 'result' event when the device replies."""
            sid = request.sid
            command_id = payload.get("id") if isinstance(payload, dict) else None
            try:
                check_one_payload("command", 1 + len(extra))
                command_id = parse_command_id(payload)
                ticket = self.submit_command(sid, payload, on_done=functools.partial(self._send_result, sid, command_id))
            except ProtocolError as exc:
                self.broker.counts["rejected"] += 1
                ticket = exc.ack()
            except Exception as exc:
                log.error("handler on_command failed", exc_info=True)
                ticket = error("internal", f"the bridge failed to handle this: {type(exc).__name__}")
            if not isinstance(ticket, Ticket):  # refused at once
                self._send_result(sid, command_id if valid_command_id(command_id) else None, ticket)

        @sio.on(MALFORMED)
        def on_malformed(reason: Any = None, *_: Any) -> None:
            sid = request.sid
            info = self.clients.get(sid)
            log.warning("disconnecting client %s (%s): it sent a packet that cannot be decoded: %s",
                        sid, info.address if info else "?", reason)
            self._emit("error", {"code": "bad_request",
                                 "message": f"the bridge cannot decode a packet you sent ({reason}); disconnecting"},
                       [sid])
            disconnect()

        @sio.on("*")
        def on_unknown(event: str, *args: Any) -> Any:
            return error("bad_request", f"unknown event {shown(event)} (events: subscribe, unsubscribe, consumed, command, ping)")


    def submit_command(self, sid: str, payload: Any,
                       on_done: Callable[[dict[str, Any]], None] | None = None) -> Ticket | dict[str, Any]:
        info = self.clients.get(sid)
        client = {"id": sid, "address": info.address, "role": info.role} if info else {"id": sid, "role": "viewer"}
        try:
            return self.broker.submit(sid, client, payload, on_done=on_done)
        except Exception as exc:
            log.error("command from %s failed", sid, exc_info=True)
            return error("internal", f"the bridge failed to handle this command: {type(exc).__name__}")

    def _send_result(self, sid: str, command_id: Any, answer: dict[str, Any]) -> None:
        self._emit("result", {"id": command_id, **answer}, [sid])

    def run_command(self, sid: str, payload: Any, client: dict[str, Any] | None = None) -> dict[str, Any]:
        """Submit and wait (for the HTTP API)."""
        if client is not None:
            ticket = self.broker.submit(sid, client, payload)
        else:
            ticket = self.submit_command(sid, payload)
        return self.broker.wait(ticket) if isinstance(ticket, Ticket) else ticket

    # -- what clients get --------------------------------------------------------------

    def hello(self, sid: str, role: str) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "sid": sid,
            "role": role,
            "device": self.link.status(),
            "channels": self.channel_list(),
            "commands": self.command_catalog(),
            "views": self.views.views(),
            "max_rate": self.options.rate,
            "server_time": time.time(),
        }

    def stats(self) -> dict[str, Any]:
        """Everything the Status tab shows, in one snapshot."""
        dev = self.link.device
        kinds = {name: reader.kind for name, reader in (dev.channels.items() if dev else [])}
        rtts = sorted(self.broker.rtts[-200:])
        return {
            "device": self.link.status(),
            "channels": [
                {"name": name, "kind": kinds.get(name), "publish_rate": round(st.publish_rate, 2),
                 "delivered_rate": round(st.delivered_rate, 2), "delivered": st.delivered, "skipped": st.skipped,
                 "missed": st.missed, "lag": None if st.lag is None else round(st.lag, 4)}
                for name, st in sorted(self.relay.stats.items())
            ],
            "clients": self.client_rows(),
            "relay": {"ticks": self.ticks, "tick_seconds": round(self.tick_seconds, 6), "max_rate": self.options.rate},
            "commands": {**self.broker.counts, "pending": self.broker.pending,
                         "rtt_p50": rtts[len(rtts) // 2] if rtts else None,
                         "rtt_p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None},
            "server_time": time.time(),
        }

    def channel_list(self) -> list[dict[str, Any]]:
        dev = self.link.device
        if dev is None:
            return []
        return [{k: v for k, v in spec.items() if k != "segment"} for spec in dev.manifest.get("channels", [])]

    def command_catalog(self) -> list[dict[str, Any]]:
        dev = self.link.device
        return list(dev.manifest.get("commands", [])) if dev else []

    def _channel_names(self) -> set[str]:
        dev = self.link.device
        return set(dev.channels) if dev else set()

    def _subscribed(self, sid: str) -> set[str]:
        return {s["channel"] for s in self.relay.subscriptions_of(sid)}

    def state_snapshot(self) -> dict[str, Any]:
        return dict(self._state)

    def client_rows(self) -> list[dict[str, Any]]:
        return self.clients.rows(lambda sid: {"subscriptions": self.relay.subscriptions_of(sid),
                                              "queued": self._outbox(sid)})

    # -- emitting ----------------------------------------------------------------------

    def _emit(self, event: str, data: Any, sids: list[str]) -> None:
        if not sids:  # emit(to=[]) would broadcast to everyone
            return
        self.socketio.emit(event, data, to=sids if len(sids) > 1 else sids[0])

    def _outbox(self, sid: str) -> int:
        waiting = outbox.queued(self.server, sid)
        return waiting[0] if waiting else 0

    def _congested(self, sid: str) -> bool:
        """True if the client has more than OUTBOX_LIMIT packets or OUTBOX_BYTES waiting."""
        waiting = outbox.queued(self.server, sid)
        return waiting is not None and (waiting[0] > OUTBOX_LIMIT or waiting[1] > OUTBOX_BYTES)

    # -- background tasks --------------------------------------------------------------

    def relay_loop(self) -> None:
        """Poll every ``poll_period``, and in between as soon as there is something to send:
        when a subscriber that already has data becomes due (``relay.next_send_at``), and,
        when a subscriber waits for new data, at the device's next publish (it rings the
        data doorbell; ``Waker`` in device_agent/channels.py), and when a client's
        ``consumed`` lets a subscription that had all its messages in flight send again (the
        handler rings the same doorbell). The regular polls stay as the fallback and drive
        the housekeeping (status, state, views, clients table)."""
        period = self.poll_period
        next_tick = time.monotonic()
        next_status = 0.0
        while not self._stop_requested:
            started = time.monotonic()
            try:
                self._tick(started, next_status)
                if started >= next_status:
                    next_status = started + STATUS_PERIOD
            except Exception:
                log.error("relay tick failed", exc_info=True)
            self.ticks += 1
            self.tick_seconds = time.monotonic() - started
            if started >= next_tick:  # a regular poll: schedule the next one
                next_tick += period
                if next_tick < started - period:  # fell behind: do not catch up with a burst
                    next_tick = started
            wake_at = next_tick
            if self.relay.next_send_at is not None:
                wake_at = min(wake_at, self.relay.next_send_at)
            delay = wake_at - time.monotonic()
            dev = self.link.device
            if delay <= 0:
                self.socketio.sleep(0)  # let the sends and the handlers run first
            else:
                # the data doorbell also rings when a client's confirmation lets a
                # subscription send again (on_consumed), so wait on it in either case
                if self.relay.waiting_for_data and dev is not None:
                    dev.want_wake()
                if netio.wait_readable(self.data_doorbell.fileno(), delay):
                    self.data_doorbell.drain()
        self._shutdown()

    def _tick(self, now_mono: float, next_status: float) -> None:
        changes = self.link.poll()
        for note in changes.notes:
            log.info("%s", note)
        if changes.online is False:
            self.relay.flush_missed()  # while the device that owes the counts is still attached
        if changes.attached:
            self.relay.flush_missed()  # a replacement seen without going offline first
            self.relay.reset_cursors()
            self.broker.fail_all("offline", "the device restarted before answering")
            self._state_version = -1
            self.link.device.publish_bridge(**self.bridge_info())
            self._clients_version = -1
        if changes.channels:
            self._emit("channels", {"channels": self.channel_list(), "commands": self.command_catalog()},
                       self.clients.sids())
        if changes.online is False:
            self.broker.fail_all("offline", "the device went offline before answering")
        if changes.online is not None or now_mono >= next_status:
            self._emit("device", self.link.status(), self.clients.sids())
        if changes.closed and self.options.exit_with_device:
            log.info("the device closed; exiting (--exit-with-device)")
            self._stop_requested = True
            return
        if now_mono >= self._next_views_scan:
            self._next_views_scan = now_mono + VIEWS_PERIOD
            if self.views.scan():
                self._emit("views", {"views": self.views.views()}, self.clients.sids())
        self._relay_state(full=changes.attached)
        self.relay.tick(budget_s=0.6 * self.poll_period)
        if now_mono >= next_status:
            self.relay.sample_rates(time.time())
        dev = self.link.device
        if dev is not None and self.clients.version != self._clients_version:
            self._clients_version = self.clients.version
            every_row = self.client_rows()
            data, shown, fit = table_for_device(every_row, CLIENTS_BYTES)
            try:
                dev.publish_clients_json(data)
            except Exception as exc:  # must not stop the relay
                log.warning("cannot publish the clients table to the device: %s", exc)
                return
            if fit != self._clients_fit:  # say so when it changes, not at every connect
                self._clients_fit = fit
                if fit == "full":
                    log.info("mon.clients shows every client in full again (%d)", len(every_row))
                else:
                    log.warning("the clients table is too large for the device (%d KiB of JSON): mon.clients"
                                " lists %s %d of %d clients, with subscriptions cut to their channel names",
                                CLIENTS_BYTES // 1024, "all" if fit == "brief" else "the first", shown,
                                len(every_row))

    def _relay_state(self, full: bool) -> None:
        dev = self.link.device
        if dev is not None and dev.state_version != self._state_version:
            version, values = dev.state()
            deep = [k for k, v in values.items() if too_deep(v, MAX_DEPTH - 2)]
            if deep:  # python-socketio could not send it (it recurses per level); say which
                log.warning("state %s nests more than %d levels deep: not sent to clients", shown(deep[0]),
                            MAX_DEPTH - 2)
                values = {k: v for k, v in values.items() if k not in deep}
            changed = values if full else {k: v for k, v in values.items() if self._state.get(k, _MISSING) != v}
            self._state, self._state_version = values, version
            # read after the update: a client that connected before it is in this list, one
            # that connects after it gets the new state whole in its welcome
            sids = self.clients.sids()
            if changed or full:
                self._needs_full_state.update(s for s in sids if self._congested(s))
                ready = [s for s in sids if s not in self._needs_full_state]
                if ready:
                    self._emit("state", {"full": full, "values": changed}, ready)
        for sid in [s for s in self._needs_full_state if not self._congested(s)]:
            self._needs_full_state.discard(sid)
            self._emit("state", {"full": True, "values": dict(self._state)}, [sid])

    def bridge_info(self) -> dict[str, Any]:
        """What the device learns about this bridge (the control segment's bridge blob)."""
        return {"url": self.url, "pid": os.getpid(), "doorbell": self.doorbell.address,
                "data_doorbell": self.data_doorbell.address}

    def reply_loop(self) -> None:
        while not self._stop_requested:
            netio.wait_readable(self.doorbell.fileno(), 0.05)
            self.doorbell.drain()
            dev = self.link.device
            try:
                if dev is not None:
                    replies = dev.take_replies()
                    if replies:
                        self.broker.on_replies(replies)
                self.broker.flush_backlog()
                self.broker.expire()
            except Exception:
                log.error("reply routing failed", exc_info=True)

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop_requested = True

    def _shutdown(self) -> None:
        self.broker.fail_all("offline", "the bridge is shutting down")
        if self._stopper is not None:
            self._stopper()

    def close(self) -> None:
        self.link.close()
        self.doorbell.close()
        self.data_doorbell.close()
        self._ringer.close()


_MISSING = object()


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
    options.specs = os.path.abspath(options.specs or "specs")
    options.static = os.path.abspath(options.static) if options.static else STATIC_DIR
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
    bridge.url = f"http://{host_shown}:{port}/?token={quote(options.token, safe='')}"
    if bridge.link.device is None:
        for note in bridge.link.poll().notes:
            log.info("%s", note)
    if bridge.link.device is not None:
        bridge.link.device.publish_bridge(**bridge.bridge_info())
    if not options.exit_with_device:  # a device that launched us prints the URL itself
        print(f"monbridge: serving {bridge.link.device_name or options.attach!r} at {bridge.url}", flush=True)
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
