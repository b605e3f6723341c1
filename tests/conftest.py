"""Session-wide services for the suite: real PostgreSQL, Valkey/Redis and NATS.

Each is the one reachable at ``NEXUS_DATABASE_URL`` / ``NEXUS_VALKEY_URL`` /
``NEXUS_NATS_URL`` (defaults: the loopback ports), else a private instance the
suite starts from the system binaries and stops at the end.  Tests that stop and
restart a server use the ``private_*`` fixtures and never touch the shared ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from nexus.devstack import services

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {
    "postgres": ("NEXUS_DATABASE_URL", "postgresql://127.0.0.1:5432/nexus"),
    "valkey": ("NEXUS_VALKEY_URL", "redis://127.0.0.1:6379/0"),
    "nats": ("NEXUS_NATS_URL", "nats://127.0.0.1:4222"),
}


def _state_root() -> Path:
    # World-traversable, because a private PostgreSQL runs as the postgres user.
    path = Path(tempfile.mkdtemp(prefix="nexus-test-", dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    path = _state_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _service(kind: str, state_root: Path) -> Iterator[str]:
    env, default = DEFAULTS[kind]
    try:
        url, server = services.ensure(kind, os.environ.get(env, default), state_root)
    except services.MissingBinary as exc:
        pytest.exit(f"test suite needs {kind}: {exc}", returncode=3)
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def pg_server_url(state_root: Path) -> Iterator[str]:
    """A reachable PostgreSQL server URL (its database part is the configured one)."""
    yield from _service("postgres", state_root)


@pytest.fixture(scope="session")
def valkey_url(state_root: Path) -> Iterator[str]:
    yield from _service("valkey", state_root)


@pytest.fixture(scope="session")
def nats_url(state_root: Path) -> Iterator[str]:
    yield from _service("nats", state_root)


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def db_url(pg_server_url: str) -> Iterator[str]:
    """A migrated database for this test session (tests must not assume it is otherwise empty)."""
    from nexus.storage import migrate

    name = f"nexus_s_{uuid.uuid4().hex[:12]}"
    url = _with_db(pg_server_url, name)
    migrate.ensure_database(url)
    migrate.migrate(url, log=lambda _line: None)
    yield url
    with psycopg.connect(_with_db(pg_server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A freshly created, empty database, dropped after the test."""
    name = f"nexus_t_{uuid.uuid4().hex[:12]}"
    admin = _with_db(pg_server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_db(pg_server_url, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def secrets_dir(state_root: Path) -> Path:
    """The box's secret files (key HMAC secret, vault key ring), as first boot would create them."""
    from nexus.crypto import secretfiles

    path = state_root / "secrets"
    secretfiles.ensure(path)
    return path


@pytest.fixture
def private_dir() -> Iterator[Path]:
    path = _state_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_valkey(private_dir: Path) -> Iterator[services.PrivateValkey]:
    with services.PrivateValkey(private_dir / "valkey") as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def private_nats(private_dir: Path) -> Iterator[services.PrivateNats]:
    with services.PrivateNats(private_dir / "nats") as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def private_postgres(private_dir: Path) -> Iterator[services.PrivatePostgres]:
    with services.PrivatePostgres(private_dir / "postgres") as server:
        yield server  # type: ignore[misc]
