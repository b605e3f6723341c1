"""The exact cache through a real gateway: hit and miss, scope isolation between keys, no-cache header, hits
replayed as streams, and 50 identical concurrent requests across two gateways reaching the upstream once."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
import trio

from tests.gateway.conftest import Stack, extra_gateway, make_key, mock_requests

CACHE_ON = {"NEXUS_GATEWAY__CACHE__ENABLED": "true"}


@pytest.fixture(scope="module")
def cached(stack: Stack, valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("cache")
    with contextlib.ExitStack() as cm:
        a = cm.enter_context(extra_gateway(stack, valkey_url, root / "a", **CACHE_ON))
        b = cm.enter_context(extra_gateway(stack, valkey_url, root / "b", **CACHE_ON))
        yield a, b


def _chat(url: str, key: str, text: str, *, stream: bool = False, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", **(headers or {})},
                      json={"model": "mock-gpt", "stream": stream, "messages": [{"role": "user", "content": text}]})


def _upstream_count(stack: Stack, marker: str) -> int:
    return len([r for r in mock_requests(stack) if marker in str(r["body"])])


def test_miss_then_hit(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    first = _chat(cached[0], stack.key, marker)
    second = _chat(cached[0], stack.key, marker)
    assert (first.headers["x-nexus-cache"], second.headers["x-nexus-cache"]) == ("miss", "hit")
    assert first.json()["choices"][0]["message"]["content"] == second.json()["choices"][0]["message"]["content"]
    assert _upstream_count(stack, marker) == 1
    # The other gateway shares the cache.
    assert _chat(cached[1], stack.key, marker).headers["x-nexus-cache"] == "hit"


def test_scope_isolates_keys(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    other, _ = make_key(stack)
    _chat(cached[0], stack.key, marker)
    assert _chat(cached[0], other, marker).headers["x-nexus-cache"] == "miss"


def test_no_cache_header(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    _chat(cached[0], stack.key, marker)
    again = _chat(cached[0], stack.key, marker, headers={"x-nexus-no-cache": "1"})
    assert again.headers["x-nexus-cache"] == "bypass"
    assert _upstream_count(stack, marker) == 2


def test_hit_replayed_as_a_stream(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    plain = _chat(cached[0], stack.key, marker).json()["choices"][0]["message"]["content"]
    streamed = _chat(cached[0], stack.key, marker, stream=True)
    assert streamed.headers["x-nexus-cache"] == "hit"
    assert streamed.text.strip().endswith("data: [DONE]")
    frames = [orjson.loads(f[6:]) for f in streamed.text.split("\n\n") if f.startswith("data: {")]
    assert "".join(c["delta"].get("content") or "" for f in frames for c in f["choices"]) == plain
    assert _upstream_count(stack, marker) == 1


def test_errors_are_not_cached(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    assert _chat(cached[0], stack.key, marker, headers={"x-mock-status": "500"}).status_code == 502
    assert _chat(cached[0], stack.key, marker).headers["x-nexus-cache"] == "miss"


def test_fifty_identical_requests_on_two_gateways_call_upstream_once(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex

    async def burst() -> list[httpx.Response]:
        out: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> None:
                out.append(await client.post(
                    cached[i % 2] + "/v1/chat/completions", headers={"authorization": f"Bearer {stack.key}",
                                                                     "x-mock-ttft-ms": "300"},
                    json={"model": "mock-gpt", "messages": [{"role": "user", "content": marker}]}))

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        return out

    results = trio.run(burst)
    assert all(r.status_code == 200 for r in results)
    assert _upstream_count(stack, marker) == 1
    assert sorted(r.headers["x-nexus-cache"] for r in results).count("miss") == 1


def test_passthrough_bypass_cache(stack: Stack, cached: tuple[str, str]) -> None:
    import datetime as dt
    import time

    import psycopg

    from tests.gateway.conftest import publish_signal

    marker = uuid.uuid4().hex
    _chat(cached[0], stack.key, marker)
    reason = f"cache bypass {marker}"
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("INSERT INTO passthrough_setting (tier, bypass_cache, reason, expires_at) VALUES "
                     "('global', true, %s, %s)", (reason, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    publish_signal(stack, "passthrough")
    try:
        deadline = time.monotonic() + 5
        while _chat(cached[0], stack.key, marker).headers["x-nexus-cache"] != "bypass":
            assert time.monotonic() < deadline, "passthrough bypassCache never applied"
            time.sleep(0.1)
    finally:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM passthrough_setting WHERE reason = %s", (reason,))
        publish_signal(stack, "passthrough")
    deadline = time.monotonic() + 5
    while _chat(cached[0], stack.key, marker).headers["x-nexus-cache"] != "hit":
        assert time.monotonic() < deadline, "cache never came back"
        time.sleep(0.1)
