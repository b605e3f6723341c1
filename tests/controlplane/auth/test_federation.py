"""OIDC federation against a real (test) identity provider over HTTPS."""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import httpx
import orjson
import psycopg
import pytest
import trio

from nexus.controlplane.auth.federation import seal_client_secret
from nexus.crypto import secretfiles

from ..oidc_provider import OidcProvider, User
from .conftest import (
    LOOPBACK,
    Org,
    ServeFn,
    Server,
    error_code_of,
    new_verifier,
    open_login,
    query_of,
    redeem,
    request_id_of,
)

CLIENT_ID, CLIENT_SECRET = "nexus-test-rp", "idp-client-secret-value"


@attrs.frozen
class Fed:
    server: Server
    idp: OidcProvider
    idp_id: uuid.UUID
    org: Org
    groups: dict[str, uuid.UUID]

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(self.idp.ca_file)))

    def federated_users(self) -> list[tuple[uuid.UUID, str, str]]:
        with psycopg.connect(self.server.db_url) as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(
                "SELECT id, email, external_subject FROM app_user WHERE identity_provider_id = %s",
                (self.idp_id,)).fetchall()]

    def memberships(self, user_id: uuid.UUID) -> dict[uuid.UUID, str]:
        with psycopg.connect(self.server.db_url) as conn:
            return {r[0]: r[1] for r in conn.execute(
                "SELECT group_id, source FROM iam_group_member WHERE user_id = %s", (user_id,)).fetchall()}


def _group(conn: psycopg.Connection[tuple[object, ...]], org_id: uuid.UUID | None, name: str) -> uuid.UUID:
    row = conn.execute("INSERT INTO iam_group (org_id, name) VALUES (%s, %s) RETURNING id",
                       (org_id, name + "-" + uuid.uuid4().hex[:6])).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


@pytest.fixture
async def fed(serve: ServeFn, org: Org, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Fed]:
    idp = OidcProvider(tmp_path / "idp", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                       user=User(subject="ext-" + uuid.uuid4().hex[:8]))
    await nursery.start(idp.run)
    server = await serve(federation_ca_file=str(idp.ca_file))
    idp_id = uuid.uuid4()
    sealed = seal_client_secret(secretfiles.vault(server.secrets), idp_id, CLIENT_SECRET)
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        other = conn.execute("INSERT INTO organization (slug, name) VALUES (%s, 'Other') RETURNING id",
                             ("o" + uuid.uuid4().hex[:10],)).fetchone()
        assert other is not None
        groups = {"sre": _group(conn, org.id, "sre"), "dev": _group(conn, org.id, "dev"),
                  "ops": _group(conn, org.id, "ops"), "foreign": _group(conn, other[0], "foreign")}
        mappings = [{"claim": "groups", "value": name, "group_id": str(gid)} for name, gid in groups.items()]
        conn.execute(
            "INSERT INTO identity_provider (id, org_id, name, kind, issuer, client_id, client_secret_ciphertext, "
            "client_secret_nonce, client_secret_key_id, jit_enabled, group_mappings) "
            "VALUES (%s, %s, %s, 'oidc', %s, %s, %s, %s, %s, true, %s)",
            (idp_id, org.id, "Test IdP " + idp_id.hex[:6], idp.issuer, CLIENT_ID, sealed.ciphertext, sealed.nonce,
             sealed.key_id, orjson.dumps(mappings).decode()))
    yield Fed(server, idp, idp_id, org, groups)
    idp.stop()


async def _round_trip(fed: Fed, http: httpx.AsyncClient, *, other: httpx.AsyncClient | None = None
                      ) -> tuple[httpx.Response, str]:
    """Login page → our start → the IdP → our callback (in ``other`` if given); returns the callback answer."""
    verifier = new_verifier()
    page = await open_login(http, fed.server, verifier=verifier, state="fed-state")
    assert f"/oauth/federated/{fed.idp_id}/start" in page.text
    start = await http.get(fed.server.url + f"/oauth/federated/{fed.idp_id}/start",
                           params={"request_id": request_id_of(page.text)})
    assert start.status_code == 302, start.text
    assert start.headers["location"].startswith(fed.idp.issuer + "/authorize?")
    at_idp = await http.get(start.headers["location"])
    assert at_idp.status_code == 302
    callback = at_idp.headers["location"]
    assert callback.startswith(fed.server.url + "/oauth/federated/callback?")
    return await (other or http).get(callback), verifier


