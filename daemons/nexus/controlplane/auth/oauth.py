"""OAuth 2.1 authorization-server rules, without I/O: clients, redirect URIs, PKCE, authorize requests.

Everything here is a function of its arguments: the shells (``routes.py``,
``service.py``) load rows, call these, and store or send what comes back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import uuid
from collections.abc import Sequence
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

__all__ = [
    "AuthorizeError",
    "AuthorizeRequest",
    "Client",
    "check_redirect_uri",
    "hash_client_secret",
    "redirect_uri_allowed",
    "s256",
    "validate_authorize",
    "verify_client_secret",
    "verify_pkce",
    "with_query",
]

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# RFC 7636 §4.1: 43-128 characters from the unreserved set.
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
MAX_STATE = 1024


@attrs.frozen
class Client:
    """A row of ``oauth_client``."""

    pk: uuid.UUID
    client_id: str
    name: str
    kind: Literal["public", "confidential"]
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    first_party: bool
    enabled: bool
    secret_hash: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class AuthorizeRequest:
    """A validated ``/oauth/authorize`` request, kept server-side while the user signs in."""

    client_id: str
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]
    code_challenge: str
    login_hint: str = ""


class AuthorizeError(Exception):
    """A refused authorize request.  ``redirect`` is False when the client or redirect URI cannot be
    trusted: then the user sees an error page and nothing is sent to the URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str, *, redirect: bool) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect = redirect


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def verify_pkce(verifier: str, challenge: str) -> bool:
    """RFC 7636 S256 check, constant-time in the comparison."""
    if not _VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


def hash_client_secret(secret: str) -> bytes:
    """What ``oauth_client.secret_hash`` holds for a confidential client (secrets are random, so SHA-256)."""
    return hashlib.sha256(secret.encode()).digest()


def verify_client_secret(client: Client, secret: str) -> bool:
    if client.secret_hash is None:
        return False
    return hmac.compare_digest(hash_client_secret(secret), client.secret_hash)


def _is_loopback_literal(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: str) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "not a valid URI"
    if parts.fragment or "#" in uri:
        return "must not contain a fragment"
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            return "needs a host"
        return None
    # Private-use schemes of native apps (RFC 8252 §7.1) are reverse domain names.
    if re.match(r"^[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+$", parts.scheme) and parts.path:
        return None
    return "must be an http(s) URL or a private-use scheme (com.example.app:/callback)"


def redirect_uri_allowed(registered: Sequence[str], uri: str) -> bool:
    """Exact string match, except that a registered http loopback IP URI matches any port (RFC 8252 §7.3)."""
    if uri in registered:
        return True
    try:
        asked = urlsplit(uri)
        asked_port = asked.port
    except ValueError:
        return False
    if asked.scheme != "http" or not _is_loopback_literal(asked.hostname) or asked_port is None:
        return False
    for candidate in registered:
        reg = urlsplit(candidate)
        if (reg.scheme == "http" and _is_loopback_literal(reg.hostname) and reg.hostname == asked.hostname
                and reg.path == asked.path and reg.query == asked.query and not asked.fragment
                and asked.username is None and asked.password is None):
            return True
    return False


def with_query(uri: str, params: Sequence[tuple[str, str]]) -> str:
    """``uri`` with ``params`` added to its query (keeping the query it already has)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def parse_scopes(raw: str | None, client: Client) -> tuple[str, ...]:
    """The requested scopes, each allowed for the client; none asked means all the client has."""
    if raw is None or not raw.strip():
        return client.scopes
    asked = tuple(dict.fromkeys(raw.split()))
    for item in asked:
        if not _SCOPE_TOKEN.match(item):
            raise AuthorizeError("invalid_scope", "malformed scope", redirect=True)
        if client.scopes and item not in client.scopes:
            raise AuthorizeError("invalid_scope", f"scope {item!r} is not allowed for this client", redirect=True)
    return asked


def validate_authorize(params: Sequence[tuple[str, str]], client: Client | None) -> AuthorizeRequest:
    """Check an authorize request (query or form items, in order) against its client's row.

    Raises ``AuthorizeError``; its ``redirect`` flag says whether the error may go back to the
    redirect URI (only once client and URI are known good).
    """
    seen: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in params:
        if key in seen:
            repeated.add(key)
        seen[key] = value
    if "client_id" in repeated or "redirect_uri" in repeated:
        raise AuthorizeError("invalid_request", "client_id and redirect_uri must appear once", redirect=False)
    client_id = seen.get("client_id", "")
    if not client_id:
        raise AuthorizeError("invalid_request", "client_id is required", redirect=False)
    if client is None or not client.enabled or client.client_id != client_id:
        raise AuthorizeError("invalid_client", "unknown or disabled client", redirect=False)
    redirect_uri = seen.get("redirect_uri", "")
    if not redirect_uri:
        raise AuthorizeError("invalid_request", "redirect_uri is required", redirect=False)
    if not redirect_uri_allowed(client.redirect_uris, redirect_uri):
        raise AuthorizeError("invalid_request", "redirect_uri is not registered for this client", redirect=False)
    # From here on errors go back to the client.
    if repeated:
        raise AuthorizeError("invalid_request", f"parameter {sorted(repeated)[0]} repeated", redirect=True)
    state = seen.get("state")
    if state is not None and len(state) > MAX_STATE:
        raise AuthorizeError("invalid_request", "state too long", redirect=True)
    if seen.get("response_type") != "code":
        raise AuthorizeError("unsupported_response_type", "only response_type=code is supported", redirect=True)
    if "authorization_code" not in client.grant_types:
        raise AuthorizeError("unauthorized_client", "client may not use the authorization code grant", redirect=True)
    challenge = seen.get("code_challenge", "")
    if not challenge:
        raise AuthorizeError("invalid_request", "code_challenge is required (PKCE)", redirect=True)
    if seen.get("code_challenge_method") != "S256":
        raise AuthorizeError("invalid_request", "code_challenge_method must be S256", redirect=True)
    if not _CHALLENGE.match(challenge):
        raise AuthorizeError("invalid_request", "code_challenge must be 43 base64url characters", redirect=True)
    scopes = parse_scopes(seen.get("scope"), client)
    hint = seen.get("login_hint", "")[:320]
    return AuthorizeRequest(client_id=client_id, redirect_uri=redirect_uri, state=state, scopes=scopes,
                            code_challenge=challenge, login_hint=hint)
