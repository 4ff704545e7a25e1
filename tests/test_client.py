"""bridge.client (Client, blocking) and bridge.aclient (AsyncClient) against a real device and
bridge: data of every kind with the published dtypes, an exact ``missed`` for a slow consumer
(flow control), state and its callbacks, commands and their errors, refusals, reconnecting to a
restarted bridge, the asyncio client inside an already running event loop, and a client
following one device of a bridge that serves two (protocol 4).

The device is bridge_support's DEVICE (channels telemetry / img / log, commands add, nap,
set_speed...) or RICH below; each waits for our lines on stdin, so a test publishes exactly
when it wants and waits with deadlines, not sleeps.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

from bridge.client import (
    AsyncClient,
    BridgeError,
    Client,
    ClientError,
    CommandFailed,
    ConnectionFailed,
    DeviceError,
    Events,
    Frame,
    Records,
    Refused,
    Timeout,
)
from bridge.client_messages import published_dtype
from bridge_support import (  # noqa: F401  (mb: fixture)
    DASHBOARD_LINE,
    http,
    image,
    mb,
    parse_url,
    value_of,
    wait_attached,
    wait_stderr,
)
from conftest import START_TIMEOUT, TIMEOUT, wait_for


def run_in_fresh_loop(coro: Any) -> Any:
    """``asyncio.run(coro)`` on a thread of its own: in the full suite the browser tests'
    Playwright (sync API) keeps an event loop running on the main thread, where asyncio.run
    refuses to start."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-asyncio")
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the asyncio test did not finish in 120 s"
    if errors:
        raise errors[0]
    return result[0]

# records with sub-array, integer and boolean fields; a 3-D u1 frame; answers each line
RICH = r"""
import json, sys
from typing import Any

import numpy as np
import device_agent

mon = device_agent.start(sys.argv[1])
arm = mon.records("arm", {"t": "f8", "pos": ("f4", (3,)), "n": "i2", "ok": "?", "code": "u1"}, capacity=256)
cam = mon.frame("cam", shape=(4, 5, 3), dtype="u1")
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, rest = line.strip().partition(" ")
    if cmd == "pub":
        n, s0 = int(rest), arm.count
        rows = np.zeros(n, arm.dtype)
        k = np.arange(s0, s0 + n)
        rows["t"], rows["n"], rows["ok"], rows["code"] = k * 0.25, -k, k % 3 == 0, k % 256
        rows["pos"] = np.stack([k, k + 0.5, -k], axis=1)
        arm.publish_many(rows)
        print("published", arm.count, flush=True)
    elif cmd == "frame":
        k = int(rest)
        cam.publish(((np.arange(60).reshape(4, 5, 3) + k) % 256).astype("u1"), t=float(k))
        print("framed", cam.count, flush=True)
"""


def take_until(sub, last_seq: int, timeout: float = TIMEOUT) -> list:
    """Messages from ``sub`` until one covers ``last_seq``."""
    got = []
    deadline = time.monotonic() + timeout
    while not got or got[-1].seq[1] < last_seq:
        got.append(sub.get(timeout=max(0.01, deadline - time.monotonic())))
    return got


def check_contiguous(msgs: list, first: int = 0) -> None:
    """Every record is either in a message or counted in ``missed``, exactly once."""
    expected = first
    for m in msgs:
        assert m.seq[0] == expected + m.missed, [(x.seq, x.missed) for x in msgs]
        expected = m.seq[1] + 1


# -- data ----------------------------------------------------------------------------------

