"""Relay: move subscribed channels from shared memory to clients, once per tick.

Part of the sans-I/O core (core.py): no Flask or socketio imports, no clock. The core passes
``emit(event, data, sids)`` (its outbox) and ``congested(sid) -> bool``, and gives ``tick``
the time. The core is called one call at a time (its adapter holds one lock), so the relay
has no lock of its own.

The core calls ``tick`` when ``tick`` says so: at ``next_send_at`` (a subscriber becomes due
then), at the device's next publish when ``waiting_for_data`` (a subscriber due before the
next regular tick has had everything: the adapter asks the device to ring), and otherwise
``idle_period`` after the last tick (1.5/rate: state, status, a publish that rang nobody).
A subscription at rate r is due once 1/r (less half a poll, ``poll_period``) has passed
since its last message and stays due until there is something new to send; subscribers at
equal rates fall into step and share messages, and a client's new subscription at 10 Hz or
more starts in step with its others at the same rate. Per tick, for each channel with due
subscribers:
* records/events: read the ring once from the lowest cursor among due subscribers; each
  subscriber gets the records after its own cursor. Subscribers with the same cursor,
  budget and missed count get one message encoded once (``emit`` to a list of sids).
* frame: read the newest frame once; send it to every due subscriber that has not seen it.
* A congested client (its outbox over the limit; asked at most once per tick, and only for
  a client with a subscription the relay looks at) is sent nothing this tick: its
  records cursor skips to the newest record and the skipped count is reported as
  ``missed`` in its next message (or, when the device goes offline or is replaced first,
  in a message without rows: ``flush_missed``); frames and state are simply superseded
  (latest wins).
* Flow control (subscribe's ``in_flight``): a subscription with that many messages the
  client has not yet confirmed with ``consumed`` is not due. Nothing queues for it; its
  next message is the newest frame, or every record since its cursor. A page that draws
  slower than the device publishes so gets fresh frames at its own pace, not a backlog.
  A client's flow-controlled records channels at one rate (10 Hz or more) wait for each
  other's confirmations, at most one interval, to stay in step (``_keep_in_step``).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from device_agent.attach import EventsReader, FrameReader, RecordsReader

from .device_link import DeviceLink
from .protocol import Subscribe, encode_frame, encode_records

Emit = Callable[[str, Any, list[str]], None]
STEP_WAIT_MAX = 0.1   # s: the longest interval at which a new subscription waits to be in step with others


@dataclass(slots=True)
class Subscription:
    sid: str
    channel: str
    rate: float
    interval: float        # seconds between messages at most ``rate``
    budget: int | None
    cursor: int = 0        # records/events: next sequence wanted; frame: last sequence sent
    missed: int = 0        # skipped while congested, reported with the next message
    next_due: float = 0.0  # monotonic time from which the next message may go
    sent: int = 0
    skipped: int = 0
    in_flight: int | None = None  # flow control: most unconfirmed messages (None: off)
    unconfirmed: deque[int] = field(default_factory=deque)  # last seq of each unconfirmed message
    held_due: float | None = None  # waiting for its client's other channels: the next_due it had
    kind: str = ""         # the channel's kind and records dtype when subscribed: flush_missed
    dtype: Any = None      # needs them after the device that had the channel is gone

    def waiting_for_client(self) -> bool:
        return self.in_flight is not None and len(self.unconfirmed) >= self.in_flight


@dataclass
class ChannelStats:
    published: int = 0     # write count when last sampled
    publish_rate: float = 0.0
    delivered: int = 0     # messages emitted (per recipient)
    delivered_rate: float = 0.0
    skipped: int = 0
    missed: int = 0
    lag: float | None = None  # now - device time of the newest item sent
    _sample_t: float = 0.0
    _sample_delivered: int = 0


class Relay:
    def __init__(self, link: DeviceLink, emit: Emit, congested: Callable[[str], bool], max_rate: float,
                 poll_period: float | None = None, idle_period: float | None = None) -> None:
        self.link = link
        self.poll_period = poll_period if poll_period is not None else 1.0 / max_rate
        self.idle_period = idle_period if idle_period is not None else self.poll_period
        self._watched: list[tuple[Any, int]] = []  # (reader, newest) where a subscriber waits for data
        self._now = 0.0
        self._wall = 0.0
        self._due_base = 0.0
        self._judged: dict[str, bool] = {}  # sid -> congested, asked once per tick (_is_congested)
        self.emit = emit
        self.congested = congested
        self.max_rate = max_rate
        self.subs: dict[str, dict[str, Subscription]] = defaultdict(dict)  # channel -> sid -> sub
        self.stats: dict[str, ChannelStats] = defaultdict(ChannelStats)
        self._start = 0  # round-robin start, so a slow channel cannot starve the others
        # set by tick() for the server's loop: some subscriber is due (or will be before the
        # next regular tick), free to receive, and has had everything, so the server asks the
        # device to ring at its next publish (Waker); and the earliest moment another
        # subscriber becomes due (with data waiting: to send it; without: to wait for data
        # from then on), so the server ticks right then
        self.waiting_for_data = False
        self.next_send_at: float | None = None

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(self, sid: str, req: Subscribe) -> None:
        """A subscription per channel of ``req``, due at once; at rates of 10 Hz and more, in
        step with this client's subscription at the same rate if it has one (so their
        messages share ticks, and a ``bundle``: at most STEP_WAIT_MAX later than at once)."""
        interval = 1.0 / req.rate
        budget = req.points_per_update()
        dev = self.link.device
        next_due = 0.0
        if interval <= STEP_WAIT_MAX:
            next_due = next((s.next_due for s in self._client_subs(sid, interval)), 0.0)
        for name in req.channels:
            reader = dev.channels.get(name) if dev else None
            cursor = _now_cursor(reader)
            self.subs[name][sid] = Subscription(sid, name, req.rate, interval, budget, cursor, next_due=next_due,
                                                in_flight=req.in_flight, kind=getattr(reader, "kind", ""),
                                                dtype=getattr(reader, "dtype", None))

    def consumed(self, sid: str, channel: str, seq: int, now: float) -> bool:
        """The client is done with every message on ``channel`` whose last sequence is ≤ ``seq``
        (at monotonic time ``now``). True if that lets the subscription send again (it had all
        its messages in flight), at once or with the client's other channels (_keep_in_step)."""
        s = self.subs.get(channel, {}).get(sid)
        if s is None:
            return False
        was_waiting = s.waiting_for_client()
        while s.unconfirmed and s.unconfirmed[0] <= seq:
            s.unconfirmed.popleft()
        freed = was_waiting and not s.waiting_for_client()
        if freed and s.kind == "records" and s.interval <= STEP_WAIT_MAX:
            self._keep_in_step(s, now)
        return freed

    def _keep_in_step(self, freed: Subscription, now: float) -> None:
        """A client's flow-controlled records channels at one rate of 10 Hz or more wait for
        each other's confirmations, so that they keep sharing ticks (and a ``bundle``) however
        late and one by one the client confirms. A channel free to send is held while another
        still waits for the confirmation of a message sent no earlier than its own last, for at
        most one interval from ``now``; once none does, the held ones and ``freed`` are due
        together, at the latest of their due times (never earlier than their rate allows)."""
        group = [s for s in self._client_subs(freed.sid, freed.interval)
                 if s.in_flight is not None and s.kind == "records"]
        newest_waiting = max((_paced_due(s) for s in group if s.waiting_for_client()), default=None)
        released = []
        for s in group:
            if s.waiting_for_client():
                continue
            if newest_waiting is not None and newest_waiting >= _paced_due(s):
                if s.held_due is None:
                    s.held_due = s.next_due
                    s.next_due = max(s.next_due, now + s.interval)
            elif s.held_due is not None or s is freed:
                released.append(s)
        if released:   # (``freed`` alone, not held: its due time stays as it is)
            due = max(_paced_due(s) for s in released)
            for s in released:
                s.next_due = due
                s.held_due = None

    def _client_subs(self, sid: str, interval: float) -> Iterator[Subscription]:
        """Client ``sid``'s subscriptions at ``interval``, one per channel."""
        return (s for subs in self.subs.values() if (s := subs.get(sid)) is not None and s.interval == interval)

    def unsubscribe(self, sid: str, channels: tuple[str, ...]) -> None:
        for name in channels:
            self.subs.get(name, {}).pop(sid, None)

    def drop_client(self, sid: str) -> None:
        for subs in self.subs.values():
            subs.pop(sid, None)

    def subscribed_channels(self) -> frozenset[str]:
        """The channels someone subscribes to now."""
        return frozenset(name for name, subs in self.subs.items() if subs)

    def subscriptions_of(self, sid: str) -> list[dict[str, Any]]:
        return [{"channel": s.channel, "rate": s.rate, "sent": s.sent, "skipped": s.skipped,
                 "in_flight": s.in_flight, "unconfirmed": len(s.unconfirmed)}
                for subs in self.subs.values() if (s := subs.get(sid))]

    def flush_missed(self) -> None:
        """Tell every records and events subscriber the ``missed`` count it is still owed, in
        a message without rows (``seq`` = [cursor, cursor - 1]).

        A count waits for the subscriber's next message; when the device goes offline or is
        replaced there is no next message of that numbering, so the core calls this first. The
        channel's kind is the one it had when subscribed: a replacement device may not have
        declared the channel (yet).
        """
        for name, subs in self.subs.items():
            for s in subs.values():
                if not s.missed:
                    continue
                if s.kind == "records" and s.dtype is not None:
                    event, msg = "data", encode_records(name, np.empty(0, s.dtype), s.cursor, s.missed)
                elif s.kind == "events":
                    event, msg = "event", {"channel": name, "kind": "events", "seq": [s.cursor, s.cursor - 1],
                                           "missed": s.missed, "t": None, "events": []}
                else:
                    continue
                s.missed = 0
                self.emit(event, msg, [s.sid])

    def reset_cursors(self) -> None:
        """A new device process: every cursor starts from what it has now."""
        dev = self.link.device
        for name, subs in self.subs.items():
            reader = dev.channels.get(name) if dev else None
            cursor = _now_cursor(reader)
            for s in subs.values():
                s.cursor, s.missed = cursor, 0
                if reader is not None:
                    s.kind, s.dtype = reader.kind, getattr(reader, "dtype", None)
                s.unconfirmed.clear()  # sequence numbers start over with the new process

    # -- the tick ----------------------------------------------------------------------

    def tick(self, now: float, wall: float, over_budget: Callable[[], bool] | None = None) -> int:
        """Relay every due channel at monotonic time ``now`` (``wall``: Unix time, for the lag
        figures); once ``over_budget()`` says so, start no new channel. Return messages emitted."""
        dev = self.link.device
        self.waiting_for_data = False
        self.next_send_at = None
        self._watched = []
        if dev is None or not self.link.online:
            return 0
        self._now = now
        self._wall = wall
        self._due_base = now - self.poll_period / 2  # + a subscription's interval: its next due time
        names = [n for n, subs in self.subs.items() if subs]
        if not names:
            return 0
        k = self._start % len(names)
        order = names[k:] + names[:k]
        self._start += 1
        # judge each client at most once per tick: this tick's own messages are still queued
        # while it runs, so asking again per channel would see clients fall behind
        self._judged = {}
        sent = 0
        channels = dev.channels
        for i, name in enumerate(order):
            if i and over_budget is not None and over_budget():
                self.next_send_at = now  # over budget: the rest go first, at the next tick (round robin)
                break
            reader = channels.get(name)
            if reader is None:
                continue
            subs = self.subs[name]
            if isinstance(reader, RecordsReader):  # the commonest: its own single pass
                sent += self._relay_records(name, reader, subs)
                continue
            # due, and behind the channel: a due subscriber that has had everything costs
            # no ring read (a subscriber waiting for the next publish)
            frame = isinstance(reader, FrameReader)
            newest = reader.latest if frame else reader.write_count
            due = [s for s in subs.values()
                   if s.cursor < newest and now >= s.next_due and not s.waiting_for_client()]
            if due:
                if frame:
                    sent += self._relay_frame(name, reader, due)
                elif isinstance(reader, EventsReader):
                    sent += self._relay_events(name, reader, due)
                newest = reader.latest if frame else reader.write_count
            self._note_waits(reader, subs.values(), newest)
        return sent

    def _is_congested(self, sid: str) -> bool:
        """``congested(sid)``, asked at most once per tick."""
        judged = self._judged.get(sid)
        if judged is None:
            judged = self._judged[sid] = self.congested(sid)
        return judged

    def _note_waits(self, reader: Any, subs: Iterable[Subscription], newest: int) -> None:
        """Update waiting_for_data and next_send_at from this channel's subscriptions (those
        waiting for their client, congested or flow-controlled, count for neither): a
        subscriber that has had everything and is due before the next regular tick waits for
        the device's next publish; any other becomes due at a time to tick then."""
        start = self._now
        soon = start + self.idle_period
        watched = False
        next_send_at = self.next_send_at
        for s in subs:
            due_at = s.next_due
            if s.cursor >= newest and due_at <= soon:  # has had everything, due before the next tick
                if watched or s.waiting_for_client() or self._is_congested(s.sid):
                    continue
                watched = self.waiting_for_data = True
                self._watched.append((reader, newest))
            elif next_send_at is None or due_at < next_send_at:
                # data waiting (published after this tick read the channel, if it is due
                # already: nothing will ring for it), or due later: tick then
                if not s.waiting_for_client() and not self._is_congested(s.sid):
                    next_send_at = max(due_at, start)
        self.next_send_at = next_send_at

    def news(self) -> bool:
        """Something was published since the last tick on a channel where a subscriber waits."""
        return any((r.latest if isinstance(r, FrameReader) else r.write_count) != n for r, n in self._watched)

    def _ready(self, due: list[Subscription], stats: ChannelStats) -> list[Subscription]:
        """The frame subscribers in ``due`` whose clients are not congested; the others skip."""
        ready = []
        for s in due:
            if self._is_congested(s.sid):
                _skip_congested(s, stats)
            else:
                ready.append(s)
        return ready

    def _relay_records(self, name: str, reader: RecordsReader, subs: dict[str, Subscription]) -> int:
        """One pass over the channel's subscriptions: which are due and behind (a due one
        that has had everything costs no ring read), which skip as congested, and whether
        the rest are in step (then they form one group); one read, one message per group,
        then the waits. A group of subscriptions in step without flow control counts for
        the waits as one: they have the same cursor and due time."""
        stats = self.stats[name]
        newest = reader.write_count
        now = self._now
        judged = self._judged
        ready = []
        waits = []  # what _note_waits looks at
        low = -1
        key = None
        uniform = True
        for s in subs.values():
            cursor = s.cursor
            if cursor >= newest or now < s.next_due:
                waits.append(s)
                continue
            if s.in_flight is not None and len(s.unconfirmed) >= s.in_flight:
                continue  # waiting for its client: counts for nothing
            congested = judged.get(s.sid)
            if congested is None:
                congested = self._is_congested(s.sid)
            if congested:
                _skip_congested(s, stats, newest)
                continue
            ready.append(s)
            if low < 0 or cursor < low:
                low = cursor
            if uniform:
                k = (cursor, s.budget, s.missed, s.interval, s.in_flight)
                if key is None:
                    key = k
                elif k != key:
                    uniform = False
        sent = 0
        if ready:
            batch = reader.read(low)
            first, next_cursor = batch.first, batch.next_cursor
            if uniform:
                groups = {key[:3]: ready} if next_cursor > key[0] else {}
                if key[4] is None:  # in step after this tick too: one stands for all
                    waits.append(ready[0])
                else:
                    waits += ready
            else:
                groups = {}
                for s in ready:
                    if next_cursor > s.cursor:
                        k = (s.cursor, s.budget, s.missed)
                        members = groups.get(k)
                        if members is None:
                            groups[k] = [s]
                        else:
                            members.append(s)
                waits += ready
            for (cursor, budget, missed), members in groups.items():
                offset = cursor - first if cursor > first else 0
                lost = first - cursor if first > cursor else 0
                records = batch.records[offset:] if offset else batch.records
                if lost:
                    stats.missed += lost * len(members)
                if not len(records):
                    for s in members:  # missed is reset only when a message carries it
                        s.cursor = next_cursor
                        s.missed += lost
                    continue
                msg = encode_records(name, records, first + offset, missed + lost, budget)
                self._send("data", msg, members, stats, next_cursor)
                if msg["t"] is not None:
                    stats.lag = self._wall - msg["t"]
                sent += len(members)
            newest = reader.write_count
        self._note_waits(reader, waits, newest)
        return sent

    def _relay_frame(self, name: str, reader: FrameReader, due: list[Subscription]) -> int:
        stats = self.stats[name]
        latest = reader.latest
        ready = [s for s in self._ready(due, stats) if s.cursor < latest]
        if not ready:
            return 0
        frame = reader.read_latest(after=min(s.cursor for s in ready))
        if frame is None:
            return 0
        groups: dict[int, list[Subscription]] = defaultdict(list)
        for s in ready:
            if s.cursor < frame.seq:
                groups[s.cursor].append(s)
        for last, members in groups.items():
            missed = frame.seq - last - 1 if last else 0
            self._send("data", encode_frame(name, frame.seq, frame.t, frame.array, missed), members, stats)
            for s in members:
                s.cursor = frame.seq
        stats.lag = self._wall - frame.t
        return sum(len(m) for m in groups.values())

    def _relay_events(self, name: str, reader: EventsReader, due: list[Subscription]) -> int:
        """Like records, except that an event published ``to`` a client is neither sent nor
        counted as missed for the others, congested or not."""
        stats = self.stats[name]
        newest = reader.write_count
        behind = [s for s in due if s.cursor < newest]
        if not behind:
            return 0
        events, _, next_cursor = reader.read(min(s.cursor for s in behind))
        first_seq = events[0].seq if events else next_cursor
        ready = []
        for s in behind:
            if not self._is_congested(s.sid):
                ready.append(s)
                continue
            s.skipped += 1
            stats.skipped += 1
            skipped = max(0, first_seq - s.cursor) + sum(1 for e in events if e.seq >= s.cursor and e.to in (None, s.sid))
            s.missed += skipped
            stats.missed += skipped
            s.cursor = next_cursor
        sent = 0
        for s in ready:
            mine = [e for e in events if e.seq >= s.cursor and (e.to is None or e.to == s.sid)]
            s.missed += max(0, first_seq - s.cursor)
            s.cursor = next_cursor
            if not mine:
                continue  # the missed count waits for the next message this client gets
            missed, s.missed = s.missed, 0
            msg = {"channel": name, "kind": "events", "seq": [mine[0].seq, mine[-1].seq], "missed": missed,
                   "t": mine[-1].t, "events": [{"seq": e.seq, "t": e.t, "message": e.message} for e in mine]}
            self._send("event", msg, [s], stats)
            sent += 1
        return sent

    def _send(self, event: str, msg: dict[str, Any], members: list[Subscription], stats: ChannelStats,
              cursor: int | None = None) -> None:
        """Emit ``msg`` to ``members`` and note it; ``cursor``: records sent up to it (missed reset)."""
        self.emit(event, msg, [s.sid for s in members])
        last_seq = msg["seq"][1]
        base = self._due_base
        for s in members:
            if cursor is not None:
                s.cursor = cursor
                s.missed = 0
            s.sent += 1
            s.next_due = base + s.interval
            if s.in_flight is not None:
                s.unconfirmed.append(last_seq)
                s.held_due = None
        stats.delivered += len(members)

    def sample_rates(self, now: float) -> None:
        """Update publish/delivered rates (call about once a second)."""
        dev = self.link.device
        for name, stats in list(self.stats.items()):
            reader = dev.channels.get(name) if dev else None
            count = getattr(reader, "write_count", None)
            if count is None:
                count = getattr(reader, "latest", 0)
            dt = now - stats._sample_t if stats._sample_t else 0.0
            if dt > 0:
                stats.publish_rate = max(0.0, (count - stats.published) / dt)
                stats.delivered_rate = (stats.delivered - stats._sample_delivered) / dt
            stats.published, stats._sample_t, stats._sample_delivered = count, now, stats.delivered


def _paced_due(s: Subscription) -> float:
    """When ``s`` may send by its rate alone: its last message's time plus its interval."""
    return s.held_due if s.held_due is not None else s.next_due


def _skip_congested(s: Subscription, stats: ChannelStats, newest: int | None = None) -> None:
    """A congested client's subscription skips this tick; a records one (``newest`` given)
    jumps to ``newest`` and counts exactly what it skipped as missed."""
    s.skipped += 1
    stats.skipped += 1
    if newest is not None and newest > s.cursor:
        s.missed += newest - s.cursor
        stats.missed += newest - s.cursor
        s.cursor = newest


def _now_cursor(reader: Any) -> int:
    if isinstance(reader, FrameReader):
        return 0  # a new subscriber gets the current frame right away
    if reader is None:
        return 0
    return reader.write_count
