"""CommandBroker: validate client commands, queue them for the device, route the replies.

No Flask or socketio imports: the server passes in an ``Event`` factory for its async
mode. ``submit`` never blocks (it runs inline, in arrival order); the answer (the reply, a
timeout, or the device going offline) goes to the ticket's ``on_done`` callback, or to a
task blocked in ``wait``.

Checks, in order, each answered with an error at once and nothing enqueued:
forbidden (role), bad_request/invalid_args/too_large (shape), rate_limited (per client),
offline, unknown_command / invalid_args (against the device's catalog), queue_full.

The device's queue in shared memory holds 128 commands. A burst beyond what the device has
taken yet waits in a bounded backlog here, in arrival order (once anything waits, every new
command queues behind it), and moves on as the device frees slots; only when the backlog
too is full is a command refused with queue_full. Its timeout runs from arrival.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from device_agent.errors import CommandError, MessageTooLarge, QueueFull
from device_agent.schema import validate_args

from .device_link import DeviceLink
from .protocol import ProtocolError, error, ok, parse_command, shown, unsendable

log = logging.getLogger("bridge")
BACKLOG_LIMIT = 1024  # commands waiting here for room in the device's queue, all clients together
QUICK_REPLY = 0.001   # s: answering within this, a device is expected to answer quickly (expects_quick_reply)


@dataclass
class Ticket:
    id: int
    sid: str
    name: str
    sent_at: float
    deadline: float
    event: Any             # what ``wait`` blocks on; None when ``on_done`` takes the answer instead
    ack: dict[str, Any] | None = None
    on_done: Callable[[dict[str, Any]], None] | None = None  # called with the answer, once


@dataclass
class RateLimit:
    """Token bucket: ``rate`` commands per second, bursts of ``burst``."""

    rate: float
    burst: float
    tokens: float = field(default=0.0)
    stamp: float | None = None  # when last asked; None: never (a full bucket)

    def allow(self, now: float) -> bool:
        if self.stamp is None:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class CommandBroker:
    def __init__(self, link: DeviceLink, make_event: Callable[[], Any], timeout: float = 5.0,
                 max_bytes: int = 4096, rate: float = 50.0, burst: float = 100.0) -> None:
        self.link = link
        self.make_event = make_event
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.rate, self.burst = rate, burst
        self._pending: dict[int, Ticket] = {}
        self._backlog: deque[tuple[Any, str, dict[str, Any], dict[str, Any], int]] = deque()  # (device, name, args, client, id)
        self._limits: dict[str, RateLimit] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # submit may run on several threads in threading mode
        self.rtts: list[float] = []    # recent round trips (s), for metrics; bounded
        self.counts = {"accepted": 0, "rejected": 0, "timeouts": 0}
        self._catalog_of: dict[str, Any] | None = None  # the manifest _catalog_by_name was made from
        self._catalog_by_name: dict[str, dict[str, Any]] = {}

    def submit(self, sid: str, client: dict[str, Any], payload: Any, now: float | None = None,
               on_done: Callable[[dict[str, Any]], None] | None = None) -> Ticket | dict[str, Any]:
        """Validate and enqueue; return a Ticket, or an error answer at once.

        The ticket is answered by a reply pump (``on_replies``, ``flush_backlog``), by
        ``expire`` or by ``fail_all``: then ``on_done(answer)`` runs there, and ``wait``
        returns. Without ``on_done``, ``wait`` on it."""
        try:
            if client.get("role") != "operator":
                raise ProtocolError("forbidden", "this connection may only watch: commands need the operator token")
            name, args = parse_command(payload, self.max_bytes)
            now = time.monotonic() if now is None else now
            with self._lock:
                limit = self._limits.setdefault(sid, RateLimit(self.rate, self.burst))
                if not limit.allow(now):
                    raise ProtocolError("rate_limited", f"{name}: more than {self.rate:g} commands/s from this client")
                dev = self.link.device
                if dev is None or not self.link.online:
                    raise ProtocolError("offline", f"{name}: the device is offline")
                catalog = self._catalog(dev.manifest)
                if name not in catalog:
                    known = ", ".join(sorted(catalog)) or "none"
                    raise ProtocolError("unknown_command", f"unknown command {shown(name)} (known: {known})")
                validate_args(name, catalog[name]["params"], args)
                cid = next(self._ids)
                entry = (dev, name, args, client, cid)
                if self._backlog or not self._send(entry):
                    if len(self._backlog) >= BACKLOG_LIMIT:
                        raise ProtocolError("queue_full", f"{name}: the device is not taking commands "
                                                          f"({BACKLOG_LIMIT} waiting)")
                    self._backlog.append(entry)
                ticket = Ticket(cid, sid, name, now, now + self.timeout,
                                None if on_done is not None else self.make_event(), on_done=on_done)
                self._pending[cid] = ticket
                self.counts["accepted"] += 1
                return ticket
        except CommandError as exc:
            self.counts["rejected"] += 1
            return error(exc.code, exc.message)
        except ProtocolError as exc:
            self.counts["rejected"] += 1
            return exc.ack()

    def _catalog(self, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The device's commands by name, worked out once per manifest (a device replaces its
        manifest as a whole when it changes)."""
        if manifest is not self._catalog_of:
            self._catalog_by_name = {c["name"]: c for c in manifest.get("commands", [])}
            self._catalog_of = manifest
        return self._catalog_by_name

    def _send(self, entry: tuple[Any, str, dict[str, Any], dict[str, Any], int]) -> bool:
        """Put one command in the device's queue; False if the queue is full."""
        dev, name, args, client, cid = entry
        try:
            dev.send_command(name, args, client=client, command_id=cid)
            return True
        except QueueFull:
            return False
        except MessageTooLarge as exc:
            raise ProtocolError("too_large", f"{name}: {exc}") from None

    def flush_backlog(self) -> None:
        """Move waiting commands into the device's queue while it has room (reply pump calls this)."""
        failed = []
        with self._lock:
            while self._backlog:
                entry = self._backlog[0]
                if entry[0] is not self.link.device:  # the device it was meant for is gone
                    self._backlog.popleft()
                    failed.append(entry[4])
                    continue
                try:
                    if not self._send(entry):
                        break
                except ProtocolError as exc:
                    failed.append((entry[4], exc))
                self._backlog.popleft()
        for item in failed:
            cid, exc = item if isinstance(item, tuple) else (item, None)
            self._finish(cid, exc.ack() if exc else error("offline", "the device restarted before taking this command"))

    def wait(self, ticket: Ticket) -> dict[str, Any]:
        """Block until the ticket is answered; a reply pump or ``expire`` answers it."""
        ticket.event.wait(max(0.0, ticket.deadline - time.monotonic()) + 1.0)
        if ticket.ack is None and self._finish(
                ticket.id, error("timeout", f"{ticket.name}: no reply from the device in {self.timeout:g} s")):
            self.counts["timeouts"] += 1
        return ticket.ack or error("timeout", f"{ticket.name}: no reply")

    def on_replies(self, replies: list[dict[str, Any]], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for reply in replies:
            cid = reply.get("id")
            problem = unsendable(reply.get("result")) if reply.get("ok") else None
            if problem:
                ack = error("bad_result", f"the handler's result {problem}")
            elif reply.get("ok"):
                ack = ok(result=reply.get("result"))
                if reply.get("coalesced"):
                    ack["coalesced"] = True
            else:
                err = reply.get("error") or {}
                ack = error(str(err.get("code", "handler_error")), str(err.get("message", "command failed")))
            ticket = self._finish(cid, ack)
            if ticket is not None:
                self.rtts.append(now - ticket.sent_at)
                if len(self.rtts) > 1000:
                    del self.rtts[:500]

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [t for t in self._pending.values() if t.deadline <= now]
        for ticket in late:
            self.counts["timeouts"] += 1
            self._finish(ticket.id, error("timeout", f"{ticket.name}: no reply from the device in {self.timeout:g} s"))

    def fail_all(self, code: str, message: str) -> None:
        with self._lock:
            ids = list(self._pending)
            self._backlog.clear()
        for cid in ids:
            self._finish(cid, error(code, message))

    def forget_client(self, sid: str) -> None:
        with self._lock:
            self._limits.pop(sid, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def expects_quick_reply(self, now: float) -> bool:
        """A command waits for its answer, none has waited longer than QUICK_REPLY, and the
        device answered the last one within QUICK_REPLY (or has answered none yet): the
        adapter may watch for the answer rather than wait to be woken (docs/bridge.md)."""
        if not self._pending or (self.rtts and self.rtts[-1] > QUICK_REPLY):
            return False
        oldest = next(iter(self._pending.values()))   # in the order submitted
        return now - oldest.sent_at <= QUICK_REPLY

    @property
    def idle(self) -> bool:
        """No command waits for an answer or for room in the device's queue."""
        return not self._pending and not self._backlog

    def _finish(self, cid: Any, ack: dict[str, Any]) -> Ticket | None:
        with self._lock:
            ticket = self._pending.pop(cid, None)
        if ticket is not None:
            ticket.ack = ack
            if ticket.event is not None:
                ticket.event.set()
            if ticket.on_done is not None:
                try:
                    ticket.on_done(ack)
                except Exception:  # one client's answer must not stop the routing of the others'
                    log.error("sending the answer to command %s failed", ticket.name, exc_info=True)
        return ticket
