"""Fixtures of the cache unit tests: a started PostgreSQL pool on the session database, a started NATS client,
and the mock provider served in-process (``serve_mock``) as the embedding upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from nexus.net.nats.client import NatsClient
from nexus.storage.pgpool import PgPool
from tests.mock.conftest import mock_url, serve_mock

__all__ = ["mock_url", "nats", "pool", "serve_mock"]


@pytest.fixture
async def pool(db_url: str, nursery: trio.Nursery) -> AsyncIterator[PgPool]:
    pg = PgPool(db_url, min_size=1, max_size=4)
    await nursery.start(pg.run)
    yield pg
    await pg.aclose()


@pytest.fixture
async def nats(nats_url: str, nursery: trio.Nursery) -> AsyncIterator[NatsClient]:
    client = NatsClient(nats_url)
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    yield client
    await client.aclose()
