"""Admin API: observability — traffic, analytics, the admin audit log and alerts.

Everything here reads what other daemons wrote; the only writes are an alert's acknowledgement and
resolution. Traffic and analytics are scoped to an org subtree (``org``: a path, default the
caller's org, ``*`` for every org, including rows without one); IAM authorises that scope, so a
caller only sees what its policies cover. Traffic lives in ``observability_traffic``; analytics
read the usage rollups (never raw events); the audit log is read and verified through
``nexus.controlplane.audit``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from psycopg import sql

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import Resource, scope_path
from nexus.controlplane.api.errors import ApiError, invalid, not_found
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field
from nexus.controlplane.audit.query import AuditFilter, list_entries
from nexus.controlplane.audit.record import AuditError, AuditRow
from nexus.controlplane.audit.verify import verify
from nexus.controlplane.resources.observability_common import (
    ORG_PARAM,
    TAG,
    org_scope,
    scope_of,
    subtree_clause,
    user_id,
    window,
)
from nexus.controlplane.resources.observability_traffic import traffic_operations
from nexus.controlplane.resources.sourced import hide_system_rows

# -- analytics --------------------------------------------------------------------------------

GROUPS: Mapping[str, str] = {"org": "org_id", "project": "project_id", "key": "virtual_key_id", "user": "user_id",
                             "provider": "provider", "model": "model", "source": "source"}
_GROUP_NAMES = "|".join(GROUPS)
Bucket = Literal["5m", "hour", "day"]
# table, bucket width, default window, longest window
BUCKETS: Mapping[str, tuple[str, dt.timedelta, dt.timedelta, dt.timedelta]] = {
    "5m": ("usage_rollup_5m", dt.timedelta(minutes=5), dt.timedelta(hours=24), dt.timedelta(days=7)),
    "hour": ("usage_rollup_1h", dt.timedelta(hours=1), dt.timedelta(hours=24), dt.timedelta(days=93)),
    "day": ("usage_rollup_1d", dt.timedelta(days=1), dt.timedelta(days=30), dt.timedelta(days=3660)),
}
METRICS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_micro_usd", "errors", "blocked")


@attrs.frozen
class AnalyticsQuery:
    org: str | None = field(default=None, max_length=512, description=ORG_PARAM)
    since: dt.datetime | None = field(default=None, description="inclusive, rounded down to the bucket")
    until: dt.datetime | None = field(default=None, description="exclusive, rounded up to the bucket; default now")
    bucket: Bucket = field(default="hour", description="5m (windows up to 7 days), hour or day")
    group_by: str | None = field(default=None, max_length=100, pattern=rf"^({_GROUP_NAMES})(,({_GROUP_NAMES}))*$",
                                 description="comma-separated: org, project, key, user, provider, model, source")
    limit: int = field(default=1000, minimum=1, maximum=10_000, description="most series points to return")


@attrs.frozen
class AnalyticsPoint:
    """One bucket of one group; dimensions not grouped by are null."""

    bucket: dt.datetime
    org_id: uuid.UUID | None
    project_id: uuid.UUID | None
    virtual_key_id: uuid.UUID | None
    user_id: uuid.UUID | None
    provider: str | None
    model: str | None
    source: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_micro_usd: int
    errors: int
    blocked: int


@attrs.frozen
class AnalyticsTotals:
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_micro_usd: int
    errors: int
    blocked: int


@attrs.frozen
class Analytics:
    """Usage over [since, until) by bucket and group, and the window's totals."""

    since: dt.datetime
    until: dt.datetime
    bucket: Bucket
    group_by: list[str]
    series: list[AnalyticsPoint]
    totals: AnalyticsTotals
    truncated: bool = field(description="more points matched than limit")


