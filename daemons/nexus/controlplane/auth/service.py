"""Sign-in assembled: the parts ``build`` wires together, and the grant logic the routes call.

``AuthService`` owns no task and no socket: storage clients are the caller's
(started and closed by the daemon), and the only outbound calls (federation)
open and close their own HTTP client.  Its methods take parsed input and return
plain data or raise ``OAuthError``/``SignInError``; ``routes.py`` turns HTTP into
calls and results into responses.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import attrs

from nexus.controlplane.auth import keys
from nexus.controlplane.auth.authenticate import Authenticator
from nexus.controlplane.auth.errors import AuthError, OAuthError
from nexus.controlplane.auth.federation import Federation
from nexus.controlplane.auth.local import LocalSignIn
from nexus.controlplane.auth.oauth import Client, verify_client_secret, verify_pkce
from nexus.controlplane.auth.pending import PendingStore
from nexus.controlplane.auth.sessions import RefreshGrant, SessionStore
from nexus.controlplane.auth.settings import AuthSettings
from nexus.controlplane.auth.tokens import issue_access_token
from nexus.crypto import secretfiles
from nexus.crypto.vault import Vault
from nexus.net.resp.client import ValkeyClient
from nexus.storage.pgpool import PgPool

__all__ = ["AuthService", "ClientAuth", "build"]

logger = logging.getLogger(__name__)


@attrs.frozen
class ClientAuth:
    """How a client identified itself at the token or revocation endpoint."""

    client_id: str
    secret: str | None = attrs.field(default=None, repr=False)
    basic: bool = False


def client_auth(form: Mapping[str, str], authorization: str | None) -> ClientAuth:
    """``client_secret_basic`` (RFC 6749 §2.3.1, form-encoded then base64) or form fields; not both."""
    if authorization and authorization[:6].lower() == "basic ":
        if "client_secret" in form:
            raise OAuthError("invalid_request", "use one client authentication method")
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            ident, sep, secret = raw.partition(":")
            if not sep:
                raise ValueError
        except ValueError:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        client_id = unquote_plus(ident)
        if form.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_request", "client_id differs from the authenticated client")
        return ClientAuth(client_id, unquote_plus(secret), basic=True)
    client_id = form.get("client_id", "")
    if not client_id:
        raise OAuthError("invalid_client", "client authentication required (client_id)", 401)
    return ClientAuth(client_id, form.get("client_secret"))


class AuthService:
    """Everything sign-in needs; ``routes()`` for the app, ``authenticator`` for the admin API."""

    def __init__(self, *, pool: PgPool, valkey: ValkeyClient, vault: Vault, ring: keys.KeyRing, key_secret: bytes,
                 issuer: str, settings: AuthSettings) -> None:
        self.pool = pool
        self.valkey = valkey
        self.vault = vault
        self.ring = ring
        self.key_secret = key_secret
        self.issuer = issuer.rstrip("/")
        self.settings = settings
        self.sessions = SessionStore(pool, settings)
        self.pending = PendingStore(valkey, settings.login_request_ttl)
        self.local = LocalSignIn(pool, vault, self.sessions, settings)
        self.federation = Federation(pool, self.pending, vault, self.issuer, settings)
        self.authenticator = Authenticator(pool, ring, key_secret, self.issuer, settings)

    def routes(self) -> list[Any]:
        """The Starlette routes: ``/oauth/*``, ``/.well-known/*`` and ``/api/auth/*``."""
        from nexus.controlplane.auth.routes import auth_routes

        return auth_routes(self)

    @property
    def secure_cookies(self) -> bool:
        if self.settings.secure_cookies is not None:
            return self.settings.secure_cookies
        return self.issuer.startswith("https://")

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 / OIDC discovery metadata."""
        base = self.issuer
        auth_methods = ["none", "client_secret_basic", "client_secret_post"]
        return {
            "issuer": base,
            "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token",
            "revocation_endpoint": base + "/oauth/revoke",
            "jwks_uri": base + "/oauth/jwks.json",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "access_token_signing_alg_values_supported": ["EdDSA"],
            "scopes_supported": ["openid", "profile", "email", "admin", "my"],
            "authorization_response_iss_parameter_supported": True,
        }

    # -- clients -----------------------------------------------------------------------------

    async def authenticate_client(self, auth: ClientAuth) -> Client:
        client = await self.sessions.client(auth.client_id)
        if client is None or not client.enabled:
            raise OAuthError("invalid_client", "unknown or disabled client", 401)
        if client.kind == "public":
            if auth.secret:
                raise OAuthError("invalid_client", "public clients do not use a secret", 401)
        elif not auth.secret or not verify_client_secret(client, auth.secret):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client

    # -- tokens ------------------------------------------------------------------------------

    async def _user_org(self, user_id: uuid.UUID) -> tuple[uuid.UUID, str]:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT u.org_id, o.path FROM app_user u JOIN organization o ON o.id = u.org_id "
                "WHERE u.id = %s AND u.status = 'active' AND o.status = 'active'", (user_id,))).fetchone()
        if row is None:
            raise OAuthError("invalid_grant", "account not active")
        return row[0], row[1]

    async def _token_response(self, client: Client, refresh: RefreshGrant) -> dict[str, Any]:
        org_id, org_path = await self._user_org(refresh.user_id)
        access = issue_access_token(
            self.ring, issuer=self.issuer, audience=self.settings.audience, subject=refresh.user_id, org_id=org_id,
            org_path=org_path, session_id=str(refresh.family_id), amr=refresh.amr, scope=refresh.scopes,
            client_id=client.client_id, ttl=self.settings.access_token_ttl)
        return {"access_token": access.token, "token_type": "Bearer", "expires_in": access.expires_in,
                "refresh_token": refresh.token, "scope": " ".join(refresh.scopes)}

    async def start_session(self, *, user_id: uuid.UUID, client: Client, scopes: Sequence[str],
                            amr: Sequence[str], auth_time: dt.datetime, source_ip: str | None,
                            user_agent: str | None, family_id: uuid.UUID | None = None) -> dict[str, Any]:
        """A new session's token response (JSON login, authorization code redemption)."""
        refresh = await self.sessions.issue_refresh(
            family_id=family_id or uuid.uuid4(), user_id=user_id, client=client, scopes=scopes, amr=amr,
            auth_time=auth_time, source_ip=source_ip, user_agent=user_agent)
        return await self._token_response(client, refresh)

    async def token(self, form: Mapping[str, str], authorization: str | None, *, source_ip: str | None,
                    user_agent: str | None) -> dict[str, Any]:
        """The token endpoint (RFC 6749 §3.2): ``OAuthError`` or the token response."""
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type[:40]!r} is not supported")
        client = await self.authenticate_client(client_auth(form, authorization))
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"client may not use {grant_type}")
        if grant_type == "authorization_code":
            return await self._code_grant(form, client, source_ip, user_agent)
        token = form.get("refresh_token", "")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        scope = form.get("scope")
        refresh = await self.sessions.rotate(token, client, scope.split() if scope else None, source_ip=source_ip,
                                             user_agent=user_agent)
        return await self._token_response(client, refresh)

    async def _code_grant(self, form: Mapping[str, str], client: Client, source_ip: str | None,
                          user_agent: str | None) -> dict[str, Any]:
        code, verifier = form.get("code", ""), form.get("code_verifier", "")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        if not verifier:
            raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
        grant = await self.sessions.redeem_code(code)
        if grant.client_pk != client.pk:
            raise OAuthError("invalid_grant", "authorization code was issued to another client")
        if "redirect_uri" in form and form["redirect_uri"] != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not verify_pkce(verifier, grant.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return await self.start_session(user_id=grant.user_id, client=client, scopes=grant.scopes, amr=grant.amr,
                                        auth_time=grant.auth_time, source_ip=source_ip, user_agent=user_agent,
                                        family_id=grant.family_id)

    async def revoke(self, form: Mapping[str, str], authorization: str | None) -> None:
        """RFC 7009: revoke the session behind a refresh or access token; unknown tokens are not an error."""
        client = await self.authenticate_client(client_auth(form, authorization))
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        family: uuid.UUID | None = None
        if token.count(".") == 2:
            try:
                claims = self.authenticator.verify(token)
            except AuthError:
                return
            if claims.client_id == client.client_id:
                try:
                    family = uuid.UUID(claims.session_id)
                except ValueError:
                    return
        else:
            family = await self.sessions.family_of(token, client)
        if family is not None:
            await self.end_session(family)

    async def end_session(self, family_id: uuid.UUID) -> int:
        revoked = await self.sessions.revoke_family(family_id, "logout")
        self.authenticator.forget_session(str(family_id))
        logger.info("session ended", extra={"event": "auth.logout", "session_id": str(family_id),
                                            "tokens_revoked": revoked})
        return revoked


def build(pool: PgPool, valkey: ValkeyClient, vault: Vault, secrets_dir: Path, issuer: str,
          settings: AuthSettings | None = None) -> AuthService:
    """Wire sign-in from the daemon's storage clients and secret files.

    Creates the JWT signing key on first start (``secrets_dir`` must then be writable); raises
    ``SecretsError`` when a secret file is missing or unreadable.  ``issuer`` is the control
    plane's public URL (``[control_plane] public_url``).
    """
    settings = settings or AuthSettings()
    ring = keys.load(secrets_dir)
    try:
        # Keys whose successor has signed longer than any token lives have nothing left to verify.
        keys.retire_expired(secrets_dir, settings.access_token_ttl + settings.clock_leeway)
    except OSError as exc:  # read-only credentials directory: retiring is the provisioning side's job
        logger.debug("JWT signing keys not retired: %s", exc)
    key_secret = secretfiles.key_hmac_secret(secrets_dir)
    return AuthService(pool=pool, valkey=valkey, vault=vault, ring=ring, key_secret=key_secret, issuer=issuer,
                       settings=settings)
