"""ExactCache against the real Valkey: get/put with TTL, the size cap, single flight in one process and across
two clients, leader failure, corrupt entries, and Valkey errors that never fail a request."""

from __future__ import annotations

import redis
import trio

from nexus.devstack.services import free_port
from nexus.gateway.cache.entry import CacheEntry, encode_entry
from nexus.gateway.cache.exact import ExactCache, Flight
from nexus.gateway.cache.key import cache_key
from nexus.gateway.cache.policy import CachePolicy
from nexus.net.resp.client import ValkeyClient

ANSWER = CacheEntry(response={"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "cached"}, "finish_reason": "stop"}]}, created=1.0)


def key_for(prefix: str, text: str = "hi") -> str:
    return cache_key("openai", "m", {"messages": [{"role": "user", "content": text}]}, prefix=prefix)


async def test_get_put_and_ttl(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    cache = ExactCache(valkey, policy=CachePolicy(ttl_seconds=120))
    key = key_for(prefix)
    assert await cache.get(key) is None
    assert await cache.put(key, ANSWER)
    assert await cache.get(key) == ANSWER
    assert 115_000 < checker.pttl(key) <= 120_000
    short = key_for(prefix, "short-lived")
    assert await cache.put(short, ANSWER, ttl=1)
    await trio.sleep(1.1)
    assert await cache.get(short) is None


async def test_entries_over_the_cap_are_not_stored(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    big = CacheEntry(response={"choices": [{"message": {"content": "x" * 2000}, "finish_reason": "stop"}]})
    cache = ExactCache(valkey, policy=CachePolicy(max_entry_bytes=1000))
    key = key_for(prefix)
    assert not await cache.put(key, big)
    assert checker.exists(key) == 0
    assert await cache.put(key, ANSWER)
    assert len(encode_entry(ANSWER)) <= 1000


async def _crowd(caches: list[ExactCache], key: str, count: int, work: float,
                 answer: CacheEntry | None = ANSWER) -> tuple[list[Flight], list[CacheEntry]]:
    """``count`` identical requests at once; the ones that must call upstream take ``work`` seconds.

    Fails if two upstream calls ever overlap: single flight means one at a time.
    """
    upstream: list[Flight] = []
    served: list[CacheEntry] = []
    calling = 0

    async def one(cache: ExactCache) -> None:
        nonlocal calling
        flight = await cache.begin(key)
        entry = flight.entry
        try:
            if entry is None:
                upstream.append(flight)
                calling += 1
                assert calling == 1, "two upstream calls at once"
                await trio.sleep(work)
                calling -= 1
                entry = answer
        finally:
            await cache.finish(flight, entry)
        if entry is not None:
            served.append(entry)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, caches[i % len(caches)])
    return upstream, served


async def test_single_flight_in_one_process(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    cache = ExactCache(valkey)
    key = key_for(prefix)
    upstream, served = await _crowd([cache], key, 50, 0.2)
    assert [f.status for f in upstream] == ["miss"]
    assert len(served) == 50 and all(e == ANSWER for e in served)
    assert checker.exists(key) == 1 and checker.exists(key + ":lock") == 0
    hit = await cache.begin(key)
    assert (hit.status, hit.entry) == ("hit", ANSWER)
    await cache.finish(hit, None)


async def test_single_flight_across_two_clients(
    valkey: ValkeyClient, valkey2: ValkeyClient, prefix: str, checker: redis.Redis,
) -> None:
    caches = [ExactCache(valkey), ExactCache(valkey2)]
    key = key_for(prefix)
    upstream, served = await _crowd(caches, key, 50, 0.2)
    assert len(upstream) == 1
    assert len(served) == 50 and all(e == ANSWER for e in served)
    assert checker.exists(key + ":lock") == 0


async def test_followers_retry_when_the_leader_stores_nothing(valkey: ValkeyClient, valkey2: ValkeyClient,
                                                              prefix: str) -> None:
    caches = [ExactCache(valkey), ExactCache(valkey2)]
    key = key_for(prefix)
    upstream, served = await _crowd(caches, key, 10, 0.1, answer=None)
    # Nothing cacheable: each attempt is led by one request at a time, never several at once.
    assert len(upstream) == 10 and served == []


async def test_followers_give_up_after_their_wait(valkey: ValkeyClient, valkey2: ValkeyClient, prefix: str) -> None:
    key = key_for(prefix)
    slow = ExactCache(valkey)
    impatient = ExactCache(valkey2, follower_wait=0.2)
    leader = await slow.begin(key)
    assert leader.status == "miss"
    with trio.fail_after(2):
        alone = await impatient.begin(key)
    assert (alone.status, alone.entry) == ("miss", None)
    await impatient.finish(alone, ANSWER)
    await slow.finish(leader, ANSWER)
    assert await slow.get(key) == ANSWER


async def test_corrupt_entry_is_a_miss(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    cache = ExactCache(valkey)
    key = key_for(prefix)
    checker.set(key, b"not an entry")
    assert await cache.get(key) is None
    flight = await cache.begin(key)
    assert flight.status == "miss" and cache.corrupt == 2
    await cache.finish(flight, ANSWER)
    assert await cache.get(key) == ANSWER


async def test_valkey_errors_bypass_and_never_fail() -> None:
    async with ValkeyClient(f"redis://127.0.0.1:{free_port()}", connect_timeout=0.5) as dead:
        cache = ExactCache(dead)
        key = key_for("x:")
        assert await cache.get(key) is None
        assert not await cache.put(key, ANSWER)
        upstream, served = await _crowd([cache], key, 5, 0.05)
        # Still one upstream call: the other four fold into it in process.
        assert [f.status for f in upstream] == ["bypass"] and len(served) == 5
        assert cache.bypassed == 3


async def test_finish_under_cancellation_wakes_followers(valkey: ValkeyClient, prefix: str) -> None:
    cache = ExactCache(valkey)
    key = key_for(prefix)
    leader = await cache.begin(key)
    got: list[Flight] = []

    async def follower() -> None:
        got.append(await cache.begin(key))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.sleep(0.05)
        with trio.CancelScope() as scope:
            scope.cancel()
            await cache.finish(leader, ANSWER)  # the client went away as the answer completed
    assert [(f.status, f.entry) for f in got] == [("hit", ANSWER)]
    assert await cache.get(key) == ANSWER