def _floor(t: dt.datetime, width: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((t - epoch) // width) * width


def _ceil(t: dt.datetime, width: dt.timedelta) -> dt.datetime:
    floor = _floor(t, width)
    return floor if floor == t else floor + width


async def locate_analytics(call: Call) -> Target:
    return await org_scope(call, "platform", "analytics", call.query.org)


async def analytics(call: Call) -> Reply:
    q: AnalyticsQuery = call.query
    table, width, default, longest = BUCKETS[q.bucket]
    since, until = window(q.since, q.until, default, longest)
    since, until = _floor(since, width), _ceil(until, width)
    groups = list(dict.fromkeys(q.group_by.split(","))) if q.group_by else []
    where: list[sql.Composable] = [sql.SQL("r.bucket >= %s"), sql.SQL("r.bucket < %s")]
    args: list[Any] = [since, until]
    path = scope_of(call.target)
    if path is not None:
        clause, scope_args = subtree_clause("r.org_id", path)
        where.append(clause)
        args += scope_args
    sums = sql.SQL(", ").join(sql.SQL(f"COALESCE(sum(r.{m}), 0)::bigint AS {m}") for m in METRICS)
    dims = [GROUPS[g] for g in groups]
    selected = sql.SQL(", ").join(
        [sql.SQL("r.bucket")]
        + [sql.SQL("r.") + sql.Identifier(d) if d in dims else sql.SQL("NULL AS ") + sql.Identifier(d)
           for d in GROUPS.values()])
    grouping = sql.SQL(", ").join([sql.SQL("r.bucket"), *(sql.SQL("r.") + sql.Identifier(d) for d in dims)])
    filters = sql.SQL(" AND ").join(where)
    source = sql.SQL(" FROM ") + sql.Identifier(table) + sql.SQL(" r WHERE ") + filters
    cur = await call.conn.execute(
        sql.SQL("SELECT ") + selected + sql.SQL(", ") + sums + source + sql.SQL(" GROUP BY ") + grouping
        + sql.SQL(" ORDER BY ") + grouping + sql.SQL(" LIMIT %s"), [*args, q.limit + 1])
    names = [d.name for d in cur.description or ()]
    points = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    cur = await call.conn.execute(sql.SQL("SELECT ") + sums + source, args)
    total_row = await cur.fetchone()
    assert total_row is not None
    totals = AnalyticsTotals(*(int(v) for v in total_row))
    return Reply(Analytics(
        since=since, until=until, bucket=q.bucket, group_by=groups,
        series=[schema.converter.structure(p, AnalyticsPoint) for p in points[: q.limit]], totals=totals,
        truncated=len(points) > q.limit))


def analytics_operations() -> list[Operation]:
    return [Operation("GET", "/api/admin/analytics", "admin:analytics.read", "Usage analytics by bucket and group",
                      TAG, analytics, locate_analytics, query=AnalyticsQuery, response=Analytics)]


# -- admin audit log --------------------------------------------------------------------------


@attrs.frozen
class AuditLogQuery:
    limit: int = field(default=100, minimum=1, maximum=1000, description="page size")
    cursor: str | None = field(default=None, max_length=32, pattern=r"^[0-9]{1,19}$",
                               description="next_cursor from the previous page")
    org: str | None = field(default=None, max_length=512,
                            description="entries about this org (not its children); default the caller's; * for all")
    actor: uuid.UUID | None = field(default=None, description="the acting user, API key or thing id")
    action: str | None = field(default=None, max_length=200, description="action prefix, e.g. admin:virtual-key.")
    resource: str | None = field(default=None, max_length=1024, description="resource NRN prefix")
    outcome: Literal["success", "denied", "failure"] | None = None
    since: dt.datetime | None = field(default=None, description="inclusive")
    until: dt.datetime | None = field(default=None, description="exclusive")


@attrs.frozen
class AuditEntry:
    """One admin audit log row; ``hash`` = SHA-256(prev_hash || the row), both hex."""

    seq: int
    id: uuid.UUID
    ts: dt.datetime
    actor_type: Literal["user", "api_key", "system", "thing"]
    actor_id: uuid.UUID | None
    actor_label: str
    action: str
    resource_nrn: str
    org_id: uuid.UUID | None
    outcome: Literal["success", "denied", "failure"]
    before: Any
    after: Any
    source_ip: str | None
    user_agent: str | None
    request_id: str | None
    prev_hash: str | None
    hash: str


@attrs.frozen
class AuditProblem:
    seq: int
    kind: Literal["modified", "deleted", "forged", "broken_link"]
    detail: str


@attrs.frozen
class AuditVerification:
    """The result of recomputing the whole chain; keep ``last_hash`` elsewhere to anchor the tail."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None
    problems: list[AuditProblem]
    problems_total: int
    last_seq: int | None
    last_hash: str | None


def audit_entry(row: AuditRow) -> AuditEntry:
    values = {name: getattr(row, name) for name in ("seq", "id", "ts", "actor_type", "actor_id", "actor_label",
                                                    "action", "resource_nrn", "org_id", "outcome", "before",
                                                    "after", "source_ip", "user_agent", "request_id")}
    values["prev_hash"] = row.prev_hash.hex() if row.prev_hash is not None else None
    values["hash"] = row.hash.hex()
    return schema.converter.structure(values, AuditEntry)


async def locate_audit_log(call: Call) -> Target:
    path = await scope_path(call, call.query.org)
    return Target(nrn=nrn("platform", path, "audit-log"))


async def list_audit_log(call: Call) -> Reply:
    q: AuditLogQuery = call.query
    org_id: uuid.UUID | None = None
    path = scope_of(call.target)
    if path is not None:
        cur = await call.conn.execute("SELECT id FROM organization WHERE path = %s", (path,))
        row = await cur.fetchone()
        if row is None:
            raise not_found("organization")
        org_id = row[0]
    filters = AuditFilter(actor_id=q.actor, action_prefix=q.action, nrn_prefix=q.resource, org_id=org_id,
                                outcome=q.outcome, since=q.since, until=q.until)
    try:
        page = await list_entries(call.services.pg, filters, int(q.cursor) if q.cursor else None, q.limit)
    except AuditError as exc:
        raise invalid(str(exc)) from None
    cursor = str(page.next_cursor) if page.next_cursor is not None else None
    return Reply({"items": [audit_entry(r) for r in page.entries], "next_cursor": cursor})


async def locate_audit_verify(call: Call) -> Target:
    # The chain spans every org; the caller's org scope is what the seeded policies grant verify on.
    return Target(nrn=nrn("platform", call.principal.org_path, "audit-log"))


async def verify_audit_log(call: Call) -> Reply:
    report = await verify(call.services.pg)
    return Reply(AuditVerification(
        ok=report.ok, rows_checked=report.rows_checked, first_bad_seq=report.first_bad_seq,
        problems=[schema.converter.structure(attrs.asdict(p), AuditProblem) for p in report.problems],
        problems_total=report.problems_total, last_seq=report.last_seq, last_hash=report.last_hash))


def audit_operations() -> list[Operation]:
    return [
        Operation("GET", "/api/admin/audit-log", "admin:audit-log.read", "List admin audit log entries", TAG,
                  list_audit_log, locate_audit_log, query=AuditLogQuery, response=AuditEntry, paged=True),
        Operation("GET", "/api/admin/audit/verify", "admin:audit-log.verify", "Verify the admin audit hash chain",
                  TAG, verify_audit_log, locate_audit_verify, response=AuditVerification),
    ]


# -- alerts -----------------------------------------------------------------------------------


@attrs.frozen
class Alert:
    """A condition a daemon or job raised; repeats bump ``occurrences`` until it is resolved."""

    id: uuid.UUID
    kind: str
    severity: Literal["info", "warning", "critical"]
    status: Literal["open", "acknowledged", "resolved"]
    dedup_key: str
    title: str
    message: str
    org_id: uuid.UUID | None
    resource_nrn: str | None
    details: dict[str, Any]
    occurrences: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: uuid.UUID | None
    resolved_at: dt.datetime | None
    resolved_by: uuid.UUID | None


# System alerts (partitions, DLQ, certificates) have no org: org callers list only their org's alerts.
ALERTS = Resource(
    path="alerts", rtype="alert", service="platform", table="alert", read=Alert, tag=TAG,
    filters=("status", "severity", "kind"), delete=False, order="first_seen_at",
    expressions={"org_id": "t.own_org_id"}, source=hide_system_rows("alert", (a.name for a in attrs.fields(Alert))),
)


async def acknowledge_alert(call: Call) -> Reply:
    rid = call.path_uuid()
    status = (call.target.before or {}).get("status")
    if status == "resolved":
        raise ApiError(409, "conflict", "the alert is already resolved", {"status": status})
    await call.conn.execute(
        "UPDATE alert SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s "
        "WHERE id = %s AND status = 'open'", (user_id(call), rid))
    updated = ALERTS.target(await ALERTS.fetch(call, rid, lock=False))
    return Reply(updated.before, after=updated.before)


async def resolve_alert(call: Call) -> Reply:
    rid = call.path_uuid()
    status = (call.target.before or {}).get("status")
    if status == "resolved":
        raise ApiError(409, "conflict", "the alert is already resolved", {"status": status})
    await call.conn.execute(
        "UPDATE alert SET status = 'resolved', resolved_at = now(), resolved_by = %s WHERE id = %s",
        (user_id(call), rid))
    updated = ALERTS.target(await ALERTS.fetch(call, rid, lock=False))
    return Reply(updated.before, after=updated.before)


def alert_operations() -> list[Operation]:
    base = "/api/admin/alerts/{id}"
    return [
        *ALERTS.operations(),
        Operation("POST", base + "/ack", "admin:alert.update", "Acknowledge an alert", TAG, acknowledge_alert,
                  ALERTS.locate_row, response=Alert),
        Operation("POST", base + "/resolve", "admin:alert.update", "Resolve an alert", TAG, resolve_alert,
                  ALERTS.locate_row, response=Alert),
    ]


def operations() -> list[Operation]:
    return [*traffic_operations(), *analytics_operations(), *audit_operations(), *alert_operations()]

