"""Hub: one bridge serving one device or several, each through its own BridgeCore.

Sans-I/O like core.py (no Flask or socketio imports, no clock): the adapter (server.py)
calls the Hub as it called a single core. The Hub greets clients (``hello`` lists every
device), answers what belongs to no device (``ping``, unknown events, undecodable packets,
``views``), routes each ``subscribe`` / ``unsubscribe`` / ``consumed`` / ``command`` to the
core of the device it names (docs/protocol.md §3), and tells clients when the set of devices
changes (``devices``). Each core tags what it sends with its device's name.

Modes: *single* (``--attach NAME`` or ``auto``: a client may leave ``device`` out) and
*multi* (``--attach a,b`` or ``all``: ``device`` is required). Under ``all`` the adapter adds
devices as they start (``add_device``) and the Hub drops one that closes cleanly.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from .bundles import bundle_records
from .commands import Ticket
from .core import BridgeCore, CoreSettings, Message, Outbox, TickResult, make_hello
from .device_link import DeviceLink
from .packets import MALFORMED
from .protocol import ProtocolError, check_one_payload, error, ok, parse_device, parse_ping, shown, valid_command_id

log = logging.getLogger("bridge")
DEVICE_EVENTS = ("subscribe", "unsubscribe", "consumed", "command")
ALL = "all"
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,48}")


def attach_names(attach: str) -> list[str] | None:
    """``--attach``'s devices: None for single mode (one NAME, or ``auto``), else the list
    (empty for ``all``: whatever runs). Raises ValueError with what is wrong."""
    if attach == ALL:
        return []
    if "," not in attach:
        if attach != "auto" and not _NAME_RE.fullmatch(attach):
            raise ValueError(f"--attach {attach!r}: a device name is 1-48 letters, digits, '_' or '-'")
        return None
    names = [n.strip() for n in attach.split(",") if n.strip()]
    bad = [n for n in names if not _NAME_RE.fullmatch(n) or n in ("auto", ALL)]
    if bad or len(set(names)) != len(names) or not names:
        raise ValueError(f"--attach {attach!r}: give device names separated by commas (each 1-48 letters, "
                         "digits, '_' or '-', no repeats), or 'all', or 'auto'")
    return names


class Hub:
    def __init__(self, settings: CoreSettings, make_event: Callable[[], Any], multi: bool,
                 outbox: Outbox = lambda sid: None, clock: Callable[[], float] | None = None,
                 drop_closed: bool = False) -> None:
        """``multi``: several devices, ``device`` required; ``drop_closed`` (``--attach all``):
        forget a device that closes cleanly."""
        self.settings = settings
        self.multi = multi
        self.drop_closed = drop_closed
        self._make_event, self._outbox_of, self._clock = make_event, outbox, clock
        self.cores: dict[str, BridgeCore] = {}   # by the --attach name (or "auto")
        self.views: list[dict[str, Any]] = []
        self.bridge_info: dict[str, Any] = {}    # what each device learns about this bridge (shared)
        self.clients: dict[str, tuple[str, str, str, float]] = {}  # sid -> address, user agent, role, connected at
        self.bundling: set[str] = set()  # clients that take ``bundle`` messages
        self._outbox: list[Message] = []

    # -- devices ---------------------------------------------------------------------

    def add_device(self, key: str, link: DeviceLink, wall: float) -> BridgeCore:
        """Serve one more device (``key``: its --attach name); every connected client learns it."""
        core = BridgeCore(link, self.settings, self._make_event, self._outbox_of, self._clock)
        core.views = self.views
        core.bridge_info = self.bridge_info
        for sid, (address, agent, role, since) in self.clients.items():
            core.connect(sid, address, agent, role, since, greet=False)
        core.take_messages()   # its state goes out with its first tick
        self.cores[key] = core
        self._send_devices(wall)
        return core

    def _drop(self, key: str, wall: float) -> None:
        core = self.cores.pop(key)
        core.shutdown()
        self._outbox.extend(core.take_messages())
        self._send_devices(wall)

    def _send_devices(self, wall: float) -> None:
        if self.clients:
            self._send("devices", {"devices": self.entries(wall)}, list(self.clients))

    def entries(self, wall: float | None = None) -> list[dict[str, Any]]:
        return [c.entry(wall) for c in self.cores.values()]

    def names(self) -> list[str]:
        return [n for n in (c.link.device_name for c in self.cores.values()) if n]

    def core_for(self, event: str, payload: Any) -> BridgeCore:
        """The core of the device ``payload`` names (or the only one); raises ProtocolError."""
        name = parse_device(event, payload, self.names(), self.multi)
        if name is None:   # single mode: its one device (multi mode refused a missing name)
            return next(iter(self.cores.values()))
        return next(c for c in self.cores.values() if c.link.device_name == name)

    # -- outputs ---------------------------------------------------------------------

    def take_messages(self) -> list[Message]:
        for core in self.cores.values():
            self._outbox.extend(core.take_messages())
        out, self._outbox = self._outbox, []
        return bundle_records(out, self.bundling)

    def _send(self, event: str, data: Any, sids: list[str]) -> None:
        if sids:
            self._outbox.append(Message(event, data, tuple(sids)))

    def take_wake(self) -> bool:
        return any([c.take_wake() for c in self.cores.values()])  # a list: clear every core's flag

    # -- clients ---------------------------------------------------------------------

    def connect(self, sid: str, address: str, user_agent: str, role: str, wall: float, bundle: bool = False) -> None:
        """``hello`` with every device, then each device's whole state. ``bundle``: the client
        takes ``bundle`` messages (its auth said so; bundles.py)."""
        self.clients[sid] = (address, user_agent, role, wall)
        if bundle:
            self.bundling.add(sid)
        self._send("hello", make_hello(sid, role, wall, self.entries(wall), self.multi, self.views,
                                       self.settings.max_rate), [sid])
        for core in self.cores.values():
            core.connect(sid, address, user_agent, role, wall, greet=False)
            self._outbox.extend(core.take_messages())

    def disconnect(self, sid: str) -> None:
        self.clients.pop(sid, None)
        self.bundling.discard(sid)
        for core in self.cores.values():
            core.disconnect(sid)

    def on_event(self, sid: str, event: str, args: tuple[Any, ...], now: float, wall: float) -> Any:
        """A client's event, routed to its device's core; returns the acknowledgement (None for
        ``command`` and MALFORMED, answered by messages). Never raises on a client's input."""
        if event == MALFORMED:
            self._send("error", {"code": "bad_request", "message": f"the bridge cannot decode a packet you "
                                 f"sent ({args[0] if args else '?'}); disconnecting"}, [sid])
            return None
        if event == "ping":
            try:
                check_one_payload(event, len(args))
                return ok(t=parse_ping(args[0] if args else None), server_t=wall)
            except ProtocolError as exc:
                return exc.ack()
        if event not in DEVICE_EVENTS:
            return error("bad_request", f"unknown event {shown(event)} (events: subscribe, unsubscribe, consumed, "
                                        "command, ping)")
        payload = args[0] if args else None
        try:
            core = self.core_for(event, payload)
        except ProtocolError as exc:
            if event != "command":
                return exc.ack()
            command_id = payload.get("id") if isinstance(payload, dict) else None
            self._send("result", {"id": command_id if valid_command_id(command_id) else None, "device": None,
                                  **exc.ack()}, [sid])
            return None
        if isinstance(payload, dict) and "device" in payload:
            args = ({k: v for k, v in payload.items() if k != "device"}, *args[1:])
        ack = core.on_event(sid, event, args, now, wall)
        if isinstance(ack, dict) and event in ("subscribe", "unsubscribe"):
            ack["device"] = core.link.device_name
        return ack

    def submit_http_command(self, client: dict[str, Any], payload: Any,
                            now: float) -> tuple[BridgeCore | None, Ticket | dict[str, Any]]:
        """The core that took it and a Ticket to wait on (``core.broker.wait``), or the refusal."""
        try:
            core = self.core_for("command", payload)
        except ProtocolError as exc:
            return None, exc.ack()
        if isinstance(payload, dict):
            payload = {k: v for k, v in payload.items() if k != "device"}
        return core, core.submit_http_command(client, payload, now)

    # -- time passes -----------------------------------------------------------------

    def relay_tick(self, now: float, wall: float) -> int:
        """Each core's ``relay_tick``; the messages queued (per recipient)."""
        return sum([core.relay_tick(now, wall) for core in self.cores.values()])

    def tick(self, now: float, wall: float, relay: bool = True) -> TickResult:
        result = TickResult()
        for key, core in list(self.cores.items()):
            done = core.tick(now, wall, relay)
            self._outbox.extend(core.take_messages())
            result.notes.extend(done.notes)
            result.stop = result.stop or done.stop
            if self.drop_closed and core.link.closed_cleanly:
                result.notes.append(f"device {core.link.device_name!r} closed: no longer served")
                result.dropped.append(key)
                self._drop(key, wall)
        return result

    def quick_repliers(self, now: float) -> list[Any]:
        """The devices (DeviceAttachment) expected to answer a waiting command within a
        moment (CommandBroker.expects_quick_reply)."""
        return [c.link.device for c in self.cores.values()
                if c.link.device is not None and c.broker.expects_quick_reply(now)]

    def route_replies(self, now: float) -> None:
        for core in self.cores.values():
            core.route_replies(now)

    def set_views(self, views: list[dict[str, Any]]) -> None:
        self.views = views
        for core in self.cores.values():
            core.views = views
        self._send("views", {"views": views}, list(self.clients))

    def shutdown(self) -> None:
        for core in self.cores.values():
            core.shutdown()
