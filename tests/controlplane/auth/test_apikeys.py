"""Admin API keys through the authenticator, over HTTP."""

from __future__ import annotations

import datetime as dt

import httpx
import psycopg
import trio

from nexus.controlplane.auth.apikeys import create_api_key, revoke_api_key
from nexus.crypto import secretfiles
from nexus.storage.pg import connect

from .conftest import Org, Server, make_user, probe


async def test_api_key_lifecycle(server: Server, org: Org) -> None:
    creator, _ = make_user(server.db_url, org)
    secret = secretfiles.key_hmac_secret(server.secrets)
    async with await connect(server.db_url) as conn:
        key, row = await create_api_key(conn, secret=secret, org_id=org.id, name="ci deploys",
                                        description="pipelines", created_by=creator)
        expired_key, _ = await create_api_key(conn, secret=secret, org_id=org.id, name="old",
                                              expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert key.startswith("nxa_") and row.key_prefix == key[:12] and row.name == "ci deploys"
    with psycopg.connect(server.db_url) as check:
        stored = check.execute("SELECT key_hash, key_prefix FROM admin_api_key WHERE id = %s", (row.id,)).fetchone()
    assert stored is not None and key.encode() not in bytes(stored[0]) and stored[1] == row.key_prefix

    async with httpx.AsyncClient() as http:
        ok = await probe(http, server, key)
        assert ok.status_code == 200, ok.text
        assert ok.json() | {"id": ""} == {"kind": "api_key", "id": "", "org_id": str(org.id), "org_path": org.path,
                                           "label": "ci deploys", "tags": {}, "mfa": False, "session_id": None}
        assert ok.json()["id"] == str(row.id)
        with psycopg.connect(server.db_url) as check:
            used = check.execute("SELECT last_used_at IS NOT NULL, host(last_used_ip) FROM admin_api_key "
                                 "WHERE id = %s", (row.id,)).fetchone()
        assert used == (True, "127.0.0.1")
        # Within the touch interval, a second call does not write again.
        with psycopg.connect(server.db_url) as check:
            check.execute("UPDATE admin_api_key SET last_used_at = '2000-01-01' WHERE id = %s", (row.id,))
        assert (await probe(http, server, key)).status_code == 200
        with psycopg.connect(server.db_url) as check:
            again = check.execute("SELECT last_used_at FROM admin_api_key WHERE id = %s", (row.id,)).fetchone()
        assert again is not None and again[0].year == 2000

        assert (await probe(http, server, expired_key)).json()["error"]["code"] == "api_key_expired"
        wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert (await probe(http, server, wrong)).json()["error"]["code"] == "invalid_api_key"
        assert (await probe(http, server, "nxa_short")).json()["error"]["code"] == "invalid_api_key"

        async with await connect(server.db_url) as conn:
            revoked = await revoke_api_key(conn, row.id)
        assert revoked is not None and revoked.revoked_at is not None
        refused = await probe(http, server, key)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
        assert key not in refused.text


async def test_missing_and_malformed_headers(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        none = await http.get(server.url + "/probe")
        basic = await http.get(server.url + "/probe", headers={"authorization": "Basic dXNlcjpwYXNz"})
        empty = await http.get(server.url + "/probe", headers={"authorization": "Bearer"})
        garbage = await probe(http, server, "not-a-jwt")
    assert none.status_code == 401 and none.json()["error"]["code"] == "missing_credentials"
    assert basic.json()["error"]["code"] == "invalid_token"
    assert empty.status_code == 401
    assert garbage.json()["error"]["code"] == "invalid_token"
    await trio.lowlevel.checkpoint()
