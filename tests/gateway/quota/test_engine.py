"""QuotaEngine against the real Valkey: windows, key limits, atomicity across clients, the write-behind
overshoot bound, soft-limit alerts, hard-limit answers and reconciliation."""

from __future__ import annotations

import random

import pytest
import redis
import trio

from nexus.devstack.services import free_port
from nexus.gateway.errors import error_response
from nexus.gateway.quota.engine import NO_QUOTA, QuotaEngine, QuotaExceeded, QuotaUnavailable
from nexus.gateway.quota.policy import CALENDAR_GRACE_MS, Estimate, QuotaPolicy, QuotaSnapshot
from nexus.net.resp.client import ValkeyClient
from nexus.wire.usage import Usage

from .conftest import Clock, epoch, make_policy, make_subject

EST = Estimate(10, 10, 1)


def engine_for(valkey: ValkeyClient, prefix: str, *policies: QuotaPolicy, **kwargs: object) -> QuotaEngine:
    kwargs.setdefault("write_behind", False)
    return QuotaEngine(valkey, snapshot=QuotaSnapshot(policies, org_paths={"root": "r", "a": "r/a", "b": "r/b"}),
                       prefix=prefix, **kwargs)  # type: ignore[arg-type]


def counter(checker: redis.Redis, prefix: str, p: QuotaPolicy, subject: str, window: str) -> int:
    value = checker.get(f"{prefix}c:{p.id}:{subject}:{window}")
    return int(value) if value is not None else 0


