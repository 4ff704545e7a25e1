"""The benchmarks' Python Socket.IO client processes (``python -m bench.clients --role
clients|slow JSON-ARGS``, driven as bench.procs.Child): python-socketio ``AsyncClient``s and
lean raw clients (aiohttp's websocket, bench.wire's packets) logging every ``data`` message (each of a ``bundle``),
and a raw client that subscribes and never reads. Used by bench.relay and bench.browser."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sys
import time
from typing import Any

import aiohttp

from bench import wire
from bench.procs import Replies, run_role, serve, watchdog

LABEL = "bench.clients"


def role_clients(args: dict[str, Any]) -> None:
    """Groups of clients, each of a kind named by the parent (a kind ending in "raw" is of
    RawClients, any other of SioClients); ops: connect, disconnect, subscribe, unsubscribe,
    report (bench.relay's window figures), lags (receive time − t per channel), rtt (round trips)."""
    replies = Replies()
    watchdog(args["timeout"], label=LABEL)
    asyncio.run(clients_main(replies))


async def clients_main(replies: Replies) -> None:
    groups: dict[str, list[Any]] = collections.defaultdict(list)   # e.g. "sio", "raw", "emit", "echo"
    subscribed: dict[str, list[str]] = {}

    async def op_connect(req: dict[str, Any]) -> dict[str, Any]:
        for _ in range(req.get("n", 1)):
            c = RawClient() if req["kind"].endswith("raw") else SioClient()
            await c.connect(req["port"], req.get("token", ""))
            groups[req["kind"]].append(c)
        return {"sids": [c.sid for c in groups[req["kind"]]]}

    async def op_disconnect(req: dict[str, Any]) -> dict[str, Any]:
        for c in groups.pop(req["kind"], []):
            await c.disconnect()
        return {}

    async def op_subscribe(req: dict[str, Any]) -> dict[str, Any]:
        """Every client of ``kind``: the ``subscriptions`` asked for (subscribe payloads), instead of the last ones."""
        await op_unsubscribe(req)
        for sub in req["subscriptions"]:
            acks = await asyncio.gather(*(c.call("subscribe", sub) for c in groups[req["kind"]]))
            if bad := [a for a in acks if not a.get("ok")]:
                raise RuntimeError(f"subscribe refused: {bad[0]}")
        subscribed[req["kind"]] = [ch for sub in req["subscriptions"] for ch in sub["channels"]]
        return {}

    async def op_unsubscribe(req: dict[str, Any]) -> dict[str, Any]:
        if channels := subscribed.pop(req["kind"], None):
            await asyncio.gather(*(c.call("unsubscribe", {"channels": channels}) for c in groups[req["kind"]]))
        return {}

    async def op_report(req: dict[str, Any]) -> dict[str, Any]:
        t0, t1, windows = req["t0"], req["t1"], req["windows"]
        out = []
        for c in groups[req["kind"]]:
            taken, c.entries[:] = list(c.entries), []
            lat, slices = [], []   # ms; whole seconds into the window, per sample
            records = {ch: 0 for ch in windows}
            missed = messages = 0
            for recv, t, ch, a, b, miss in taken:
                if t is not None and t0 <= t < t1:
                    lat.append(round((recv - t) * 1000, 4))
                    slices.append(int(t - t0))
                    messages += 1
                w = windows.get(ch)
                if w is not None:
                    records[ch] += max(0, min(b + 1, w[1]) - max(a, w[0]))
                missed += miss
            out.append({"lat_ms": lat, "slice": slices, "messages": messages, "records": records, "missed": missed})
        return {"clients": out}

    async def op_lags(req: dict[str, Any]) -> dict[str, Any]:
        lags: dict[str, list[float]] = collections.defaultdict(list)
        for c in groups[req["kind"]]:
            taken, c.entries[:] = list(c.entries), []
            for recv, t, ch, *_ in taken:
                if isinstance(t, (int, float)) and req["t0"] <= recv < req["t1"]:
                    lags[ch].append(round((recv - t) * 1000, 3))
        return {"lags": lags}

    async def op_rtt(req: dict[str, Any]) -> dict[str, Any]:
        """``n`` sequential calls: "echo" or "echo_hop" to the bare server (on its "echo"
        connection), or the ``echo`` command through the bridge, by the first client of
        ``group`` (default: the group named like the event, "echo" for "echo_hop")."""
        event = req["event"]
        c = groups[req.get("group", "echo" if event == "echo_hop" else event)][0]
        clock = time.perf_counter_ns
        samples = []
        for i in range(req["n"]):
            value = float(req.get("base", 0) + i)
            payload = {"name": "echo", "args": {"value": value}}
            a = clock()
            if event in ("echo", "echo_hop"):
                answer, expected = await c.call(event, payload), payload
            else:
                answer, expected = await wire.command(c.sio, "echo", {"value": value}), {"ok": True, "result": value}
            b = clock()
            if answer != expected:
                raise RuntimeError(f"{event}: unexpected answer {answer!r}")
            samples.append((b - a) / 1000)
        return {"samples_us": samples}

    replies.send(ok=True, ready=True, pid=os.getpid())
    try:
        await serve(replies, {"connect": op_connect, "disconnect": op_disconnect, "subscribe": op_subscribe,
                              "unsubscribe": op_unsubscribe, "report": op_report, "lags": op_lags, "rtt": op_rtt})
    finally:
        for c in [c for group in groups.values() for c in group]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.disconnect(), 2)