def test_records_frames_and_events_arrive_decoded_with_the_published_dtypes(mb):
    dev = mb.device()
    with Client(dev.url.url) as client:
        spec = {c["name"]: c for c in client.channels}
        assert client.role == "operator" and client.device["status"] == "online"
        assert client.device["pid"] == dev.pid and client.state == {"mode": "idle", "speed": 0.0}
        with client.subscribe("telemetry", rate=60) as telemetry:
            assert telemetry.ack["ok"] and telemetry.ack["in_flight"] == 4
            dev.request("pub 40", "published")
            msgs = take_until(telemetry, 39)
            assert all(isinstance(m, Records) and m.channel == "telemetry" for m in msgs)
            check_contiguous(msgs)
            rows = np.concatenate([m.data for m in msgs])
            assert rows.dtype == published_dtype(spec["telemetry"])
            np.testing.assert_array_equal(rows["seq"], np.arange(40))
            np.testing.assert_array_equal(rows["value"], value_of(np.arange(40)).astype("f4"))
            assert msgs[-1].t == pytest.approx(1000.039)

        with client.subscribe("img") as img:
            dev.request("frame 7", "framed")
            frame = img.get(timeout=TIMEOUT)
            assert isinstance(frame, Frame) and frame.seq == (1, 1) and frame.missed == 0
            assert frame.data.dtype == np.dtype(spec["img"]["dtype"]) and frame.data.shape == (48, 64)
            np.testing.assert_array_equal(frame.data, image(7))
            dev.request("frame 8 9 10", "framed")
            frame = img.get(timeout=TIMEOUT)
            assert frame.seq[0] > 1 and frame.missed == frame.seq[0] - 2   # latest wins
            np.testing.assert_array_equal(frame.data, image(frame.seq[0] + 6))

        with client.subscribe("log") as log:
            dev.request('event {"text": "hello"}', "evented")
            dev.request('event {"text": "again", "n": [1, 2]}', "evented")
            msgs = take_until(log, 1)
            assert all(isinstance(m, Events) for m in msgs)
            assert [e["message"] for m in msgs for e in m.events] == [{"text": "hello"}, {"text": "again", "n": [1, 2]}]
            assert [e["seq"] for m in msgs for e in m.events] == [0, 1]
        assert log.closed and list(log) == []
    dev.proc.stop(check_stderr=False)


def test_rich_records_and_a_3d_frame(mb, launch):
    name = mb.new_name()
    dev = launch(RICH, name, mon="port=0")
    url = parse_url(wait_stderr(dev, DASHBOARD_LINE)["url"])
    with Client(url.url) as client:
        spec = {c["name"]: c for c in client.channels}
        with client.subscribe("arm", rate=100) as arm, client.subscribe("cam") as cam:
            dev.request("pub 30", "published")
            rows = np.concatenate([m.data for m in take_until(arm, 29)])
            assert rows.dtype == published_dtype(spec["arm"]) and rows["pos"].shape == (30, 3)
            k = np.arange(30)
            np.testing.assert_array_equal(rows["pos"], np.stack([k, k + 0.5, -k], axis=1).astype("f4"))
            np.testing.assert_array_equal(rows["n"], -k)
            np.testing.assert_array_equal(rows["ok"], k % 3 == 0)
            np.testing.assert_array_equal(rows["code"], k)
            assert rows["ok"].dtype == np.bool_ and rows["t"][-1] == 29 * 0.25
            dev.request("frame 3", "framed")
            frame = cam.get(timeout=TIMEOUT)
            assert frame.data.dtype == np.uint8 and frame.data.shape == (4, 5, 3) and frame.t == 3.0
            np.testing.assert_array_equal(frame.data, np.arange(60).reshape(4, 5, 3) + 3)
    dev.stop(check_stderr=False)


def test_a_slow_consumer_gets_everything_or_an_exact_missed_and_never_piles_up(mb):
    """The ring holds 65,536 records: publishing 120,000 while the consumer holds its one
    message in flight overwrites some; the next message says exactly how many, and at most
    in_flight messages ever wait in the client."""
    dev = mb.device()
    with Client(dev.url.url) as client, client.subscribe("telemetry", rate=50, in_flight=1) as sub:
        dev.request("pub 10", "published")
        client.wait_for(lambda c: sub.pending() >= 1, what="the first message")
        dev.request("bulk 60000", "published")
        dev.request("bulk 60000", "published")
        total = 120_010
        msgs, peak = [], 0
        while not msgs or msgs[-1].seq[1] < total - 1:
            peak = max(peak, sub.pending())
            msgs.append(sub.get(timeout=TIMEOUT))
            time.sleep(0.2)   # the slow consumer under test
        peak = max(peak, sub.pending())
        check_contiguous(msgs)
        missed = sum(m.missed for m in msgs)
        assert missed > 0 and missed + sum(m.count for m in msgs) == total
        assert peak <= 1, f"{peak} messages waited in the client with in_flight=1"
        for m in msgs:
            np.testing.assert_array_equal(m.data["seq"], np.arange(m.seq[0], m.seq[1] + 1))
            np.testing.assert_array_equal(m.data["value"], value_of(m.data["seq"]).astype("f4"))

        # a steady 500 Hz stream and a consumer slower than the rate: batches grow, nothing is lost
        first = msgs[-1].seq[1] + 1
        dev.request("stream 500", "streaming")
        slow = []
        for _ in range(8):
            slow.append(sub.get(timeout=TIMEOUT))
            assert sub.pending() <= 1
            time.sleep(0.25)
        check_contiguous(slow, first)
        assert sum(m.missed for m in slow) == 0 and max(m.count for m in slow) > 50
    dev.request("close", "closed")
    dev.proc.stop(check_stderr=False)


