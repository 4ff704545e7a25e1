"""The device side of commands: the registry of handlers and the dispatcher.

Imports only the standard library. Messages are JSON in the control segment's queues
(see control.py and docs/protocol.md):

    command (bridge → device): {"id": 7, "name": "set_speed", "args": {"value": 1.5},
                                "client": {"id": "...", "address": "...", "role": "operator"}}
    reply   (device → bridge): {"id": 7, "ok": true, "result": 1.5}
                               {"id": 7, "ok": false, "error": {"code": "...", "message": "..."}}
                               {"id": 7, "ok": true, "result": null, "coalesced": true}

Handlers run one at a time, in arrival order. For a command declared with
``coalesce=True`` only the newest of the messages taken in one batch runs; the older
ones are answered ``coalesced`` (latest value wins, as for a slider being dragged).
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import CommandError, MessageTooLarge, QueueFull
from .layout import check_name
from .queues import MessageQueue
from .schema import CLIENT_PARAM, params_from_dict, params_from_signature, validate_args

log = logging.getLogger("device_agent")


@dataclass
class CommandSpec:
    name: str
    handler: Callable[..., Any]
    params: list[dict[str, Any]]
    coalesce: bool = False
    doc: str = ""
    takes_client: bool = False

    def catalog_entry(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "coalesce": self.coalesce, "doc": self.doc}


def make_spec(fn: Callable[..., Any], name: str | None, params: dict | None, coalesce: bool) -> CommandSpec:
    if not callable(fn):
        raise TypeError(f"@mon.command decorates a function, got {fn!r}")
    name = check_name("command", name or fn.__name__)
    schema = params_from_dict(name, params) if params is not None else params_from_signature(fn)
    takes_client = CLIENT_PARAM in inspect.signature(fn).parameters
    doc = inspect.getdoc(fn) or ""
    return CommandSpec(name, fn, schema, bool(coalesce), doc.split("\n\n")[0], takes_client)


@dataclass
class Dispatcher:
    """Takes commands from ``inbox``, runs handlers, puts replies in ``outbox``."""

    inbox: MessageQueue
    outbox: MessageQueue
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    replies_dropped: int = 0

    def run_pending(self, limit: int | None = None) -> int:
        """Run every waiting command (at most ``limit``); return how many were taken."""
        with self.lock:
            # every command taken gets exactly one reply: take no more than there is room
            # for, and leave the rest queued (the bridge then sees a full queue, not a lost reply)
            room = self.outbox.slot_count - self.outbox.pending()
            limit = room if limit is None else min(limit, room)
            batch = []
            while len(batch) < limit:
                raw = self.inbox.get()
                if raw is None:
                    break
                batch.append(raw)
            if not batch:
                return 0
            messages = [_decode(raw) for raw in batch]
            newest = {}
            for i, msg in enumerate(messages):
                spec = self.commands.get(msg.get("name")) if isinstance(msg, dict) else None
                if spec is not None and spec.coalesce:
                    newest[spec.name] = i
            for i, msg in enumerate(messages):
                if isinstance(msg, CommandError):
                    self._reply({"id": None, "ok": False, "error": msg.to_dict()})
                    continue
                spec = self.commands.get(msg.get("name"))
                if spec is not None and spec.coalesce and newest[spec.name] != i:
                    self._reply({"id": msg.get("id"), "ok": True, "result": None, "coalesced": True})
                    continue
                self._reply(self._run_one(msg, spec))
            return len(batch)

    def _run_one(self, msg: dict[str, Any], spec: CommandSpec | None) -> dict[str, Any]:
        cid = msg.get("id")
        try:
            if spec is None:
                known = ", ".join(sorted(self.commands)) or "none"
                raise CommandError("unknown_command", f"unknown command {msg.get('name')!r} (known: {known})")
            args = validate_args(spec.name, spec.params, msg.get("args"))
            if spec.takes_client:
                args[CLIENT_PARAM] = msg.get("client") or {}
            try:
                result = spec.handler(**args)
            except Exception as exc:
                log.warning("command %s raised %s: %s", spec.name, type(exc).__name__, exc)
                raise CommandError("handler_error", f"{spec.name}: {type(exc).__name__}: {exc}") from None
            return {"id": cid, "ok": True, "result": result}
        except CommandError as exc:
            return {"id": cid, "ok": False, "error": exc.to_dict()}

    def _reply(self, reply: dict[str, Any]) -> None:
        try:
            data = json.dumps(reply, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            data = _error_reply(reply["id"], "bad_result", f"result is not JSON-serializable: {exc}")
        if len(data) > self.outbox.max_message:
            data = _error_reply(
                reply["id"], "too_large", f"reply is {len(data)} bytes, the limit is {self.outbox.max_message}"
            )
        try:
            self.outbox.put(data)
        except (QueueFull, MessageTooLarge):
            self.replies_dropped += 1  # the bridge is not reading; it times the command out


def _error_reply(cid: Any, code: str, message: str) -> bytes:
    return json.dumps({"id": cid, "ok": False, "error": {"code": code, "message": message}}).encode()


def _decode(raw: bytes) -> dict[str, Any] | CommandError:
    try:
        msg = json.loads(raw)
    except ValueError as exc:
        return CommandError("bad_message", f"command is not valid JSON: {exc}")
    if not isinstance(msg, dict) or not isinstance(msg.get("name"), str):
        return CommandError("bad_message", "command must be an object with a 'name'")
    return msg
