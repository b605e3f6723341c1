"""Quota counters rebuilt from PostgreSQL usage rollups after Valkey lost them.

The engine notices a loss when the sentinel key (``policy.sentinel_key``) is
missing — a restart without persistence, a FLUSHALL, a failover to an empty
replica — and calls a rebuilder once across all gateways (under a Valkey
lock), before any counter is touched again.  :func:`pg_rebuilder` is the one
the gateway uses: it reads ``usage_rollup_1d`` (gateway traffic since the
earliest current calendar window, grouped per subject and per window start),
runs every row through the same ``QuotaSnapshot.applicable`` as live traffic
— so the rebuilt counters are exactly the keys reservations use — and SETs
each calendar counter with its window's expiry.

What is not restored, by design:

- sliding windows (RPM/TPM, "last hour"): they restart empty; they cover at
  most the recent minutes/hours and rollups are too coarse to refill them;
- usage not yet in the rollups: in-flight requests and events still on their
  way through JetStream to the writer (seconds, normally);
- units: ``requests`` counts successful requests (errors and blocks are never
  charged), tokens and cost as the rollups sum them.

Counters are SET, not incremented: no reservation touches them while the
sentinel is missing, so a rebuild that dies half-way is simply redone.

Errors: a database failure raises :class:`RebuildError`; Valkey failures
propagate as ``ValkeyConnectionError`` / ``ValkeyError``.  The engine turns
either into "counters unavailable" (each policy's fail mode).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import attrs
import psycopg

from nexus.gateway.quota.policy import QuotaSnapshot, QuotaSubject, calendar_window, locate
from nexus.net.resp.client import ValkeyClient, ValkeyError
from nexus.storage.pgpool import PgPool

Rebuilder = Callable[[ValkeyClient, QuotaSnapshot, float, str], Awaitable[int]]
"""``(valkey, snapshot, now, prefix) -> counters written``."""

_BATCH: Final = 500

# One row per subject combination and window start: the latest current window start at or before the bucket,
# so a row counts for every policy whose window started at or before that start.
_QUERY: Final = (
    "SELECT (SELECT max(s) FROM unnest(%(starts)s::float8[]) AS s WHERE s <= extract(epoch FROM r.bucket)),"
    " r.org_id::text, r.project_id::text, r.virtual_key_id::text, r.user_id::text, r.provider, r.model,"
    " sum(greatest(r.requests - r.errors - r.blocked, 0))::bigint, sum(r.input_tokens)::bigint,"
    " sum(r.output_tokens)::bigint, sum(r.cost_micro_usd)::bigint"
    " FROM usage_rollup_1d r WHERE r.source = 'gateway' AND r.bucket >= to_timestamp(%(earliest)s)"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7"
)


class RebuildError(Exception):
    """The rollups could not be read."""


@attrs.frozen(slots=True)
class RollupRow:
    since: float
    org_id: str | None
    project_id: str | None
    key_id: str | None
    user_id: str | None
    provider: str | None
    model: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micro: int


def window_starts(snapshot: QuotaSnapshot, now: float) -> list[float]:
    """The start of every calendar window current at ``now`` that some policy uses, ascending."""
    periods = {p.calendar_period for p in snapshot.policies if p.calendar_period is not None}
    return sorted(calendar_window(period, now)[1] for period in periods)


def counters_from_rollups(
    snapshot: QuotaSnapshot, rows: Iterable[RollupRow], now: float, prefix: str
) -> dict[str, tuple[int, int]]:
    """Counter key → (value, expiry in ms) for every calendar counter the rows add to (pure)."""
    out: dict[str, tuple[int, int]] = {}
    for row in rows:
        provider_id = snapshot.provider_id(row.provider) if row.provider is not None else None
        subject = QuotaSubject(row.key_id, row.org_id, row.project_id, row.user_id, provider_id, row.model)
        for a in snapshot.applicable(subject, now):
            period = a.policy.calendar_period
            if period is None or row.since < calendar_window(period, now)[1]:
                continue
            unit = a.policy.unit
            amount = (row.requests if unit == "requests" else row.input_tokens if unit == "input_tokens"
                      else row.output_tokens if unit == "output_tokens"
                      else row.input_tokens + row.output_tokens if unit == "total_tokens" else row.cost_micro)
            loc = locate(a, now, prefix)
            before = out.get(loc.key)
            out[loc.key] = ((before[0] if before else 0) + amount, loc.expire_ms)
    return out


async def write_counters(valkey: ValkeyClient, counters: dict[str, tuple[int, int]]) -> None:
    items = list(counters.items())
    for i in range(0, len(items), _BATCH):
        replies = await valkey.pipeline([("SET", key, value, "PX", ttl) for key, (value, ttl) in items[i:i + _BATCH]])
        for reply in replies:
            if isinstance(reply, ValkeyError):
                raise reply


def pg_rebuilder(pool: PgPool) -> Rebuilder:
    """The rebuilder the gateway passes to ``QuotaEngine``."""

    async def rebuild(valkey: ValkeyClient, snapshot: QuotaSnapshot, now: float, prefix: str) -> int:
        starts = window_starts(snapshot, now)
        if not starts:
            return 0
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(_QUERY, {"starts": starts, "earliest": starts[0]})
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise RebuildError(f"cannot read usage rollups: {exc}") from exc
        counters = counters_from_rollups(snapshot, (RollupRow(*row) for row in rows if row[0] is not None), now,
                                         prefix)
        await write_counters(valkey, counters)
        return len(counters)

    return rebuild
