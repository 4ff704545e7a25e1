"""Who is connected: the clients table, roles, and token checks.

The standard library and two helpers of device_agent (``json_list_prefix``, ``is_loopback``);
no Flask or socketio. Roles: "operator" (presented the token; may command) and
"viewer" (data only; allowed without a token only when the bridge binds a loopback
address). The table maps socket.io sid -> ClientInfo.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs

from device_agent.attach import json_list_prefix
from device_agent.settings import is_loopback


USER_AGENT_CHARS = 200  # kept of a client's User-Agent header, so one client cannot fill the table


@dataclass
class ClientInfo:
    id: str
    address: str
    user_agent: str
    role: str
    connected_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.user_agent = self.user_agent[:USER_AGENT_CHARS]


class ClientTable:
    def __init__(self) -> None:
        self._clients: dict[str, ClientInfo] = {}  # sid -> info
        self._lock = threading.Lock()
        self.version = 0  # bumped on every change, so the device copy is rewritten only then

    def add(self, info: ClientInfo) -> None:
        with self._lock:
            self._clients[info.id] = info
            self.version += 1

    def remove(self, sid: str) -> ClientInfo | None:
        with self._lock:
            self.version += 1
            return self._clients.pop(sid, None)

    def touch(self) -> None:
        """Something shown in the table changed (e.g. subscriptions): republish it."""
        with self._lock:
            self.version += 1

    def get(self, sid: str) -> ClientInfo | None:
        return self._clients.get(sid)

    def sids(self) -> list[str]:
        return list(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    def rows(self, extra: Any = None) -> list[dict[str, Any]]:
        """The table as JSON-able rows; ``extra(sid)`` adds per-client fields."""
        out = []
        for info in list(self._clients.values()):
            row = asdict(info)
            if extra is not None:
                row.update(extra(info.id))
            out.append(row)
        return out


def table_for_device(rows: list[dict[str, Any]], capacity: int) -> tuple[bytes, int, str]:
    """The clients table as JSON of at most ``capacity`` bytes (the device's copy), how many
    rows that holds, and how much of each row: "full"; "brief": every client, each
    subscription cut to its channel name (20 clients with 128 subscriptions each are ~150 KB
    in full); "cut": the brief rows of the clients connected longest."""
    data = _compact_json(rows)
    if len(data) <= capacity:
        return data, len(rows), "full"
    brief = [dict(row, subscriptions=[{"channel": s["channel"]} for s in row.get("subscriptions", [])])
             for row in rows]
    data = _compact_json(brief)
    if len(data) <= capacity:
        return data, len(brief), "brief"
    return (*json_list_prefix(brief, capacity), "cut")


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def token_from(auth: Any, environ: dict[str, Any]) -> str | None:
    """The token a client presented: Socket.IO ``auth``, ``Authorization: Bearer``, or ``?token=``."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()   # "Bearer " with nothing after it presents an empty token: refused
    values = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get("token")
    return values[0] if values else None


def role_for(presented: str | None, token: str, require_token: bool) -> str | None:
    """"operator", "viewer", or None (refuse). A wrong token is always refused."""
    if presented is not None:
        return "operator" if hmac.compare_digest(presented.encode(), token.encode()) else None
    return None if require_token else "viewer"


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def host_allowed(host_header: str, bind_host: str, require_token: bool) -> bool:
    """On a loopback bind, accept only requests addressed to a loopback name.

    A web page from another site can make a browser send requests to 127.0.0.1 through a
    DNS name it controls ("DNS rebinding"); such requests carry that name in Host. With a
    token required (non-loopback binds), the token is the guard and any Host is fine.
    """
    if require_token:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_NAMES or host == bind_host.lower() or is_loopback(host)


class HostGuard:
    """WSGI wrapper applying ``host_allowed`` to every request (HTTP and Socket.IO)."""

    def __init__(self, app: Any, bind_host: str, require_token: bool) -> None:
        self.app, self.bind_host, self.require_token = app, bind_host, require_token

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if host_allowed(environ.get("HTTP_HOST", ""), self.bind_host, self.require_token):
            return self.app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"monbridge: this bridge only answers requests addressed to this machine "
                b"(Host: localhost or 127.0.0.1)\n"]
