"""GET /v1/usage: a key's own consumption and remaining budget under every policy that applies to it.

``read_usage`` reads the counters (one pipelined round trip) and hands them to
``build_usage``, which is pure and shapes the JSON body::

    {"object": "usage", "key_id": "…", "policies": [
        {"policy": "team daily", "policy_id": "…", "axis": "project", "subject": "…", "unit": "total_tokens",
         "window": {"kind": "calendar", "period": "day", "id": "d20250301", "resets_at": "2025-03-02T00:00:00Z"},
         "used": 1200, "soft_limit": 800, "hard_limit": 2000, "remaining": 800, "soft_limit_reached": true},
        {"policy": "key rpm", …, "window": {"kind": "sliding", "seconds": 60}, …}]}

Without a model in the subject, provider and model policies are not listed
(they depend on where a request is routed).

Errors: Valkey unreachable raises ``QuotaUnavailable`` (the gateway answers
503); nothing else.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import attrs

from nexus.gateway.quota.engine import PREFIX, QuotaUnavailable
from nexus.gateway.quota.policy import Applied, FailMode, Location, QuotaSnapshot, QuotaSubject, locate
from nexus.net.resp.client import ValkeyClient, ValkeyConnectionError, ValkeyError


@attrs.frozen(slots=True)
class PolicyUsage:
    applied: Applied
    location: Location
    used: int


def used_of(location: Location, reply: Any) -> int:
    """A counter's value from its GET (calendar) or HGETALL (sliding) reply."""
    if not location.field:
        return int(reply) if reply is not None else 0
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[0::2], reply[1::2], strict=True)
    oldest = location.bucket - location.buckets + 1
    return sum(int(value) for field, value in pairs if int(field) >= oldest)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_usage(key_id: str | None, rows: Sequence[PolicyUsage]) -> dict[str, Any]:
    policies: list[dict[str, Any]] = []
    for row in rows:
        a, loc, used = row.applied, row.location, row.used
        p = a.policy
        window: dict[str, Any]
        if loc.resets_at is not None:
            window = {"kind": "calendar", "period": p.calendar_period, "id": loc.window,
                      "resets_at": _iso(loc.resets_at)}
        else:
            window = {"kind": "sliding", "seconds": p.window_seconds}
        policies.append({
            "policy": p.name, "policy_id": p.id, "axis": p.axis, "subject": a.subject, "unit": p.unit,
            "window": window, "used": used, "soft_limit": a.soft, "hard_limit": a.hard,
            "remaining": max(a.hard - used, 0) if a.hard is not None else None,
            "soft_limit_reached": a.soft is not None and used >= a.soft,
        })
    return {"object": "usage", "key_id": key_id, "policies": policies}


async def read_usage(
    valkey: ValkeyClient, snapshot: QuotaSnapshot, subject: QuotaSubject, *, prefix: str = PREFIX,
    now: float | None = None, key_fail_mode: FailMode = "closed",
) -> dict[str, Any]:
    """The /v1/usage body for ``subject`` (``policy.subject_for(key)``, no route)."""
    now = time.time() if now is None else now
    applied = snapshot.applicable(subject, now, key_fail_mode)
    locations = [locate(a, now, prefix) for a in applied]
    replies: list[Any] = []
    if locations:
        try:
            replies = await valkey.pipeline([("HGETALL", loc.key) if loc.field else ("GET", loc.key)
                                             for loc in locations])
        except ValkeyConnectionError as exc:
            raise QuotaUnavailable(f"quota counters are unavailable: {exc}") from exc
        for reply in replies:
            if isinstance(reply, ValkeyError):
                raise QuotaUnavailable(f"quota counters are unreadable: {reply}")
    rows = [PolicyUsage(a, loc, used_of(loc, reply)) for a, loc, reply in zip(applied, locations, replies, strict=True)]
    return build_usage(subject.key_id, rows)
