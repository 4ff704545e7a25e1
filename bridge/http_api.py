"""HTTP routes: health, channels, state, clients, metrics, POST /api/command and /api/record.

Reads everything from the Bridge object in ``current_app.config["bridge"]``. Reads are
open on a loopback bind and need the token otherwise; commands, and starting or stopping a
recording, always need the operator token (``Authorization: Bearer <token>`` or ``?token=``).
The recorder process itself is bridge/record_control.py's.
"""

from __future__ import annotations

import html
import os
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory

from . import stats as bridge_stats
from .clients import role_for, token_from
from .protocol import ProtocolError, error, shown
from .record_control import RecordError

api = Blueprint("api", __name__)

_STATUS = {"bad_request": 400, "invalid_args": 400, "too_large": 413, "unauthorized": 401, "forbidden": 403,
           "unknown_command": 404, "unknown_device": 404, "rate_limited": 429, "queue_full": 503, "offline": 503,
           "timeout": 504, "handler_error": 500, "bad_result": 500, "internal": 500,
           # /api/record (docs/recording.md)
           "already_recording": 409, "not_recording": 409, "file_exists": 409, "record_failed": 500}
_RECORD_KEYS = {"start": {"action", "device", "name", "channels", "token"}, "stop": {"action", "device", "token"}}
_RECORD_USAGE = ('send JSON: {"action": "start"} (optional "device": "arm1", "name": "run1", "channels": ["a", "b"])'
                 ' or {"action": "stop"}')


def _bridge() -> Any:
    return current_app.config["bridge"]


def _role() -> str | None:
    b = _bridge()
    body = request.get_json(silent=True) if request.method == "POST" else None
    auth = {"token": body["token"]} if isinstance(body, dict) and isinstance(body.get("token"), str) else None
    return role_for(token_from(auth, request.environ), b.options.token, b.options.require_token)


@api.before_request
def check_token() -> Any:
    if request.path.startswith("/api/") or request.path == "/metrics":
        origin = request.headers.get("Origin")
        if origin is not None and origin not in own_origins(request.environ):
            return jsonify(error("forbidden", f"a page from another site ({shown(origin)}) may not use this API")), 403
        if _role() is None:
            return jsonify(error("unauthorized", "missing or wrong token")), 401
    return None


def own_origins(environ: dict[str, Any]) -> list[str]:
    """The bridge's own origin(s), as the Socket.IO endpoint accepts them (engineio's default
    for cors_allowed_origins): scheme://Host, and the X-Forwarded-Proto/-Host one behind a proxy."""
    scheme, host = environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_HOST", "")
    origins = [f"{scheme}://{host}"]
    if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
        proto = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
        origins.append(f"{proto}://{environ.get('HTTP_X_FORWARDED_HOST', host).split(',')[0].strip()}")
    return origins


def _device_core(b: Any, name: Any, what: str) -> Any:
    """The core of the device ``name`` (None: the only one); raises ProtocolError (the caller
    holds the lock)."""
    return b.hub.core_for(what, {} if name is None else {"device": name})


def _refused(exc: ProtocolError) -> Any:
    return jsonify(exc.ack()), _STATUS.get(exc.code, 400)


@api.get("/api/health")
def health() -> Any:
    b = _bridge()
    with b.lock:
        only = b.core
        return jsonify({"ok": True, "device": only.link.status() if only else None,
                        "devices": [c.link.status() for c in b.hub.cores.values()], "clients": len(b.hub.clients),
                        "uptime": round(time.time() - b.started, 3), "url_path": "/"})


@api.get("/api/channels")
def channels() -> Any:
    b = _bridge()
    with b.lock:
        only = b.core
        return jsonify({"devices": [{k: e[k] for k in ("name", "channels", "commands")} for e in b.hub.entries()],
                        "channels": only.channel_list() if only else [],
                        "commands": only.command_catalog() if only else []})


@api.get("/api/state")
def state() -> Any:
    b = _bridge()
    with b.lock:
        states, only = b.state_snapshot(), b.core
        return jsonify({"devices": states, "values": states.get(only.link.device_name, {}) if only else {}})


