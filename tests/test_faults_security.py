"""Security faults (issue 11): bad tokens on every way in, bridges that must refuse to start, a
viewer that tries to command, foreign origins, and path traversal on every file route.

Real bridges and real sockets. Requests whose exact bytes matter (paths with '..', '%2e',
backslashes, NUL; handshakes with an Origin) go over raw sockets or websocket-client, never
through urllib, which would normalise them.
"""

from __future__ import annotations

import json
import signal
import sys
import uuid
from urllib.parse import quote

import pytest
import socketio
import websocket

from bench import wire
from bridge_support import DeviceProcess, check_error, mb, wait_attached  # noqa: F401  (mb: fixture)
from conftest import START_TIMEOUT, TIMEOUT, wait_for
from hostile_support import NO_VALUE, RawSocketIO, Refused, health, http_raw, listening_ports, pid_alive, raw_request


def _bad_tokens(token: str) -> dict[str, str]:
    """Tokens that must never pass for ``token``: blank, whitespace, short, near misses."""
    return {
        "empty": "", "one space": " ", "eight spaces": " " * 8, "tabs": "\t" * 8, "short": "short",
        "the first 8 characters": token[:8], "one character short": token[:-1], "one character more": token + "x",
        "other case": token.swapcase(), "a leading space": " " + token, "a trailing space": token + " ",
        "a trailing NUL": token + "\x00", "null": "null", "undefined": "undefined",
    }


def _history(url) -> list[int]:
    status, _, body = http_raw(url.port, "POST", "/api/command",
                               {"Authorization": f"Bearer {url.token}", "Content-Type": "application/json"},
                               json.dumps({"name": "history"}).encode())
    assert status == 200, (status, body)
    return json.loads(body)["result"]


# -- tokens ------------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_bad_tokens_are_refused_on_every_way_in_and_never_make_an_operator(mb):
    dev = mb.device()
    url = dev.url
    wait_attached(url, dev.pid)
    assert url.token.swapcase() != url.token
    bad = _bad_tokens(url.token)
    wrong: list[str] = []   # every (way, token) that was let in

    def socket_refused(way: str, what: str, **how) -> None:
        try:
            c = RawSocketIO(url.port, connect=False, query=how.pop("query", ""), headers=how.pop("headers", None))
        except websocket.WebSocketBadStatusException as exc:   # refused at the handshake: fine too
            assert exc.status_code in (400, 401, 403), exc
            return
        try:
            c.connect(how.get("auth"))
            hello = c.wait(lambda: [d for e, d in c.events if e == "hello"], what="hello")[0]
            wrong.append(f"Socket.IO {way} with {what}: let in as {hello['role']}")
        except Refused as exc:
            message = (exc.data or {}).get("message", "") if isinstance(exc.data, dict) else str(exc.data)
            assert "unauthorized" in message and "token" in message, (way, what, exc.data)
        finally:
            c.close()

    marker = 7_000_000
    for what, token in bad.items():
        socket_refused("auth", what, auth={"token": token})
        socket_refused("?token=", what, query="&token=" + quote(token, safe=""))
        if token.strip() == token and "\x00" not in token:   # a header value cannot carry these as is
            socket_refused("Authorization", what, headers=[f"Authorization: Bearer {token}"])
        # HTTP: reads and a command, token in the header, the query and the JSON body
        marker += 1
        body = json.dumps({"name": "record", "args": {"n": marker}}).encode()
        attempts = [("GET /api/clients ?token=", "GET", f"/api/clients?token={quote(token, safe='')}", {}, None),
                    ("POST /api/command ?token=", "POST", f"/api/command?token={quote(token, safe='')}",
                     {"Content-Type": "application/json"}, body),
                    ("POST /api/command, token in the body", "POST", "/api/command",
                     {"Content-Type": "application/json"},
                     json.dumps({"name": "record", "args": {"n": marker}, "token": token}).encode())]
        if token.strip() == token and "\x00" not in token:
            attempts += [("GET /api/clients Bearer", "GET", "/api/clients", {"Authorization": f"Bearer {token}"}, None),
                         ("POST /api/command Bearer", "POST", "/api/command",
                          {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, body)]
        for way, method, path, headers, data in attempts:
            status, _, answer = http_raw(url.port, method, path, headers, data)
            if status != 401:
                wrong.append(f"HTTP {way} with {what}: {status} {answer[:100]!r}")
            else:
                check_error(json.loads(answer), "unauthorized", "token")

    # a token that is not a string counts as none: a viewer on loopback, never an operator
    # (msgpack can also carry the right token's bytes as bin, or as a one-element array)
    for auth in ({"token": 123}, {"token": None}, {"token": [url.token]}, {"token": {"token": url.token}},
                 {"token": True}, {"token": url.token.encode()}, {b"token": url.token}, "x" * 100, [url.token],
                 url.token.encode(), 7):
        c = RawSocketIO(url.port, connect=False)
        try:
            c.connect(auth)
            hello = c.wait(lambda: [d for e, d in c.events if e == "hello"], what="hello")[0]
            assert hello["role"] == "viewer", (auth, hello)
            check_error(c.command({"name": "record", "args": {"n": 1}}), "forbidden")
        except Refused:
            pass
        finally:
            c.close()

    # python-socketio's own client gets the documented refusal
    errors = []
    refused = socketio.Client(reconnection=False, serializer="msgpack")
    refused.on("connect_error", lambda data=None: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(url.base, auth={"token": "short"}, transports=["websocket"], wait_timeout=10)
    assert errors and "unauthorized" in str(errors[0]), errors

    # nothing ran; and the right token still works the three ways (so the refusals above mean something)
    assert not [n for n in _history(url) if n > 7_000_000], "a command with a bad token ran"
    for c in (RawSocketIO(url.port, token=url.token), RawSocketIO(url.port, query="&token=" + url.token),
              RawSocketIO(url.port, headers=[f"Authorization: Bearer {url.token}"])):
        assert c.wait(lambda: [d for e, d in c.events if e == "hello"], what="hello")[0]["role"] == "operator"
        c.close()
    assert pid_alive(dev.bridge_pid()) and health(url.port)["ok"]
    assert not wrong, "bad tokens let in:\n" + "\n".join(wrong)


# -- a bridge that must refuse to start ---------------------------------------------------

REFUSALS = [
    # (argv after "serve --attach NAME --host 0.0.0.0 --port 0", MONBRIDGE_TOKEN, words in the message)
    (["--token", "   "], None, "the token is blank"),
    (["--token", "\t" * 10], None, "the token is blank"),
    (["--token", "short"], None, "too short"),
    (["--token", "abcd efgh ijkl"], None, "contains spaces"),
    ([], "    ", "MONBRIDGE_TOKEN: the token is blank"),
    ([], "short", "MONBRIDGE_TOKEN: the token is 5 characters, too short"),
    (["--token", ""], None, "without a token"),
    ([], "", "without a token"),
]


def _serve_refused(mb, name: str, args: list[str], env_token: str | None) -> DeviceProcess:
    """``python -m bridge serve --attach name --host 0.0.0.0 --port 0 *args``, with
    MONBRIDGE_TOKEN set to ``env_token`` (None: unset); registered for teardown."""
    env, tag = mb.guard.env(None, None)
    env.pop("MONBRIDGE_TOKEN", None)
    if env_token is not None:
        env["MONBRIDGE_TOKEN"] = env_token
    argv = [sys.executable, "-m", "bridge", "serve", "--attach", name, "--host", "0.0.0.0", "--port", "0", *args]
    proc = DeviceProcess(argv, env, mb.guard.tmp_path, tag)
    mb.guard.procs.append(proc)
    mb.others.append(proc)
    return proc


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, env_token, words", REFUSALS,
                         ids=["blank", "tabs", "short", "spaces", "env-blank", "env-short", "empty", "env-empty"])
def test_a_bridge_on_all_interfaces_refuses_a_blank_or_short_token_and_never_listens(mb, args, env_token, words):
    """Safe on 0.0.0.0 only because it must refuse: the moment it listens, it is killed."""
    proc = _serve_refused(mb, mb.new_name(), args, env_token)

    def listening_or_exited() -> tuple[str, list[int]] | None:
        ports = listening_ports(proc.pid)   # sampled every 2 ms while it runs
        if ports:
            return "listening", ports
        return ("exited", []) if proc.proc.poll() is not None else None

    try:
        state, ports = wait_for(listening_or_exited, START_TIMEOUT, "the bridge to exit", interval=0.002)
    finally:
        if proc.proc.poll() is None:   # listening on 0.0.0.0, or hung: never leave it running
            proc.kill_group(signal.SIGKILL)
            proc.proc.wait(TIMEOUT)
    assert state == "exited", f"the bridge listened on 0.0.0.0:{ports} with token {args or env_token!r}"
    assert proc.wait_gone() == 2, proc.describe()
    err = "".join(proc.stderr)
    assert words in err and "Traceback" not in err, err
    assert "serving" not in "".join(proc.stdout), proc.stdout


# -- a viewer that tries to command -----------------------------------------------------

@pytest.mark.timeout(60)
def test_a_viewer_cannot_command_by_any_route(mb):
    dev = mb.device()
    url = dev.url
    wait_attached(url, dev.pid)
    with mb.connected(url, token=None) as viewer:
        assert viewer.hello["role"] == "viewer"
        for payload in ({"name": "record", "args": {"n": 1}}, {"name": "set_speed", "args": {"value": 1}},
                        {"name": "nope"}, {"name": "record", "args": {"n": 2}, "role": "operator",
                                           "token": url.token}):
            check_error(viewer.call("command", payload), "forbidden", "operator")
        # even after subscribing, or claiming a role in other events
        viewer.subscribe("telemetry")
        check_error(viewer.call("command", {"name": "record", "args": {"n": 3}}), "forbidden")
    raw = RawSocketIO(url.port)   # no token
    try:
        # by hand: a plain command, one carrying bytes (msgpack bin: an attachment in protocol 2)
        # and a claim to the role, each with an ack id of its own as well
        for n, payload in enumerate([{"name": "record", "args": {"n": 4}},
                                     {"name": "record", "args": {"n": 5}, "b": b"x"},
                                     {"name": "record", "args": {"n": 6}, "role": "operator", "token": url.token}]):
            raw.send_frames(wire.encode_event("command", {**payload, "id": 100 + n}, 100 + n))
            check_error({k: v for k, v in raw.wait_result(100 + n).items() if k != "id"}, "forbidden")
            assert raw.wait_ack(100 + n) == NO_VALUE   # a command's answer is its result event
    finally:
        raw.close()
    # HTTP without a token: forbidden (403), not run
    status, _, body = http_raw(url.port, "POST", "/api/command", {"Content-Type": "application/json"},
                               json.dumps({"name": "record", "args": {"n": 7}}).encode())
    assert status == 403, (status, body)
    check_error(json.loads(body), "forbidden")
    assert _history(url) == [], "a viewer's command ran"


# -- foreign origins ---------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_foreign_origin_can_neither_open_a_socket_nor_command(mb):
    dev = mb.device()
    url = dev.url
    wait_attached(url, dev.pid)
    port = url.port
    foreign = ["http://evil.example", "null", f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",
               f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}.evil.example", f"http://localhost.evil.example:{port}",
               "http://evil.example:80"]
    for origin in foreign:
        # the websocket handshake, even with the right token
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            RawSocketIO(port, token=url.token, origin=origin)
        assert refused.value.status_code in (400, 403), (origin, refused.value)
        # long-polling
        status, _, body = http_raw(port, "GET", "/socket.io/?EIO=4&transport=polling", {"Origin": origin})
        assert status in (400, 403), (origin, status, body)
    # the bridge's own origin is accepted (so the refusals above are about the origin)
    own = RawSocketIO(port, token=url.token, origin=f"http://127.0.0.1:{port}")
    assert own.wait(lambda: [d for e, d in own.events if e == "hello"], what="hello")[0]["role"] == "operator"
    own.close()

    # POST /api/command from a foreign origin, with the right token: refused, and not run
    let_through = []
    for n, origin in enumerate(foreign):
        status, _, body = http_raw(port, "POST", "/api/command",
                                   {"Origin": origin, "Authorization": f"Bearer {url.token}",
                                    "Content-Type": "application/json"},
                                   json.dumps({"name": "record", "args": {"n": 100 + n}}).encode())
        if status not in (400, 403):
            let_through.append(f"{origin}: {status} {body[:80]!r}")
    ran = _history(url)
    status, _, body = http_raw(port, "POST", "/api/command",   # the same without an Origin: fine
                               {"Authorization": f"Bearer {url.token}", "Content-Type": "application/json"},
                               json.dumps({"name": "add", "args": {"a": 1}}).encode())
    assert status == 200 and json.loads(body) == {"ok": True, "result": 2}, (status, body)
    assert not let_through and not ran, \
        f"POST /api/command obeyed a foreign Origin: {let_through}; the device ran record({ran})"


