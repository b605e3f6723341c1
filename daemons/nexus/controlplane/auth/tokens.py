"""Our access tokens: EdDSA-signed JWTs (RFC 9068 profile) issued and verified with PyJWT.

Verification trusts nothing in the token before the signature checks out: the
algorithm is pinned to EdDSA (so ``none``, HS256 keyed with our public key, or
RS256 are refused before any key is chosen), the ``typ`` must be ``at+jwt`` (an
ID token or another JWT of ours is not an access token), the ``kid`` must name a
key of our ring, and ``iss``, ``aud``, ``exp``, ``nbf``, ``iat`` are checked
with a small leeway.  Pure apart from the key ring's file reads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
import jwt

from nexus.controlplane.auth.keys import KeyRing

__all__ = ["AccessClaims", "IssuedToken", "TokenError", "issue_access_token", "verify_access_token"]

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - the RFC 9068 media type, not a secret
MAX_TOKEN_BYTES = 8192
_REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


class TokenError(Exception):
    """The token is not one we accept; ``code`` is ``token_expired`` or ``invalid_token``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class IssuedToken:
    token: str = attrs.field(repr=False)
    jti: str
    expires_at: int
    expires_in: int


@attrs.frozen
class AccessClaims:
    subject: uuid.UUID
    org_id: uuid.UUID
    org_path: str
    kind: str
    session_id: str
    amr: tuple[str, ...]
    scope: tuple[str, ...]
    client_id: str
    jti: str
    issued_at: int
    expires_at: int

    @property
    def mfa(self) -> bool:
        return "otp" in self.amr or "mfa" in self.amr


def issue_access_token(
    ring: KeyRing,
    *,
    issuer: str,
    audience: str,
    subject: uuid.UUID,
    org_id: uuid.UUID,
    org_path: str,
    session_id: str,
    amr: Sequence[str],
    scope: Sequence[str],
    client_id: str,
    kind: str = "user",
    ttl: int = 3600,
    now: float | None = None,
) -> IssuedToken:
    """Sign an access token with the ring's active key (also the way tests mint tokens)."""
    issued = int(time.time() if now is None else now)
    jti = uuid.uuid4().hex
    key = ring.active
    claims: dict[str, Any] = {
        "iss": issuer, "sub": str(subject), "aud": audience, "exp": issued + ttl, "iat": issued, "nbf": issued,
        "jti": jti, "client_id": client_id, "org": str(org_id), "org_path": org_path, "kind": kind,
        "sid": session_id, "amr": list(amr), "scope": " ".join(scope),
    }
    token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TOKEN_TYPE})
    return IssuedToken(token=token, jti=jti, expires_at=issued + ttl, expires_in=ttl)


def _invalid(message: str) -> TokenError:
    return TokenError("invalid_token", message)


def verify_access_token(ring: KeyRing, token: str, *, issuer: str, audience: str, leeway: int = 30) -> AccessClaims:
    """The token's claims if it is a valid access token of ours; ``TokenError`` otherwise."""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise _invalid("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid("malformed token header") from None
    if header.get("alg") != ALGORITHM:
        raise _invalid("token algorithm not accepted")
    if header.get("typ") != TOKEN_TYPE:
        raise _invalid("not an access token")
    kid = header.get("kid")
    public = ring.public_key(kid) if isinstance(kid, str) else None
    if public is None:
        raise _invalid("token signed by an unknown key")
    try:
        claims = jwt.decode(token, public, algorithms=[ALGORITHM], audience=audience, issuer=issuer, leeway=leeway,
                            options={"require": _REQUIRED})
    except jwt.ExpiredSignatureError:
        raise TokenError("token_expired", "token expired") from None
    except jwt.InvalidAudienceError:
        raise _invalid("token not meant for this service") from None
    except jwt.InvalidIssuerError:
        raise _invalid("token from another issuer") from None
    except jwt.ImmatureSignatureError:
        raise _invalid("token not valid yet") from None
    except jwt.InvalidSignatureError:
        raise _invalid("token signature does not verify") from None
    except jwt.PyJWTError:
        raise _invalid("token claims invalid") from None
    try:
        amr = claims.get("amr", [])
        scope = claims.get("scope", "")
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr) or not isinstance(scope, str):
            raise ValueError
        return AccessClaims(
            subject=uuid.UUID(claims["sub"]), org_id=uuid.UUID(claims["org"]), org_path=str(claims["org_path"]),
            kind=str(claims["kind"]), session_id=str(claims["sid"]), amr=tuple(amr), scope=tuple(scope.split()),
            client_id=str(claims.get("client_id", "")), jti=str(claims["jti"]), issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        raise _invalid("token claims invalid") from None