def role_slow(args: dict[str, Any]) -> None:
    """A raw client that subscribes and then never reads its socket again (a hung browser tab)."""
    replies = Replies()
    watchdog(args["timeout"], label=LABEL)
    loop = asyncio.new_event_loop()
    client = RawClient()
    try:
        loop.run_until_complete(client.connect(args["port"], args["token"], read=False))
        loop.run_until_complete(client.send(wire.encode_event("subscribe", {"channels": args["channels"]}, 0)))
        replies.send(ok=True, ready=True, sid=client.sid, pid=os.getpid())
        for line in sys.stdin:  # the event loop no longer runs, nothing reads: wait for "quit" or EOF
            if json.loads(line).get("op") == "quit":
                break
    finally:
        if client.session is not None:
            loop.run_until_complete(client.session.close())
        loop.close()


class SioClient:
    """``socketio.AsyncClient`` over websocket, logging every ``data`` message."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []
        self.sid: str | None = None
        self.sio = wire.async_client()
        self.disconnect = self.sio.disconnect
        clock, append = time.time, self.entries.append

        async def on_data(msg: dict[str, Any]) -> None:
            seq = msg["seq"]
            append((clock(), msg["t"], msg["channel"], seq[0], seq[1], msg["missed"]))

        async def on_bundle(msgs: list[dict[str, Any]]) -> None:
            now = clock()
            for msg in msgs:
                seq = msg["seq"]
                append((now, msg["t"], msg["channel"], seq[0], seq[1], msg["missed"]))

        self.sio.on("data", on_data)
        self.sio.on("bundle", on_bundle)

    async def connect(self, port: int, token: str) -> None:
        await wire.connect(self.sio, port, token, bundle=True)
        self.sid = self.sio.get_sid()

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=10)


class RawClient:
    """A lean Socket.IO client: aiohttp's websocket and bench.wire's packets. It answers pings,
    matches acks and logs each ``data`` message once all of it has arrived, at a fraction of
    AsyncClient's CPU per message, so that the throughput ladder measures the bridge."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []
        self.decoder = wire.Decoder()
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = 0
        self.sid: str | None = None
        self.session: Any = None
        self.ws: Any = None
        self.reader: asyncio.Task | None = None

    async def connect(self, port: int, token: str, read: bool = True) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"ws://127.0.0.1:{port}{wire.EIO_PATH}", max_msg_size=0)

        async def handshake() -> None:
            while self.sid is None:
                kind, body = await self.receive() or ("", None)
                if kind == "open":
                    await self.send(wire.encode_connect({"token": token, "bundle": True}))
                elif kind == "connect":
                    self.sid = body.get("sid")
                elif kind == "connect_error":
                    raise RuntimeError(f"connection refused: {body}")

        await asyncio.wait_for(handshake(), 10)
        if read:
            self.reader = asyncio.create_task(self.read())

    async def receive(self) -> wire.Packet | None:
        msg = await self.ws.receive()
        if msg.type not in (wire.TEXT, wire.BINARY):   # aiohttp's message types are the opcodes
            raise ConnectionError(f"the websocket closed ({msg.type.name})")
        return self.decoder.feed(msg.type, msg.data)

    async def read(self) -> None:
        clock = time.time
        append = self.entries.append
        while not self.ws.closed:
            try:
                kind, body = await self.receive() or ("", None)
            except ConnectionError:
                return
            if kind == "event" and body[0] in ("data", "bundle"):
                now = clock()
                for d in (body[1] if body[0] == "bundle" else (body[1],)):
                    seq = d["seq"]
                    append((now, d["t"], d["channel"], seq[0], seq[1], d["missed"]))
            elif kind == "ack":
                fut = self.pending.pop(body[0], None)
                if fut is not None and not fut.done():
                    fut.set_result(body[1])
            elif kind == "ping":
                await self.send(wire.encode_pong())

    async def send(self, frames: list[wire.Frame]) -> None:
        for opcode, payload in frames:
            await self.ws.send_frame(payload, aiohttp.WSMsgType(opcode))

    async def call(self, event: str, data: Any) -> Any:
        self.ids += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = fut
        await self.send(wire.encode_event(event, data, self.ids))
        return await asyncio.wait_for(fut, 10)

    async def disconnect(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None and not self.ws.closed:
            await self.send(wire.encode_disconnect())
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


if __name__ == "__main__":
    run_role(sys.argv[1:], {"clients": role_clients, "slow": role_slow})
