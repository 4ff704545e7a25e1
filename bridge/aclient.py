"""AsyncClient: the asyncio Python client of a monbridge bridge (docs/client.md).

    client = await AsyncClient.connect("http://127.0.0.1:8050/?token=...")   # device="arm1": one of several
    async for msg in client.subscribe("joints", rate=30): ...
    await client.command("set_speed", value=1.5)

Built on python-socketio's ``AsyncClient`` (public API only) speaking msgpack; the protocol
itself (decoding, state, subscriptions, exceptions) is ``bridge.client_messages``. It works in
any running event loop, a Jupyter notebook's included. The blocking ``bridge.client.Client``
runs one of these on a private event loop thread: python-socketio's threaded client handles
each incoming message on a thread of its own, so it cannot keep the bridge's order, which
state deltas and records batches need; the asyncio client runs handlers in arrival order.

Imports socketio (its asyncio client: aiohttp), numpy and the standard library; never flask,
eventlet or bridge.server.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
from collections import deque
from typing import Any, Awaitable, Callable, Generator, Mapping, TypeVar

import socketio

from .client_messages import (
    PROTOCOL_VERSION,
    BridgeError,
    ClientError,
    CommandFailed,
    ConnectionFailed,
    DeviceError,
    Message,
    ProtocolError,
    Refused,
    Session,
    Stream,
    Timeout,
    check_ack,
    check_device_name,
    command_payload,
    command_result,
    consumed_payload,
    split_url,
    subscribe_payload,
    unsubscribe_payload,
)

log = logging.getLogger("monbridge.client")

StateCallback = Callable[[dict[str, Any], bool], Any]
C = TypeVar("C")

RECONNECT_DELAY = 0.5      # first retry after a lost connection; doubles up to RECONNECT_DELAY_MAX
RECONNECT_DELAY_MAX = 2.0


class AsyncSubscription:
    """One channel's messages, in order: ``async for msg in sub``, ``await sub.get(timeout)``.

    The bridge is asked to subscribe on first use (iteration, ``get``, ``async with`` or
    ``await sub``). Taking a message confirms it to the bridge (``consumed``), which then
    sends the next: at most ``in_flight`` messages ever wait here, however slow the consumer.
    """

    def __init__(self, client: AsyncClient, stream: Stream) -> None:
        self._client = client
        self.stream = stream
        self.closed = False
        self._error: BaseException | None = None   # why it ended, if not closed by the user
        self._items: deque[Message | BaseException] = deque()
        self._wakeup = asyncio.Event()
        self._started: asyncio.Future[None] | None = None

    @property
    def channel(self) -> str:
        return self.stream.channel

    @property
    def ack(self) -> dict[str, Any] | None:
        """The bridge's answer to the last subscribe: the rate served, ``points_per_update``..."""
        return self.stream.ack

    def pending(self) -> int:
        """Messages received and not yet taken (at most ``in_flight``)."""
        return len(self._items)

    # called by the client, on its loop
    def _deliver(self, item: Message | BaseException) -> None:
        self._items.append(item)
        self._wakeup.set()

    def _end(self, error: BaseException | None = None) -> None:
        self.closed = True
        self._error = error
        self._wakeup.set()

    async def start(self) -> AsyncSubscription:
        """Subscribe (once); BridgeError if the bridge refuses (e.g. ``unknown_channel``)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._client._subscribe(self))
        await asyncio.shield(self._started)
        return self

    def __await__(self) -> Generator[Any, None, AsyncSubscription]:
        return self.start().__await__()

    async def get(self, timeout: float | None = None) -> Message:
        """The next message (Records, Frame or Events); Timeout after ``timeout`` seconds
        (None: wait as long as it takes); ClientError once the subscription is closed."""
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._items:
            if self.closed:
                raise self._error or ClientError(f"the subscription to {self.channel!r} is closed")
            self._wakeup.clear()
            left = None if deadline is None else deadline - loop.time()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                raise Timeout(f"no message on {self.channel!r} within {timeout} s") from None
        item = self._items.popleft()
        if isinstance(item, BaseException):
            raise item
        self._client._consumed(item)
        return item

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Message:
        if self.closed and not self._items and self._error is None:
            raise StopAsyncIteration
        return await self.get()

    async def close(self) -> None:
        """Unsubscribe; iteration ends. Safe to call twice."""
        await self._client._unsubscribe(self)

    async def __aenter__(self) -> AsyncSubscription:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncClient:
    """A connection to a bridge, kept up across bridge restarts (``reconnect``), following one
    of its devices.

    Use ``await AsyncClient.connect(url, token=None, device=None, timeout=10.0, reconnect=True)``,
    or ``async with AsyncClient(url) as client``. ``url`` is the URL the bridge printed; its
    ``?token=`` is used unless ``token`` is given. Without a token a loopback bridge lets you
    in as a viewer (watch only: commands fail with ``forbidden``). ``device`` names the device
    to follow; None means the bridge's only one (DeviceError at connect if it serves several).
    """

    def __init__(self, url: str, token: str | None = None, *, device: str | None = None, timeout: float = 10.0,
                 reconnect: bool = True, _subscription: Callable[[AsyncClient, Stream], Any] = AsyncSubscription,
                 _check_device: bool = True) -> None:
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"'timeout' must be a positive number of seconds, got {timeout!r}")
        self.url = url
        self.timeout = float(timeout)
        self._origin, self._path, self._token = split_url(url, token)
        self._session = Session(want=check_device_name(device))
        self._check_device = _check_device   # False: list_devices, which follows no device
        self._subs: dict[str, Any] = {}         # channel -> its open subscription
        self._new_subscription = _subscription
        self._commands: dict[int, tuple[asyncio.Future[Any], str]] = {}  # command id -> (answer, name)
        self._ids = itertools.count(1)
        self._state_callbacks: list[StateCallback] = []
        self._listeners: list[Callable[[], None]] = []   # called on every change (bridge.client's waits)
        self._changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._connect_error: Any = None
        self._closed = False
        self._sio = socketio.AsyncClient(
            reconnection=reconnect, reconnection_delay=RECONNECT_DELAY, reconnection_delay_max=RECONNECT_DELAY_MAX,
            serializer="msgpack", logger=False, engineio_logger=False,
            websocket_extra_options={"max_msg_size": 0})   # a frame message can be many MiB
        handlers: dict[str, Callable[..., None]] = {
            "hello": self._on_hello, "state": self._on_state, "device": self._on_device,
            "channels": self._on_channels, "devices": self._on_devices, "views": self._on_views, "data": self._on_data,
            "bundle": self._on_bundle, "event": self._on_data_event, "result": self._on_result, "error": self._on_error,
            "connect": self._on_connect, "disconnect": self._on_disconnect, "connect_error": self._on_connect_error}
        for event, handler in handlers.items():
            self._sio.on(event, _guarded(event, handler))

    @classmethod
    async def connect(cls, url: str, token: str | None = None, *, device: str | None = None, timeout: float = 10.0,
                      reconnect: bool = True) -> AsyncClient:
        """Connect; Refused (token), ConnectionFailed (unreachable), Timeout, or DeviceError (the
        bridge does not serve ``device``, or serves several and ``device`` is None) if it cannot."""
        client = cls(url, token, device=device, timeout=timeout, reconnect=reconnect)
        await client.open()
        return client

    @classmethod
    async def list_devices(cls, url: str, token: str | None = None, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The devices the bridge serves, as ``devices`` lists them: connects, reads ``hello``
        and disconnects. For a script that does not know which device to ask for."""
        client = cls(url, token, timeout=timeout, reconnect=False, _check_device=False)
        await client.open()
        try:
            return client.devices
        finally:
            await client.close()

    async def open(self) -> None:
        """Connect (``connect`` does it for you); hello and the full state have arrived on return.
        DeviceError (and no connection) if this bridge does not serve the device asked for."""
        auth = {"token": self._token, "bundle": True} if self._token else {"bundle": True}
        try:
            await asyncio.wait_for(
                self._sio.connect(self._origin, auth=auth, transports=["websocket"], socketio_path=self._path,
                                  wait_timeout=self.timeout),
                self.timeout + 1.0)
        except asyncio.TimeoutError:
            await self._abandon()
            raise Timeout(f"no connection to the bridge at {self._origin} within {self.timeout:g} s") from None
        except socketio.exceptions.ConnectionError as exc:
            await self._abandon()
            refusal = _refusal(self._connect_error)
            if refusal is not None:
                raise Refused(f"the bridge at {self._origin} refused the connection: {refusal}") from None
            raise ConnectionFailed(f"cannot connect to the bridge at {self._origin}: {exc}; is it running, and "
                                   "is this the URL it printed?") from None
        self._connected.set()
        try:   # the bridge sends hello before it completes the connection: this does not wait
            await self.wait_for(lambda c: c.hello, what="the bridge's hello")
        except Timeout:
            await self._abandon()
            raise
        problem = self._session.device_problem() if self._check_device else None
        if problem is not None:
            await self._abandon()
            raise problem

    async def _abandon(self) -> None:
        try:
            await self._sio.shutdown()
        except Exception:  # nothing to shut down
            log.debug("shutting down a failed connection", exc_info=True)

    # -- what the client knows -------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._sio.connected and not self._closed

    @property
    def state(self) -> dict[str, Any]:
        """The device's state, kept current (a new dict at each change: do not modify it)."""
        return self._session.state

    @property
    def device(self) -> dict[str, Any]:
        """The device followed: ``{"name", "status": "online" | "offline", "pid", "heartbeat_age"}``."""
        return self._session.device

    @property
    def devices(self) -> list[dict[str, Any]]:
        """Every device the bridge serves, in its order, each as ``device`` is; kept current."""
        return self._session.statuses()

    @property
    def channels(self) -> list[dict[str, Any]]:
        """The device's channels as ``hello`` lists them (name, kind, dtype, shape...)."""
        return self._session.channels

    @property
    def commands(self) -> list[dict[str, Any]]:
        """The device's command catalog (name, params, coalesce, doc)."""
        return self._session.commands

    @property
    def views(self) -> list[dict[str, Any]]:
        return self._session.views

    @property
    def hello(self) -> dict[str, Any]:
        """The last ``hello``: protocol, sid, role, max_rate..."""
        return self._session.hello

    @property
    def role(self) -> str | None:
        """"operator" (watch and command) or "viewer" (watch only)."""
        return self._session.role

    def on_state(self, callback: StateCallback) -> StateCallback:
        """Call ``callback(changes, full)`` on every state message (``full``: ``changes`` is the
        whole new state). It runs on the client's loop: keep it short. Usable as a decorator."""
        self._state_callbacks.append(callback)
        return callback

    def off_state(self, callback: StateCallback) -> None:
        if callback in self._state_callbacks:
            self._state_callbacks.remove(callback)

    # -- waiting ---------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[AsyncClient], C], timeout: float | None = None,
                       what: str | None = None) -> C:
        """Return ``predicate(client)``'s first truthy value, re-checked whenever the state,
        devices, channels or connection change; Timeout after ``timeout`` seconds."""
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            value = predicate(self)
            if value:
                return value
            left = deadline - loop.time()
            if left <= 0:
                raise Timeout(f"timed out after {timeout:g} s waiting for {what or _name_of(predicate)}")
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_for_state(self, key: str, value: Any = None, timeout: float | None = None) -> Any:
        """Wait until ``state[key]`` equals ``value`` (or satisfies it, if callable; None: exists)."""
        test = state_test(key, value)
        await self.wait_for(lambda c: test(c.state), timeout, f"state[{key!r}] {_describe(value)}")
        return self.state[key]

    async def wait_for_device(self, status: str = "online", timeout: float | None = None) -> dict[str, Any]:
        """Wait until the device's status is ``status`` ("online" or "offline"); return it."""
        return await self.wait_for(lambda c: c.device.get("status") == status and c.device, timeout,
                                   f"the device to be {status}")

    # -- commands --------------------------------------------------------------------

    async def command(self, name: str, /, **args: Any) -> Any:
        """Run a device command; return the handler's result, or raise CommandFailed (code,
        message) or Timeout (no answer within the client's timeout)."""
        return await self.command_args(name, args)

    async def command_args(self, name: str, args: Mapping[str, Any] | None = None, *,
                           timeout: float | None = None) -> Any:
        """``command`` with the arguments as a dict and a timeout of its own."""
        self._check_open()
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        command_id = next(self._ids)
        payload = command_payload(command_id, name, args)
        await self._wait_connected(deadline, f"command {name!r}")
        await self._wait_listed(deadline, f"command {name!r}")
        answer: asyncio.Future[Any] = loop.create_future()
        self._commands[command_id] = (answer, name)
        try:
            await self._sio.emit("command", self._session.with_device(payload))
            result = await asyncio.wait_for(answer, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise Timeout(f"no answer to command {name!r} within {timeout:g} s") from None
        except socketio.exceptions.BadNamespaceError:
            raise CommandFailed("disconnected", f"lost the bridge before sending {name!r}") from None
        finally:
            self._commands.pop(command_id, None)
        return command_result(result, name)

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, channel: str, rate: float | None = 30, max_points: int | None = None,
                  window: float | None = None, in_flight: int = 4) -> AsyncSubscription:
        """A subscription to ``channel`` (see AsyncSubscription). ``rate``: messages per second at
        most; ``max_points`` / ``window``: row budget of a records channel (docs/protocol.md
        §4.3); ``in_flight``: messages sent ahead of what you have taken (1-64)."""
        self._check_open()
        if channel in self._subs:
            raise ClientError(f"already subscribed to {channel!r}: the bridge keeps one subscription per "
                              "channel and client; close the other one first")
        stream = Stream(channel, subscribe_payload(channel, rate, max_points, window, in_flight))
        return self._new_subscription(self, stream)

    async def _subscribe(self, sub: Any) -> None:
        self._check_open()
        stream: Stream = sub.stream
        if self._subs.get(stream.channel) not in (None, sub):
            raise ClientError(f"already subscribed to {stream.channel!r}: close the other subscription first")
        self._subs[stream.channel] = sub
        try:
            if self._sio.connected:   # a device that may start later (--attach all): wait for it
                deadline = asyncio.get_running_loop().time() + self.timeout
                await self._wait_listed(deadline, f"subscribe {stream.channel!r}")
            self._session.streams[stream.channel] = stream
            if not self._sio.connected:
                return  # sent when the connection is back
            stream.active = True
            stream.ack = check_ack(await self._call("subscribe", self._session.with_device(stream.payload)),
                                   f"subscribe {stream.channel!r}")
        except BaseException:
            self._forget(sub)
            raise

    async def _unsubscribe(self, sub: Any) -> None:
        if sub.closed:
            return
        active = sub.stream.active
        self._forget(sub)
        if active and self._sio.connected:
            try:
                await self._call("unsubscribe", self._session.with_device(unsubscribe_payload(sub.channel)))
            except ClientError as exc:   # the subscription is gone here either way
                log.debug("unsubscribe %r: %s", sub.channel, exc)

    def _forget(self, sub: Any, error: BaseException | None = None) -> None:
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
            self._session.streams.pop(sub.channel, None)
        sub._end(error)

    def _consumed(self, msg: Message) -> None:
        """The user took ``msg``: confirm it so the bridge may send the next (fire and forget)."""
        payload = consumed_payload(msg)
        if payload is not None and msg.channel in self._subs and self._sio.connected:
            self._spawn(self._emit_quietly("consumed", self._session.with_device(payload)))

    async def _emit_quietly(self, event: str, payload: Any) -> None:
        try:
            await self._sio.emit(event, payload)
        except socketio.exceptions.BadNamespaceError:
            pass  # disconnected meanwhile: the next connection starts afresh

    async def _resubscribe(self) -> None:
        """Send every open subscription the bridge does not have on this connection (after a
        reconnect, when the device declares a channel we wait for, or when it is back)."""
        for stream in self._session.to_subscribe():
            try:
                stream.ack = check_ack(await self._call("subscribe", self._session.with_device(stream.payload)),
                                       f"subscribe {stream.channel!r}")
            except ClientError as exc:
                self._session.subscribe_failed(stream)   # retried at the next channels event
                log.warning("monbridge client: cannot subscribe to %r again: %s", stream.channel, exc)
            self._notify()   # a wait_for may be waiting for the new ack

    async def _call(self, event: str, payload: Any) -> Any:
        try:
            return await self._sio.call(event, payload, timeout=self.timeout)
        except socketio.exceptions.TimeoutError:
            raise Timeout(f"no answer to {event!r} within {self.timeout:g} s") from None
        except socketio.exceptions.BadNamespaceError:
            raise ConnectionFailed(f"not connected to the bridge at {self._origin} (reconnecting)") from None

    async def _wait_listed(self, deadline: float, what: str) -> None:
        """Wait until the bridge serves the device followed (it may start later under ``--attach
        all``); DeviceError at ``deadline``."""
        loop = asyncio.get_running_loop()
        if self._session.listed:
            return
        started = loop.time()
        try:
            await self.wait_for(lambda c: c._session.listed, max(0.0, deadline - started), what)
        except Timeout:
            raise self._session.missing_device(what, loop.time() - started) from None

    async def _wait_connected(self, deadline: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        if self._sio.connected:
            return
        try:
            await asyncio.wait_for(self._connected.wait(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise Timeout(f"{what}: not connected to the bridge at {self._origin}") from None

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """Disconnect and stop reconnecting; open subscriptions end. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs.values()):
            self._forget(sub)
        self._fail_commands(ClientError("the client was closed before the answer came"))
        await self._abandon()
        for task in list(self._tasks):
            task.cancel()
        self._notify()

    async def __aenter__(self) -> AsyncClient:
        if not self._sio.connected:
            await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError("the client is closed")

    # -- the bridge's events (on the loop, in arrival order) ---------------------------

    def _on_hello(self, hello: Any) -> None:
        again = bool(self._session.hello)
        self._session.on_hello(hello)
        if hello.get("protocol") != PROTOCOL_VERSION:
            log.warning("monbridge client: written for protocol %d, the bridge speaks %r", PROTOCOL_VERSION,
                        hello.get("protocol"))
        problem = self._session.device_problem() if self._check_device and again else None
        if problem is not None:   # at the first hello, open() raises it
            log.warning("monbridge client: reconnected to %s, but %s", self._origin, problem.message)
        self._notify()

    def _on_devices(self, msg: Any) -> None:
        self._session.on_devices(msg)
        if self._sio.connected:
            self._spawn(self._resubscribe())   # the device followed may be (back) among them
        self._notify()

    def _on_state(self, msg: Any) -> None:
        got = self._session.on_state(msg)
        if got is None:
            return   # another device's
        changes, full = got
        for callback in list(self._state_callbacks):
            try:
                result = callback(changes, full)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:
                log.exception("monbridge client: on_state callback %s failed", _name_of(callback))
        self._notify()

    def _on_device(self, device: Any) -> None:
        if self._session.on_device(device):
            log.info("monbridge client: the device restarted (pid %s): sequence numbers start over",
                     device.get("pid"))
        self._notify()

    def _on_channels(self, msg: Any) -> None:
        if self._session.on_channels(msg) and self._sio.connected:
            self._spawn(self._resubscribe())
        self._notify()

    def _on_views(self, msg: Any) -> None:
        self._session.on_views(msg)
        self._notify()

    def _on_data(self, msg: Any) -> None:
        self._receive("data", msg)

    def _on_bundle(self, msgs: Any) -> None:
        """Several ``data`` messages in one (docs/protocol.md §4.9): each as if it came alone."""
        if not isinstance(msgs, list):
            raise ProtocolError(f"a bundle message must be a list, got {type(msgs).__name__}")
        for msg in msgs:
            try:
                self._receive("data", msg)
            except Exception:   # one bad message must not cost the others
                log.exception("monbridge client: handling a message of a bundle failed")

    def _on_data_event(self, msg: Any) -> None:
        self._receive("event", msg)

    def _receive(self, event: str, msg: Any) -> None:
        try:
            got = self._session.receive(event, msg)
        except ProtocolError as exc:
            sub = self._subs.get(msg.get("channel")) if isinstance(msg, Mapping) else None
            if sub is None:
                raise
            sub._deliver(exc)   # raised to the consumer, in order
            return
        if got is not None:
            self._subs[got[0].channel]._deliver(got[1])

    def _on_result(self, answer: Any) -> None:
        # matched by id: only this client's commands are answered to it, and a refusal before
        # a device was known carries "device": null
        pending = self._commands.pop(answer.get("id"), None) if isinstance(answer, dict) else None
        if pending is not None and not pending[0].done():
            pending[0].set_result({k: v for k, v in answer.items() if k != "id"})

    def _on_error(self, msg: Any) -> None:
        log.warning("monbridge client: the bridge could not decode a message of ours: %r", msg)

    def _on_connect(self) -> None:
        self._connected.set()
        self._spawn(self._resubscribe())
        self._notify()

    def _on_disconnect(self, reason: Any = None) -> None:
        self._connected.clear()
        self._session.disconnected()
        self._fail_commands(CommandFailed("disconnected", f"lost the bridge ({reason}) before the answer came; "
                                                          "the command may or may not have run"))
        if not self._sio.reconnection and not self._closed:   # nothing more will come
            for sub in list(self._subs.values()):
                self._forget(sub, ConnectionFailed(f"lost the bridge at {self._origin} ({reason}) and "
                                                   "reconnect=False: the subscription ended"))
        self._notify()

    def _on_connect_error(self, data: Any = None) -> None:
        refusal = _refusal(data)
        if refusal is not None and self._session.hello and refusal != _refusal(self._connect_error):
            log.warning("monbridge client: the bridge at %s refuses to let us back in: %s (a new token? "
                        "close this client and connect with the URL the bridge printed)", self._origin, refusal)
        self._connect_error = data

    # -- helpers ---------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in list(self._listeners):
            listener()

    def _fail_commands(self, exc: BaseException) -> None:
        for answer, _ in self._commands.values():
            if not answer.done():
                answer.set_exception(exc)
        self._commands.clear()

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("monbridge client: background task failed", exc_info=task.exception())


def _guarded(event: str, handler: Callable[..., None]) -> Callable[..., None]:
    """A socketio handler that never lets an exception escape into python-socketio's task."""
    def guarded(*args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("monbridge client: handling %r failed", event)
    guarded.__name__ = f"on_{event}"
    return guarded


def _refusal(data: Any) -> str | None:
    """The bridge's refusal message in a ``connect_error``'s data, if it is one."""
    message = data.get("message") if isinstance(data, dict) else data if isinstance(data, str) else None
    if isinstance(message, str) and "unauthori" in message.lower():
        return message
    return None


def state_test(key: str, value: Any) -> Callable[[Mapping[str, Any]], bool]:
    """The test of ``wait_for_state``: ``state[key]`` equals ``value``, satisfies it if it is
    callable, or exists if it is None."""
    if value is None:
        return lambda state: key in state
    if callable(value):
        return lambda state: key in state and bool(value(state[key]))
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("wait_for_state: NaN never equals anything; pass a predicate (math.isnan)")
    return lambda state: key in state and state[key] == value


def _describe(value: Any) -> str:
    if value is None:
        return "to exist"
    return f"to satisfy {_name_of(value)}" if callable(value) else f"to equal {value!r}"


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


__all__ = ["AsyncClient", "AsyncSubscription", "BridgeError", "ClientError", "CommandFailed", "ConnectionFailed",
           "DeviceError", "ProtocolError", "Refused", "Timeout"]
