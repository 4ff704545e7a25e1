"""BridgeCore: everything the bridge decides about one device, with no I/O of its own.

The Hub (hub.py) holds one per device served and routes clients' events to them. A core owns
the device link, the relay, the command broker, the clients table and the state relay. It
reads the device's shared memory (through ``link``, which a test can lay out in plain
``bytearray``s) but never emits, reads no clock but the ``clock`` it is given (to bound a tick's
length) and never touches a socket:

* inputs: ``connect`` / ``disconnect`` / ``on_event`` (a client sent an event), ``tick``
  (time has passed: ``now`` and ``wall`` are given), ``route_replies`` (the device may have
  answered), ``set_views`` (the specs changed), and the ``outbox`` function given at
  construction (how much is waiting to be sent to a client: the congestion input);
* outputs: ``take_messages()`` (event, data, recipients), each call's return value (an
  acknowledgement), ``next_deadline`` (when to tick again at the latest),
  ``waiting_for_data`` (tick again when the device next publishes; then ``news()``: was
  something published since the tick, before the device was asked to ring) and ``take_wake()``
  (tick at once: a client's confirmation let a subscription send again).

Not thread-safe: the adapter (server.py) makes one call at a time and sends what
``take_messages`` returns, in order, before the next call. No Flask or socketio imports.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from device_agent.control import CLIENTS_BYTES

from .clients import ClientInfo, ClientTable, table_for_device
from .commands import CommandBroker, Ticket
from .device_link import DeviceLink
from .packets import MALFORMED
from .protocol import (PROTOCOL_VERSION, ProtocolError, check_one_payload, error, ok, parse_command_id,
                       parse_consumed, parse_ping, parse_subscribe, parse_unsubscribe, shown, valid_command_id)
from .relay import Relay
from .state import StateRelay

log = logging.getLogger("bridge")
POLLS_PER_PERIOD = 4         # "a poll" (1/(4 rate)): a subscription's pacing slack is half of it (relay.py)
# A regular tick comes IDLE_PERIODS / rate after the last tick, whatever woke that one (every
# tick is a wake-up of the process, ~0.1 ms of CPU here). Longer than one period, so that a
# channel published at the rate, which rings at each publish, never meets a regular tick too.
IDLE_PERIODS = 1.5
MAX_POLL_HZ = 500
STATUS_PERIOD = 1.0          # seconds between 'device' status broadcasts and rate samples
TICK_BUDGET = 0.6            # share of a poll period a tick may spend starting new channels
OUTBOX_LIMIT = 64            # packets queued for one client before it counts as congested
OUTBOX_BYTES = 8 * 1024 * 1024  # ... or bytes queued (big frames fill memory long before 64 packets)
# the events whose payload names the device they are about (docs/protocol.md §4)
DEVICE_TAGGED = frozenset({"state", "data", "event", "device", "channels", "result"})

Outbox = Callable[[str], "tuple[int, int] | None"]  # sid -> (packets, bytes) queued for it, None if gone


@dataclass(frozen=True)
class Message:
    """One Socket.IO event to send: ``event`` with ``data`` to each client in ``to``."""

    event: str
    data: Any
    to: tuple[str, ...]


@dataclass
class CoreSettings:
    max_rate: float = 60.0
    command_timeout: float = 5.0
    command_rate: float = 100.0
    exit_with_device: bool = False


@dataclass
class TickResult:
    stop: bool = False                      # --exit-with-device and the device closed
    notes: list[str] = field(default_factory=list)  # what to log (attach, offline, ...)
    dropped: list[str] = field(default_factory=list)  # devices no longer served (Hub, --attach all)


def make_hello(sid: str, role: str, wall: float, entries: list[dict[str, Any]], multi: bool,
               views: list[dict[str, Any]], max_rate: float) -> dict[str, Any]:
    """The ``hello`` message (docs/protocol.md §4.1): every device's entry, and at the top level
    the only device's status, channels and commands when the bridge serves one."""
    only = entries[0] if len(entries) == 1 and not multi else None
    return {"protocol": PROTOCOL_VERSION, "sid": sid, "role": role, "multi": multi, "devices": entries,
            "device": only["device"] if only else None, "channels": only["channels"] if only else [],
            "commands": only["commands"] if only else [], "views": views, "max_rate": max_rate,
            "server_time": wall}


