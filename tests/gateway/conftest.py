"""A real gateway and mock provider, as daemons, over a migrated and seeded database.

Session-scoped: started once, shared by the gateway tests.  Tests that need
their own keys make them with ``make_key``; tests that need a fresh process
(restarts, config) start their own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import httpx
import psycopg
import pytest
import redis

from nexus.crypto import secretfiles, vkeys
from nexus.devstack import seed, services
from nexus.net.resp.client import ValkeyClient


@attrs.frozen
class Stack:
    gateway: str
    mock: str
    key: str
    db_url: str
    nats_url: str
    secrets: Path
    org_id: str
    project_id: str
    logs: Path

    @property
    def v1(self) -> str:
        return self.gateway + "/v1"


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready: {log.read_text()[-3000:]}")


def start_daemon(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "nexus", name], env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def daemon_env(db_url: str, valkey_url: str, nats_url: str, secrets: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "LISTEN_", "NOTIFY_", "WATCHDOG_"))}
    env.update(NEXUS_DATABASE_URL=db_url, NEXUS_VALKEY_URL=valkey_url, NEXUS_NATS_URL=nats_url,
               NEXUS_SECRETS_DIR=str(secrets), NEXUS_LOG_LEVEL="info", NEXUS_RUNTIME__DRAIN_TIMEOUT="3.0",
               NEXUS_GATEWAY__FORWARD_HEADERS='["x-mock-"]', NEXUS_GATEWAY__LISTEN__HOST="127.0.0.1",
               NEXUS_STATE_DIR=str(secrets.parent / "state"),
               NEXUS_AUDIT__SPILL_DIR=str(secrets.parent / "state" / "spill"),
               NEXUS_AUDIT__SPOOL_DIR=str(secrets.parent / "state" / "spool"))
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def stack(db_url: str, valkey_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    secrets = root / "secrets"
    secretfiles.ensure(secrets)
    mock_port, gw_port = services.free_port(), services.free_port()
    mock_url, gw_url = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{gw_port}"
    demo = seed.seed_demo(db_url, secrets, mock_url)
    env = daemon_env(db_url, valkey_url, nats_url, secrets, NEXUS_MOCK_PROVIDER__LISTEN__PORT=str(mock_port),
                     NEXUS_GATEWAY__LISTEN__PORT=str(gw_port))
    mock = start_daemon("mock-provider", env, root / "mock.log")
    gateway = start_daemon("gateway", env, root / "gateway.log")
    try:
        wait_ready(mock_url, mock, root / "mock.log")
        wait_ready(gw_url, gateway, root / "gateway.log")
        yield Stack(gw_url, mock_url, demo.virtual_key, db_url, nats_url, secrets, demo.org_id, demo.project_id,
                    root)
    finally:
        stop(gateway)
        stop(mock)


@contextlib.contextmanager
def extra_gateway(stack: Stack, valkey_url: str, logs: Path, **env: str) -> Iterator[str]:
    """Another gateway process on the same storage, with config overrides (NEXUS_* variables)."""
    port = services.free_port()
    full = daemon_env(stack.db_url, valkey_url, stack.nats_url, stack.secrets, NEXUS_GATEWAY__LISTEN__PORT=str(port),
                      **env)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "gateway.log"
    proc = start_daemon("gateway", full, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def make_key(stack: Stack, *, allowed_models: list[str] | None = None, expires_in: float | None = None,
             revoked: bool = False, name: str = "test") -> tuple[str, str]:
    """A new application key on the demo project: (clear key, key id)."""
    key = vkeys.generate()
    secret = secretfiles.key_hmac_secret(stack.secrets)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in) if expires_in is not None else None
    with psycopg.connect(stack.db_url) as conn:
        row = conn.execute(
            "INSERT INTO virtual_key (key_hash, key_prefix, name, kind, org_id, project_id, allowed_models, "
            "expires_at, revoked_at, created_at) VALUES (%s, %s, %s, 'application', %s, %s, %s, %s, %s, "
            "now() - interval '1 hour') RETURNING id::text",
            (vkeys.hash_key(secret, key), vkeys.display_prefix(key), name, stack.org_id, stack.project_id,
             allowed_models if allowed_models is not None else ["*"], expires,
             dt.datetime.now(dt.UTC) if revoked else None),
        ).fetchone()
    assert row is not None
    return key, row[0]


def mock_requests(stack: Stack) -> list[dict[str, object]]:
    records: list[dict[str, object]] = httpx.get(stack.mock + "/_mock/requests").json()["requests"]
    return records


def publish_signal(stack: Stack, *kinds: str, resource_id: str | None = None) -> None:
    """Tell the gateways a config kind changed, as the control plane does (nats-py as an independent client)."""
    import asyncio

    import nats as nats_py

    from nexus import signals

    async def publish() -> None:
        nc = await nats_py.connect(stack.nats_url)
        for kind in kinds:
            await nc.publish(signals.PREFIX + kind, signals.encode(resource_id))
        await nc.flush()
        await nc.close()

    asyncio.run(publish())


@pytest.fixture
def checker(valkey_url: str) -> Iterator[redis.Redis]:
    """redis-py: an independent client to check what our Valkey client wrote."""
    client = redis.Redis.from_url(valkey_url)
    yield client
    client.close()


@pytest.fixture
def prefix(checker: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"test:gateway:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(checker.scan_iter(match=prefix + "*", count=1000))
    if keys:
        checker.delete(*keys)


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[ValkeyClient]:
    async with ValkeyClient(valkey_url, pool_size=16, name="test-a") as client:
        yield client


@pytest.fixture
async def valkey2(valkey_url: str) -> AsyncIterator[ValkeyClient]:
    """A second, independent client: another gateway process as far as Valkey can tell."""
    async with ValkeyClient(valkey_url, pool_size=16, name="test-b") as client:
        yield client