# -- state and commands --------------------------------------------------------------------

def test_state_callbacks_and_waits(mb):
    dev = mb.device()
    with Client(dev.url.url) as client:
        seen: list[tuple[dict, bool]] = []
        got_one = threading.Event()

        @client.on_state
        def record(changes: dict, full: bool) -> None:
            seen.append((changes, full))
            got_one.set()

        dev.request('state {"mode": "run", "lap": 1}', "stated")
        assert client.wait_for_state("mode", "run") == "run"
        assert client.state == {"mode": "run", "speed": 0.0, "lap": 1}
        assert got_one.wait(TIMEOUT) and ({"mode": "run", "lap": 1}, False) in seen
        dev.request('state {"lap": 5}', "stated")
        assert client.wait_for_state("lap", lambda v: v >= 5) == 5
        assert client.command("set_speed", value=2.5) == 2.5
        assert client.wait_for_state("speed", 2.5) == 2.5
        with client.subscribe("telemetry"):   # a subscribe sends a full state
            client.wait_for(lambda c: any(full for _, full in seen), what="a full state")
        full = [changes for changes, full in seen if full][-1]
        assert full == {"mode": "run", "speed": 2.5, "lap": 5}
        client.off_state(record)
        assert client.wait_for_device("online")["pid"] == dev.pid
        with pytest.raises(Timeout, match=r"state\['lap'\] to equal 6"):
            client.wait_for_state("lap", 6, timeout=0.3)
        with pytest.raises(Timeout, match="waiting for"):
            client.wait_for(lambda c: c.state.get("never"), timeout=0.2)
    dev.proc.stop(check_stderr=False)


def test_commands_return_results_or_raise_with_the_code(mb):
    dev = mb.device()
    with Client(dev.url.url) as client:
        assert client.command("add", a=2, b=3) == 5
        assert client.command("echo", value={"nested": [1, 2.5, None]}) == {"nested": [1, 2.5, None]}
        assert {c["name"] for c in client.commands} >= {"add", "nap", "set_speed"}
        for call, code, words in [
            (lambda: client.command("nap", seconds=-1), "handler_error", "nap: ValueError"),
            (lambda: client.command("launch_rocket"), "unknown_command", "unknown command 'launch_rocket'"),
            (lambda: client.command("set_speed", value=11), "invalid_args", "value"),
            (lambda: client.command("add", b=1), "invalid_args", "a"),
        ]:
            with pytest.raises(CommandFailed) as failed:
                call()
            assert failed.value.code == code and words in failed.value.message, failed.value
        with pytest.raises(Timeout, match="no answer to command 'nap' within 0.3 s"):
            client.command_args("nap", {"seconds": 1.5}, timeout=0.3)
        assert client.command("add", a=1) == 2   # after the nap: answers still match their ids
    with Client(dev.url.base) as viewer:       # no token, loopback: a viewer
        assert viewer.role == "viewer"
        with pytest.raises(CommandFailed) as failed:
            viewer.command("add", a=1)
        assert failed.value.code == "forbidden"
        with viewer.subscribe("telemetry") as sub:   # a viewer may watch
            dev.request("pub 3", "published")
            assert take_until(sub, 2)[-1].seq[1] == 2
    dev.proc.stop(check_stderr=False)


