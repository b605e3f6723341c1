"""Short-lived sign-in state in Valkey: open login forms and federated round trips.

Both are keyed by the SHA-256 of a random id (the id itself travels in the
form or the ``state`` parameter, never in a key name), expire on their own
(``login_request_ttl``) and are bound to the browser that started them through
a random cookie value stored alongside.  A federated state is taken with GETDEL,
so it can be used once.

Errors: ``ValkeyConnectionError``/``ValkeyError`` propagate (the routes answer 503).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson

from nexus.net.resp.client import ValkeyClient

__all__ = ["PendingStore"]

PREFIX = "nexus:auth:"


def _key(kind: str, ident: str) -> str:
    return f"{PREFIX}{kind}:{hashlib.sha256(ident.encode()).hexdigest()}"


class PendingStore:
    def __init__(self, valkey: ValkeyClient, ttl: int) -> None:
        self.valkey = valkey
        self.ttl = ttl

    async def put(self, kind: str, value: dict[str, Any]) -> str:
        """Store ``value`` under a new random id and return the id."""
        ident = secrets.token_urlsafe(24)
        await self.valkey.execute("SET", _key(kind, ident), orjson.dumps(value), "EX", self.ttl)
        return ident

    async def get(self, kind: str, ident: str) -> dict[str, Any] | None:
        if not ident or len(ident) > 128:
            return None
        return _decode(await self.valkey.execute("GET", _key(kind, ident)))

    async def take(self, kind: str, ident: str) -> dict[str, Any] | None:
        """Read and delete in one step: the second caller gets None."""
        if not ident or len(ident) > 128:
            return None
        return _decode(await self.valkey.execute("GETDEL", _key(kind, ident)))

    async def delete(self, kind: str, ident: str) -> None:
        if ident and len(ident) <= 128:
            await self.valkey.execute("DEL", _key(kind, ident))


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
