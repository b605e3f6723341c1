"""Sessions in PostgreSQL: OAuth clients, single-use authorization codes and refresh-token families.

A session is a refresh-token family: its id (``family_id``) is the ``sid`` of
every access token issued in it.  Tokens and codes are random and stored as
SHA-256 only.  Rotation marks the presented token used and inserts its successor
in one transaction holding the old row's lock, so of two concurrent rotations one
wins and the other is a reuse; a reuse (or a replayed authorization code)
revokes the whole family, which also stops its access tokens at the
authenticator's next check.

Errors: refusals are ``OAuthError("invalid_grant")`` with a description fit for
the client; storage failures propagate as psycopg errors (the routes answer 503).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from nexus.controlplane.auth.errors import OAuthError
from nexus.controlplane.auth.oauth import Client
from nexus.controlplane.auth.settings import AuthSettings
from nexus.storage.pgpool import PgPool

__all__ = ["CodeGrant", "RefreshGrant", "SessionStore", "token_hash"]

logger = logging.getLogger(__name__)

REFRESH_PREFIX = "nxr_"
RevokeReason = str  # one of refresh_token.revoked_reason's CHECK values


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@attrs.frozen
class CodeGrant:
    """What a redeemed authorization code stood for."""

    client_pk: uuid.UUID
    user_id: uuid.UUID
    redirect_uri: str
    code_challenge: str
    scopes: tuple[str, ...]
    amr: tuple[str, ...]
    auth_time: dt.datetime
    family_id: uuid.UUID


@attrs.frozen
class RefreshGrant:
    """A refresh token just issued (``token`` is shown to the client once) and the session it belongs to."""

    token: str = attrs.field(repr=False)
    family_id: uuid.UUID
    user_id: uuid.UUID
    scopes: tuple[str, ...]
    amr: tuple[str, ...]
    expires_at: dt.datetime


_CLIENT_COLUMNS = ("id, client_id, name, kind, redirect_uris, grant_types, scopes, first_party, enabled, "
                   "secret_hash")


def _client(row: Sequence[Any]) -> Client:
    return Client(pk=row[0], client_id=row[1], name=row[2], kind=row[3], redirect_uris=tuple(row[4]),
                  grant_types=tuple(row[5]), scopes=tuple(row[6]), first_party=row[7], enabled=row[8],
                  secret_hash=bytes(row[9]) if row[9] is not None else None)


class SessionStore:
    def __init__(self, pool: PgPool, settings: AuthSettings) -> None:
        self.pool = pool
        self.settings = settings

    # -- clients -----------------------------------------------------------------------------

    async def client(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 128:
            return None
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                f"SELECT {_CLIENT_COLUMNS} FROM oauth_client WHERE client_id = %s", (client_id,))).fetchone()
        return _client(row) if row is not None else None

    # -- authorization codes -----------------------------------------------------------------

    async def create_code(self, *, client: Client, user_id: uuid.UUID, redirect_uri: str, code_challenge: str,
                          scopes: Sequence[str], amr: Sequence[str], auth_time: dt.datetime) -> str:
        code = secrets.token_urlsafe(32)
        async with self.pool.connection() as conn:
            # Pruning here keeps the table small without a job: sign-ins are rare next to rows' lifetime.
            await conn.execute("DELETE FROM oauth_authorization_code WHERE expires_at < now() - interval '1 hour'")
            await conn.execute(
                "INSERT INTO oauth_authorization_code (code_hash, client_id, user_id, redirect_uri, code_challenge, "
                "scopes, amr, auth_time, family_id, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))",
                (token_hash(code), client.pk, user_id, redirect_uri, code_challenge, list(scopes), list(amr),
                 auth_time, uuid.uuid4(), self.settings.authorization_code_ttl),
            )
        return code

    async def redeem_code(self, code: str) -> CodeGrant:
        """Burn the code and return what it stood for; a second redemption revokes what the first issued."""
        digest = token_hash(code)
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "UPDATE oauth_authorization_code SET used_at = now() "
                "WHERE code_hash = %s AND used_at IS NULL AND expires_at > now() "
                "RETURNING client_id, user_id, redirect_uri, code_challenge, scopes, amr, auth_time, family_id",
                (digest,))).fetchone()
            if row is not None:
                return CodeGrant(client_pk=row[0], user_id=row[1], redirect_uri=row[2], code_challenge=row[3],
                                 scopes=tuple(row[4]), amr=tuple(row[5]), auth_time=row[6], family_id=row[7])
            used = await (await conn.execute(
                "SELECT family_id FROM oauth_authorization_code WHERE code_hash = %s AND used_at IS NOT NULL",
                (digest,))).fetchone()
        if used is not None:
            revoked = await self.revoke_family(used[0], "reuse_detected")
            logger.warning("authorization code replayed; session revoked",
                           extra={"event": "auth.code_replay", "session_id": str(used[0]), "tokens_revoked": revoked})
            raise OAuthError("invalid_grant", "authorization code already used")
        raise OAuthError("invalid_grant", "authorization code invalid or expired")

    # -- refresh tokens ----------------------------------------------------------------------

    async def issue_refresh(self, *, family_id: uuid.UUID, user_id: uuid.UUID, client: Client,
                            scopes: Sequence[str], amr: Sequence[str], auth_time: dt.datetime,
                            source_ip: str | None, user_agent: str | None) -> RefreshGrant:
        """Start a session (or add to one) with a fresh refresh token."""
        token = REFRESH_PREFIX + secrets.token_urlsafe(32)
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "INSERT INTO refresh_token (token_hash, family_id, user_id, client_id, scopes, amr, auth_time, "
                "expires_at, source_ip, user_agent) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s, %s) "
                "RETURNING expires_at",
                (token_hash(token), family_id, user_id, client.pk, list(scopes), list(amr), auth_time,
                 self.settings.refresh_token_ttl, _inet(source_ip), _agent(user_agent)),
            )).fetchone()
        assert row is not None
        return RefreshGrant(token=token, family_id=family_id, user_id=user_id, scopes=tuple(scopes), amr=tuple(amr),
                            expires_at=row[0])

    async def rotate(self, token: str, client: Client, scopes: Sequence[str] | None, *,
                     source_ip: str | None, user_agent: str | None) -> RefreshGrant:
        """Exchange a refresh token for its successor (``OAuthError`` invalid_grant when refused)."""
        new_token = REFRESH_PREFIX + secrets.token_urlsafe(32)
        outcome, detail, grant = "invalid", "", None
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(
                "SELECT t.id, t.family_id, t.user_id, t.client_id, t.scopes, t.amr, t.auth_time, "
                "t.expires_at <= now(), t.used_at IS NOT NULL, t.revoked_at IS NOT NULL, "
                "(SELECT min(f.issued_at) FROM refresh_token f WHERE f.family_id = t.family_id) "
                "< now() - make_interval(secs => %s), u.status = 'active' AND o.status = 'active' "
                "FROM refresh_token t JOIN app_user u ON u.id = t.user_id JOIN organization o ON o.id = u.org_id "
                "WHERE t.token_hash = %s FOR UPDATE OF t",
                (self.settings.session_max_age, token_hash(token)))).fetchone()
            if row is None or row[3] != client.pk:
                detail = "refresh token invalid"
            elif row[9]:
                detail = "refresh token revoked"
            elif row[8]:
                outcome = "reuse"
            elif row[7]:
                detail = "refresh token expired"
            elif row[10]:
                detail = "session too old; sign in again"
            elif not row[11]:
                detail = "account not active"
            else:
                granted: tuple[str, ...] = tuple(row[4])
                if scopes is not None:
                    if not set(scopes) <= set(granted):
                        raise OAuthError("invalid_scope", "refresh may only narrow the granted scopes")
                    granted = tuple(s for s in granted if s in scopes)
                await conn.execute("UPDATE refresh_token SET used_at = now() WHERE id = %s", (row[0],))
                new = await (await conn.execute(
                    "INSERT INTO refresh_token (token_hash, family_id, rotated_from, user_id, client_id, scopes, amr, "
                    "auth_time, expires_at, source_ip, user_agent) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                    "now() + make_interval(secs => %s), %s, %s) RETURNING expires_at",
                    (token_hash(new_token), row[1], row[0], row[2], client.pk, list(granted), row[5], row[6],
                     self.settings.refresh_token_ttl, _inet(source_ip), _agent(user_agent)))).fetchone()
                assert new is not None
                outcome = "ok"
                grant = RefreshGrant(token=new_token, family_id=row[1], user_id=row[2], scopes=granted,
                                     amr=tuple(row[5]), expires_at=new[0])
        if outcome == "ok":
            assert grant is not None
            return grant
        if outcome == "reuse":
            assert row is not None
            revoked = await self.revoke_family(row[1], "reuse_detected")
            logger.warning("refresh token reused; session revoked",
                           extra={"event": "auth.refresh_reuse", "session_id": str(row[1]), "user_id": str(row[2]),
                                  "tokens_revoked": revoked, "source_ip": source_ip})
            raise OAuthError("invalid_grant", "refresh token already used; the session has been revoked")
        raise OAuthError("invalid_grant", detail)

    async def revoke_family(self, family_id: uuid.UUID, reason: RevokeReason) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE refresh_token SET revoked_at = now(), revoked_reason = %s "
                "WHERE family_id = %s AND revoked_at IS NULL", (reason, family_id))
            return cur.rowcount

    async def revoke_user(self, user_id: uuid.UUID, reason: RevokeReason,
                          keep_family: uuid.UUID | None = None) -> int:
        """Revoke every session of a user (password changed, disabled), but ``keep_family``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE refresh_token SET revoked_at = now(), revoked_reason = %s WHERE user_id = %s "
                "AND revoked_at IS NULL AND family_id IS DISTINCT FROM %s", (reason, user_id, keep_family))
            return cur.rowcount

    async def family_of(self, token: str, client: Client | None) -> uuid.UUID | None:
        """The session a refresh token belongs to (for revocation), when issued to ``client``."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT family_id, client_id FROM refresh_token WHERE token_hash = %s", (token_hash(token),)
            )).fetchone()
        if row is None or (client is not None and row[1] != client.pk):
            return None
        family: uuid.UUID = row[0]
        return family


def _inet(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


def _agent(user_agent: str | None) -> str | None:
    return user_agent[:512] if user_agent else None
