"""Bundles: a tick's records messages to a client that asked for bundles, sent as one
``bundle`` message, shared by the clients that get the same ones (docs/protocol.md §4.9).

Sans-I/O; imports only core's Message and protocol's ``shown``. Fewer messages is fewer
encodings, queue puts, websocket sends and client wake-ups (docs/performance.md, "Bundles").
"""

from __future__ import annotations

from typing import Any, Collection

from .core import Message
from .protocol import shown

BUNDLE = "bundle"
CHANNEL_DATA = ("data", "event")   # a channel's messages: a run of records goes on past them


def is_records(m: Message) -> bool:
    return m.event == "data" and isinstance(m.data, dict) and m.data.get("kind") == "records"


def bundle_records(messages: list[Message], bundling: Collection[str]) -> list[Message]:
    """``messages`` with the records messages of each run sent to each client in ``bundling``
    as one ``bundle`` message (its payload: the list of their payloads, in order) where that
    client has two or more of them; clients with the same ones share the message. A run is
    ended by any message but a channel's data (a frame's ``data``, an ``event``), which go
    first: between channels, the order within a tick means nothing; each channel's own order
    is kept. The clients not in ``bundling`` get each records message as before, in its place."""
    if not bundling:
        return messages
    out: list[Message] = []
    run: list[Message] = []
    for m in messages:
        if is_records(m) and any(sid in bundling for sid in m.to):
            others = tuple(sid for sid in m.to if sid not in bundling)
            if others:   # these clients asked for no bundles: theirs goes now, alone
                out.append(Message(m.event, m.data, others))
            run.append(m)
            continue
        if not (is_records(m) or m.event in CHANNEL_DATA):
            out += _bundled(run, bundling)
            run = []
        out.append(m)
    return out + _bundled(run, bundling)


def _bundled(run: list[Message], bundling: Collection[str]) -> list[Message]:
    """The messages that take ``run``'s records messages to the clients in ``bundling``."""
    mine: dict[str, list[int]] = {}   # sid -> indexes in run of the messages it gets
    for i, m in enumerate(run):
        for sid in m.to:
            if sid in bundling:
                mine.setdefault(sid, []).append(i)
    clients: dict[tuple[int, ...], list[str]] = {}   # the same messages -> the clients that get them
    for sid, indexes in mine.items():
        clients.setdefault(tuple(indexes), []).append(sid)
    out = []
    for indexes, sids in clients.items():
        if len(indexes) > 1:
            out.append(Message(BUNDLE, [run[i].data for i in indexes], tuple(sids)))
        else:
            m = run[indexes[0]]
            out.append(m if len(sids) == len(m.to) else Message(m.event, m.data, tuple(sids)))
    return out


def parse_bundle_option(auth: Any) -> bool:
    """The ``bundle`` key of a client's Socket.IO auth payload: True, or False when it is
    absent. Raises ValueError with what is wrong for anything but a boolean."""
    value = auth.get("bundle", False) if isinstance(auth, dict) else False
    if not isinstance(value, bool):
        raise ValueError(f"auth 'bundle' must be true or false, got {shown(value)}")
    return value