async def test_no_policy_no_round_trip(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    engine = engine_for(valkey, prefix)
    assert await engine.reserve(make_subject(), EST) is NO_QUOTA
    assert NO_QUOTA.headers() == []
    await engine.reconcile(NO_QUOTA, None)
    assert list(checker.scan_iter(match=prefix + "*")) == []


async def test_prepare_creates_the_counters_epoch(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    engine = engine_for(valkey, prefix)
    assert checker.get(prefix + "sentinel") is None
    assert await engine.prepare()
    epoch_value = checker.get(prefix + "sentinel")
    assert epoch_value is not None
    assert await engine.prepare() and checker.get(prefix + "sentinel") == epoch_value
    async with ValkeyClient(f"redis://127.0.0.1:{free_port()}", connect_timeout=0.5) as dead:
        assert not await engine_for(dead, prefix).prepare()


async def test_no_rebuild_before_the_policies_are_loaded(valkey: ValkeyClient, prefix: str,
                                                        checker: redis.Redis) -> None:
    engine = QuotaEngine(valkey, write_behind=False, prefix=prefix)
    with pytest.raises(QuotaUnavailable):  # the key's RPM fails closed; counters are not reset blindly
        await engine.reserve(make_subject(rpm=5), EST)
    assert not await engine.prepare() and checker.get(prefix + "sentinel") is None
    engine.snapshot = QuotaSnapshot()
    assert (await engine.reserve(make_subject(rpm=5), EST)).usage[0].used == 1


async def test_calendar_day_window_and_rollover(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    s = make_subject()
    p = make_policy(subject=s.key_id, hard_limit=3)
    clock = Clock(epoch("2025-03-31T23:59:58"))
    engine = engine_for(valkey, prefix, p, clock=clock)
    assert [(await engine.reserve(s, EST)).usage[0].used for _ in range(3)] == [1, 2, 3]
    with pytest.raises(QuotaExceeded) as info:
        await engine.reserve(s, EST)
    exc = info.value
    assert (exc.axis, exc.policy, exc.limit, exc.used, exc.retry_after, exc.window) == \
        ("virtual_key", p.name, 3, 3, 2.0, "day")
    assert counter(checker, prefix, p, s.key_id or "", "d20250331") == 3  # the refusal added nothing
    assert 0 < checker.pttl(f"{prefix}c:{p.id}:{s.key_id}:d20250331") <= 2000 + CALENDAR_GRACE_MS
    clock.now = epoch("2025-04-01T00:00:01")
    r = await engine.reserve(s, EST)
    assert (r.usage[0].used, r.usage[0].window) == (1, "d20250401")


async def test_month_window_rolls_over_at_month_end(valkey: ValkeyClient, prefix: str) -> None:
    s = make_subject()
    p = make_policy(subject=s.key_id, calendar_period="month", unit="cost_micro_usd", hard_limit=2)
    clock = Clock(epoch("2025-02-28T23:00:00"))
    engine = engine_for(valkey, prefix, p, clock=clock)
    await engine.reserve(s, Estimate(1, 1, 2))
    with pytest.raises(QuotaExceeded) as info:
        await engine.reserve(s, Estimate(1, 1, 1))
    assert info.value.retry_after == 3600
    clock.now = epoch("2025-03-01T00:00:00")
    assert (await engine.reserve(s, Estimate(1, 1, 2))).usage[0].window == "m202503"


async def test_key_rpm_is_a_sliding_minute(valkey: ValkeyClient, prefix: str) -> None:
    s = make_subject(rpm=3)
    clock = Clock(1_000_000.5)
    engine = engine_for(valkey, prefix, clock=clock)
    for _ in range(3):
        await engine.reserve(s, EST)
    clock.now += 30
    with pytest.raises(QuotaExceeded) as info:
        await engine.reserve(s, EST)
    assert (info.value.axis, info.value.policy, info.value.limit) == ("virtual_key", "key rpm", 3)
    assert info.value.retry_after == pytest.approx(29.5)  # bucket 1_000_000 leaves the window at 1_000_060 s
    clock.now += 30
    assert (await engine.reserve(s, EST)).usage[0].used == 1


async def test_key_tpm_retry_after_waits_for_enough_buckets(valkey: ValkeyClient, prefix: str) -> None:
    s = make_subject(tpm=1000)
    clock = Clock(2_000_000.0)
    engine = engine_for(valkey, prefix, clock=clock)
    await engine.reserve(s, Estimate(200, 200))
    clock.now += 10
    await engine.reserve(s, Estimate(200, 200))
    clock.now += 10
    for need, wait in ((500, 40.0), (700, 50.0), (1200, 60.0)):
        with pytest.raises(QuotaExceeded) as info:
            await engine.reserve(s, Estimate(need, 0))
        assert (info.value.policy, info.value.used, info.value.retry_after) == ("key tpm", 800, wait)
    assert "alone exceeds" in str(info.value)


async def test_tpm_reconciliation_gives_budget_back(valkey: ValkeyClient, prefix: str) -> None:
    s = make_subject(tpm=1000)
    engine = engine_for(valkey, prefix)
    first = await engine.reserve(s, Estimate(300, 300))
    with pytest.raises(QuotaExceeded):
        await engine.reserve(s, Estimate(300, 300))
    await engine.reconcile(first, Usage(prompt_tokens=100, completion_tokens=100))
    assert (await engine.reserve(s, Estimate(300, 300))).usage[0].used == 800


async def test_ancestor_org_budget_is_shared_by_its_subtree(valkey: ValkeyClient, prefix: str) -> None:
    root = make_policy(axis="organization", subject="root", hard_limit=2)
    engine = engine_for(valkey, prefix, root)
    in_a, in_b = make_subject(org_id="a"), make_subject(org_id="b")
    await engine.reserve(in_a, EST)
    r = await engine.reserve(in_b, EST)
    assert [(u.axis, u.subject, u.used) for u in r.usage] == [("organization", "root", 2)]
    with pytest.raises(QuotaExceeded) as info:
        await engine.reserve(in_a, EST)
    assert (info.value.axis, info.value.subject) == ("organization", "root")


@pytest.mark.parametrize("write_behind", [False, True])
async def test_last_unit_is_granted_once_across_clients(
    valkey: ValkeyClient, valkey2: ValkeyClient, prefix: str, checker: redis.Redis, write_behind: bool,
) -> None:
    s = make_subject()
    p = make_policy(subject=s.key_id, hard_limit=50)
    engines = [engine_for(v, prefix, p, write_behind=write_behind) for v in (valkey, valkey2)]
    outcomes: list[bool] = []

    async def one(engine: QuotaEngine) -> None:
        try:
            await engine.reserve(s, EST)
        except QuotaExceeded:
            outcomes.append(False)
        else:
            outcomes.append(True)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, engines[i % 2])
    assert (outcomes.count(True), outcomes.count(False)) == (50, 150)
    window = next(iter(checker.scan_iter(match=f"{prefix}c:*"))).decode().rsplit(":", 1)[1]
    assert counter(checker, prefix, p, s.key_id or "", window) == 50


@pytest.mark.parametrize("write_behind", [True, False])
async def test_overshoot_stays_within_the_stated_bound(
    valkey: ValkeyClient, valkey2: ValkeyClient, prefix: str, checker: redis.Redis, write_behind: bool,
) -> None:
    """Requests that use 30 tokens more than they reserve, racing the limit from two clients.

    engine.py: U <= H + (A - E) * (#in flight at the last grant + #reconciled in the D before it), with
    D = flush interval + one flush (write-behind) or one reconcile call (synchronous); 50 ms is generous
    for a flush or a call here.
    """
    limit, estimate, actual, interval = 5000, 100, 130, 0.25
    s = make_subject()
    p = make_policy(subject=s.key_id, unit="total_tokens", hard_limit=limit)
    engines = [engine_for(v, prefix, p, write_behind=write_behind, flush_interval=interval)
               for v in (valkey, valkey2)]
    granted: list[float] = []
    reconciled: list[float] = []
    rng = random.Random(7)

    async def one(engine: QuotaEngine, delay: float, work: float) -> None:
        await trio.sleep(delay)
        try:
            r = await engine.reserve(s, Estimate(estimate // 2, estimate // 2))
        except QuotaExceeded:
            return
        granted.append(trio.current_time())
        await trio.sleep(work)
        await engine.reconcile(r, Usage(prompt_tokens=actual // 2, completion_tokens=actual // 2))
        reconciled.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for engine in engines:
            await nursery.start(engine.run)
        async with trio.open_nursery() as requests:
            for i in range(120):
                requests.start_soon(one, engines[i % 2], rng.uniform(0, 1.5), rng.uniform(0.02, 0.2))
        for engine in engines:
            await engine.flush()
        nursery.cancel_scope.cancel()
    window = next(iter(checker.scan_iter(match=f"{prefix}c:*"))).decode().rsplit(":", 1)[1]
    used = counter(checker, prefix, p, s.key_id or "", window)
    assert 0 < len(granted) < 120
    assert used == len(granted) * actual  # every reconciliation reached Valkey exactly once
    last = max(granted)
    d = interval + 0.05 if write_behind else 0.05
    in_flight = sum(1 for t in reconciled if t > last)
    pending = sum(1 for t in reconciled if last - d < t <= last)
    assert used <= limit + (actual - estimate) * (in_flight + pending)


async def test_soft_limit_alert_fires_once_per_window(
    valkey: ValkeyClient, valkey2: ValkeyClient, prefix: str,
) -> None:
    s = make_subject()
    p = make_policy(subject=s.key_id, soft_limit=3, hard_limit=100)
    clock = Clock(epoch("2025-03-31T12:00:00"))
    engines = [engine_for(v, prefix, p, clock=clock) for v in (valkey, valkey2)]
    results = [await engines[i % 2].reserve(s, EST) for i in range(6)]
    assert [len(r.crossings) for r in results] == [0, 0, 1, 0, 0, 0]
    c = results[2].crossings[0]
    assert (c.policy, c.axis, c.subject, c.used, c.soft, c.window) == (p.name, "virtual_key", s.key_id, 3, 3,
                                                                       "d20250331")
    assert c.dedup_key == f"quota.soft:{p.id}:{s.key_id}:d20250331"
    warned = [any(name == b"x-nexus-quota-warning" for name, _ in r.headers()) for r in results]
    assert warned == [False, False, True, True, True, True]
    clock.now += 86400  # the next day: a new window, a new alert, once however many race for it
    crossings: list[int] = []

    async def one(i: int) -> None:
        r = await engines[i % 2].reserve(s, EST)
        crossings.append(len(r.crossings))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
    assert sorted(crossings) == [0] * 19 + [1]


async def test_hard_limit_answer_names_the_axis(valkey: ValkeyClient, prefix: str) -> None:
    s = make_subject(org_id="a")
    org = make_policy(axis="organization", subject="a", hard_limit=100, name="org budget")
    key = make_policy(subject=s.key_id, hard_limit=2, soft_limit=1, name="key budget")
    engine = engine_for(valkey, prefix, org, key)
    r = await engine.reserve(s, EST)
    assert r.headers() == [(b"x-nexus-quota-used", b"1"), (b"x-nexus-quota-limit", b"2"),
                           (b"x-nexus-quota-warning", b"soft limit reached: key budget: 1/1 requests per day "
                                                      b"(virtual_key)")]
    await engine.reserve(s, EST)
    with pytest.raises(QuotaExceeded) as info:
        await engine.reserve(s, EST)
    err = info.value.gateway_error()
    assert (err.kind, err.status) == ("rate_limited", 429)
    assert "axis virtual_key" in err.message and "'key budget'" in err.message
    resp = error_response("anthropic", err)
    assert resp.status == 429
    assert (b"retry-after", str(info.value.retry_after_seconds).encode()) in resp.headers
    assert isinstance(resp.body, bytes) and b"axis virtual_key" in resp.body


async def test_reconciliation_charges_actuals_and_refunds_failures(
    valkey: ValkeyClient, prefix: str, checker: redis.Redis,
) -> None:
    s = make_subject()
    policies = (make_policy(subject=s.key_id, unit="total_tokens"), make_policy(subject=s.key_id,
                unit="cost_micro_usd"), make_policy(subject=s.key_id, unit="requests"))
    clock = Clock(epoch("2025-05-05T05:05:05"))
    sync = engine_for(valkey, prefix, *policies, clock=clock)
    behind = engine_for(valkey, prefix, *policies, clock=clock, write_behind=True)

    def values() -> list[int]:
        return [counter(checker, prefix, p, s.key_id or "", "d20250505") for p in policies]

    failed = await sync.reserve(s, Estimate(100, 200, 50))
    assert values() == [300, 50, 1]
    await sync.reconcile(failed, None)
    assert values() == [0, 0, 0]
    done = await sync.reserve(s, Estimate(100, 200, 50))
    await sync.reconcile(done, Usage(prompt_tokens=150, completion_tokens=250), 80)
    assert values() == [400, 80, 1]
    later = await behind.reserve(s, Estimate(100, 200, 50))
    await behind.reconcile(later, Usage(prompt_tokens=10, completion_tokens=10), 5)
    gone = await behind.reserve(s, Estimate(100, 200, 50))
    await behind.reconcile(gone, None)
    assert values() == [1000, 180, 3] and behind.pending == 3  # deferred
    await behind.flush()
    assert values() == [420, 85, 2] and behind.pending == 0


async def test_reconciliation_of_a_lost_epoch_is_dropped(
    valkey: ValkeyClient, prefix: str, checker: redis.Redis,
) -> None:
    s = make_subject()
    p = make_policy(subject=s.key_id)
    engine = engine_for(valkey, prefix, p)
    old = await engine.reserve(s, EST)
    checker.delete(*checker.scan_iter(match=prefix + "*"))  # Valkey lost everything
    fresh = await engine.reserve(s, EST)  # counters restart (no rebuilder)
    assert fresh.usage[0].used == 1 and fresh.epoch != old.epoch
    await engine.reconcile(old, None)
    assert (await engine.reserve(s, EST)).usage[0].used == 2


async def test_run_flushes_when_cancelled(valkey: ValkeyClient, prefix: str, checker: redis.Redis) -> None:
    s = make_subject()
    p = make_policy(subject=s.key_id, unit="output_tokens")
    clock = Clock(epoch("2025-06-01T10:00:00"))
    engine = engine_for(valkey, prefix, p, clock=clock, write_behind=True, flush_interval=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        r = await engine.reserve(s, Estimate(0, 100))
        await engine.reconcile(r, Usage(completion_tokens=40))
        assert engine.pending == 1
        nursery.cancel_scope.cancel()
    assert engine.pending == 0
    assert counter(checker, prefix, p, s.key_id or "", "d20250601") == 40


async def test_fail_open_counts_locally_and_replays_when_valkey_returns(
    valkey: ValkeyClient, prefix: str, checker: redis.Redis,
) -> None:
    """Valkey unreachable (a refused port) under a fail-open policy: the hard limit still holds, counted in
    process from the last value read; what was counted reaches Valkey once it answers again (same epoch)."""
    s = make_subject()
    p = make_policy(subject=s.key_id, hard_limit=5, fail_mode="open")
    clock = Clock(epoch("2025-07-01T12:00:00"))
    engine = engine_for(valkey, prefix, p, clock=clock)
    for _ in range(3):
        await engine.reserve(s, EST)
    async with ValkeyClient(f"redis://127.0.0.1:{free_port()}", connect_timeout=0.5) as dead:
        engine.valkey = dead
        local = [await engine.reserve(s, EST) for _ in range(2)]
        assert [r.usage[0].used for r in local] == [4, 5] and all(r.bypassed for r in local)
        assert local[1].headers() == [
            (b"x-nexus-quota-used", b"5"), (b"x-nexus-quota-limit", b"5"),
            (b"x-nexus-quota-warning", b"quota counters unavailable: counted by this gateway process only")]
        with pytest.raises(QuotaExceeded) as info:
            await engine.reserve(s, EST)
        assert info.value.axis == "virtual_key" and info.value.retry_after_seconds == 12 * 3600
        assert not engine.state.ok and "failing open" in engine.state.detail and engine.bypassed == 2
        await engine.reconcile(local[0], None)  # a failure gives its unit back, locally too
        assert (await engine.reserve(s, EST)).usage[0].used == 5
        assert counter(checker, prefix, p, s.key_id or "", "d20250701") == 3  # nothing reached Valkey yet
        engine.valkey = valkey
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            for _ in range(100):  # the run task notices Valkey is back by itself, no request needed
                if engine.state.ok and not engine.pending:
                    break
                await trio.sleep(0.05)
            else:
                raise AssertionError(f"still down or pending: {engine.state}, {engine.pending}")
            nursery.cancel_scope.cancel()
    assert counter(checker, prefix, p, s.key_id or "", "d20250701") == 5  # 3 + 3 counted locally - 1 refunded
    with pytest.raises(QuotaExceeded):
        await engine.reserve(s, EST)


async def test_fail_closed_answers_503_and_keys_without_policies_pass(prefix: str) -> None:
    s = make_subject()
    closed = make_policy(subject=s.key_id, hard_limit=5)
    async with ValkeyClient(f"redis://127.0.0.1:{free_port()}", connect_timeout=0.5) as dead:
        engine = engine_for(dead, prefix, closed)
        with trio.fail_after(5), pytest.raises(QuotaUnavailable) as info:
            await engine.reserve(s, EST)
        err = info.value.gateway_error()
        assert (err.status, err.headers) == (503, ((b"retry-after", b"1"),))
        assert "failing closed" in engine.state.detail and engine.rejected == 1
        assert await engine.reserve(make_subject(), EST) is NO_QUOTA
        # The key's own RPM follows on_valkey_down (fail_mode_default).
        with pytest.raises(QuotaUnavailable):
            await engine.reserve(make_subject(rpm=10), EST)
        opened = engine_for(dead, prefix, fail_mode_default="open")
        assert (await opened.reserve(make_subject(rpm=10), EST)).bypassed
