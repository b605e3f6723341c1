"""Passwords, TOTP codes and secrets, authorization codes, verifiers and tokens never reach a log line,
and credentials are never echoed in a response."""

from __future__ import annotations

import logging

import httpx
import pytest

from nexus.controlplane.auth import totp
from nexus.runtime.logs import JsonFormatter

from .conftest import Org, Server, make_user, open_login, redeem, refresh, request_id_of, sign_in_code, submit


async def test_login_flow_logs_and_responses_carry_no_secrets(server: Server, org: Org,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Pa55word-only-the-user-knows"
    wrong = "Wr0ng-guess-that-must-not-leak"
    new_password = "N3w-passphrase-also-secret"
    secret = totp.generate_secret()
    _, email = make_user(server.db_url, org, password=password, totp_secret=secret, secrets=server.secrets)
    seen: list[str] = []
    bodies: list[str] = []
    async with httpx.AsyncClient() as http:
        page = await open_login(http, server)
        failed = await submit(http, server, request_id_of(page.text), email, wrong, totp="123456")
        bodies.append(failed.text)
        otp = totp.code_at(secret, totp.current_step())
        code, verifier = await sign_in_code(http, server, email, password, totp=otp)
        tokens = (await redeem(http, server, code, verifier)).json()
        rotated = (await refresh(http, server, tokens["refresh_token"])).json()
        reuse = await refresh(http, server, tokens["refresh_token"])
        bodies.append(reuse.text)
        next_otp = totp.code_at(secret, totp.current_step() + 1)
        api = await http.post(server.url + "/api/auth/password",
                              json={"email": email, "password": password, "new_password": new_password,
                                    "totp": next_otp})
        assert api.status_code == 200, api.text
        bad = await http.post(server.url + "/api/auth/login", json={"email": email, "password": wrong})
        bodies.append(bad.text)
        seen += [code, verifier, tokens["access_token"], tokens["refresh_token"], rotated["access_token"],
                 rotated["refresh_token"], api.json()["access_token"], api.json()["refresh_token"], otp, next_otp]

    formatter = JsonFormatter("control-plane")
    # httpx/httpcore records are this test's own client tracing the redirects it receives (the server makes
    # no outbound call in this flow); everything else (nexus, hypercorn, starlette) is the server's.
    lines = [formatter.format(record) for record in caplog.records
             if not record.name.startswith(("httpx", "httpcore"))]
    assert any("signed in" in line for line in lines)  # the flow did log
    assert any("refresh token reused" in line for line in lines)
    for needle in [password, wrong, new_password, secret, *seen]:
        for line in lines:
            assert needle not in line, (needle[:6], line)
    for body in bodies:
        for needle in (password, wrong, new_password, secret):
            assert needle not in body