@api.get("/api/clients")
def clients() -> Any:
    b = _bridge()
    with b.lock:
        return jsonify({"clients": bridge_stats.client_rows(b.hub)})


@api.post("/api/command")
def command() -> Any:
    b = _bridge()
    if _role() != "operator":
        ack = error("forbidden", "commands need the operator token (Authorization: Bearer <token>)")
        return jsonify(ack), 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error("bad_request", 'send JSON: {"name": "...", "args": {...}}')), 400
    payload = {k: v for k, v in body.items() if k != "token"}
    client = {"id": "http:" + str(request.remote_addr), "address": str(request.remote_addr), "role": "operator"}
    ack = b.run_command(client["id"], payload, client=client)
    status = 200 if ack.get("ok") else _STATUS.get(ack["error"]["code"], 400)
    return jsonify(ack), status


@api.get("/metrics")
def metrics() -> Response:
    b = _bridge()
    with b.lock:
        text = bridge_stats.prometheus(b.hub) + "\n".join(b.gc_watch.prometheus()) + "\n"
    return Response(text, mimetype="text/plain; version=0.0.4")


@api.get("/api/views")
def views() -> Any:
    return jsonify({"views": _bridge().views.views()})


@api.get("/api/stats")
def stats() -> Any:
    b = _bridge()
    with b.lock:
        try:
            core = _device_core(b, request.args.get("device"), "GET /api/stats")
        except ProtocolError as exc:
            return _refused(exc)
        snap = bridge_stats.snapshot(core, time.time())
        snap["devices"] = b.hub.names()
    snap["recording"] = b.recording.status()
    snap["gc"] = b.gc_watch.figures()
    return jsonify(snap)


@api.get("/api/record")
def record_status() -> Any:
    return jsonify(_bridge().recording.status())


@api.post("/api/record")
def record() -> Any:
    """Start or stop the bridge's recorder; answers ``{"ok": true, ...the status}`` or an error."""
    b = _bridge()
    if _role() != "operator":
        return jsonify(error("forbidden", "recording needs the operator token (Authorization: Bearer <token>)")), 403
    body = request.get_json(silent=True)
    action = body.get("action") if isinstance(body, dict) else None
    if action not in _RECORD_KEYS:
        return jsonify(error("bad_request", _RECORD_USAGE)), 400
    unknown = sorted(set(body) - _RECORD_KEYS[action])
    if unknown:
        return jsonify(error("bad_request", f"unknown key {shown(unknown[0])} for {action!r}; {_RECORD_USAGE}")), 400
    try:
        if action == "stop":
            status = b.recording.stop()
        else:
            with b.lock:
                try:
                    link = _device_core(b, body.get("device"), "POST /api/record").link
                except ProtocolError as exc:
                    return _refused(exc)
                online, device = link.online, link.device_name
            if not online or not device:
                raise RecordError("offline", f"device {device or link.name!r} is offline: nothing to record")
            status = b.recording.start(device, body.get("name"), body.get("channels"))
    except RecordError as exc:
        return jsonify(error(exc.code, exc.message)), _STATUS.get(exc.code, 400)
    return jsonify({"ok": True, **status})


@api.get("/")
def index() -> Any:
    b = _bridge()
    page = os.path.join(b.options.static, "index.html")
    if os.path.isfile(page):
        return send_from_directory(b.options.static, "index.html", max_age=0)
    name = html.escape(", ".join(b.hub.names()) or "(no device yet)")
    return Response(
        "<!doctype html><meta charset=utf-8><title>monbridge</title>"
        f"<h1>monbridge: {name}</h1><p>The dashboard has not been built: run <code>make demo</code> "
        "(or <code>npm ci &amp;&amp; npm run build</code>). The API works meanwhile: "
        "<a href=/api/health>/api/health</a>, <a href=/api/channels>/api/channels</a>.</p>",
        mimetype="text/html",
    )


@api.get("/static/<path:filename>")
def static_file(filename: str) -> Any:
    return send_from_directory(_bridge().options.static, filename, max_age=0)
