"""The authorization code + PKCE flow end to end over HTTP, refresh rotation and revocation."""

from __future__ import annotations

import httpx

from nexus.controlplane.auth import oauth

from .conftest import (
    CLI,
    LOOPBACK,
    PASSWORD,
    Org,
    Server,
    make_client,
    make_user,
    new_verifier,
    open_login,
    probe,
    query_of,
    redeem,
    refresh,
    request_id_of,
    sign_in_code,
    submit,
)


async def test_discovery_and_jwks(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        meta = (await http.get(server.url + "/.well-known/openid-configuration")).json()
        jwks = (await http.get(meta["jwks_uri"])).json()
    assert meta["issuer"] == server.url
    assert meta["authorization_endpoint"] == server.url + "/oauth/authorize"
    assert meta["token_endpoint"] == server.url + "/oauth/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "password" not in meta["grant_types_supported"]
    assert meta["id_token_signing_alg_values_supported"] == ["EdDSA"]
    kid = server.service.ring.active.kid
    assert [k["kid"] for k in jwks["keys"]] == [kid]
    assert jwks["keys"][0]["kty"] == "OKP" and jwks["keys"][0]["alg"] == "EdDSA"
    assert "d" not in jwks["keys"][0]


async def test_full_code_flow_with_pkce(server: Server, org: Org) -> None:
    user_id, email = make_user(server.db_url, org, attributes={"team": "sre", "level": 3})
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email, state="opaque-state-42")
        resp = await redeem(http, server, code, verifier)
        assert resp.status_code == 200, resp.text
        assert resp.headers["cache-control"] == "no-store"
        tokens = resp.json()
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
        assert tokens["refresh_token"].startswith("nxr_")
        who = await probe(http, server, tokens["access_token"])
    assert who.status_code == 200, who.text
    principal = who.json()
    assert principal["kind"] == "user" and principal["id"] == str(user_id)
    assert principal["org_id"] == str(org.id) and principal["org_path"] == org.path
    assert principal["label"] == email and principal["tags"] == {"team": "sre"}
    assert principal["mfa"] is False and principal["session_id"]
    claims = server.service.authenticator.verify(tokens["access_token"])
    assert claims.amr == ("pwd",) and claims.client_id == CLI and claims.org_path == org.path


async def test_loopback_redirect_accepts_any_port_but_nothing_else(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email, redirect_uri="http://127.0.0.1:1234/callback")
        assert (await redeem(http, server, code, verifier, redirect_uri="http://127.0.0.1:1234/callback")
                ).status_code == 200
        for bad in ("http://127.0.0.1:1234/other", "http://localhost:1234/callback",
                    "https://127.0.0.1:1234/callback", "http://evil.example/callback"):
            page = await open_login(http, server, redirect_uri=bad)
            assert page.status_code == 400, bad
            assert "location" not in page.headers