def test_refusals_and_unreachable_bridges(mb):
    dev = mb.device()
    with pytest.raises(Refused, match="unauthorized") as refused:
        Client(dev.url.base + "/?token=wrong-token")
    assert isinstance(refused.value, ConnectionError)
    with pytest.raises(Refused):
        Client(dev.url.url, token="another-wrong-one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again below: nothing listens there
    with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        Client(f"http://127.0.0.1:{port}/?token=x", timeout=3)
    with Client(dev.url.url) as client:
        with pytest.raises(BridgeError) as unknown:
            client.subscribe("nonesuch")
        assert unknown.value.code == "unknown_channel" and "telemetry" in unknown.value.message
        with client.subscribe("telemetry"):
            with pytest.raises(ClientError, match="already subscribed"):
                client.subscribe("telemetry")
        with pytest.raises(ValueError, match="'in_flight'"):
            client.subscribe("telemetry", in_flight=0)
    with pytest.raises(ClientError, match="closed"):
        client.command("add", a=1)
    client.close()   # twice is fine
    dev.proc.stop(check_stderr=False)


# -- reconnecting ----------------------------------------------------------------------------

def test_reconnect_to_a_restarted_bridge_resubscribes_and_resyncs(mb):
    """The bridge is stopped and a new one serves the same device on the same port: the client
    reconnects by itself, subscribes again, gets the state anew, and ``missed`` counts what
    the device published while it was away."""
    name = mb.new_name()
    token = "client-reconnect-token"
    bridge = mb.serve(name, "--token", token)
    dev = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, dev.pid)
    with Client(bridge.url.url) as client:
        sid = client.hello["sid"]
        with client.subscribe("telemetry", rate=60) as sub:
            dev.request("pub 5", "published")
            check_contiguous(take_until(sub, 4))
            first_ack = sub.ack

            assert bridge.terminate() == 0
            client.wait_for(lambda c: not c.connected, what="the client to notice")
            dev.request("pub 7", "published")                       # records 5..11, while away
            dev.request('state {"mode": "away"}', "stated")
            again = mb.serve(name, "--token", token, port=str(bridge.url.port))
            assert again.url.port == bridge.url.port
            assert client.wait_for_state("mode", "away", timeout=30) == "away"   # resynced
            client.wait_for(lambda c: c.connected and sub.ack is not first_ack and sub.ack, timeout=30,
                            what="the subscription to be sent again")
            assert client.hello["sid"] != sid
            dev.request("pub 3", "published")                       # records 12..14
            msgs = take_until(sub, 14)
            assert msgs[0].seq[0] == 12 and msgs[0].missed == 7
            np.testing.assert_array_equal(np.concatenate([m.data["seq"] for m in msgs]), [12, 13, 14])
            assert client.command("add", a=40, b=2) == 42
    dev.proc.stop(check_stderr=False)


def test_without_reconnect_a_lost_bridge_fails_pending_commands_and_ends_subscriptions(mb):
    name = mb.new_name()
    bridge = mb.serve(name)
    dev = mb.device(name, mon="bridge=0")
    wait_attached(bridge.url, dev.pid)
    with Client(bridge.url.url, reconnect=False) as client:
        sub = client.subscribe("telemetry")
        outcome: list[BaseException] = []

        def napping() -> None:
            try:
                client.command("nap", seconds=3)
            except ClientError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=napping)
        worker.start()
        wait_for(lambda: http(bridge.url, "/api/stats")[2]["commands"]["pending"] >= 1, what="the nap to be queued")
        bridge.terminate()
        worker.join(TIMEOUT)
        assert len(outcome) == 1 and isinstance(outcome[0], CommandFailed), outcome
        assert outcome[0].code in ("disconnected", "offline"), outcome[0]
        with pytest.raises(Timeout, match="not connected"):
            client.command_args("add", {"a": 1}, timeout=0.5)
        # nothing more can come: the subscription ends, saying why, rather than waiting forever
        with pytest.raises(ConnectionFailed, match="reconnect=False"):
            sub.get(timeout=TIMEOUT)
        with pytest.raises(ConnectionFailed):
            next(iter(sub))
        sub.close()
    dev.proc.stop(check_stderr=False)