class BridgeCore:
    def __init__(self, link: DeviceLink, settings: CoreSettings, make_event: Callable[[], Any],
                 outbox: Outbox = lambda sid: None, clock: Callable[[], float] | None = None) -> None:
        """``make_event`` makes the Event an HTTP command's caller waits on (the adapter's
        async mode); ``outbox`` says what is queued for a client; ``clock`` (monotonic
        seconds) only bounds how long one tick may spend: without it a tick relays every due
        channel."""
        self.link = link
        self.settings = settings
        self.max_rate = settings.max_rate
        self.poll_period = 1.0 / min(MAX_POLL_HZ, POLLS_PER_PERIOD * settings.max_rate)
        self.idle_period = max(1.0 / MAX_POLL_HZ, IDLE_PERIODS / settings.max_rate)
        self.clients = ClientTable()
        self.outbox = outbox
        self.relay = Relay(link, self._send, self.congested, settings.max_rate, self.poll_period, self.idle_period)
        self.broker = CommandBroker(link, make_event, timeout=settings.command_timeout,
                                    rate=settings.command_rate, burst=max(10.0, settings.command_rate * 2))
        self.state = StateRelay()
        self.views: list[dict[str, Any]] = []
        self.bridge_info: dict[str, Any] = {}   # what the device learns about this bridge
        self.ticks = 0
        self.tick_seconds = 0.0
        self._clock = clock
        self._outbox: list[Message] = []
        self._wake = False
        self._next_poll: float | None = None
        self._next_status = 0.0
        self._clients_version = -1
        self._clients_fit = "full"  # how much of the clients table the device's copy holds
        self._handlers: dict[str, Callable[..., Any]] = {
            "subscribe": self._on_subscribe, "unsubscribe": self._on_unsubscribe, "consumed": self._on_consumed,
            "ping": self._on_ping}

    # -- outputs ---------------------------------------------------------------------

    def take_messages(self) -> list[Message]:
        """What to send now, in order; empties the outbox."""
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float:
        """The latest monotonic time at which to ``tick`` again: the next regular poll, or
        sooner when a subscriber with data waiting becomes due."""
        due = self._next_poll if self._next_poll is not None else 0.0
        if self.relay.next_send_at is not None:
            due = min(due, self.relay.next_send_at)
        return due

    @property
    def waiting_for_data(self) -> bool:
        """A due subscriber has had everything: tick again when the device next publishes."""
        return self.relay.waiting_for_data

    def news(self) -> bool:
        """The device published, since the last tick, on a channel where a subscriber waits for
        data: the adapter asks after asking the device to ring (``want_wake``), since a publish
        between the tick and that request rings nobody."""
        return self.relay.news()

    def take_wake(self) -> bool:
        """True once after a confirmation let a subscription send again: tick at once."""
        wake, self._wake = self._wake, False
        return wake

    def congested(self, sid: str) -> bool:
        """True if more than OUTBOX_LIMIT packets or OUTBOX_BYTES wait to go to ``sid``."""
        waiting = self.outbox(sid)
        return waiting is not None and (waiting[0] > OUTBOX_LIMIT or waiting[1] > OUTBOX_BYTES)

    def queued(self, sid: str) -> int:
        waiting = self.outbox(sid)
        return waiting[0] if waiting else 0

    def _send(self, event: str, data: Any, sids: list[str]) -> None:
        if sids:
            if event in DEVICE_TAGGED:
                data["device"] = self.link.device_name  # each payload is a fresh dict
            self._outbox.append(Message(event, data, tuple(sids)))

    # -- clients ---------------------------------------------------------------------

    def connect(self, sid: str, address: str, user_agent: str, role: str, wall: float, greet: bool = True) -> None:
        """A client was let in: it gets ``hello`` (unless the Hub greets it: ``greet=False``)
        and the whole state."""
        self.clients.add(ClientInfo(sid, address, user_agent, role, connected_at=wall))
        if greet:
            self._send("hello", self.hello(sid, role, wall), [sid])
        self._send("state", self.state.full(), [sid])

    def disconnect(self, sid: str) -> None:
        self.relay.drop_client(sid)
        self.broker.forget_client(sid)
        self.clients.remove(sid)
        self.state.forget(sid)

    def hello(self, sid: str, role: str, wall: float) -> dict[str, Any]:
        return make_hello(sid, role, wall, [self.entry(wall)], False, self.views, self.max_rate)

    def entry(self, wall: float | None = None) -> dict[str, Any]:
        """This device as ``hello.devices`` and the ``devices`` event list it."""
        return {"name": self.link.device_name, "device": self.link.status(wall), "channels": self.channel_list(),
                "commands": self.command_catalog()}

    def on_event(self, sid: str, event: str, args: tuple[Any, ...], now: float, wall: float) -> Any:
        """A client's event; return its acknowledgement (None for ``command``, answered by a
        ``result`` message, and for MALFORMED, answered by an ``error`` message after which
        the adapter disconnects the client). Never raises on a client's input."""
        if event == "command":
            self._on_command(sid, args, now)
            return None
        if event == MALFORMED:
            self._send("error", {"code": "bad_request", "message": f"the bridge cannot decode a packet you "
                                 f"sent ({args[0] if args else '?'}); disconnecting"}, [sid])
            return None
        handler = self._handlers.get(event)
        if handler is None:
            return error("bad_request", f"unknown event {shown(event)} (events: subscribe, unsubscribe, consumed, "
                                        "command, ping)")
        try:
            check_one_payload(event, len(args))
            return handler(sid, args[0] if args else None, now, wall)
        except ProtocolError as exc:
            return exc.ack()
        except Exception as exc:
            log.error("handler on_%s failed", event, exc_info=True)
            return error("internal", f"the bridge failed to handle this: {type(exc).__name__}")

    def _on_subscribe(self, sid: str, payload: Any, now: float, wall: float) -> dict[str, Any]:
        req = parse_subscribe(payload, self._channel_names(), self.max_rate)
        self.relay.subscribe(sid, req)
        self.clients.touch()  # the device's copy of the table lists subscriptions
        self._send("state", self.state.full(), [sid])
        return ok(channels=list(req.channels), rate=req.rate, max_points=req.max_points,
                  points_per_update=req.points_per_update(), in_flight=req.in_flight)

    def _on_unsubscribe(self, sid: str, payload: Any, now: float, wall: float) -> dict[str, Any]:
        channels = parse_unsubscribe(payload, self._channel_names() | self._subscribed(sid))
        self.relay.unsubscribe(sid, channels)
        self.clients.touch()
        return ok(channels=list(channels))

    def _on_consumed(self, sid: str, payload: Any, now: float, wall: float) -> dict[str, Any]:
        channel, seq = parse_consumed(payload, self._subscribed(sid))
        if self.relay.consumed(sid, channel, seq, now):
            self._wake = True  # its next message may go now
        return ok()

    def _on_ping(self, sid: str, payload: Any, now: float, wall: float) -> dict[str, Any]:
        return ok(t=parse_ping(payload), server_t=wall)

    def _on_command(self, sid: str, args: tuple[Any, ...], now: float) -> None:
        """Validate and queue at once; the answer goes out as a ``result`` message."""
        payload = args[0] if args else None
        command_id = payload.get("id") if isinstance(payload, dict) else None
        try:
            check_one_payload("command", len(args))
            command_id = parse_command_id(payload)
            info = self.clients.get(sid)
            client = {"id": sid, "address": info.address, "role": info.role} if info else {"id": sid, "role": "viewer"}
            answer = self.broker.submit(sid, client, payload, now=now,
                                        on_done=functools.partial(self._send_result, sid, command_id))
        except ProtocolError as exc:
            self.broker.counts["rejected"] += 1
            answer = exc.ack()
        except Exception as exc:
            log.error("command from %s failed", sid, exc_info=True)
            answer = error("internal", f"the bridge failed to handle this command: {type(exc).__name__}")
        if not isinstance(answer, Ticket):  # refused at once
            self._send_result(sid, command_id if valid_command_id(command_id) else None, answer)

    def _send_result(self, sid: str, command_id: Any, answer: dict[str, Any]) -> None:
        self._send("result", {"id": command_id, **answer}, [sid])

    def submit_http_command(self, client: dict[str, Any], payload: Any, now: float) -> Ticket | dict[str, Any]:
        """A command from the HTTP API: a Ticket to ``broker.wait`` on (outside the adapter's
        lock), or the refusal."""
        return self.broker.submit(client["id"], client, payload, now=now)

    # -- time passes -----------------------------------------------------------------

    def relay_tick(self, now: float, wall: float) -> int:
        """Relay what is due, nothing else; return the messages queued (per recipient). The
        adapter calls it first and ``tick(relay=False)`` once those are on their way."""
        budget = None
        if self._clock is not None:
            deadline = self._clock() + TICK_BUDGET * self.poll_period
            budget = lambda: self._clock() > deadline  # noqa: E731
        return self.relay.tick(now, wall, over_budget=budget)

    def tick(self, now: float, wall: float, relay: bool = True) -> TickResult:
        """Poll the device and relay what is due (a congested client gets nothing this tick);
        ``relay=False``: all but the relay (``relay_tick`` ran just before)."""
        result = TickResult()
        changes = self.link.poll(wall)
        result.notes.extend(changes.notes)
        if changes.online is False:
            self.relay.flush_missed()  # while the device that owes the counts is still attached
        if changes.attached:
            self.relay.flush_missed()  # a replacement seen without going offline first
            self.relay.reset_cursors()
            self.broker.fail_all("offline", "the device restarted before answering")
            self.state.reset()
            self.link.device.publish_bridge(**self.bridge_info)
            self._clients_version = -1
        sids = self.clients.sids()
        if changes.channels:
            self._send("channels", {"channels": self.channel_list(), "commands": self.command_catalog()}, sids)
        if changes.online is False:
            self.broker.fail_all("offline", "the device went offline before answering")
        status_due = now >= self._next_status
        if changes.online is not None or status_due:
            self._send("device", self.link.status(wall), sids)
        if changes.closed and self.settings.exit_with_device:
            result.notes.append("the device closed; exiting (--exit-with-device)")
            result.stop = True
            return result
        self.state.poll(self.link.device, changes.attached, sids, self.congested, self._send)
        if relay:
            self.relay_tick(now, wall)
        if status_due:
            self._next_status = now + STATUS_PERIOD
            self.relay.sample_rates(wall)
        self._publish_clients()
        self._schedule(now)
        self.ticks += 1
        return result

    def _schedule(self, now: float) -> None:
        """The next regular poll: one idle period after this tick, whatever woke it (the device's
        publishes ring while subscribers wait, so a busy relay needs no regular poll)."""
        self._next_poll = now + self.idle_period

    def _publish_clients(self) -> None:
        dev = self.link.device
        if dev is None or self.clients.version == self._clients_version:
            return
        self._clients_version = self.clients.version
        every_row = self.client_rows()
        data, shown_rows, fit = table_for_device(every_row, CLIENTS_BYTES)
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
                            CLIENTS_BYTES // 1024, "all" if fit == "brief" else "the first", shown_rows,
                            len(every_row))

    def route_replies(self, now: float) -> None:
        """Hand the device's replies to the commands waiting for them; expire the late ones."""
        dev = self.link.device
        if dev is not None:
            replies = dev.take_replies()
            if replies:
                self.broker.on_replies(replies, now=now)
        self.broker.flush_backlog()
        self.broker.expire(now=now)

    def set_views(self, views: list[dict[str, Any]]) -> None:
        """The specs directory changed: every client gets the new list."""
        self.views = views
        self._send("views", {"views": views}, self.clients.sids())

    def shutdown(self) -> None:
        self.broker.fail_all("offline", "the bridge is shutting down")

    # -- what clients and the HTTP API read ------------------------------------------

    def channel_list(self) -> list[dict[str, Any]]:
        dev = self.link.device
        if dev is None:
            return []
        return [{k: v for k, v in spec.items() if k != "segment"} for spec in dev.manifest.get("channels", [])]

    def command_catalog(self) -> list[dict[str, Any]]:
        dev = self.link.device
        return list(dev.manifest.get("commands", [])) if dev else []

    def client_rows(self) -> list[dict[str, Any]]:
        return self.clients.rows(lambda sid: {"subscriptions": self.relay.subscriptions_of(sid),
                                              "queued": self.queued(sid)})

    def _channel_names(self) -> set[str]:
        dev = self.link.device
        return set(dev.channels) if dev else set()

    def _subscribed(self, sid: str) -> set[str]:
        return {s["channel"] for s in self.relay.subscriptions_of(sid)}
