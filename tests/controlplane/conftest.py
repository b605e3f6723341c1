"""A real ``nexus control-plane`` daemon over a migrated, seeded database, and signed-in callers.

``cp.token(group)`` signs in (through ``POST /api/auth/login``, the console's path) a fresh user
of the demo org who belongs to that seeded IAM group, so tests exercise the real token path.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import psycopg
import pytest
from tests.gateway.conftest import daemon_env, start_daemon, stop, wait_ready

from nexus.crypto import passwords, secretfiles
from nexus.devstack import seed, services
from nexus.storage import migrate

GROUPS = ("super-admins", "provider-admins", "security-admins", "compliance-team", "developers", "viewers")
PASSWORD = "correct horse battery staple 42"


@attrs.define
class ControlPlane:
    url: str
    db_url: str
    nats_url: str
    secrets: Path
    org_id: str
    project_id: str
    log: Path
    _tokens: dict[str, str] = attrs.field(factory=dict)
    _users: dict[str, str] = attrs.field(factory=dict)

    def add_user(self, group: str | None, *, org_path: str = "demo", attributes: str = "{}") -> tuple[str, str]:
        """A new active console user in ``org_path`` (and ``group``): (email, user id)."""
        email = f"{(group or 'nobody').replace('-', '')}-{uuid.uuid4().hex[:8]}@example.test"
        with psycopg.connect(self.db_url) as conn:
            user_id = conn.execute(
                "INSERT INTO app_user (org_id, email, status, can_access_console, password_hash, attributes) "
                "SELECT id, %s, 'active', true, %s, %s::jsonb FROM organization WHERE path = %s RETURNING id::text",
                (email, passwords.hash_password(PASSWORD), attributes, org_path),
            ).fetchone()[0]  # type: ignore[index]
            if group:
                conn.execute(
                    "INSERT INTO iam_group_member (group_id, user_id) SELECT id, %s FROM iam_group "
                    "WHERE org_id IS NULL AND name = %s", (user_id, group))
        return email, user_id

    def login(self, email: str, password: str = PASSWORD) -> str:
        response = httpx.post(self.url + "/api/auth/login", json={"email": email, "password": password}, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def token(self, group: str) -> str:
        if group not in self._tokens:
            email, user_id = self.add_user(group)
            self._users[group] = user_id
            self._tokens[group] = self.login(email)
        return self._tokens[group]

    def user_id(self, group: str) -> str:
        self.token(group)
        return self._users[group]

    def client(self, group: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.token(group)}"}, timeout=30)


@pytest.fixture(scope="session")
def cp_db_url(pg_server_url: str) -> Iterator[str]:
    """The control plane's own database: its tests (schemathesis above all) write freely and must not
    change what the gateway tests' database holds (a kill switch, say)."""
    name = f"nexus_cp_{uuid.uuid4().hex[:12]}"
    base, _, _ = pg_server_url.rpartition("/")
    url = f"{base}/{name}"
    migrate.ensure_database(url)
    migrate.migrate(url, log=lambda _line: None)
    yield url
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def control_plane(db_url: str, valkey_url: str, nats_url: str, root: Path) -> Iterator[ControlPlane]:
    """A seeded database's control plane daemon, stopped on exit."""
    secrets = root / "secrets"
    secretfiles.ensure(secrets)
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    demo = seed.seed_demo(db_url, secrets, "http://127.0.0.1:9", public_url=url)
    env = daemon_env(db_url, valkey_url, nats_url, secrets, NEXUS_CONTROL_PLANE__LISTEN__PORT=str(port),
                     NEXUS_CONTROL_PLANE__LISTEN__HOST="127.0.0.1", NEXUS_CONTROL_PLANE__PUBLIC_URL=url)
    log = root / "control-plane.log"
    proc = start_daemon("control-plane", env, log)
    try:
        wait_ready(url, proc, log)
        yield ControlPlane(url, db_url, nats_url, secrets, demo.org_id, demo.project_id, log)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def cp(cp_db_url: str, valkey_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[ControlPlane]:
    with control_plane(cp_db_url, valkey_url, nats_url, tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane
