"""OIDC federation: sign in through an external identity provider (``identity_provider`` rows of kind oidc).

Round trip (authorization code + PKCE, RFC 6749 / OIDC Core §3.1):

1. ``start``: fetch the IdP's discovery document (cached, issuer checked), store
   state, nonce and PKCE verifier server-side (``PendingStore``, bound to the
   browser cookie and to the open ``/oauth/authorize`` request), and return the
   IdP's authorization URL.
2. ``finish``: take the state (once), exchange the code with the verifier and the
   client credentials, verify the ID token (signature from the IdP's JWKS with an
   asymmetric algorithm only, ``iss``, ``aud`` = our client id, ``azp``, ``exp``,
   ``iat``, ``nonce``), then find or JIT-provision the user and sync group
   memberships from the claims (``provision``).

Trust: every IdP URL must be https (TLS verified against the system store plus
``federation_ca_file``); with ``allow_insecure_issuers`` a loopback http URL is
also accepted, for development.  The client secret is vault ciphertext on the
row (``seal_client_secret``), opened only for the token request.

Errors: ``FederationError`` with an HTTP status and a message safe to show the
user (no token, code or secret in it).  Accounts are never linked by email: a
federated user is ``(identity_provider_id, external_subject)``, and JIT refuses
an email that a different account already has.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import secrets
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus, urlsplit

import attrs
import httpx
import jwt
import orjson
import psycopg

from nexus.controlplane.auth import oauth
from nexus.controlplane.auth.local import SignedInUser, normalise_email
from nexus.controlplane.auth.pending import PendingStore
from nexus.controlplane.auth.settings import AuthSettings
from nexus.crypto.rotation import SEALED_COLUMNS, row_aad
from nexus.crypto.vault import Sealed, Vault, VaultError
from nexus.storage.pgpool import PgPool

__all__ = ["Federation", "FederationError", "IdentityProvider", "seal_client_secret"]

logger = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/federated/callback"
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                             "EdDSA"})
MAX_RESPONSE_BYTES = 1024 * 1024
_JWKS_REFETCH_INTERVAL = 10.0


class FederationError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _secret_aad(idp_id: uuid.UUID) -> bytes:
    return row_aad(idp_id, _SEALED.aad_prefix)


_SEALED = next(c for c in SEALED_COLUMNS if c.table == "identity_provider")


def seal_client_secret(vault: Vault, idp_id: uuid.UUID, secret: str) -> Sealed:
    """Vault ciphertext for ``identity_provider.client_secret_ciphertext/nonce/key_id`` of row ``idp_id``."""
    return vault.seal(secret.encode(), _secret_aad(idp_id))


@attrs.frozen
class GroupMapping:
    claim: str
    value: str
    group_id: uuid.UUID


@attrs.frozen(repr=False)
class IdentityProvider:
    id: uuid.UUID
    org_id: uuid.UUID
    org_path: str
    name: str
    issuer: str
    client_id: str
    client_secret: Sealed | None
    scopes: tuple[str, ...]
    jit_enabled: bool
    group_mappings: tuple[GroupMapping, ...]
    settings: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"IdentityProvider(id={self.id}, name={self.name!r}, issuer={self.issuer!r})"


def parse_group_mappings(raw: Any) -> tuple[GroupMapping, ...]:
    """The well-formed entries of ``identity_provider.group_mappings``; malformed ones are skipped (logged)."""
    out: list[GroupMapping] = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(GroupMapping(claim=str(item["claim"]), value=str(item["value"]),
                                    group_id=uuid.UUID(str(item["group_id"]))))
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring malformed group mapping", extra={"mapping": repr(item)[:200]})
    return tuple(out)


def claim_values(claims: Mapping[str, Any], path: str) -> set[str]:
    """The string values at a claim path (``groups``, or dotted: ``realm_access.roles``)."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return set()
        node = node[part]
    if isinstance(node, list):
        return {str(v) for v in node if isinstance(v, str | int | bool)}
    if isinstance(node, str | int | bool):
        return {str(node)}
    return set()


def mapped_groups(mappings: Sequence[GroupMapping], claims: Mapping[str, Any]) -> set[uuid.UUID]:
    return {m.group_id for m in mappings if m.value in claim_values(claims, m.claim)}


def url_allowed(url: str, allow_insecure: bool) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme == "http" and allow_insecure:
        host = parts.hostname
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return False


class Federation:
    def __init__(self, pool: PgPool, pending: PendingStore, vault: Vault, issuer: str,
                 settings: AuthSettings) -> None:
        self.pool = pool
        self.pending = pending
        self.vault = vault
        self.redirect_uri = issuer.rstrip("/") + CALLBACK_PATH
        self.settings = settings
        self._discovery: dict[str, tuple[float, dict[str, Any]]] = {}
        self._jwks: dict[str, tuple[float, dict[str, Any]]] = {}
        self._ssl: ssl.SSLContext | None = None

    # -- the IdP rows ------------------------------------------------------------------------

    async def providers(self) -> list[tuple[uuid.UUID, str]]:
        """Enabled OIDC providers as (id, name), for the login page."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, name FROM identity_provider WHERE kind = 'oidc' AND enabled ORDER BY name")).fetchall()
        return [(r[0], r[1]) for r in rows]

    async def provider(self, idp_id: uuid.UUID) -> IdentityProvider | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT p.id, p.org_id, o.path, p.name, p.issuer, p.client_id, p.client_secret_key_id, "
                "p.client_secret_nonce, p.client_secret_ciphertext, p.scopes, p.jit_enabled, p.group_mappings, "
                "p.settings FROM identity_provider p JOIN organization o ON o.id = p.org_id "
                "WHERE p.id = %s AND p.kind = 'oidc' AND p.enabled AND o.status = 'active'", (idp_id,))).fetchone()
        if row is None:
            return None
        secret = Sealed(row[6], bytes(row[7]), bytes(row[8])) if row[8] is not None else None
        return IdentityProvider(id=row[0], org_id=row[1], org_path=row[2], name=row[3], issuer=row[4],
                                client_id=row[5], client_secret=secret, scopes=tuple(row[9]), jit_enabled=row[10],
                                group_mappings=parse_group_mappings(row[11]),
                                settings=row[12] if isinstance(row[12], dict) else {})

    # -- HTTP to the IdP ---------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            if self.settings.federation_ca_file:
                ctx.load_verify_locations(cafile=self.settings.federation_ca_file)
            self._ssl = ctx
        return self._ssl

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self._ssl_context(), timeout=self.settings.federation_timeout,
                                 follow_redirects=False, trust_env=False)

    def _check_url(self, url: Any, what: str) -> str:
        if not isinstance(url, str) or not url_allowed(url, self.settings.allow_insecure_issuers):
            raise FederationError(502, f"identity provider {what} must be an https URL")
        return url

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._client() as client:
                resp = await client.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            logger.warning("identity provider unreachable", extra={"url": url, "error": type(exc).__name__})
            raise FederationError(502, f"identity provider {what} could not be fetched") from None
        return _json_object(resp, what)

    async def discovery(self, issuer: str) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._discovery.get(issuer)
        if hit is not None and hit[0] > now:
            return hit[1]
        self._check_url(issuer, "issuer")
        doc = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery")
        if doc.get("issuer") != issuer:
            raise FederationError(502, "identity provider discovery names another issuer")
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            self._check_url(doc.get(field), field)
        self._discovery[issuer] = (now + self.settings.discovery_cache_ttl, doc)
        return doc

    async def _jwk_for(self, jwks_uri: str, kid: str | None, alg: str) -> jwt.PyJWK:
        now = time.monotonic()
        for attempt in range(2):
            hit = self._jwks.get(jwks_uri)
            if hit is None or (attempt == 1 and now - hit[0] > _JWKS_REFETCH_INTERVAL):
                hit = (now, await self._get_json(jwks_uri, "JWKS"))
                self._jwks[jwks_uri] = hit
            keys = [k for k in hit[1].get("keys", []) if isinstance(k, dict) and k.get("use", "sig") == "sig"]
            candidates = [k for k in keys if k.get("kid") == kid] if kid else keys
            if len(candidates) == 1:
                try:
                    return jwt.PyJWK(candidates[0], algorithm=alg)
                except jwt.PyJWTError:
                    raise FederationError(502, "identity provider signing key unusable") from None
        raise FederationError(401, "ID token signed by a key the identity provider does not publish")

    # -- the round trip ----------------------------------------------------------------------

    async def start(self, idp_id: uuid.UUID, request_id: str, bind: str) -> str:
        """Begin a federated sign-in for an open authorize request; returns the IdP URL to redirect to."""
        idp = await self.provider(idp_id)
        if idp is None:
            raise FederationError(404, "unknown or disabled identity provider")
        doc = await self.discovery(idp.issuer)
        nonce = _random()
        verifier = _random() + _random()
        state = await self.pending.put("fed", {"idp": str(idp.id), "nonce": nonce, "verifier": verifier,
                                              "request": request_id, "bind": bind})
        scopes = list(dict.fromkeys(("openid", *idp.scopes)))
        return oauth.with_query(doc["authorization_endpoint"], [
            ("response_type", "code"), ("client_id", idp.client_id), ("redirect_uri", self.redirect_uri),
            ("scope", " ".join(scopes)), ("state", state), ("nonce", nonce),
            ("code_challenge", oauth.s256(verifier)), ("code_challenge_method", "S256"),
        ])

    async def finish(self, params: Mapping[str, str], bind: str) -> tuple[str, SignedInUser]:
        """Complete the round trip; returns the authorize request id to resume and the signed-in user."""
        record = await self.pending.take("fed", params.get("state", ""))
        if record is None or not _same(record.get("bind"), bind):
            raise FederationError(400, "sign-in attempt expired or not recognised; start again")
        if "error" in params:
            logger.warning("identity provider refused sign-in",
                           extra={"idp_id": record["idp"], "idp_error": params.get("error", "")[:100]})
            raise FederationError(401, "the identity provider did not sign you in")
        code = params.get("code", "")
        if not code:
            raise FederationError(400, "the identity provider sent no authorization code")
        idp = await self.provider(uuid.UUID(record["idp"]))
        if idp is None:
            raise FederationError(404, "unknown or disabled identity provider")
        doc = await self.discovery(idp.issuer)
        tokens = await self._exchange(idp, doc, code, record["verifier"])
        claims = await self._verify_id_token(idp, doc, tokens.get("id_token"), record["nonce"])
        user = await self.provision(idp, claims)
        return record["request"], user

    async def _exchange(self, idp: IdentityProvider, doc: Mapping[str, Any], code: str,
                        verifier: str) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": verifier}
        auth: httpx.BasicAuth | None = None
        if idp.client_secret is not None:
            try:
                secret = self.vault.open(idp.client_secret, _secret_aad(idp.id)).decode()
            except (VaultError, UnicodeDecodeError):
                logger.error("identity provider client secret does not open", extra={"idp_id": str(idp.id)})
                raise FederationError(500, "identity provider misconfigured (client secret)") from None
            methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            if "client_secret_basic" in methods:
                # RFC 6749 §2.3.1: form-encode before base64.
                auth = httpx.BasicAuth(_form_encode(idp.client_id), _form_encode(secret))
            else:
                form |= {"client_id": idp.client_id, "client_secret": secret}
        else:
            form["client_id"] = idp.client_id
        try:
            async with self._client() as client:
                headers = {"accept": "application/json"}
                if auth is not None:
                    resp = await client.post(doc["token_endpoint"], data=form, auth=auth, headers=headers)
                else:
                    resp = await client.post(doc["token_endpoint"], data=form, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("identity provider token endpoint unreachable",
                           extra={"idp_id": str(idp.id), "error": type(exc).__name__})
            raise FederationError(502, "identity provider could not be reached") from None
        if resp.status_code != 200:
            error = ""
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                error = str(orjson.loads(resp.content).get("error", ""))[:100]
            logger.warning("identity provider refused the code exchange",
                           extra={"idp_id": str(idp.id), "status": resp.status_code, "idp_error": error})
            raise FederationError(502, "the identity provider refused the sign-in")
        return _json_object(resp, "token response")

    async def _verify_id_token(self, idp: IdentityProvider, doc: Mapping[str, Any], token: Any,
                               nonce: str) -> dict[str, Any]:
        if not isinstance(token, str) or token.count(".") != 2:
            raise FederationError(502, "the identity provider sent no ID token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise FederationError(401, "ID token malformed") from None
        alg = header.get("alg")
        offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        if alg not in ASYMMETRIC_ALGS or alg not in offered:
            raise FederationError(401, "ID token algorithm not accepted")
        kid = header.get("kid")
        key = await self._jwk_for(doc["jwks_uri"], kid if isinstance(kid, str) else None, str(alg))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[str(alg)], audience=idp.client_id, issuer=idp.issuer,
                leeway=self.settings.clock_leeway, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise FederationError(401, "ID token expired") from None
        except jwt.InvalidAudienceError:
            raise FederationError(401, "ID token issued for another client") from None
        except jwt.InvalidIssuerError:
            raise FederationError(401, "ID token from another issuer") from None
        except jwt.InvalidSignatureError:
            raise FederationError(401, "ID token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise FederationError(401, f"ID token rejected ({type(exc).__name__})") from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != idp.client_id:
            raise FederationError(401, "ID token issued for another client")
        if not _same(claims.get("nonce"), nonce):
            raise FederationError(401, "ID token nonce does not match this sign-in")
        if not isinstance(claims.get("sub"), str) or not claims["sub"] or len(claims["sub"]) > 255:
            raise FederationError(401, "ID token has no usable subject")
        return claims

    # -- users and groups --------------------------------------------------------------------

    async def provision(self, idp: IdentityProvider, claims: Mapping[str, Any]) -> SignedInUser:
        """Find or JIT-create the user for these verified claims and sync their mapped groups."""
        subject = str(claims["sub"])
        email_claim = str(idp.settings.get("email_claim", "email"))
        name_claim = str(idp.settings.get("name_claim", "name"))
        email_value = claims.get(email_claim)
        email = normalise_email(email_value) if isinstance(email_value, str) else ""
        name = claims.get(name_claim)
        display = name[:200] if isinstance(name, str) else ""
        desired = mapped_groups(idp.group_mappings, claims)
        log = {"event": "auth.federated_sign_in", "idp_id": str(idp.id), "email": email}
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(
                "SELECT u.id, u.status = 'active' AND o.status = 'active', u.org_id, o.path, u.email "
                "FROM app_user u JOIN organization o ON o.id = u.org_id "
                "WHERE u.identity_provider_id = %s AND u.external_subject = %s FOR UPDATE OF u",
                (idp.id, subject))).fetchone()
            created = False
            if row is None:
                if not idp.jit_enabled:
                    logger.warning("federated sign-in refused: user not provisioned", extra=log)
                    raise FederationError(403, "no account exists for you here; ask an administrator")
                if not email or len(email) > 320 or "@" not in email or any(c.isspace() for c in email):
                    raise FederationError(403, "the identity provider sent no usable email address")
                if claims.get("email_verified") is False and idp.settings.get("require_verified_email", True):
                    raise FederationError(403, "the identity provider says this email address is not verified")
                try:
                    async with conn.transaction():
                        row = await (await conn.execute(
                            "INSERT INTO app_user (org_id, email, display_name, status, identity_provider_id, "
                            "external_subject) VALUES (%s, %s, %s, 'active', %s, %s) "
                            "ON CONFLICT (email) DO NOTHING RETURNING id, true, org_id, %s::text, email",
                            (idp.org_id, email, display, idp.id, subject, idp.org_path))).fetchone()
                except psycopg.errors.CheckViolation:
                    raise FederationError(403, "the identity provider sent no usable email address") from None
                if row is None:
                    logger.warning("federated sign-in refused: email taken by another account", extra=log)
                    raise FederationError(409, "another account already uses this email address; ask an "
                                               "administrator to link it")
                created = True
            if not row[1]:
                logger.warning("federated sign-in refused: account not active", extra=log)
                raise FederationError(403, "this account is not active")
            user_id: uuid.UUID = row[0]
            if not created and display:
                await conn.execute("UPDATE app_user SET display_name = %s WHERE id = %s AND display_name <> %s",
                                   (display, user_id, display))
            added = await (await conn.execute(
                "INSERT INTO iam_group_member (group_id, user_id, source) "
                "SELECT g.id, %s, 'oidc' FROM iam_group g LEFT JOIN organization go ON go.id = g.org_id "
                "WHERE g.id = ANY(%s) AND (g.org_id IS NULL OR go.path = %s OR go.path LIKE %s) "
                "ON CONFLICT (group_id, user_id) DO NOTHING RETURNING group_id",
                (user_id, list(desired), idp.org_path, idp.org_path + "/%"))).fetchall()
            removed = await (await conn.execute(
                "DELETE FROM iam_group_member WHERE user_id = %s AND source = 'oidc' AND NOT (group_id = ANY(%s)) "
                "RETURNING group_id", (user_id, list(desired)))).fetchall()
            done = await (await conn.execute(
                "UPDATE app_user SET last_login_at = now(), failed_login_count = 0 WHERE id = %s "
                "RETURNING last_login_at", (user_id,))).fetchone()
        assert done is not None
        logger.info("federated sign-in", extra={**log, "user_id": str(user_id), "jit_created": created,
                                                "groups_added": [str(r[0]) for r in added],
                                                "groups_removed": [str(r[0]) for r in removed]})
        return SignedInUser(id=user_id, org_id=row[2], org_path=row[3], email=row[4], amr=("fed",),
                            auth_time=done[0])


def _random() -> str:
    return secrets.token_urlsafe(32)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode())


def _form_encode(text: str) -> str:
    return quote_plus(text)


def _json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code != 200 or len(resp.content) > MAX_RESPONSE_BYTES:
        raise FederationError(502, f"identity provider {what} answered {resp.status_code}")
    try:
        value = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise FederationError(502, f"identity provider {what} is not JSON") from None
    if not isinstance(value, dict):
        raise FederationError(502, f"identity provider {what} is not a JSON object")
    return value
