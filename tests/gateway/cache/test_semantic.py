"""The semantic cache against real servers (the mock provider in-process as the embedding upstream, Valkey for the
answers, PostgreSQL for the built-in index): a paraphrase hits above the threshold and a different question misses,
scopes never mix, an embedding slower than the budget is a miss, the breaker opens on a failing endpoint and closes
after a good half-open probe, the semantic poison guard, and entries whose answer is gone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import trio

from nexus.gateway.cache.breaker import Breaker
from nexus.gateway.cache.builtin_index import BuiltinIndex
from nexus.gateway.cache.embedder import Embedder
from nexus.gateway.cache.entry import CacheEntry
from nexus.gateway.cache.exact import ExactCache
from nexus.gateway.cache.key import cache_key
from nexus.gateway.cache.policy import SemanticPolicy
from nexus.gateway.cache.semantic import SemanticCache
from nexus.gateway.catalog import Catalog, CatalogHolder, ModelRoute, Prices, Provider
from nexus.mock.embeddings import embed
from nexus.net.http1 import client as http
from nexus.net.resp.client import ValkeyClient
from nexus.storage.pgpool import PgPool
from tests.mock.conftest import ServeMock

QUESTION = "What is the capital city of France and what is its population?"
PARAPHRASE = "Tell me: what is the capital city of France and what is its population?"
OTHER = "What is the capital city of Germany and what is its population?"
THRESHOLD = 0.94


def similarity(a: str, b: str) -> float:
    return float(np.dot(embed(a, 1536), embed(b, 1536)))


def test_the_mock_embeddings_make_a_meaningful_test() -> None:
    assert similarity(QUESTION, PARAPHRASE) >= THRESHOLD > similarity(QUESTION, OTHER)


def catalog(mock_url: str) -> CatalogHolder:
    provider = Provider("p1", "mock-openai", "openai", mock_url + "/v1", 5.0, {}, None)
    route = ModelRoute("emb", provider, "text-embedding-3-small", "embedding", Prices(0, 0, 0, 0, 0), None, None,
                       None, 0)
    holder = CatalogHolder()
    holder.current = Catalog({"emb": (route,)})
    return holder


@pytest.fixture
async def client() -> AsyncIterator[http.HttpClient]:
    async with http.HttpClient() as c:
        yield c


@pytest.fixture
async def make_cache(pool: PgPool, valkey: ValkeyClient, client: http.HttpClient, nursery: trio.Nursery) -> Any:
    async def make(mock_url: str, *, budget_ms: float = 2000.0, breaker: Breaker | None = None) -> SemanticCache:
        model = f"emb-{uuid.uuid4().hex[:12]}"  # its own index partitions: other tests never interfere
        policy = SemanticPolicy(model, threshold=THRESHOLD, budget_ms=budget_ms)
        cache = SemanticCache(policy, Embedder(client, catalog(mock_url), "emb"), ExactCache(valkey), pool=pool,
                              backend="builtin", breaker=breaker)
        index = BuiltinIndex(pool, None, model)
        await nursery.start(index.run)
        cache.index = index
        return cache

    return make


def chat(text: str, system: str = "be brief") -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": text}], "temperature": 0}


def answer(text: str) -> CacheEntry:
    return CacheEntry(response={"id": "c1", "object": "chat.completion", "model": "gpt-x", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}, created=1.0)


async def stored(cache: SemanticCache, text: str, prefix: str, scope: str = "vk:a", system: str = "be brief"
                 ) -> str:
    """A miss for ``text`` whose answer is then stored in the exact cache and remembered; its exact key."""
    look = await cache.lookup("mock-openai", "gpt-x", scope, chat(text, system))
    assert look is not None and look.outcome == "miss" and look.vector is not None
    key = cache_key("mock-openai", "gpt-x", chat(text, system), scope, prefix=prefix)
    assert await cache.exact.put(key, answer(f"about: {text}"))
    assert await cache.remember(look, key, answer(f"about: {text}"), 600)
    return key


async def test_a_paraphrase_hits_and_another_question_misses(make_cache: Any, mock_url: str, prefix: str) -> None:
    cache = await make_cache(mock_url)
    key = await stored(cache, QUESTION, prefix)
    hit = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(PARAPHRASE))
    assert hit is not None and hit.outcome == "hit" and hit.neighbour is not None
    assert hit.neighbour.cache_key == key
    assert hit.neighbour.similarity == pytest.approx(similarity(QUESTION, PARAPHRASE), abs=1e-4)
    assert hit.entry == answer(f"about: {QUESTION}")
    assert hit.elapsed_ms < cache.policy.budget_ms
    miss = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(OTHER))
    assert miss is not None and miss.outcome == "miss" and miss.entry is None
    assert miss.neighbour is not None and miss.neighbour.similarity < THRESHOLD


async def test_scopes_contexts_and_models_never_mix(make_cache: Any, mock_url: str, prefix: str) -> None:
    cache = await make_cache(mock_url)
    await stored(cache, QUESTION, prefix)
    for provider, model, scope, system in (("mock-openai", "gpt-x", "vk:b", "be brief"),
                                           ("mock-openai", "gpt-x", "", "be brief"),
                                           ("mock-openai", "gpt-x", "vk:a", "be verbose"),
                                           ("mock-openai", "gpt-y", "vk:a", "be brief"),
                                           ("other", "gpt-x", "vk:a", "be brief")):
        look = await cache.lookup(provider, model, scope, chat(QUESTION, system))
        assert look is not None and (look.outcome, look.neighbour) == ("miss", None), (provider, model, scope)


async def test_over_budget_is_a_miss(make_cache: Any, serve_mock: ServeMock, prefix: str) -> None:
    slow = await serve_mock(ttft_ms=300)
    cache = await make_cache(slow, budget_ms=20)
    with trio.fail_after(0.25):  # the lookup gives up at the budget, not at the upstream's pace
        look = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(QUESTION))
    assert look is not None and (look.outcome, look.vector) == ("over_budget", None)
    assert cache.outcomes == {"over_budget": 1} and cache.breaker.failures == 1


async def test_breaker_opens_on_failures_and_closes_after_a_good_probe(
    make_cache: Any, serve_mock: ServeMock, mock_url: str, client: http.HttpClient,
) -> None:
    broken = await serve_mock(status=503)
    cache = await make_cache(broken, breaker=Breaker(failures=3, open_seconds=0.5))
    outcomes = [(await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(QUESTION))).outcome  # type: ignore[union-attr]
                for _ in range(6)]
    assert outcomes == ["embed_failed"] * 3 + ["breaker_open"] * 3
    calls = (await client.request("GET", broken + "/_mock/requests")).body
    assert calls.count(b"/v1/embeddings") == 3  # nothing reached the endpoint while the breaker was open
    assert cache.breaker.state == "open" and "breaker open" in cache.state.detail
    await trio.sleep(0.6)
    probe = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(QUESTION))
    assert probe is not None and probe.outcome == "embed_failed" and cache.breaker.state == "open"
    cache.embedder.catalog = catalog(mock_url)  # the endpoint recovers
    await trio.sleep(0.6)
    good = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(QUESTION))
    assert good is not None and good.outcome == "miss" and cache.breaker.state == "closed"


async def test_poison_guard_and_ineligible_requests(make_cache: Any, mock_url: str, prefix: str) -> None:
    cache = await make_cache(mock_url)
    look = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(QUESTION))
    assert look is not None
    tool = CacheEntry(response={"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]})
    assert not await cache.remember(look, prefix + "k1", tool, 600)
    assert not await cache.remember(look, prefix + "k2", answer(""), 600)
    assert not await cache.remember(look, prefix + "k3", answer("fine"), 600, flagged=True)
    assert len(cache.index.index) == 0  # type: ignore[union-attr]
    image = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
    assert await cache.lookup("mock-openai", "gpt-x", "vk:a", image) is None
    assert cache.outcomes["ineligible"] == 1


async def test_an_entry_whose_answer_is_gone_is_forgotten(make_cache: Any, mock_url: str, prefix: str,
                                                          valkey: ValkeyClient) -> None:
    cache = await make_cache(mock_url)
    key = await stored(cache, QUESTION, prefix)
    await valkey.execute("DEL", key)  # evicted or expired in Valkey
    look = await cache.lookup("mock-openai", "gpt-x", "vk:a", chat(PARAPHRASE))
    assert look is not None and look.outcome == "stale" and look.vector is not None
    assert len(cache.index.index) == 0  # type: ignore[union-attr]
