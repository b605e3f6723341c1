"""Load the quota snapshot (policies, live overrides, the org tree, provider names) from PostgreSQL.

``load_snapshot`` borrows one pool connection for four reads and builds an
immutable ``QuotaSnapshot``; the caller swaps it into ``QuotaEngine.snapshot``
at start and whenever a ``quota_policy`` / ``quota_override`` / organization
change signal arrives.  Overrides that have expired by load time are left out;
ones that expire later are dropped per request by the snapshot itself.

Errors: ``psycopg.Error`` (``PoolError`` included) propagates — the caller
keeps the snapshot it has.  A row the records refuse (cannot happen with the
migration's CHECKs) raises ``cattrs`` ``ClassValidationError``.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg.rows import dict_row

from nexus.gateway.quota.policy import QuotaSnapshot, override_from_row, policy_from_row
from nexus.storage.pgpool import PgPool

_SUBJECT: Final = "COALESCE({t}org_id::text, {t}project_id::text, {t}user_id::text, {t}virtual_key_id::text, " \
                  "{t}provider_id::text, {t}model_code)"

POLICIES: Final = (
    "SELECT id::text AS id, name, axis, unit, window_kind, " + _SUBJECT.format(t="") + " AS subject,"
    " scope_org_id::text AS scope_org_id, calendar_period, window_seconds, soft_limit, hard_limit, hard_action,"
    " fail_mode FROM quota_policy WHERE enabled ORDER BY created_at, id"
)
OVERRIDES: Final = (
    "SELECT o.id::text AS id, o.quota_policy_id::text AS policy_id, " + _SUBJECT.format(t="o.") + " AS subject,"
    " o.soft_limit, o.hard_limit, extract(epoch FROM o.expires_at)::float8 AS expires_at"
    " FROM quota_override o JOIN quota_policy p ON p.id = o.quota_policy_id"
    " WHERE p.enabled AND (o.expires_at IS NULL OR o.expires_at > now())"
)
ORGS: Final = "SELECT id::text, path FROM organization"
PROVIDERS: Final = "SELECT id::text, name FROM provider"


async def load_snapshot(pool: PgPool) -> QuotaSnapshot:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(POLICIES)
        policies: list[dict[str, Any]] = await cur.fetchall()
        await cur.execute(OVERRIDES)
        overrides: list[dict[str, Any]] = await cur.fetchall()
        orgs = await (await conn.execute(ORGS)).fetchall()
        providers = await (await conn.execute(PROVIDERS)).fetchall()
    return QuotaSnapshot(
        tuple(policy_from_row(r) for r in policies), tuple(override_from_row(r) for r in overrides),
        {org_id: path for org_id, path in orgs}, {pid: name for pid, name in providers},
    )
