"""Local sign-in through the login form and the JSON login: lockout, disabled users, TOTP, password change."""

from __future__ import annotations

import httpx

from nexus.controlplane.auth import totp

from .conftest import (
    PASSWORD,
    Org,
    Server,
    error_code_of,
    open_login,
    probe,
    redeem,
    refresh,
    request_id_of,
    sign_in_code,
    submit,
)
from .conftest import make_user as _make_user


async def _form_attempt(http: httpx.AsyncClient, server: Server, email: str, password: str,
                        **extra: str) -> httpx.Response:
    page = await open_login(http, server)
    return await submit(http, server, request_id_of(page.text), email, password, **extra)


async def test_lockout_after_five_failures_then_growing(server: Server, org: Org) -> None:
    user_id, email = _make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        for _ in range(5):
            resp = await _form_attempt(http, server, email, "wrong password!")
            assert resp.status_code == 400 and error_code_of(resp.text) == "invalid_credentials"
            assert "wrong password!" not in resp.text
        locked = await _form_attempt(http, server, email, PASSWORD)
        assert locked.status_code == 429 and error_code_of(locked.text) == "account_locked"
        assert 1 <= int(locked.headers["retry-after"]) <= 60
        api = await http.post(server.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
        assert api.status_code == 429 and api.json()["error"]["code"] == "account_locked"
        with server.db() as conn:
            first = conn.execute("SELECT failed_login_count, locked_until - now() FROM app_user WHERE id = %s",
                                 (user_id,)).fetchone()
            # The lock ran out; one more failure locks again, for twice as long.
            conn.execute("UPDATE app_user SET locked_until = now() - interval '1 second' WHERE id = %s", (user_id,))
        assert first is not None and first[0] == 5
        assert (await _form_attempt(http, server, email, "wrong again")).status_code == 400
        with server.db() as conn:
            second = conn.execute("SELECT failed_login_count, locked_until - now() FROM app_user WHERE id = %s",
                                  (user_id,)).fetchone()
            conn.execute("UPDATE app_user SET locked_until = now() - interval '1 second' WHERE id = %s", (user_id,))
        assert second is not None and second[0] == 6
        assert second[1].total_seconds() > 100 > first[1].total_seconds()
        # A success resets the count.
        code, _ = await sign_in_code(http, server, email)
        assert code
    with server.db() as conn:
        row = conn.execute("SELECT failed_login_count, locked_until, last_login_at IS NOT NULL FROM app_user "
                           "WHERE id = %s", (user_id,)).fetchone()
    assert row == (0, None, True)


async def test_unknown_user_and_wrong_password_look_the_same(server: Server, org: Org) -> None:
    _, email = _make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        unknown = await http.post(server.url + "/api/auth/login",
                                  json={"email": "nobody@example.test", "password": PASSWORD})
        wrong = await http.post(server.url + "/api/auth/login", json={"email": email, "password": "not it"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


async def test_disabled_user_is_refused_only_with_the_right_password(server: Server, org: Org) -> None:
    _, email = _make_user(server.db_url, org, status="disabled")
    async with httpx.AsyncClient() as http:
        wrong = await http.post(server.url + "/api/auth/login", json={"email": email, "password": "not it"})
        right = await http.post(server.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
        form = await _form_attempt(http, server, email, PASSWORD)
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    assert right.status_code == 403 and right.json()["error"]["code"] == "account_disabled"
    assert form.status_code == 403 and "location" not in form.headers


async def test_totp_required_when_enabled_and_replay_refused(server: Server, org: Org) -> None:
    secret = totp.generate_secret()
    user_id, email = _make_user(server.db_url, org, totp_secret=secret, secrets=server.secrets)
    async with httpx.AsyncClient() as http:
        page = await open_login(http, server)
        request_id = request_id_of(page.text)
        ask = await submit(http, server, request_id, email, PASSWORD)
        assert ask.status_code == 200 and 'data-code="mfa_required"' in ask.text
        wrong = await submit(http, server, request_id, email, PASSWORD, totp="000000" if totp.code_at(
            secret, totp.current_step()) != "000000" else "111111")
        assert wrong.status_code == 400 and error_code_of(wrong.text) == "invalid_mfa"
        code = totp.code_at(secret, totp.current_step())
        ok = await submit(http, server, request_id, email, PASSWORD, totp=code)
        assert ok.status_code == 302
        replay = await http.post(server.url + "/api/auth/login",
                                 json={"email": email, "password": PASSWORD, "totp": code})
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_mfa"
        assert "already used" in replay.json()["error"]["message"]
        older = totp.code_at(secret, totp.current_step() - 1)
        assert (await http.post(server.url + "/api/auth/login",
                                json={"email": email, "password": PASSWORD, "totp": older})).status_code == 401
        # The next step's code (clock drift of one step) is accepted once.
        ahead = totp.code_at(secret, totp.current_step() + 1)
        api = await http.post(server.url + "/api/auth/login",
                              json={"email": email, "password": PASSWORD, "totp": ahead})
        assert api.status_code == 200, api.text
        who = await probe(http, server, api.json()["access_token"])
        assert who.json()["mfa"] is True
        assert server.service.authenticator.verify(api.json()["access_token"]).amr == ("pwd", "otp")
    with server.db() as conn:
        count = conn.execute("SELECT failed_login_count FROM app_user WHERE id = %s", (user_id,)).fetchone()
    assert count == (0,)


async def test_otp_amr_survives_refresh(server: Server, org: Org) -> None:
    secret = totp.generate_secret()
    _, email = _make_user(server.db_url, org, totp_secret=secret, secrets=server.secrets)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email, totp=totp.code_at(secret, totp.current_step()))
        tokens = (await redeem(http, server, code, verifier)).json()
        again = (await refresh(http, server, tokens["refresh_token"])).json()
    assert server.service.authenticator.verify(again["access_token"]).amr == ("pwd", "otp")


async def test_must_change_password(server: Server, org: Org) -> None:
    user_id, email = _make_user(server.db_url, org, must_change=True)
    new = "a much better passphrase 2"
    async with httpx.AsyncClient() as http:
        held = await http.post(server.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
        assert held.status_code == 403 and held.json()["error"]["code"] == "password_change_required"
        weak = await http.post(server.url + "/api/auth/password",
                               json={"email": email, "password": PASSWORD, "new_password": "short"})
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
        changed = await http.post(server.url + "/api/auth/password",
                                  json={"email": email, "password": PASSWORD, "new_password": new})
        assert changed.status_code == 200, changed.text
        assert (await probe(http, server, changed.json()["access_token"])).status_code == 200
        assert (await http.post(server.url + "/api/auth/login",
                                json={"email": email, "password": PASSWORD})).status_code == 401
        assert (await http.post(server.url + "/api/auth/login",
                                json={"email": email, "password": new})).status_code == 200

    # The form asks for the new password in place, then completes the authorization.
    _, email2 = _make_user(server.db_url, org, must_change=True)
    async with httpx.AsyncClient() as http:
        page = await open_login(http, server)
        request_id = request_id_of(page.text)
        ask = await submit(http, server, request_id, email2, PASSWORD)
        assert ask.status_code == 200 and 'name="new_password"' in ask.text
        mismatch = await submit(http, server, request_id, email2, PASSWORD, new_password=new,
                                new_password_confirm=new + "x")
        assert mismatch.status_code == 400 and error_code_of(mismatch.text) == "password_mismatch"
        done = await submit(http, server, request_id, email2, PASSWORD, new_password=new, new_password_confirm=new)
        assert done.status_code == 302
    with server.db() as conn:
        row = conn.execute("SELECT must_change_password, password_changed_at IS NOT NULL FROM app_user "
                           "WHERE id = %s", (user_id,)).fetchone()
    assert row == (False, True)


async def test_password_change_revokes_other_sessions(server: Server, org: Org) -> None:
    _, email = _make_user(server.db_url, org)
    async with httpx.AsyncClient() as http:
        code, verifier = await sign_in_code(http, server, email)
        old = (await redeem(http, server, code, verifier)).json()
        changed = await http.post(server.url + "/api/auth/password",
                                  json={"email": email, "password": PASSWORD, "new_password": "another fine phrase"})
        assert changed.status_code == 200
        assert (await refresh(http, server, old["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await refresh(http, server, changed.json()["refresh_token"], "nexus-console")).status_code == 200
