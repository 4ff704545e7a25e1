"""Client: the blocking Python client of a monbridge bridge, for scripts, notebooks and
hardware-in-the-loop tests (docs/client.md).

    from bridge.client import Client
    with Client("http://127.0.0.1:8050/?token=...") as client:   # device="arm1": one of several
        with client.subscribe("joints", rate=30) as joints:
            for msg in joints: ...          # Records / Frame / Events, with an exact ``missed``
        client.command("set_speed", value=1.5)

Each Client runs a ``bridge.aclient.AsyncClient`` on an event loop of its own, on a daemon
thread, and waits for it: one implementation of the connection, reconnects and flow control
for both APIs, messages handled in the order the bridge sent them (python-socketio's
threaded client runs a thread per incoming message), and a Client works where an event loop
already runs (Jupyter). Callbacks (``on_state``) run on that thread.

Imports socketio's asyncio client (aiohttp), numpy and the standard library, through
bridge.aclient and bridge.client_messages; never flask, eventlet or bridge.server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from typing import Any, Callable, Coroutine, Iterator, Mapping, TypeVar

from .aclient import AsyncClient, AsyncSubscription, StateCallback, _describe, _name_of, state_test
from .client_messages import (
    BridgeError,
    ClientError,
    CommandFailed,
    ConnectionFailed,
    DeviceError,
    Events,
    Frame,
    Message,
    ProtocolError,
    Records,
    Refused,
    Stream,
    Timeout,
)

T = TypeVar("T")
C = TypeVar("C")
CLOSE_TIMEOUT = 5.0   # seconds close() waits for the disconnect


class Subscription:
    """One channel's messages, in order: ``for msg in sub``, ``sub.get(timeout)``.

    Taking a message confirms it to the bridge (``consumed``), which then sends the next: at
    most ``in_flight`` messages ever wait here however slow the loop, and ``missed`` counts
    exactly what was skipped meanwhile. ``close()`` (or leaving a ``with`` block) unsubscribes
    and ends the iteration.
    """

    def __init__(self, client: Client, stream: Stream) -> None:
        self._client = client
        self.stream = stream
        self.closed = False
        self._error: BaseException | None = None   # why it ended, if not closed by the user
        self._items: deque[Message | BaseException] = deque()
        self._cond = threading.Condition()

    @property
    def channel(self) -> str:
        return self.stream.channel

    @property
    def ack(self) -> dict[str, Any] | None:
        """The bridge's answer to the last subscribe: the rate served, ``points_per_update``..."""
        return self.stream.ack

    def pending(self) -> int:
        """Messages received and not yet taken (at most ``in_flight``)."""
        with self._cond:
            return len(self._items)

    # called by the AsyncClient, on the client's thread
    def _deliver(self, item: Message | BaseException) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def _end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.closed = True
            self._error = error
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Message:
        """The next message (Records, Frame or Events); Timeout after ``timeout`` seconds
        (None: wait as long as it takes); ClientError once the subscription is closed."""
        self._client._not_on_loop("Subscription.get")
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self.closed, timeout):
                raise Timeout(f"no message on {self.channel!r} within {timeout} s")
            if not self._items:
                raise self._error or ClientError(f"the subscription to {self.channel!r} is closed")
            item = self._items.popleft()
        if isinstance(item, BaseException):
            raise item
        self._client._loop.call_soon_threadsafe(self._client._async._consumed, item)
        return item

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        with self._cond:
            if self.closed and not self._items and self._error is None:
                raise StopIteration
        return self.get()

    def close(self) -> None:
        """Unsubscribe; iteration ends. Safe to call twice."""
        if self.closed:
            return
        if self._client._closed:
            self._end()
            return
        self._client._run(self._client._async._unsubscribe(self))

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A blocking connection to a bridge, following one of its devices; connects in the
    constructor.

    ``url`` is the URL the bridge printed (``http://127.0.0.1:8050/?token=...``); its token is
    used unless ``token`` is given. Without a token a loopback bridge lets you in as a viewer
    (commands fail with ``forbidden``). ``device`` names the device to follow; None means the
    bridge's only one. ``timeout`` is the default for connecting, commands and waits. With
    ``reconnect`` a lost connection is retried for as long as it takes; open subscriptions
    are sent again and the state resynchronised when it is back.

    Raises Refused (missing or wrong token), ConnectionFailed (nothing to connect to),
    Timeout, or DeviceError (the bridge does not serve ``device``, or serves several and
    ``device`` is None: the message lists them).
    """

    def __init__(self, url: str, token: str | None = None, *, device: str | None = None, timeout: float = 10.0,
                 reconnect: bool = True, _check_device: bool = True) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="monbridge-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._cond = threading.Condition()   # notified on every change the AsyncClient sees
        self._changes = 0

        async def make() -> AsyncClient:
            return AsyncClient(url, token, device=device, timeout=timeout, reconnect=reconnect,
                               _subscription=lambda _, stream: Subscription(self, stream),
                               _check_device=_check_device)

        try:
            self._async = self._run(make())
            self._async._listeners.append(self._changed)
            self._run(self._async.open(), self._async.timeout + 5.0)
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    def list_devices(url: str, token: str | None = None, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The devices the bridge serves, as ``devices`` lists them: connects, reads ``hello``
        and disconnects. For a script that does not know which device to ask for."""
        with Client(url, token, timeout=timeout, reconnect=False, _check_device=False) as client:
            return client.devices

    # -- what the client knows (see AsyncClient) ----------------------------------------

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def timeout(self) -> float:
        return self._async.timeout

    @property
    def connected(self) -> bool:
        return self._async.connected

    @property
    def state(self) -> dict[str, Any]:
        """The device's state, kept current (a new dict at each change: do not modify it)."""
        return self._async.state

    @property
    def device(self) -> dict[str, Any]:
        """The device followed: ``{"name", "status": "online" | "offline", "pid", "heartbeat_age"}``."""
        return self._async.device

    @property
    def devices(self) -> list[dict[str, Any]]:
        """Every device the bridge serves, in its order, each as ``device`` is; kept current."""
        return self._async.devices

    @property
    def channels(self) -> list[dict[str, Any]]:
        """The device's channels as ``hello`` lists them (name, kind, dtype, shape...)."""
        return self._async.channels

    @property
    def commands(self) -> list[dict[str, Any]]:
        """The device's command catalog (name, params, coalesce, doc)."""
        return self._async.commands

    @property
    def views(self) -> list[dict[str, Any]]:
        return self._async.views

    @property
    def hello(self) -> dict[str, Any]:
        return self._async.hello

    @property
    def role(self) -> str | None:
        """"operator" (watch and command) or "viewer" (watch only)."""
        return self._async.role

    def on_state(self, callback: StateCallback) -> StateCallback:
        """Call ``callback(changes, full)`` on every state message (``full``: ``changes`` is the
        whole new state). It runs on the client's thread: keep it short, and call no blocking
        method of this client from it. Usable as a decorator."""
        return self._async.on_state(callback)

    def off_state(self, callback: StateCallback) -> None:
        self._loop.call_soon_threadsafe(self._async.off_state, callback)

    # -- waiting ---------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Client], C], timeout: float | None = None, what: str | None = None) -> C:
        """Return ``predicate(client)``'s first truthy value, re-checked whenever the state,
        devices, channels or connection change; Timeout after ``timeout`` seconds."""
        self._not_on_loop("wait_for")
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._changes
            value = predicate(self)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"timed out after {timeout:g} s waiting for {what or _name_of(predicate)}")
            with self._cond:
                self._cond.wait_for(lambda: self._changes != seen, left)

    def wait_for_state(self, key: str, value: Any = None, timeout: float | None = None) -> Any:
        """Wait until ``state[key]`` equals ``value`` (or satisfies it, if callable; None: exists)."""
        test = state_test(key, value)
        self.wait_for(lambda c: test(c.state), timeout, f"state[{key!r}] {_describe(value)}")
        return self.state[key]

    def wait_for_device(self, status: str = "online", timeout: float | None = None) -> dict[str, Any]:
        """Wait until the device's status is ``status`` ("online" or "offline"); return it."""
        return self.wait_for(lambda c: c.device.get("status") == status and c.device, timeout,
                             f"the device to be {status}")

    # -- commands and subscriptions ----------------------------------------------------

    def command(self, name: str, /, **args: Any) -> Any:
        """Run a device command; return the handler's result, or raise CommandFailed (code,
        message) or Timeout (no answer within the client's timeout)."""
        return self.command_args(name, args)

    def command_args(self, name: str, args: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """``command`` with the arguments as a dict and a timeout of its own."""
        limit = (self.timeout if timeout is None else timeout) + 5.0
        return self._run(self._async.command_args(name, args, timeout=timeout), limit)

    def subscribe(self, channel: str, rate: float | None = 30, max_points: int | None = None,
                  window: float | None = None, in_flight: int = 4) -> Subscription:
        """Subscribe to ``channel``; BridgeError if the bridge refuses (``unknown_channel``...).
        ``rate``: messages per second at most; ``max_points`` / ``window``: the row budget of a
        records channel (docs/protocol.md §4.3); ``in_flight``: messages sent ahead of what you
        have taken (1-64)."""
        self._not_on_loop("subscribe")

        async def start() -> Subscription:
            sub = self._async.subscribe(channel, rate, max_points, window, in_flight)
            await self._async._subscribe(sub)
            return sub

        return self._run(start(), self.timeout + 5.0)

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect and stop reconnecting; open subscriptions end. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._async.close(), CLOSE_TIMEOUT)
        finally:
            self._stop_loop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the loop thread -------------------------------------------------------------

    def _changed(self) -> None:   # on the loop thread
        with self._cond:
            self._changes += 1
            self._cond.notify_all()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the client's loop and wait for it (its own timeouts come first)."""
        if threading.current_thread() is self._thread or not self._loop.is_running():
            coro.close()
            self._not_on_loop("this Client method")
            raise ClientError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            done, _ = concurrent.futures.wait([future], timeout)
        except BaseException:   # KeyboardInterrupt: leave nothing running behind
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise Timeout(f"the client's loop did not answer within {timeout:g} s")
        return future.result()   # (our Timeout is a TimeoutError too: no except around this)

    def _not_on_loop(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise ClientError(f"{what} blocks, and cannot be called from an on_state callback (it runs on "
                              "the client's own thread); hand the work to another thread")

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()


__all__ = ["AsyncClient", "AsyncSubscription", "BridgeError", "Client", "ClientError", "CommandFailed",
           "ConnectionFailed", "DeviceError", "Events", "Frame", "ProtocolError", "Records", "Refused", "Subscription",
           "Timeout"]
