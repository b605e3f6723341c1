"""Both semantic index backends through the one interface, against real servers: nearest neighbour within a
partition only, removal, expiry, and a second gateway process seeing the entries.  valkey-search runs only where
the server has a search module; the built-in index also survives a restart (loaded from PostgreSQL), spreads
changes over NATS and keeps to its row cap."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import psycopg
import pytest
import redis
import trio

from nexus.gateway.cache.builtin_index import BuiltinIndex, decode_signal, encode_signal
from nexus.gateway.cache.semantic_index import IndexRow, Neighbour, SemanticIndex
from nexus.gateway.cache.semantic_key import Partition
from nexus.gateway.cache.valkey_index import ValkeySearchIndex, _neighbour, probe
from nexus.gateway.cache.vectors import Vector, unit
from nexus.net.nats.client import NatsClient
from nexus.net.resp.client import ValkeyClient
from nexus.storage.pgpool import PgPool

MakeIndex = Callable[[], Awaitable[SemanticIndex]]


def vec(*values: float) -> Vector:
    v = unit(values)
    assert v is not None
    return v


@pytest.fixture
def model() -> str:
    return f"emb-{uuid.uuid4().hex[:12]}"  # signals of other tests and sessions carry other models: ignored


@pytest.fixture(params=["builtin", "valkey-search"])
def backend(request: pytest.FixtureRequest, checker: redis.Redis, valkey_url: str) -> str:
    if request.param == "valkey-search":
        try:
            checker.execute_command("FT._LIST")
        except redis.ResponseError as exc:
            pytest.skip(f"the server at {valkey_url} has no search module ({exc}): the valkey-search backend runs "
                        "only where valkey-search or RediSearch is loaded")
    return str(request.param)


@pytest.fixture
async def make_index(backend: str, model: str, pool: PgPool, nats: NatsClient, valkey: ValkeyClient,
                     nursery: trio.Nursery) -> MakeIndex:
    """Starts one index per call: each is another gateway process as far as the backend can tell."""
    if backend == "valkey-search":
        assert await probe(valkey)  # our probe agrees with redis-py's
    namespace = f"test:{uuid.uuid4().hex}:"

    async def make() -> SemanticIndex:
        index: SemanticIndex
        if backend == "builtin":
            index = BuiltinIndex(pool, nats, model)
        else:
            index = ValkeySearchIndex(valkey, model, namespace=namespace)
        await nursery.start(index.run)
        return index

    return make


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while True:
            if await check():
                return
            await trio.sleep(0.05)


def part(model: str, scope: str = "vk:a#ctx") -> Partition:
    return Partition("prov", "gpt-x", scope, model)


async def test_nearest_within_the_partition(make_index: MakeIndex, model: str) -> None:
    index = await make_index()
    p, other = part(model), part(model, "vk:b#ctx")
    assert await index.search(p, vec(1, 0, 0)) is None
    later = time.time() + 600
    assert await index.add(IndexRow(p, "nexus:cache:aa", vec(1, 0, 0), later))
    assert await index.add(IndexRow(p, "nexus:cache:bb", vec(0, 1, 0), later))
    assert await index.add(IndexRow(other, "nexus:cache:cc", vec(1, 0.1, 0), later))
    hit = await index.search(p, vec(1, 0.2, 0))
    assert hit is not None and hit.cache_key == "nexus:cache:aa"
    assert hit.similarity == pytest.approx(float(vec(1, 0.2, 0) @ vec(1, 0, 0)), abs=1e-4)
    far = await index.search(p, vec(0, 0, 1))
    assert far is None or far.similarity < 0.01  # there is always a nearest one; the threshold decides
    assert (await index.search(other, vec(1, 0, 0))).cache_key == "nexus:cache:cc"  # type: ignore[union-attr]
    assert await index.search(part(model, "vk:c#ctx"), vec(1, 0, 0)) is None
    await index.remove(p, "nexus:cache:aa")
    assert (await index.search(p, vec(1, 0.2, 0))).cache_key == "nexus:cache:bb"  # type: ignore[union-attr]


async def test_expired_entries_never_match(make_index: MakeIndex, model: str) -> None:
    index = await make_index()
    p = part(model)
    assert await index.add(IndexRow(p, "nexus:cache:old", vec(1, 0), time.time() + 1.2))
    assert (await index.search(p, vec(1, 0))) is not None
    await trio.sleep(1.5)
    assert await index.search(p, vec(1, 0)) is None


async def test_another_process_finds_the_entries(make_index: MakeIndex, model: str) -> None:
    first = await make_index()
    p = part(model)
    assert await first.add(IndexRow(p, "nexus:cache:shared", vec(0.3, 0.4), time.time() + 600))
    second = await make_index()  # started afterwards: loads (or shares) what exists

    async def second_sees() -> bool:
        return await second.search(p, vec(0.3, 0.4)) is not None

    await eventually(second_sees)
    live = await make_index()  # already running when the next entry arrives
    assert await first.add(IndexRow(p, "nexus:cache:later", vec(-1, 0), time.time() + 600))

    async def live_sees() -> bool:
        hit = await live.search(p, vec(-1, 0))
        return hit is not None and hit.cache_key == "nexus:cache:later"

    await eventually(live_sees)


async def test_builtin_rows_survive_a_restart(pool: PgPool, nats: NatsClient, db_url: str, model: str,
                                              nursery: trio.Nursery) -> None:
    index = BuiltinIndex(pool, None, model)
    await nursery.start(index.run)
    p = part(model, "vk:k1#" + "ab" * 32)
    assert await index.add(IndexRow(p, "nexus:cache:kept", vec(1, 2, 3), time.time() + 600))
    with trio.fail_after(5):
        while True:
            with psycopg.connect(db_url) as conn:
                row = conn.execute("SELECT provider, model, scope, dims, octet_length(embedding), expires_at > now() "
                                   "FROM semantic_cache_entry WHERE embedding_model = %s", (model,)).fetchone()
            if row is not None:
                break
            await trio.sleep(0.05)
    assert row == ("prov", "gpt-x", p.scope, 3, 12, True)
    restarted = BuiltinIndex(pool, None, model)  # no NATS: only the database can tell it
    await nursery.start(restarted.run)
    hit = await restarted.search(p, vec(1, 2, 3))
    assert hit is not None and hit.cache_key == "nexus:cache:kept" and hit.similarity == pytest.approx(1.0)
    assert restarted.state.ok and "1 entries" in restarted.state.detail
    await restarted.remove(p, "nexus:cache:kept")
    with trio.fail_after(5):
        while True:
            with psycopg.connect(db_url) as conn:
                left = conn.execute("SELECT count(*) FROM semantic_cache_entry WHERE embedding_model = %s",
                                    (model,)).fetchone()
            if left == (0,):
                break
            await trio.sleep(0.05)


async def test_builtin_cap_and_purge(pool: PgPool, db_url: str, model: str, nursery: trio.Nursery) -> None:
    index = BuiltinIndex(pool, None, model, max_entries=2, purge_interval=0.3)
    await nursery.start(index.run)
    p = part(model)
    assert await index.add(IndexRow(p, "nexus:cache:1", vec(1, 0), time.time() + 1.5))
    assert await index.add(IndexRow(p, "nexus:cache:2", vec(0, 1), time.time() + 600))
    assert not await index.add(IndexRow(p, "nexus:cache:3", vec(1, 1), time.time() + 600))
    assert index.refused == 1
    assert not await index.add(IndexRow(part("other-model"), "nexus:cache:4", vec(1, 1), time.time() + 600))

    async def purged() -> bool:  # the expired one is gone from memory and from the table
        with psycopg.connect(db_url) as conn:
            keys = conn.execute("SELECT cache_key FROM semantic_cache_entry WHERE embedding_model = %s",
                                (model,)).fetchall()
        return len(index.index) == 1 and keys == [("nexus:cache:2",)]

    await eventually(purged, 10)
    assert await index.add(IndexRow(p, "nexus:cache:3", vec(1, 1), time.time() + 600))


def test_signal_round_trip() -> None:
    p = part("emb")
    row = IndexRow(p, "nexus:cache:x", vec(1, 2), 123.5)
    back = decode_signal(encode_signal(row))
    assert isinstance(back, IndexRow) and (back.partition, back.cache_key, back.expires) == (p, "nexus:cache:x", 123.5)
    assert back.vector.tolist() == pytest.approx(row.vector.tolist())
    for bad in (b"", b"{}\n", b'{"k":"x","p":"p","m":"m","s":"s","e":"e","x":1}\n', b"nope"):
        with pytest.raises(ValueError):
            decode_signal(bad)


async def test_probe_and_valkey_search_replies(valkey: ValkeyClient, checker: redis.Redis) -> None:
    try:
        checker.execute_command("FT._LIST")
        present = True
    except redis.ResponseError:
        present = False
    assert await probe(valkey) is present
    index = ValkeySearchIndex(valkey, "emb", namespace="t:")
    name, prefix = index.names(3)
    assert name.startswith("t:semidx:") and name.endswith(":3") and prefix.startswith("t:semvec:")
    # FT.SEARCH ... RETURN 1 dist: [total, doc id, [field, value]]
    assert _neighbour([1, (prefix + "nexus:cache:ab").encode(), [b"dist", b"0.25"]], prefix) == \
        Neighbour("nexus:cache:ab", 0.75)
    for empty in ([0], [], None, [1, b"elsewhere:x", [b"dist", b"0"]], [1, (prefix + "k").encode(), [b"d", b"0"]]):
        assert _neighbour(empty, prefix) is None