# -- path traversal ----------------------------------------------------------------------

def _traversals(secret_dir: str) -> list[bytes]:
    """Request targets that try to leave the static or specs directory for ``secret_dir``'s
    canary.txt (the parent of both), /etc/passwd, or the bridge's own source."""
    up = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%c0%ae%c0%ae", "..%00", "...."]
    sep = ["/", "%2f", "%2F", "%252f", "\\", "%5c", "%5C", "//", "/./", "%c0%af"]
    targets = []
    for prefix in ("/static/", "/", "/api/", "/static/x/", "/socket.io/", "/api/views/", "/metrics/"):
        for u in up:
            for s_ in sep:
                targets.append(f"{prefix}{u}{s_}canary.txt")
                targets.append(f"{prefix}{u}{s_}{u}{s_}{u}{s_}{u}{s_}{u}{s_}{u}{s_}{u}{s_}etc{s_}passwd")
        targets += [f"{prefix}....//canary.txt", f"{prefix}....//....//....//....//....//etc/passwd",
                    f"{prefix}..;/canary.txt", f"{prefix}../specs/view.vl.json", f"{prefix}..%2fspecs%2fview.vl.json",
                    f"{prefix}%2e%2e/%2e%2e/bridge/cli.py", f"{prefix}../../bridge/cli.py"]
    absolute = secret_dir.lstrip("/")
    targets += [f"/static//{absolute}/canary.txt", f"/static/%2f{absolute}/canary.txt",
                f"/static/{absolute}/canary.txt", f"/static//etc/passwd", "/static/%2fetc%2fpasswd",
                f"/static/file:///{absolute}/canary.txt", f"/static/\\\\?\\{absolute}\\canary.txt",
                "/static/C:\\..\\..\\canary.txt", "/static/app.js%00.txt", "/static/app.js%00/../../canary.txt",
                f"//{absolute}/canary.txt", "//etc/passwd", f"http://127.0.0.1/static/../canary.txt",
                "/static/.", "/static/..", "/static/%2e", "/static/%2e%2e", "/static/", "/static"]
    raw = [t.encode() for t in targets]
    raw += [b"/static/\x00", b"/static/app.js\x00.txt", b"/static/..\x00/canary.txt", b"/static/\xc0\xae\xc0\xae/canary.txt",
            b"/static/..\\canary.txt", b"/static/../canary.txt"]
    return raw


