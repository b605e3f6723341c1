"""GET /v1/usage: what a key has used and has left under each policy, read from the live counters."""

from __future__ import annotations

import pytest

from nexus.devstack.services import free_port
from nexus.gateway.quota.engine import QuotaEngine, QuotaUnavailable
from nexus.gateway.quota.policy import Estimate, Location, QuotaSnapshot, QuotaSubject
from nexus.gateway.quota.usage import read_usage, used_of
from nexus.net.resp.client import ValkeyClient

from .conftest import Clock, epoch, make_policy, make_subject


async def test_usage_lists_each_policy_with_what_is_left(valkey: ValkeyClient, prefix: str) -> None:
    s = make_subject(rpm=10)
    daily = make_policy(axis="project", subject=s.project_id, unit="total_tokens", soft_limit=50, hard_limit=100)
    per_model = make_policy(axis="model", subject=s.model, hard_limit=5)
    snap = QuotaSnapshot((daily, per_model))
    clock = Clock(epoch("2025-03-31T10:00:00"))
    engine = QuotaEngine(valkey, write_behind=False, snapshot=snap, prefix=prefix, clock=clock)
    await engine.reserve(s, Estimate(30, 30))
    await engine.reserve(s, Estimate(10, 0))
    key_only = QuotaSubject(s.key_id, s.org_id, s.project_id, s.user_id, rpm=s.rpm)
    body = await read_usage(valkey, snap, key_only, prefix=prefix, now=clock.now)
    assert body == {"object": "usage", "key_id": s.key_id, "policies": [
        {"policy": daily.name, "policy_id": daily.id, "axis": "project", "subject": s.project_id,
         "unit": "total_tokens", "used": 70, "soft_limit": 50, "hard_limit": 100, "remaining": 30,
         "soft_limit_reached": True,
         "window": {"kind": "calendar", "period": "day", "id": "d20250331", "resets_at": "2025-04-01T00:00:00Z"}},
        {"policy": "key rpm", "policy_id": "key-rpm", "axis": "virtual_key", "subject": s.key_id,
         "unit": "requests", "used": 2, "soft_limit": None, "hard_limit": 10, "remaining": 8,
         "soft_limit_reached": False, "window": {"kind": "sliding", "seconds": 60}},
    ]}
    later = await read_usage(valkey, snap, key_only, prefix=prefix, now=clock.now + 61)
    assert [p["used"] for p in later["policies"]] == [70, 0]  # the minute has slid past
    with_model = await read_usage(valkey, snap, s, prefix=prefix, now=clock.now)
    assert [p["policy"] for p in with_model["policies"]] == [daily.name, per_model.name, "key rpm"]
    assert with_model["policies"][1]["used"] == 2


async def test_usage_without_valkey_is_unavailable() -> None:
    async with ValkeyClient(f"redis://127.0.0.1:{free_port()}", connect_timeout=0.5) as dead:
        with pytest.raises(QuotaUnavailable):
            await read_usage(dead, QuotaSnapshot(), make_subject(rpm=1))


def test_sliding_counters_read_in_either_reply_shape() -> None:
    loc = Location("k", "105", "a", "s1", None, 0, 0, bucket=105, buckets=5, width_ms=1000)
    assert used_of(loc, [b"100", b"7", b"101", b"1", b"105", b"2"]) == 3  # bucket 100 has left the window
    assert used_of(loc, {b"101": b"1", b"104": b"4"}) == 5
    assert used_of(Location("k", "", "a", "d", 1.0, 0, 0), None) == 0
