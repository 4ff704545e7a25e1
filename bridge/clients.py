"""Who is connected: the clients table, roles, and token checks.

Standard library only. Roles: "operator" (presented the token; may command) and
"viewer" (data only; allowed without a token only when the bridge binds a loopback
address). The table maps socket.io sid -> ClientInfo.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs


@dataclass
class ClientInfo:
    id: str
    address: str
    user_agent: str
    role: str
    connected_at: float = field(default_factory=time.time)


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


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_from(auth: Any, environ: dict[str, Any]) -> str | None:
    """The token a client presented: Socket.IO ``auth``, ``Authorization: Bearer``, or ``?token=``."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


def role_for(presented: str | None, token: str, require_token: bool) -> str | None:
    """"operator", "viewer", or None (refuse). A wrong token is always refused."""
    if presented is not None:
        return "operator" if hmac.compare_digest(presented.encode(), token.encode()) else None
    return None if require_token else "viewer"
