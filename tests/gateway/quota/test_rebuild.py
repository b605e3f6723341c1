"""Valkey outages and losses: fail-closed and fail-open policies, and counters rebuilt from PostgreSQL rollups.

The outage test stops and restarts a private Valkey (no persistence: a restart
loses every counter, as a real loss would); rollup rows are the test's own
(random key ids and provider name) in the shared session database.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import trio

from nexus.devstack.services import PrivateValkey
from nexus.gateway.quota.engine import QuotaEngine, QuotaUnavailable
from nexus.gateway.quota.policy import Estimate, QuotaSnapshot, QuotaSubject
from nexus.gateway.quota.rebuild import RollupRow, counters_from_rollups, pg_rebuilder
from nexus.net.resp.client import ValkeyClient
from nexus.storage.pgpool import PgPool

from .conftest import make_policy, uid


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


@pytest.fixture
async def pool(db_url: str, nursery: trio.Nursery) -> PgPool:
    p = PgPool(db_url, max_size=2, name="quota-test")
    await nursery.start(p.run)
    assert await p.wait_ready(5)
    return p


class Rollups:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.keys: list[str] = []
        self.provider = f"prov-{uuid.uuid4().hex[:10]}"

    def add(self, key_id: str, days_ago: int = 0, source: str = "gateway", **measures: int) -> None:
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.keys.append(key_id)
        columns = ", ".join(measures)
        values = ", ".join(["%s"] * len(measures))
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO usage_rollup_1d (bucket, source, org_id, virtual_key_id, provider, model, {columns})"
                f" VALUES (%s, %s, %s, %s, %s, 'm', {values})",
                (today - dt.timedelta(days=days_ago), source, uid(), key_id, self.provider, *measures.values()))

    def remove(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM usage_rollup_1d WHERE virtual_key_id = ANY(%s::uuid[])", (self.keys,))


@pytest.fixture
def rollups(db_url: str) -> Iterator[Rollups]:
    r = Rollups(db_url)
    yield r
    r.remove()


async def test_outage_fail_modes_and_rebuild_after_restart(
    private_valkey: PrivateValkey, pool: PgPool, rollups: Rollups,
) -> None:
    closed_key, open_key, provider_id = uid(), uid(), uid()
    closed = make_policy(subject=closed_key, hard_limit=100, fail_mode="closed")
    opened = make_policy(subject=open_key, unit="total_tokens", calendar_period="month", hard_limit=10_000,
                         fail_mode="open")
    provider = make_policy(axis="provider", subject=provider_id, unit="cost_micro_usd", calendar_period="week",
                           hard_limit=10**9, fail_mode="open")
    rollups.add(closed_key, requests=7, errors=1, blocked=1, input_tokens=100, output_tokens=50, cost_micro_usd=1234)
    rollups.add(open_key, requests=3, input_tokens=1000, output_tokens=500, cost_micro_usd=766)
    rollups.add(closed_key, days_ago=40, requests=1000)  # in no current window
    rollups.add(closed_key, source="proxy", requests=1000)  # not gateway traffic
    snapshot = QuotaSnapshot((closed, opened, provider), provider_names={provider_id: rollups.provider})
    s_closed = QuotaSubject(closed_key, None, provider_id=provider_id)
    s_open = QuotaSubject(open_key, None, provider_id=provider_id)
    est = Estimate(10, 10, 3)
    async with ValkeyClient(private_valkey.url, connect_timeout=1, command_timeout=1) as valkey:
        engine = QuotaEngine(valkey, write_behind=False, snapshot=snapshot, rebuilder=pg_rebuilder(pool),
                             prefix="nexus:quota:")
        first = await engine.reserve(s_closed, est)  # no sentinel yet: rebuilt from the rollups first
        assert [u.used for u in first.usage] == [5 + 1, 2000 + 3]
        assert [u.used for u in (await engine.reserve(s_open, est)).usage] == [1500 + 20, 2006]
        assert engine.state.ok

        private_valkey.stop()
        with pytest.raises(QuotaUnavailable) as info:
            await engine.reserve(s_closed, est)
        err = info.value.gateway_error()
        assert (err.status, err.headers) == (503, ((b"retry-after", b"1"),))
        assert not engine.state.ok and "failing closed" in engine.state.detail
        bypass = await engine.reserve(s_open, est)  # counted in process, from the last values read
        assert bypass.bypassed and engine.bypassed == 1 and engine.rejected == 1
        assert [u.used for u in bypass.usage] == [1500 + 40, 2006 + 3]
        assert bypass.headers() == [
            (b"x-nexus-quota-used", b"1540"), (b"x-nexus-quota-limit", b"10000"),
            (b"x-nexus-quota-warning", b"quota counters unavailable: counted by this gateway process only")]
        assert "failing open" in engine.state.detail
        await engine.reconcile(bypass, None)
        await engine.reconcile(first, None)  # cannot reach Valkey: kept for the flusher
        # Per counter: the local charges (net 0 after the refund) and the refunds of `first`, the provider's merged.
        assert engine.pending == 3

        private_valkey.start()  # empty: every counter is gone
        again = await engine.reserve(s_closed, est)
        assert [u.used for u in again.usage] == [5 + 1, 2000 + 3]  # rebuilt, not restarted from zero
        assert engine.state.ok
        await engine.flush()  # the refund of a reservation made before the loss is dropped, not applied
        assert engine.pending == 0
        assert [u.used for u in (await engine.reserve(s_closed, est)).usage] == [5 + 2, 2000 + 6]


async def test_unreadable_rollups_fall_back_to_the_fail_mode(valkey: ValkeyClient, prefix: str) -> None:
    key = uid()
    dead = PgPool("postgresql://127.0.0.1:1/nexus?sslmode=disable", connect_timeout=1, name="dead")
    snapshot = QuotaSnapshot((make_policy(subject=key, hard_limit=5),))
    engine = QuotaEngine(valkey, write_behind=False, snapshot=snapshot, rebuilder=pg_rebuilder(dead), prefix=prefix)
    started = time.monotonic()
    with pytest.raises(QuotaUnavailable):
        await engine.reserve(QuotaSubject(key, None), Estimate(1, 1))
    assert time.monotonic() - started < 5
    assert "usage rollups" in engine.state.detail


def test_rollup_rows_reach_the_same_counters_as_live_traffic() -> None:
    now = dt.datetime(2025, 3, 12, 15, tzinfo=dt.UTC).timestamp()
    day, week = dt.datetime(2025, 3, 12, tzinfo=dt.UTC).timestamp(), dt.datetime(2025, 3, 10, tzinfo=dt.UTC).timestamp()
    org_day = make_policy(id="org", axis="organization", subject="root", unit="total_tokens")
    per_model = make_policy(id="model", axis="model", calendar_period="week", unit="cost_micro_usd")
    sliding = make_policy(id="rpm", window_kind="sliding", window_seconds=60)  # not rebuilt
    snapshot = QuotaSnapshot((org_day, per_model, sliding), org_paths={"root": "acme", "sales": "acme/sales"})
    rows = [RollupRow(day, "sales", None, "k1", None, "p", "m1", 2, 10, 20, 5),
            RollupRow(week, "sales", None, "k1", None, "p", "m1", 1, 100, 200, 50),  # earlier this week
            RollupRow(day, "root", None, "k2", None, "p", "m2", 1, 1, 1, 7)]
    assert counters_from_rollups(snapshot, rows, now, "x:") == {
        "x:c:org:root:d20250312": (10 + 20 + 1 + 1, 9 * 3600 * 1000 + 3_900_000),
        "x:c:model:m1:w20250310": (5 + 50, (4 * 86400 + 9 * 3600) * 1000 + 3_900_000),
        "x:c:model:m2:w20250310": (7, (4 * 86400 + 9 * 3600) * 1000 + 3_900_000),
    }
