"""Who is calling: ``Authorization: Bearer <access token | nxa_ API key>`` to a ``Principal``.

An access token is verified offline (signature, issuer, audience, lifetime);
then the user and the session are looked up: the user must still be active in
an active organization, and the session (refresh-token family) must not be
revoked.  That lookup is cached for ``session_check_ttl`` seconds per session,
the bound on how late a logout elsewhere, a detected token reuse or a disabled
account takes effect; a logout through this process forgets its cache entry at
once.  The principal's ``org_path`` and ``tags`` come from the database, not
the token, so a moved org or changed attributes apply without a new sign-in.

API keys are looked up by HMAC on every request (one indexed read); their
``last_used_at``/``last_used_ip`` are written at most once per
``api_key_touch_interval`` per key, or when the address changes.

Errors: ``AuthError`` with status 401 (or 503 ``auth_unavailable`` when the
database cannot be asked); the message never echoes the credential.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import psycopg

from nexus.controlplane.auth import apikeys
from nexus.controlplane.auth.errors import AuthError
from nexus.controlplane.auth.keys import KeyRing
from nexus.controlplane.auth.settings import AuthSettings
from nexus.controlplane.auth.tokens import AccessClaims, TokenError, verify_access_token
from nexus.controlplane.principal import Principal
from nexus.storage.pgpool import PgPool

__all__ = ["AuthError", "Authenticator"]

logger = logging.getLogger(__name__)

_CACHE_MAX = 10_000


@attrs.frozen
class _SessionState:
    active: bool
    revoked: bool
    org_id: uuid.UUID
    org_path: str
    email: str
    tags: Mapping[str, str]


def string_tags(attributes: Any) -> dict[str, str]:
    """ABAC tags: the user's attributes that are strings (others are not comparable in conditions)."""
    if not isinstance(attributes, dict):
        return {}
    return {str(k): v for k, v in attributes.items() if isinstance(v, str)}


class Authenticator:
    def __init__(self, pool: PgPool, ring: KeyRing, key_secret: bytes, issuer: str, settings: AuthSettings) -> None:
        self.pool = pool
        self.ring = ring
        self.key_secret = key_secret
        self.issuer = issuer
        self.settings = settings
        self._sessions: dict[tuple[uuid.UUID, str], tuple[float, _SessionState]] = {}
        self._touch = apikeys.UsageThrottle(settings.api_key_touch_interval)

    async def authenticate(self, authorization_header: str | None, source_ip: str | None) -> Principal:
        """The principal behind the header, or ``AuthError``."""
        if not authorization_header or not authorization_header.strip():
            raise AuthError(401, "missing_credentials", "authentication required (Authorization: Bearer ...)")
        scheme, _, credential = authorization_header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError(401, "invalid_token", "use Authorization: Bearer <token>")
        try:
            if credential.startswith(apikeys.PREFIX):
                return await self._api_key(credential, source_ip)
            return await self._access_token(credential)
        except (psycopg.Error, OSError) as exc:
            logger.error("authentication store unavailable: %s", type(exc).__name__)
            raise AuthError(503, "auth_unavailable", "authentication temporarily unavailable") from None

    def verify(self, token: str) -> AccessClaims:
        """Offline checks only (signature, issuer, audience, lifetime); ``AuthError`` when they fail."""
        try:
            return verify_access_token(self.ring, token, issuer=self.issuer, audience=self.settings.audience,
                                       leeway=self.settings.clock_leeway)
        except TokenError as exc:
            raise AuthError(401, exc.code, exc.message) from None

    def forget_session(self, session_id: str) -> None:
        """Drop cached checks of a session (after revoking it here) so it stops working at once."""
        for key in [k for k in self._sessions if k[1] == session_id]:
            del self._sessions[key]

    async def _access_token(self, token: str) -> Principal:
        claims = self.verify(token)
        if claims.kind != "user":
            raise AuthError(401, "invalid_token", "token kind not accepted")
        state = await self._session_state(claims.subject, claims.session_id)
        if state is None or not state.active:
            raise AuthError(401, "user_inactive", "the account is not active")
        if state.revoked:
            raise AuthError(401, "session_revoked", "the session has been signed out or revoked")
        return Principal(kind="user", id=claims.subject, org_id=state.org_id, org_path=state.org_path,
                         label=state.email, tags=state.tags, mfa=claims.mfa, session_id=claims.session_id)

    async def _session_state(self, user_id: uuid.UUID, session_id: str) -> _SessionState | None:
        key = (user_id, session_id)
        now = time.monotonic()
        hit = self._sessions.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            family = uuid.UUID(session_id)
        except ValueError:
            return None
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT u.status = 'active' AND o.status = 'active', u.org_id, o.path, u.email, u.attributes, "
                "EXISTS (SELECT 1 FROM refresh_token r WHERE r.family_id = %s AND r.revoked_at IS NOT NULL) "
                "FROM app_user u JOIN organization o ON o.id = u.org_id WHERE u.id = %s", (family, user_id),
            )).fetchone()
        if row is None:
            return None
        state = _SessionState(active=row[0], revoked=row[5], org_id=row[1], org_path=row[2], email=row[3],
                              tags=string_tags(row[4]))
        if self.settings.session_check_ttl > 0:
            if len(self._sessions) >= _CACHE_MAX:
                self._sessions = {k: v for k, v in self._sessions.items() if v[0] > now}
                if len(self._sessions) >= _CACHE_MAX:
                    self._sessions.clear()
            self._sessions[key] = (now + self.settings.session_check_ttl, state)
        return state

    async def _api_key(self, key: str, source_ip: str | None) -> Principal:
        if not apikeys.looks_like_api_key(key):
            raise AuthError(401, "invalid_api_key", "API key invalid")
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT k.id, k.org_id, o.path, o.status = 'active', k.name, k.revoked_at IS NOT NULL, "
                "k.expires_at IS NOT NULL AND k.expires_at <= now() "
                "FROM admin_api_key k JOIN organization o ON o.id = k.org_id WHERE k.key_hash = %s",
                (apikeys.hash_api_key(self.key_secret, key),))).fetchone()
            if row is None or not row[3]:
                raise AuthError(401, "invalid_api_key", "API key invalid")
            if row[5]:
                raise AuthError(401, "api_key_revoked", "API key revoked")
            if row[6]:
                raise AuthError(401, "api_key_expired", "API key expired")
            ip = apikeys.inet_or_none(source_ip)
            if self._touch.due(row[0], ip):
                await conn.execute("UPDATE admin_api_key SET last_used_at = now(), last_used_ip = %s WHERE id = %s",
                                   (ip, row[0]))
        return Principal(kind="api_key", id=row[0], org_id=row[1], org_path=row[2], label=row[4])
