"""Budgets through real gateways: two processes share one budget atomically; the 429 names the axis."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import trio

from tests.gateway.conftest import Stack, extra_gateway, make_key, publish_signal


@pytest.fixture
def budget_key(stack: Stack) -> Iterator[str]:
    key, key_id = make_key(stack, name=f"budget-{uuid.uuid4().hex[:6]}")
    with psycopg.connect(stack.db_url) as conn:
        conn.execute(
            "INSERT INTO quota_policy (name, axis, virtual_key_id, unit, window_kind, window_seconds, soft_limit, "
            "hard_limit) VALUES (%s, 'virtual_key', %s, 'requests', 'sliding', 3600, 40, 50)",
            (f"budget-{key_id}", key_id))
    publish_signal(stack, "quota_policy")
    yield key
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("DELETE FROM quota_policy WHERE virtual_key_id = %s", (key_id,))


async def _burst(urls: list[str], key: str, n: int) -> list[httpx.Response]:
    results: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=400)) as client:
        async def one(i: int) -> None:
            results.append(await client.post(
                urls[i % len(urls)] + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                json={"model": "mock-gpt", "max_tokens": 16, "messages": [{"role": "user", "content": "spend"}]}))

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    return results


@pytest.mark.slow
def test_two_gateways_cannot_overspend(stack: Stack, valkey_url: str, tmp_path: Path, budget_key: str) -> None:
    sync = {"NEXUS_QUOTA_WRITE_BEHIND": "0"}
    with contextlib.ExitStack() as stack_cm:
        a = stack_cm.enter_context(extra_gateway(stack, valkey_url, tmp_path / "a", **sync))
        b = stack_cm.enter_context(extra_gateway(stack, valkey_url, tmp_path / "b", **sync))
        results = trio.run(_burst, [a, b], budget_key, 200)
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 50, sorted(set(statuses))
    assert statuses.count(429) == 150
    rejected = next(r for r in results if r.status_code == 429)
    assert "virtual_key" in rejected.json()["error"]["message"]
    assert int(rejected.headers["retry-after"]) > 0
    warned = [r for r in results if r.status_code == 200 and "x-nexus-quota-warning" in r.headers]
    assert warned  # past the soft limit of 40
    ok = next(r for r in results if r.status_code == 200)
    assert ok.headers["x-nexus-quota-limit"] == "50"


def test_usage_reports_the_keys_budget(stack: Stack, budget_key: str) -> None:
    import time

    deadline = time.monotonic() + 5
    while True:  # the shared gateway picks the new policy up on its next reload
        httpx.post(stack.v1 + "/chat/completions", headers={"authorization": f"Bearer {budget_key}"},
                   json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}, timeout=30)
        body = httpx.get(stack.v1 + "/usage", headers={"authorization": f"Bearer {budget_key}"}).json()
        if body.get("policies") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert body["policies"], body
    assert "50" in str(body)
    assert httpx.get(stack.v1 + "/usage").status_code == 401
