"""Admin API keys (``nxa_…``): creation, revocation and lookup for the authenticator.

Like virtual keys (``nexus.crypto.vkeys``), the clear key is shown once and the
database holds HMAC-SHA256 under the box's key-HMAC secret, so a leaked table
cannot be replayed without the secret file.  What a key may do comes from IAM
attachments (``iam_attachment.admin_api_key_id``), not from the key.

``create_api_key`` and ``revoke_api_key`` take the caller's connection so the
admin API can write its audit row in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import time
import uuid
from typing import Any

import attrs

from nexus.crypto import vkeys

__all__ = ["PREFIX", "ApiKeyRow", "create_api_key", "display_prefix", "hash_api_key", "looks_like_api_key",
           "revoke_api_key"]

PREFIX = "nxa_"
DISPLAY_CHARS = 8


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(key: str) -> bool:
    body = key[len(PREFIX):]
    return key.startswith(PREFIX) and 36 <= len(key) <= 128 and body.replace("-", "").replace("_", "").isalnum()


def hash_api_key(secret: bytes, key: str) -> bytes:
    return vkeys.hash_key(secret, key)


def display_prefix(key: str) -> str:
    return key[: len(PREFIX) + DISPLAY_CHARS]


@attrs.frozen
class ApiKeyRow:
    id: uuid.UUID
    key_prefix: str
    org_id: uuid.UUID
    name: str
    description: str
    created_by: uuid.UUID | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime


_RETURNING = "id, key_prefix, org_id, name, description, created_by, expires_at, revoked_at, created_at"


def _row(row: Any) -> ApiKeyRow:
    return ApiKeyRow(id=row[0], key_prefix=row[1], org_id=row[2], name=row[3], description=row[4],
                     created_by=row[5], expires_at=row[6], revoked_at=row[7], created_at=row[8])


async def create_api_key(conn: Any, *, secret: bytes, org_id: uuid.UUID, name: str, description: str = "",
                         created_by: uuid.UUID | None = None,
                         expires_at: dt.datetime | None = None) -> tuple[str, ApiKeyRow]:
    """Insert a new key; return the clear key (show it once, never store it) and the row.

    ``conn`` is an async psycopg connection (a ``TrioConnection`` from the pool); ``secret`` is
    ``secretfiles.key_hmac_secret(dir)``.
    """
    if not name.strip():
        raise ValueError("an API key needs a name")
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    key = generate()
    row = await (await conn.execute(
        f"INSERT INTO admin_api_key (key_hash, key_prefix, org_id, name, description, created_by, expires_at) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_RETURNING}",
        (hash_api_key(secret, key), display_prefix(key), org_id, name.strip(), description, created_by, expires_at),
    )).fetchone()
    return key, _row(row)


async def revoke_api_key(conn: Any, key_id: uuid.UUID) -> ApiKeyRow | None:
    """Revoke a key (idempotent: an already revoked key keeps its first revocation time)."""
    row = await (await conn.execute(
        f"UPDATE admin_api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING {_RETURNING}",
        (key_id,))).fetchone()
    return _row(row) if row is not None else None


class UsageThrottle:
    """Decides when ``last_used_at/ip`` is worth a write: once per interval per key, or when the IP changes."""

    def __init__(self, interval: float, max_entries: int = 10_000) -> None:
        self.interval = interval
        self.max_entries = max_entries
        self._last: dict[uuid.UUID, tuple[float, str | None]] = {}

    def due(self, key_id: uuid.UUID, ip: str | None, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        seen = self._last.get(key_id)
        if seen is not None and seen[1] == ip and now - seen[0] < self.interval:
            return False
        if len(self._last) >= self.max_entries:
            self._last.clear()
        self._last[key_id] = (now, ip)
        return True


def inet_or_none(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None