# -- asyncio ---------------------------------------------------------------------------------

def test_async_client_end_to_end(mb):
    dev = mb.device()

    async def main() -> None:
        async with await AsyncClient.connect(dev.url.url) as client:
            assert client.role == "operator" and client.state["mode"] == "idle"
            changes: list[tuple[dict, bool]] = []
            client.on_state(lambda c, full: changes.append((c, full)))
            assert await client.command("add", a=1, b=2) == 3
            with pytest.raises(CommandFailed) as failed:
                await client.command("nap", seconds=-1)
            assert failed.value.code == "handler_error"
            with pytest.raises(CommandFailed, match="unknown_command"):
                await client.command("nope")

            sub = client.subscribe("telemetry", rate=60, in_flight=1)
            async with sub:
                await asyncio.to_thread(dev.request, "pub 25", "published")
                msgs = []
                async for msg in sub:
                    msgs.append(msg)
                    if msg.seq[1] >= 24:
                        break
                check_contiguous(msgs)
                rows = np.concatenate([m.data for m in msgs])
                np.testing.assert_array_equal(rows["value"], value_of(np.arange(25)).astype("f4"))
            assert sub.closed
            async with client.subscribe("img") as img:
                await asyncio.to_thread(dev.request, "frame 4", "framed")
                frame = await img.get(timeout=TIMEOUT)
                np.testing.assert_array_equal(frame.data, image(4))
                with pytest.raises(Timeout):
                    await img.get(timeout=0.2)
            with pytest.raises(BridgeError, match="unknown_channel"):
                await client.subscribe("nonesuch")

            await asyncio.to_thread(dev.request, 'state {"mode": "async"}', "stated")
            assert await client.wait_for_state("mode", "async") == "async"
            assert ({"mode": "async"}, False) in changes
            assert (await client.wait_for_device("online"))["pid"] == dev.pid
        assert not client.connected
        with pytest.raises(Refused):
            await AsyncClient.connect(dev.url.url, token="wrong")

    run_in_fresh_loop(main())
    dev.proc.stop(check_stderr=False)


