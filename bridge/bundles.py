"""Bundles: the records messages of one tick that go to the same clients, sent as one
``bundle`` message to clients that asked for it (docs/protocol.md §4.9).

Sans-I/O; imports only core's Message and protocol's ``shown``. Fewer messages is fewer
encodings, queue puts, websocket sends and client wake-ups (docs/performance.md, "Bundles").
"""

from __future__ import annotations

from typing import Any, Collection

from .core import Message
from .protocol import shown

BUNDLE = "bundle"


def is_records(m: Message) -> bool:
    return m.event == "data" and isinstance(m.data, dict) and m.data.get("kind") == "records"


def bundle_records(messages: list[Message], bundling: Collection[str]) -> list[Message]:
    """``messages`` with the records messages of each run of consecutive ones that go to the
    same clients in ``bundling`` sent to those clients as one ``bundle`` message (its payload:
    the list of their payloads, in order) where the run holds two or more. The clients not in
    ``bundling`` get each records message as before; everything else keeps its place. Each
    client so gets the same messages in the same order."""
    if not bundling:
        return messages
    out: list[Message] = []
    run: list[Message] = []
    run_to: frozenset[str] = frozenset()

    def close_run() -> None:
        if len(run) > 1:
            out.append(Message(BUNDLE, [m.data for m in run], run[0].to))
        else:
            out.extend(run)
        run.clear()

    for m in messages:
        if not is_records(m):
            close_run()
            out.append(m)
            continue
        to = tuple(sid for sid in m.to if sid in bundling)
        if len(to) < len(m.to):   # these clients asked for no bundles: theirs goes now, alone
            out.append(Message(m.event, m.data, tuple(sid for sid in m.to if sid not in bundling)) if to else m)
        if not to:
            continue
        if run and frozenset(to) != run_to:
            close_run()
        run.append(Message(m.event, m.data, to) if len(to) < len(m.to) else m)
        run_to = frozenset(to)
    close_run()
    return out


def parse_bundle_option(auth: Any) -> bool:
    """The ``bundle`` key of a client's Socket.IO auth payload: True, or False when it is
    absent. Raises ValueError with what is wrong for anything but a boolean."""
    value = auth.get("bundle", False) if isinstance(auth, dict) else False
    if not isinstance(value, bool):
        raise ValueError(f"auth 'bundle' must be true or false, got {shown(value)}")
    return value
