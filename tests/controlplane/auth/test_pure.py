"""The pure parts: redirect URI rules, authorize validation, PKCE, TOTP vectors, group mapping."""

from __future__ import annotations

import uuid

import pytest

from nexus.controlplane.auth import oauth, totp
from nexus.controlplane.auth.federation import claim_values, mapped_groups, parse_group_mappings, url_allowed


def _client(**kw: object) -> oauth.Client:
    base: dict[str, object] = {
        "pk": uuid.uuid4(), "client_id": "app", "name": "App", "kind": "public",
        "redirect_uris": ("https://app.example/cb", "http://127.0.0.1/callback", "http://[::1]/callback"),
        "grant_types": ("authorization_code", "refresh_token"), "scopes": ("openid", "admin"),
        "first_party": False, "enabled": True}
    base.update(kw)
    return oauth.Client(**base)  # type: ignore[arg-type]


def test_redirect_uri_matching() -> None:
    reg = _client().redirect_uris
    assert oauth.redirect_uri_allowed(reg, "https://app.example/cb")
    assert oauth.redirect_uri_allowed(reg, "http://127.0.0.1:8123/callback")
    assert oauth.redirect_uri_allowed(reg, "http://[::1]:8123/callback")
    for bad in ("https://app.example/cb/", "https://APP.example/cb", "https://app.example:443/cb",
                "http://127.0.0.1:8123/callback/x", "http://localhost:8123/callback", "http://127.0.0.2:1/callback",
                "http://127.0.0.1:8123/callback?x=1", "http://user@127.0.0.1:8123/callback",
                "https://127.0.0.1:8123/callback", "http://[::1]:8123/other", "http://127.0.0.1:99999/callback"):
        assert not oauth.redirect_uri_allowed(reg, bad), bad
    # A port is needed for the exception; the registered URI itself matches as-is.
    assert oauth.redirect_uri_allowed(reg, "http://127.0.0.1/callback")


def test_check_redirect_uri() -> None:
    assert oauth.check_redirect_uri("https://app.example/cb") is None
    assert oauth.check_redirect_uri("com.example.app:/oauth") is None
    assert oauth.check_redirect_uri("https://app.example/cb#frag") is not None
    assert oauth.check_redirect_uri("javascript:alert(1)") is not None


def _params(**kw: str) -> list[tuple[str, str]]:
    base = {"response_type": "code", "client_id": "app", "redirect_uri": "https://app.example/cb",
            "code_challenge": oauth.s256("v" * 43), "code_challenge_method": "S256", "state": "s"}
    base.update(kw)
    return [(k, v) for k, v in base.items() if v != "<omit>"]


def test_validate_authorize() -> None:
    req = oauth.validate_authorize(_params(scope="openid"), _client())
    assert req.scopes == ("openid",) and req.state == "s"
    assert oauth.validate_authorize(_params(), _client()).scopes == ("openid", "admin")
    cases = {
        "no_redirect": [
            (_params(client_id="<omit>"), None),
            (_params(), None),
            (_params(redirect_uri="https://evil.example/cb"), _client()),
            (_params(redirect_uri="<omit>"), _client()),
            (_params(), _client(enabled=False)),
            ([*_params(), ("redirect_uri", "https://app.example/cb")], _client()),
        ],
        "redirect": [
            (_params(code_challenge="<omit>"), _client()),
            (_params(code_challenge_method="plain"), _client()),
            (_params(code_challenge_method="<omit>"), _client()),
            (_params(code_challenge="short"), _client()),
            (_params(response_type="token"), _client()),
            (_params(scope="openid root"), _client()),
            (_params(state="x" * 2000), _client()),
            ([*_params(), ("state", "again")], _client()),
            (_params(), _client(grant_types=("refresh_token",))),
        ],
    }
    for kind, items in cases.items():
        for params, client in items:
            with pytest.raises(oauth.AuthorizeError) as err:
                oauth.validate_authorize(params, client)
            assert err.value.redirect is (kind == "redirect"), (params, err.value)


def test_with_query_keeps_existing_query() -> None:
    assert oauth.with_query("https://a.example/cb?x=1", [("code", "c d")]) == "https://a.example/cb?x=1&code=c+d"


def test_pkce_rfc7636_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth.s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert oauth.verify_pkce(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not oauth.verify_pkce(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cX")


def test_totp_rfc6238_vectors() -> None:
    import base64

    secret = base64.b32encode(b"12345678901234567890").decode()
    # RFC 6238 Appendix B (SHA-1), last six digits.
    for t, code in ((59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")):
        assert totp.code_at(secret, t // 30) == code
        assert totp.matching_step(secret, code, now=t) == t // 30
        assert totp.matching_step(secret, code, now=t + 30) == t // 30  # one step late: accepted
        assert totp.matching_step(secret, code, now=t + 90) is None
    assert totp.matching_step(secret, "12345", now=59) is None
    assert totp.matching_step(secret, "abcdef", now=59) is None
    assert totp.provisioning_uri(secret, "a@b.example").startswith("otpauth://totp/Nexus:a%40b.example?secret=")


def test_totp_secret_is_bound_to_its_user(tmp_path: object) -> None:
    from nexus.crypto.vault import Vault, VaultError

    vault = Vault({"k1": b"\x01" * 32}, "k1")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sealed = totp.seal_secret(vault, alice, "JBSWY3DPEHPK3PXP")
    assert totp.open_secret(vault, alice, sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(VaultError):
        totp.open_secret(vault, bob, sealed)


def test_group_mapping_from_claims() -> None:
    sre, dev, admin = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    mappings = parse_group_mappings([
        {"claim": "groups", "value": "sre", "group_id": str(sre)},
        {"claim": "realm_access.roles", "value": "dev", "group_id": str(dev)},
        {"claim": "is_admin", "value": "True", "group_id": str(admin)},
        {"claim": "groups"},  # malformed: skipped
        "nonsense",
    ])
    assert len(mappings) == 3
    claims = {"groups": ["sre", "ops"], "realm_access": {"roles": ["dev"]}, "is_admin": False}
    assert mapped_groups(mappings, claims) == {sre, dev}
    assert claim_values({"groups": "sre"}, "groups") == {"sre"}
    assert claim_values({}, "a.b") == set()


def test_idp_urls_must_be_https_unless_allowed_for_loopback() -> None:
    assert url_allowed("https://idp.example", False)
    assert not url_allowed("http://idp.example", False)
    assert not url_allowed("http://127.0.0.1:8080", False)
    assert url_allowed("http://127.0.0.1:8080", True)
    assert url_allowed("http://localhost:8080", True)
    assert not url_allowed("http://idp.example", True)
    assert not url_allowed("ftp://idp.example", True)
