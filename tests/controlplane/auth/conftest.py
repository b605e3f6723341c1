"""A control-plane-like app built from the sign-in routes, served by hypercorn on a real port.

``serve(**settings)`` starts one per test: a PgPool and a Valkey client on the
session's database, ``auth.build`` with a fresh secrets directory, the routes plus
``/probe`` (what the admin API does with the authenticator: the principal as JSON,
or the AuthError).  Users, orgs and clients are rows the tests insert themselves.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import orjson
import psycopg
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nexus.controlplane import auth
from nexus.controlplane.auth import oauth, totp
from nexus.controlplane.auth.errors import AuthError
from nexus.controlplane.auth.seed import seed_oauth_clients
from nexus.controlplane.auth.service import AuthService
from nexus.crypto import passwords, secretfiles
from nexus.net.resp.client import ValkeyClient
from nexus.runtime.asgi import HypercornServer
from nexus.storage.pgpool import PgPool

CLI = "nexus-cli"
LOOPBACK = "http://127.0.0.1:53682/callback"
PASSWORD = "correct horse battery staple"


@attrs.frozen
class Server:
    url: str
    service: AuthService
    db_url: str
    secrets: Path

    def db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.db_url, autocommit=True)


@attrs.frozen
class Org:
    id: uuid.UUID
    path: str


@pytest.fixture
def org(db_url: str) -> Org:
    slug = "t" + uuid.uuid4().hex[:10]
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO organization (slug, name) VALUES (%s, %s) RETURNING id, path",
                           (slug, "Test org " + slug)).fetchone()
    assert row is not None
    return Org(row[0], row[1])


def make_user(db_url: str, org: Org, *, password: str | None = PASSWORD, status: str = "active",
              must_change: bool = False, attributes: dict[str, Any] | None = None,
              totp_secret: str | None = None, secrets: Path | None = None) -> tuple[uuid.UUID, str]:
    """Insert a user; returns (id, email)."""
    email = f"u{uuid.uuid4().hex[:10]}@example.test"
    user_id = uuid.uuid4()
    sealed = None
    if totp_secret is not None:
        assert secrets is not None
        sealed = totp.seal_secret(secretfiles.vault(secrets), user_id, totp_secret)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO app_user (id, org_id, email, status, password_hash, must_change_password, attributes, "
            "totp_ciphertext, totp_nonce, totp_key_id, totp_enabled_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (user_id, org.id, email, status, passwords.hash_password(password) if password else None, must_change,
             orjson.dumps(attributes or {}).decode(), sealed.ciphertext if sealed else None,
             sealed.nonce if sealed else None, sealed.key_id if sealed else None,
             dt.datetime.now(dt.UTC) if sealed else None))
    return user_id, email


def make_client(db_url: str, *, redirect_uris: list[str], kind: str = "public", secret: str | None = None,
                scopes: list[str] | None = None) -> str:
    client_id = "test-" + uuid.uuid4().hex[:10]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO oauth_client (client_id, name, kind, secret_hash, redirect_uris, scopes) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (client_id, "Test app", kind, oauth.hash_client_secret(secret) if secret else None, redirect_uris,
             scopes or ["openid", "admin"]))
    return client_id


ServeFn = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve(db_url: str, valkey_url: str, tmp_path: Path, nursery: trio.Nursery) -> ServeFn:
    async def start(**settings: Any) -> Server:
        secrets = tmp_path / f"secrets-{uuid.uuid4().hex[:6]}"
        secretfiles.ensure(secrets)
        pool = PgPool(db_url, min_size=1, max_size=4, name="auth-test")
        await nursery.start(pool.run)
        valkey = ValkeyClient(valkey_url, pool_size=4)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        service = auth.build(pool, valkey, secretfiles.vault(secrets), secrets, url, auth.AuthSettings(**settings))
        with psycopg.connect(db_url, autocommit=True) as conn:
            seed_oauth_clients(conn, url)

        async def probe(request: Request) -> Response:
            ip = request.client.host if request.client else None
            try:
                p = await service.authenticator.authenticate(request.headers.get("authorization"), ip)
            except AuthError as exc:
                return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)
            return JSONResponse({"kind": p.kind, "id": str(p.id), "org_id": str(p.org_id), "org_path": p.org_path,
                                 "label": p.label, "tags": dict(p.tags), "mfa": p.mfa, "session_id": p.session_id})

        app = Starlette(routes=[*service.routes(), Route("/probe", probe)])
        server = HypercornServer(app, drain_timeout=1.0)
        await nursery.start(server.serve, listeners)
        return Server(url=url, service=service, db_url=db_url, secrets=secrets)

    return start


@pytest.fixture
async def server(serve: ServeFn) -> Server:
    return await serve()


# -- the browser side of the code flow -------------------------------------------------------

def new_verifier() -> str:
    import secrets

    return secrets.token_urlsafe(48)


def request_id_of(html: str) -> str:
    match = re.search(r'name="request_id" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


def error_code_of(html: str) -> str | None:
    match = re.search(r'class="error"[^>]*data-code="([^"]*)"', html)
    return match.group(1) if match else None


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def open_login(http: httpx.AsyncClient, server: Server, *, client_id: str = CLI,
                     redirect_uri: str = LOOPBACK, verifier: str | None = None, state: str | None = "st-123",
                     **extra: str) -> httpx.Response:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "code_challenge": oauth.s256(verifier or new_verifier()), "code_challenge_method": "S256", **extra}
    if state is not None:
        params["state"] = state
    return await http.get(server.url + "/oauth/authorize", params=params)


async def submit(http: httpx.AsyncClient, server: Server, request_id: str, email: str, password: str,
                 **extra: str) -> httpx.Response:
    return await http.post(server.url + "/oauth/authorize",
                           data={"request_id": request_id, "email": email, "password": password, **extra})


async def sign_in_code(http: httpx.AsyncClient, server: Server, email: str, password: str = PASSWORD, *,
                       client_id: str = CLI, redirect_uri: str = LOOPBACK, state: str = "st-123",
                       **extra: str) -> tuple[str, str]:
    """Run the browser part; returns (code, verifier)."""
    verifier = new_verifier()
    page = await open_login(http, server, client_id=client_id, redirect_uri=redirect_uri, verifier=verifier,
                            state=state)
    assert page.status_code == 200, page.text
    done = await submit(http, server, request_id_of(page.text), email, password, **extra)
    assert done.status_code == 302, done.text
    location = done.headers["location"]
    assert location.startswith(redirect_uri + "?")
    params = query_of(location)
    assert params["state"] == state and params["iss"] == server.url
    return params["code"], verifier


async def redeem(http: httpx.AsyncClient, server: Server, code: str, verifier: str, *, client_id: str = CLI,
                 redirect_uri: str = LOOPBACK) -> httpx.Response:
    return await http.post(server.url + "/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": client_id,
        "redirect_uri": redirect_uri})


async def refresh(http: httpx.AsyncClient, server: Server, token: str, client_id: str = CLI) -> httpx.Response:
    return await http.post(server.url + "/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})


async def probe(http: httpx.AsyncClient, server: Server, token: str) -> httpx.Response:
    return await http.get(server.url + "/probe", headers={"authorization": f"Bearer {token}"})