async def test_happy_path_provisions_the_user_and_syncs_groups(fed: Fed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    email = f"Fed.{uuid.uuid4().hex[:6]}@Example.test"
    fed.idp.user.claims.update({"email": email, "email_verified": True, "name": "Fed User",
                                "groups": ["sre", "dev", "foreign", "unmapped"]})
    async with fed.browser() as http:
        done, verifier = await _round_trip(fed, http)
        assert done.status_code == 302, done.text
        params = query_of(done.headers["location"])
        assert done.headers["location"].startswith(LOOPBACK) and params["state"] == "fed-state"
        tokens = await redeem(http, fed.server, params["code"], verifier)
        assert tokens.status_code == 200, tokens.text
        claims = fed.server.service.authenticator.verify(tokens.json()["access_token"])
    assert claims.amr == ("fed",) and claims.org_id == fed.org.id

    [(user_id, stored_email, subject)] = fed.federated_users()
    assert stored_email == email.lower() and subject == fed.idp.user.subject and claims.subject == user_id
    g = fed.groups
    # Only groups of the IdP's org (or system groups) can be granted by its claims.
    assert fed.memberships(user_id) == {g["sre"]: "oidc", g["dev"]: "oidc"}

    # What the IdP saw: PKCE S256 with a nonce, then a code exchange authenticated with the secret.
    authz = fed.idp.authorize_requests[-1]
    assert authz["code_challenge_method"] == "S256" and authz["nonce"] and authz["state"]
    assert authz["redirect_uri"] == fed.server.url + "/oauth/federated/callback"
    exchange = fed.idp.token_requests[-1]
    assert exchange["basic"] is True and len(exchange["form"]["code_verifier"]) >= 43

    # An administrator adds a manual membership; the next sign-in drops "dev", keeps "sre" and the manual one.
    with psycopg.connect(fed.server.db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO iam_group_member (group_id, user_id, source) VALUES (%s, %s, 'manual')",
                     (g["ops"], user_id))
    fed.idp.user.claims["groups"] = ["sre"]
    async with fed.browser() as http:
        again, _ = await _round_trip(fed, http)
        assert again.status_code == 302
    assert fed.memberships(user_id) == {g["sre"]: "oidc", g["ops"]: "manual"}
    assert len(fed.federated_users()) == 1
    assert any(r.name == "nexus.controlplane.auth.federation" for r in caplog.records)
    for record in caplog.records:
        assert CLIENT_SECRET not in record.getMessage() and CLIENT_SECRET not in repr(record.__dict__)


async def _assert_refused(fed: Fed, status: int, text: str) -> None:
    fed.idp.user.claims.update({"email": f"x{uuid.uuid4().hex[:6]}@example.test", "groups": ["sre"]})
    async with fed.browser() as http:
        resp, _ = await _round_trip(fed, http)
    assert resp.status_code == status, resp.text
    assert "location" not in resp.headers
    assert error_code_of(resp.text) == "federation_failed" and text in resp.text
    assert fed.federated_users() == []


async def test_nonce_mismatch_is_rejected(fed: Fed) -> None:
    fed.idp.knobs.wrong_nonce = True
    await _assert_refused(fed, 401, "nonce")


async def test_wrong_audience_is_rejected(fed: Fed) -> None:
    fed.idp.knobs.wrong_audience = True
    await _assert_refused(fed, 401, "another client")


async def test_expired_and_badly_signed_id_tokens_are_rejected(fed: Fed) -> None:
    fed.idp.knobs.expired = True
    await _assert_refused(fed, 401, "expired")
    fed.idp.knobs.expired = False
    fed.idp.knobs.bad_signature = True
    await _assert_refused(fed, 401, "signature")


async def test_idp_refusal_and_jit_disabled(fed: Fed) -> None:
    fed.idp.knobs.deny = True
    await _assert_refused(fed, 401, "did not sign you in")
    fed.idp.knobs.deny = False
    with psycopg.connect(fed.server.db_url, autocommit=True) as conn:
        conn.execute("UPDATE identity_provider SET jit_enabled = false WHERE id = %s", (fed.idp_id,))
    await _assert_refused(fed, 403, "no account")


async def test_state_mismatch_is_rejected(fed: Fed) -> None:
    fed.idp.user.claims.update({"email": f"s{uuid.uuid4().hex[:6]}@example.test"})
    async with fed.browser() as http:
        bogus = await http.get(fed.server.url + "/oauth/federated/callback",
                               params={"state": "made-up-state", "code": "whatever"})
        assert bogus.status_code == 400 and error_code_of(bogus.text) == "federation_failed"
        # A genuine state finished in another browser (login CSRF) is refused too, and burns the state.
        async with fed.browser() as stranger:
            resp, _ = await _round_trip(fed, http, other=stranger)
        assert resp.status_code == 400 and "location" not in resp.headers
    assert fed.federated_users() == []
    assert not fed.idp.token_requests  # nothing was exchanged


async def test_email_of_another_account_is_not_taken_over(fed: Fed) -> None:
    from .conftest import make_user

    _, email = make_user(fed.server.db_url, fed.org)
    fed.idp.user.claims.update({"email": email})
    async with fed.browser() as http:
        resp, _ = await _round_trip(fed, http)
    assert resp.status_code == 409 and "location" not in resp.headers
    assert fed.federated_users() == []