@pytest.mark.timeout(120)
def test_no_route_serves_a_file_outside_the_web_ui_or_specs(mb, tmp_path):
    root = tmp_path / "site"
    (root / "webui").mkdir(parents=True)
    (root / "specs").mkdir()
    canary = f"CANARY-{uuid.uuid4().hex}"
    (root / "canary.txt").write_text(canary)
    (root / "webui" / "index.html").write_text("<!doctype html><title>monbridge</title>INDEX-PAGE")
    (root / "webui" / "app.js").write_text("// APP-BUNDLE\n")
    (root / "specs" / "view.vl.json").write_text(json.dumps({"title": "SPEC-FILE", "mark": "line"}))
    name = mb.new_name()
    bridge = mb.serve(name, "--static", str(root / "webui"), "--specs", str(root / "specs"))
    port = bridge.url.port
    # what may be served is served (so a 404 below means something)
    status, _, body = raw_request(port, b"/static/app.js")
    assert status == 200 and b"APP-BUNDLE" in body, (status, body[:200])
    status, _, body = raw_request(port, b"/")
    assert status == 200 and b"INDEX-PAGE" in body, (status, body[:200])

    secrets = [canary.encode(), b"root:x:0:", b"def build_parser", b"SPEC-FILE"]
    served = []
    targets = _traversals(str(root))
    for target in targets:
        status, headers, body = raw_request(port, target)
        hops = 0
        while 300 <= status < 400 and hops < 3:   # a redirect is fine if it leads nowhere either
            location = headers.get("location", "")
            assert location, (target, status, headers)
            path = location.split(f"127.0.0.1:{port}", 1)[-1] if "://" in location else location
            assert path.startswith("/"), f"{target!r} redirects off the bridge: {location!r}"
            status, headers, body = raw_request(port, path.encode())
            hops += 1
        leaked = [s for s in secrets if s in body]
        if leaked or status not in (400, 403, 404):
            served.append(f"{target!r}: {status}, {leaked or body[:60]!r}")
    assert pid_alive(bridge.pid) and health(port)["ok"] is True
    assert "Traceback" not in "".join(bridge.proc.stderr), bridge.proc.describe()
    assert not served, f"{len(served)} of {len(targets)} traversal attempts were answered:\n" + "\n".join(served[:20])
    # the specs reach the page only as parsed views, through the API
    views = json.loads(http_raw(port, "GET", "/api/views")[2])["views"]
    assert [v["title"] for v in views] == ["SPEC-FILE"]
