"""Shared pieces of the admin audit log tests: pools on the session database and on a private one.

The session database is shared with every other test of the run, so tests there create
their own entries (tagged with a fresh org id) and reason about the chain as a whole.
Tamper tests need a chain nobody else appends to and that they may break: ``own_pool``
is a pool on a freshly migrated database of the test's own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from nexus.controlplane.audit import AdminAuditEntry
from nexus.storage import migrate
from nexus.storage.pgpool import PgPool


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def start_pool(nursery: trio.Nursery, url: str, max_size: int = 6) -> PgPool:
    pool = PgPool(url, max_size=max_size, name="admin-audit-test", acquire_timeout=30)
    await nursery.start(pool.run)
    assert await pool.wait_ready(5)
    return pool


@pytest.fixture
async def pool(db_url: str, nursery: trio.Nursery) -> PgPool:
    return await start_pool(nursery, db_url)


@pytest.fixture
def own_db_url(empty_db_url: str) -> str:
    migrate.migrate(empty_db_url, log=lambda _line: None)
    return empty_db_url


@pytest.fixture
async def own_pool(own_db_url: str, nursery: trio.Nursery) -> PgPool:
    return await start_pool(nursery, own_db_url)


@pytest.fixture
def org_id() -> uuid.UUID:
    return uuid.uuid4()


def make_entry(org_id: uuid.UUID, i: int = 0, **fields: Any) -> AdminAuditEntry:
    values: dict[str, Any] = {
        "actor_type": "user", "actor_id": uuid.uuid4(), "actor_label": f"admin-{i}@example.com",
        "action": "admin:virtual-key.create", "resource_nrn": f"nrn:nexus:gateway:org/acme:virtual-key/{i}",
        "org_id": org_id, "after": {"name": f"key-{i}", "rpm": i, "allowed_models": ["*"]},
        "source_ip": "10.0.0.1", "user_agent": "nexus-test/1", "request_id": f"req-{i}",
    }
    values.update(fields)
    return AdminAuditEntry(**values)