async def test_pkce_is_required_and_s256_only(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        base = {"response_type": "code", "client_id": CLI, "redirect_uri": LOOPBACK, "state": "s1"}
        missing = await http.get(server.url + "/oauth/authorize", params=base)
        plain = await http.get(server.url + "/oauth/authorize",
                               params={**base, "code_challenge": "a" * 43, "code_challenge_method": "plain"})
        no_method = await http.get(server.url + "/oauth/authorize", params={**base, "code_challenge": "a" * 43})
    for resp in (missing, plain, no_method):
        assert resp.status_code == 302
        params = query_of(resp.headers["location"])
        assert resp.headers["location"].startswith(LOOPBACK)
        assert params["error"] == "invalid_request" and params["state"] == "s1" and "code" not in params
    assert "PKCE" in query_of(missing.headers["location"])["error_description"]
    assert "S256" in query_of(plain.headers["location"])["error_description"]


async def test_wrong_verifier_and_code_reuse_are_rejected(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email)
        wrong = await redeem(http, server, code, new_verifier())
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        # The code burned on the failed attempt: it is single-use whatever happened.
        again = await redeem(http, server, code, verifier)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

        code, verifier = await sign_in_code(http, server, email)
        first = await redeem(http, server, code, verifier)
        assert first.status_code == 200
        replay = await redeem(http, server, code, verifier)
        assert replay.status_code == 400
        assert replay.json() == {"error": "invalid_grant", "error_description": "authorization code already used"}
        # A replayed code revokes what its first redemption issued (OAuth 2.1 §4.1.3).
        assert (await refresh(http, server, first.json()["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await probe(http, server, first.json()["access_token"])).json()["error"]["code"] == "session_revoked"


async def test_code_is_bound_to_client_and_redirect_uri(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    other = make_client(server.db_url, redirect_uris=["https://app.example/cb"])
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email)
        stolen = await redeem(http, server, code, verifier, client_id=other)
        assert stolen.json()["error"] == "invalid_grant"
        code, verifier = await sign_in_code(http, server, email)
        moved = await redeem(http, server, code, verifier, redirect_uri="http://127.0.0.1:9/callback")
        assert moved.json()["error"] == "invalid_grant"


async def test_redirect_uri_mismatch_shows_an_error_and_never_redirects(server: Server) -> None:
    client_id = make_client(server.db_url, redirect_uris=["https://app.example/cb"])
    async with httpx.AsyncClient() as http:
        for uri in ("https://app.example/cb/../evil", "https://app.example/cb?x=1", "https://evil.example/cb"):
            resp = await open_login(http, server, client_id=client_id, redirect_uri=uri)
            assert resp.status_code == 400 and "location" not in resp.headers
            assert "evil" not in resp.text
        unknown = await open_login(http, server, client_id="no-such-client", redirect_uri="https://app.example/cb")
        assert unknown.status_code == 400 and "location" not in unknown.headers
        exact = await open_login(http, server, client_id=client_id, redirect_uri="https://app.example/cb")
        assert exact.status_code == 200
        assert exact.headers["x-frame-options"] == "DENY"


async def test_state_is_echoed_and_errors_redirect_with_it(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, _ = await sign_in_code(http, server, email, state="a b&c=d/é")
        assert code
        bad_scope = await open_login(http, server, scope="openid nuclear-launch", state="keep-me")
    params = query_of(bad_scope.headers["location"])
    assert params == {"error": "invalid_scope", "error_description": params["error_description"],
                      "state": "keep-me", "iss": server.url}


async def test_the_form_is_bound_to_the_browser(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as victim, httpx.AsyncClient() as attacker:
        page = await open_login(victim, server)
        request_id = request_id_of(page.text)
        # Another browser (no cookie) cannot use this form.
        resp = await submit(attacker, server, request_id, email, PASSWORD)
        assert resp.status_code == 400 and "location" not in resp.headers
        ok = await submit(victim, server, request_id, email, PASSWORD)
        assert ok.status_code == 302
        # One successful sign-in per form.
        assert (await submit(victim, server, request_id, email, PASSWORD)).status_code == 400


async def test_refresh_rotation_and_reuse_revokes_the_family(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email)
        first = (await redeem(http, server, code, verifier)).json()
        second = await refresh(http, server, first["refresh_token"])
        assert second.status_code == 200, second.text
        second_tokens = second.json()
        assert second_tokens["refresh_token"] != first["refresh_token"]
        assert (await probe(http, server, second_tokens["access_token"])).status_code == 200
        sid = server.service.authenticator.verify(second_tokens["access_token"]).session_id
        assert sid == server.service.authenticator.verify(first["access_token"]).session_id
        third = (await refresh(http, server, second_tokens["refresh_token"])).json()

        reused = await refresh(http, server, first["refresh_token"])
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        # The newest token of the family is dead too, and so is the session's access token.
        newest = await refresh(http, server, third["refresh_token"])
        assert newest.status_code == 400 and newest.json()["error"] == "invalid_grant"
        server.service.authenticator.forget_session(sid)
        assert (await probe(http, server, third["access_token"])).json()["error"]["code"] == "session_revoked"
    with server.db() as conn:
        reasons = conn.execute("SELECT DISTINCT revoked_reason FROM refresh_token WHERE family_id = %s",
                               (sid,)).fetchall()
    assert reasons == [("reuse_detected",)]


async def test_token_endpoint_errors_follow_rfc6749(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    secret_client = make_client(server.db_url, redirect_uris=["https://app.example/cb"], kind="confidential",
                                secret="s3cret-s3cret")
    async with httpx.AsyncClient() as http:
        url = server.url + "/oauth/token"
        password_grant = await http.post(url, data={"grant_type": "password", "username": email,
                                                    "password": PASSWORD, "client_id": CLI})
        assert password_grant.status_code == 400
        assert password_grant.json()["error"] == "unsupported_grant_type"
        assert set(password_grant.json()) == {"error", "error_description"}
        assert (await http.post(url, data={"client_id": CLI})).json()["error"] == "invalid_request"
        no_client = await http.post(url, data={"grant_type": "refresh_token", "refresh_token": "x"})
        assert no_client.status_code == 401 and no_client.json()["error"] == "invalid_client"
        bad_secret = await http.post(url, data={"grant_type": "refresh_token", "refresh_token": "x"},
                                     auth=(secret_client, "wrong"))
        assert bad_secret.status_code == 401 and bad_secret.headers["www-authenticate"].startswith("Basic")
        good_secret = await http.post(url, data={"grant_type": "refresh_token", "refresh_token": "nxr_nope"},
                                      auth=(secret_client, "s3cret-s3cret"))
        assert good_secret.status_code == 400 and good_secret.json()["error"] == "invalid_grant"
        json_body = await http.post(url, json={"grant_type": "refresh_token"})
        assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"
        missing_verifier = await http.post(url, data={"grant_type": "authorization_code", "code": "x",
                                                      "client_id": CLI})
        assert missing_verifier.json()["error"] == "invalid_request"


async def test_revocation_ends_the_session(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email)
        tokens = (await redeem(http, server, code, verifier)).json()
        unknown = await http.post(server.url + "/oauth/revoke", data={"token": "nxr_unknown", "client_id": CLI})
        assert unknown.status_code == 200
        resp = await http.post(server.url + "/oauth/revoke",
                               data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token",
                                     "client_id": CLI})
        assert resp.status_code == 200
        assert (await refresh(http, server, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await probe(http, server, tokens["access_token"])).json()["error"]["code"] == "session_revoked"

        code, verifier = await sign_in_code(http, server, email)
        tokens = (await redeem(http, server, code, verifier)).json()
        by_access = await http.post(server.url + "/oauth/revoke",
                                    data={"token": tokens["access_token"], "client_id": CLI})
        assert by_access.status_code == 200
        assert (await refresh(http, server, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_disabled_user_cannot_refresh(server: Server, org: Org) -> None:
    user_id, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email)
        tokens = (await redeem(http, server, code, verifier)).json()
        with server.db() as conn:
            conn.execute("UPDATE app_user SET status = 'disabled' WHERE id = %s", (user_id,))
        assert (await refresh(http, server, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        server.service.authenticator.forget_session(server.service.authenticator.verify(
            tokens["access_token"]).session_id)
        assert (await probe(http, server, tokens["access_token"])).json()["error"]["code"] == "user_inactive"


async def test_json_login_and_logout_for_the_console(server: Server, org: Org) -> None:
    _, email = make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        bad = await http.post(server.url + "/api/auth/login", json={"email": email, "password": "nope"})
        assert bad.status_code == 401
        assert bad.json()["error"]["code"] == "invalid_credentials"
        not_json = await http.post(server.url + "/api/auth/login", data={"email": email, "password": PASSWORD})
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_request"
        resp = await http.post(server.url + "/api/auth/login", json={"email": email.upper(), "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        tokens = resp.json()
        claims = server.service.authenticator.verify(tokens["access_token"])
        assert claims.client_id == "nexus-console"
        assert (await probe(http, server, tokens["access_token"])).status_code == 200
        out = await http.post(server.url + "/api/auth/logout",
                              headers={"authorization": f"Bearer {tokens['access_token']}"})
        assert out.status_code == 204
        # Logged out through this process: effective at once, no cache window.
        assert (await probe(http, server, tokens["access_token"])).json()["error"]["code"] == "session_revoked"
        assert (await refresh(http, server, tokens["refresh_token"], "nexus-console")).json()["error"] == \
            "invalid_grant"
        unauth = await http.post(server.url + "/api/auth/logout")
        assert unauth.status_code == 401


async def test_verifier_format_is_enforced() -> None:
    verifier = new_verifier()
    assert oauth.verify_pkce(verifier, oauth.s256(verifier))
    short = "a" * 42
    assert not oauth.verify_pkce(short, oauth.s256(short))
