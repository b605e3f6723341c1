"""Shared pieces of the cache tests: Valkey clients and a key prefix per test (deleted afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from nexus.net.resp.client import ValkeyClient


@pytest.fixture
def checker(valkey_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey_url)
    yield client
    client.close()


@pytest.fixture
def prefix(checker: redis.Redis) -> Iterator[str]:
    prefix = f"test:cache:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(checker.scan_iter(match=prefix + "*", count=1000))
    if keys:
        checker.delete(*keys)


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[ValkeyClient]:
    async with ValkeyClient(valkey_url, pool_size=16, name="cache-a") as client:
        yield client


@pytest.fixture
async def valkey2(valkey_url: str) -> AsyncIterator[ValkeyClient]:
    """A second, independent client: another gateway process as far as Valkey can tell."""
    async with ValkeyClient(valkey_url, pool_size=16, name="cache-b") as client:
        yield client
