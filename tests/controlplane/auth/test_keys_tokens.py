"""Signing key files, rotation, JWKS, and what access-token verification refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nexus.controlplane.auth import keys
from nexus.controlplane.auth.tokens import TokenError, issue_access_token, verify_access_token
from nexus.crypto.secretfiles import SecretsError

ISS, AUD = "https://nexus.example", "nexus-control-plane"


def _issue(ring: keys.KeyRing, **overrides: object) -> str:
    args: dict[str, object] = {
        "issuer": ISS, "audience": AUD, "subject": uuid.uuid4(), "org_id": uuid.uuid4(), "org_path": "acme",
        "session_id": str(uuid.uuid4()), "amr": ["pwd"], "scope": ["admin"], "client_id": "nexus-cli"}
    args.update(overrides)
    return issue_access_token(ring, **args).token  # type: ignore[arg-type]


def _verify(ring: keys.KeyRing, token: str, **kw: str) -> None:
    verify_access_token(ring, token, issuer=kw.get("issuer", ISS), audience=kw.get("audience", AUD))


def test_first_start_creates_a_private_key_file(tmp_path: Path) -> None:
    ring = keys.load(tmp_path / "secrets")
    kid = ring.active.kid
    key_file = tmp_path / "secrets" / f"jwt-signing-{kid}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "secrets" / "jwt-signing-active").read_text().strip() == kid
    assert key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert keys.load(tmp_path / "secrets").active.kid == kid  # a second start keeps it
    assert repr(ring.active) == f"SigningKey(kid={kid!r})"


def test_missing_key_ring_without_create_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="jwt-signing-active"):
        keys.load(tmp_path, create=False)
    keys.ensure(tmp_path)
    (tmp_path / "jwt-signing-active").write_text("20990101T000000Z-abcdef\n")
    with pytest.raises(SecretsError, match="missing"):
        keys.load(tmp_path)


def test_systemd_credentials_are_read(tmp_path: Path) -> None:
    source, creds = tmp_path / "src", tmp_path / "creds"
    kid = keys.ensure(source)
    creds.mkdir()
    for path in source.iterdir():
        (creds / ("nexus_" + path.name)).write_bytes(path.read_bytes())
    ring = keys.load(creds, create=False)
    assert ring.active.kid == kid
    assert [k["kid"] for k in ring.jwks()["keys"]] == [kid]


def test_rotation_keeps_old_tokens_verifiable_until_retired(tmp_path: Path) -> None:
    ring = keys.load(tmp_path, reload_interval=0)
    old_kid = ring.active.kid
    old_token = _issue(ring)
    time.sleep(1.1)  # kids carry the creation second
    new_kid = keys.rotate(tmp_path)
    assert ring.active.kid == new_kid  # the running ring noticed
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid, old_kid]
    _verify(ring, old_token)
    assert jwt.get_unverified_header(_issue(ring))["kid"] == new_kid

    assert keys.retire_expired(tmp_path, max_token_age=3600) == []
    assert keys.retire_expired(tmp_path, max_token_age=3600, now=time.time() + 3700) == [old_kid]
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid]
    with pytest.raises(TokenError, match="unknown key"):
        _verify(ring, old_token)


def test_round_trip_claims(tmp_path: Path) -> None:
    ring = keys.load(tmp_path)
    user, org, sid = uuid.uuid4(), uuid.uuid4(), str(uuid.uuid4())
    token = _issue(ring, subject=user, org_id=org, session_id=sid, amr=["pwd", "otp"], scope=["admin", "my"])
    claims = verify_access_token(ring, token, issuer=ISS, audience=AUD)
    assert (claims.subject, claims.org_id, claims.session_id) == (user, org, sid)
    assert claims.amr == ("pwd", "otp") and claims.mfa and claims.scope == ("admin", "my")
    assert claims.expires_at - claims.issued_at == 3600
    raw = jwt.decode(token, options={"verify_signature": False})
    assert set(raw) >= {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "org", "org_path", "kind", "sid", "amr",
                        "scope"}


def test_rejects_expired_foreign_none_hs_rs_and_wrong_audience(tmp_path: Path) -> None:
    ring = keys.load(tmp_path / "ours")
    other = keys.load(tmp_path / "theirs")
    good = _issue(ring)
    header, payload, _sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = ring.active.kid

    with pytest.raises(TokenError) as expired:
        _verify(ring, _issue(ring, now=time.time() - 7200))
    assert expired.value.code == "token_expired"

    # Same kid, another key: the signature does not verify.
    forged = jwt.encode(claims, other.active.private_key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})
    with pytest.raises(TokenError, match="signature"):
        _verify(ring, forged)
    with pytest.raises(TokenError, match="unknown key"):
        _verify(ring, _issue(other))

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    none_alg = f"{b64({'alg': 'none', 'kid': kid, 'typ': 'at+jwt'})}.{payload}."
    with pytest.raises(TokenError, match="algorithm"):
        _verify(ring, none_alg)

    public_pem = ring.active.public_key.public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    # The classic confusion attack, crafted by hand (PyJWT itself refuses to sign it).
    signing_input = f"{b64({'alg': 'HS256', 'kid': kid, 'typ': 'at+jwt'})}.{payload}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs = signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    with pytest.raises(TokenError, match="algorithm"):
        _verify(ring, hs)

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
    with pytest.raises(TokenError, match="algorithm"):
        _verify(ring, rs)

    with pytest.raises(TokenError, match="not meant"):
        _verify(ring, _issue(ring, audience="some-other-api"))
    with pytest.raises(TokenError, match="issuer"):
        _verify(ring, good, issuer="https://evil.example")

    not_access = jwt.encode(claims, ring.active.private_key, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})
    with pytest.raises(TokenError, match="not an access token"):
        _verify(ring, not_access)

    future = jwt.encode({**claims, "nbf": int(time.time()) + 600}, ring.active.private_key, algorithm="EdDSA",
                        headers={"kid": kid, "typ": "at+jwt"})
    with pytest.raises(TokenError, match="not valid yet"):
        _verify(ring, future)

    tampered = f"{header}.{b64({**claims, 'org_path': 'root'})}.{_sig}"
    with pytest.raises(TokenError, match="signature"):
        _verify(ring, tampered)
    for junk in ("", "a.b", "a.b.c", "x" * 9000):
        with pytest.raises(TokenError):
            _verify(ring, junk)


def test_key_file_is_not_world_readable_after_rotation(tmp_path: Path) -> None:
    keys.ensure(tmp_path)
    kid = keys.rotate(tmp_path)
    for name in (f"jwt-signing-{kid}.key", "jwt-signing-active"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