def test_clients_inside_an_already_running_event_loop(mb):
    """As in a Jupyter notebook: a loop runs forever on a thread of its own and cells are
    coroutines run on it. The AsyncClient is awaited there; the blocking Client, called from a
    coroutine, runs its own loop and does not touch the running one."""
    dev = mb.device()
    loop = asyncio.new_event_loop()
    kernel = threading.Thread(target=loop.run_forever, daemon=True)
    kernel.start()

    def cell(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    async def connect() -> AsyncClient:
        return await AsyncClient.connect(dev.url.url)

    async def use(client: AsyncClient) -> list:
        assert await client.command("echo", value="from a cell") == "from a cell"
        async with client.subscribe("telemetry") as sub:
            await asyncio.to_thread(dev.request, "pub 4", "published")
            got = [await sub.get(timeout=TIMEOUT)]
            while got[-1].seq[1] < 3:
                got.append(await sub.get(timeout=TIMEOUT))
        return [int(s) for m in got for s in m.data["seq"]]

    async def blocking_inside() -> int:
        assert asyncio.get_running_loop() is loop
        with Client(dev.url.url) as sync_client:
            return sync_client.command("add", a=20, b=1)

    try:
        client = cell(connect())          # one cell
        assert cell(use(client)) == [0, 1, 2, 3]   # a later cell, same loop
        assert cell(blocking_inside()) == 21
        cell(client.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        kernel.join(TIMEOUT)
        loop.close()
    dev.proc.stop(check_stderr=False)


def test_blocking_calls_from_a_callback_say_why_they_cannot(mb):
    dev = mb.device()
    with Client(dev.url.url) as client:
        errors: list[str] = []

        @client.on_state
        def blocking(changes: dict, full: bool) -> None:
            try:
                client.command("add", a=1)
            except ClientError as exc:
                errors.append(str(exc))

        dev.request('state {"x": 1}', "stated")
        client.wait_for_state("x", 1)
        client.wait_for(lambda c: errors, what="the callback's error")
        assert "cannot be called from an on_state callback" in errors[0]
        assert json.dumps(client.state)   # still a plain dict
    dev.proc.stop(check_stderr=False)


# -- a bridge of several devices ---------------------------------------------------------------

def test_a_client_follows_one_device_of_a_bridge_serving_two(mb):
    """--attach A,B: Client(url, device=B) gets B's status, state, records and commands only,
    though both devices have the same channels; Client(url) says to choose."""
    a, b = mb.new_name(), mb.new_name()
    bridge = mb.serve_devices(f"{a},{b}")
    dev_a = mb.device(a, mon="bridge=0")
    dev_b = mb.device(b, mon="bridge=0")

    with pytest.raises(DeviceError) as several:
        Client(bridge.url.url)
    assert several.value.code == "bad_request"
    assert f"this bridge serves several devices ({a}, {b}): pass device=" in str(several.value)
    assert [d["name"] for d in Client.list_devices(bridge.url.url)] == [a, b]

    with Client(bridge.url.url, device=b) as client, Client(bridge.url.url, device=a) as other:
        assert client.hello["multi"] and [d["name"] for d in client.devices] == [a, b]
        client.wait_for(lambda c: c.device["pid"] == dev_b.pid and c.device["status"] == "online" and c.channels,
                        timeout=START_TIMEOUT, what=f"{b} to attach")
        client.wait_for(lambda c: all(d["status"] == "online" for d in c.devices), timeout=START_TIMEOUT,
                        what="both devices online")
        assert client.device["name"] == b and {d["pid"] for d in client.devices} == {dev_a.pid, dev_b.pid}
        other.wait_for(lambda c: c.device["pid"] == dev_a.pid and c.channels, timeout=START_TIMEOUT)

        with client.subscribe("telemetry", rate=60) as sub:
            assert sub.ack["ok"] and sub.ack["device"] == b
            dev_a.request("pub 50", "published")      # A's records 0..49: none of them may arrive
            dev_b.request("pub 3", "published")
            dev_b.request("pub 2", "published")
            msgs = take_until(sub, 4)
            check_contiguous(msgs)
            np.testing.assert_array_equal(np.concatenate([m.data["seq"] for m in msgs]), np.arange(5))
            with other.subscribe("telemetry") as from_a:   # A's own client gets A's
                dev_a.request("pub 1", "published")
                assert take_until(from_a, 50)[-1].seq[1] == 50

        assert client.command("set_speed", value=2.5) == 2.5
        assert client.wait_for_state("speed", 2.5) == 2.5
        assert client.command("add", a=2, b=3) == 5
        assert client.command("queue_log") == ["set_speed", "add", "queue_log"]
        assert other.command("queue_log") == ["queue_log"]        # A took none of B's commands
        assert other.state["speed"] == 0.0
        dev_a.request('state {"mode": "from-a"}', "stated")
        assert other.wait_for_state("mode", "from-a") == "from-a"
        dev_b.request('state {"mode": "from-b"}', "stated")
        assert client.wait_for_state("mode", "from-b") == "from-b"
        assert other.state["mode"] == "from-a"

    async def with_asyncio() -> int:
        with pytest.raises(DeviceError, match="several devices"):
            await AsyncClient.connect(bridge.url.url)
        assert [d["name"] for d in await AsyncClient.list_devices(bridge.url.url)] == [a, b]
        async with await AsyncClient.connect(bridge.url.url, device=a) as aclient:
            return await aclient.command("add", a=40, b=2)

    assert run_in_fresh_loop(with_asyncio()) == 42

    with Client(bridge.url.url, device="nonesuch", timeout=1) as waiting:   # may start later: no error yet
        assert waiting.device == {"name": "nonesuch", "status": "offline", "pid": None, "heartbeat_age": None}
        with pytest.raises(DeviceError, match=rf"the bridge does not serve device 'nonesuch' \(devices: {a}, {b}\)"):
            waiting.subscribe("telemetry")
        with pytest.raises(DeviceError, match="waited 1"):
            waiting.command("add", a=1)
    dev_a.proc.stop(check_stderr=False)
    dev_b.proc.stop(check_stderr=False)
