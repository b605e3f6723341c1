"""Traffic events: search (keyset by ts, event_id, newest first), detail with the hook trace and attempts,
and the captured bodies (a separate action: ``admin:traffic.read-payload``).

``traffic_event`` is partitioned by day on ``ts`` and ``ts`` is the UUIDv7's own timestamp, so a search
is always bounded by a time window and a lookup by id reads one partition.  Inline bodies come back as
text (base64 when not UTF-8); a spilled body is read back from the box's spill store
(checked against its SHA-256) and also described by its reference.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio
from psycopg import sql

from nexus.audit.events import SpillRef
from nexus.audit.spill import SpillError
from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import decode_cursor, encode_cursor
from nexus.controlplane.api.errors import invalid, not_found
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field
from nexus.controlplane.resources.observability_common import (
    ORG_PARAM,
    TAG,
    like_prefix,
    org_scope,
    scope_of,
    subtree_clause,
    window,
)
from nexus.storage.partitions import uuid7_time

log = logging.getLogger(__name__)

MAX_TRAFFIC_WINDOW = dt.timedelta(days=93)


# -- traffic ----------------------------------------------------------------------------------

Decision = Literal["approve", "redact", "block"]
Source = Literal["gateway", "proxy", "agent"]


@attrs.frozen
class TrafficQuery:
    limit: int = field(default=50, minimum=1, maximum=500, description="page size")
    cursor: str | None = field(default=None, max_length=512, description="next_cursor from the previous page")
    org: str | None = field(default=None, max_length=512, description=ORG_PARAM)
    since: dt.datetime | None = field(default=None, description="inclusive; default 24 h before until")
    until: dt.datetime | None = field(default=None, description="exclusive; default now")
    project_id: uuid.UUID | None = None
    virtual_key_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    provider: str | None = field(default=None, max_length=200)
    model: str | None = field(default=None, max_length=200)
    source: Source | None = None
    decision: Decision | None = field(default=None, description="the request or the response stage decided this")
    status: int | None = field(default=None, minimum=100, maximum=599, description="HTTP status returned")
    min_cost_micro_usd: int | None = field(default=None, minimum=0)
    q: str | None = field(default=None, min_length=1, max_length=200,
                          description="an event id, or a request id or its prefix, or a trace id")


@attrs.frozen
class TrafficSummary:
    """One request through any pipe, as the traffic list shows it."""

    event_id: uuid.UUID
    ts: dt.datetime
    source: Source
    org_id: uuid.UUID | None
    project_id: uuid.UUID | None
    user_id: uuid.UUID | None
    virtual_key_id: uuid.UUID | None
    thing_id: uuid.UUID | None
    request_id: str | None
    method: str | None
    host: str | None
    path: str | None
    endpoint_type: str | None
    stream: bool
    status_code: int | None
    error_code: str | None
    requested_model: str | None
    provider: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_micro_usd: int
    total_us: int | None
    cache_status: str | None
    request_decision: str | None
    response_decision: str | None
    rule_ids: list[str]


@attrs.frozen
class PayloadInfo:
    """A captured body, without its content: where it is stored and how large it was."""

    kind: Literal["request", "response", "response_stream"]
    content_type: str | None
    size_bytes: int
    truncated: bool
    redacted: bool
    stored: Literal["inline", "spilled"]


@attrs.frozen
class TrafficEvent:
    """Everything recorded about one request: metadata, the per-hook trace, the upstream attempts."""

    event_id: uuid.UUID
    ts: dt.datetime
    received_at: dt.datetime
    source: Source
    thing_id: uuid.UUID | None
    org_id: uuid.UUID | None
    project_id: uuid.UUID | None
    user_id: uuid.UUID | None
    virtual_key_id: uuid.UUID | None
    credential_id: uuid.UUID | None
    provider_id: uuid.UUID | None
    routing_rule_id: uuid.UUID | None
    request_id: str | None
    trace_id: str | None
    source_ip: str | None
    user_agent: str | None
    process_name: str | None
    method: str | None
    host: str | None
    path: str | None
    endpoint_type: str | None
    ingress_format: str | None
    stream: bool
    status_code: int | None
    error_code: str | None
    error_message: str | None
    requested_model: str | None
    provider: str | None
    model: str | None
    attempts: int
    attempt_log: Any = field(description="upstream tries in order (provider, model, outcome, status, duration)")
    strategy_trace: Any = field(description="how the router chose its target")
    ab_arm: str | None = None
    total_us: int | None = None
    upstream_ttfb_us: int | None = None
    upstream_total_us: int | None = None
    request_hooks_us: int | None = None
    response_hooks_us: int | None = None
    cache_lookup_us: int | None = None
    overhead_us: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_micro_usd: int = 0
    cache_savings_micro_usd: int = 0
    cache_status: str | None = None
    cache_similarity: float | None = None
    request_decision: str | None = None
    response_decision: str | None = None
    decision_reason: str | None = None
    rule_ids: list[str] = field(factory=list)
    request_hooks: Any = field(default=None, description="per-hook trace of the request stage")
    response_hooks: Any = field(default=None, description="per-hook trace of the response stage")
    tags: list[str] = field(factory=list)
    passthrough_flags: list[str] = field(factory=list)
    kill_switch: bool = False
    attestation_verified: bool | None = None
    attested_agent_id: uuid.UUID | None = None
    bump_status: str | None = None
    attributes: dict[str, Any] = field(factory=dict)
    payloads: list[PayloadInfo] = field(factory=list)


@attrs.frozen
class SpillReference:
    """Where a spilled body is: ``backend`` and ``key`` in the spill store, its size and SHA-256 (hex)."""

    backend: Literal["fs", "s3"]
    key: str
    size: int
    sha256: str


@attrs.frozen
class Payload:
    """A captured body: ``body`` inline (``encoding`` utf-8 or base64), or ``spill`` when it was spilled."""

    kind: Literal["request", "response", "response_stream"]
    content_type: str | None
    size_bytes: int
    truncated: bool
    redacted: bool
    body: str | None
    encoding: Literal["utf-8", "base64"] | None
    spill: SpillReference | None


@attrs.frozen
class TrafficPayloads:
    event_id: uuid.UUID
    payloads: list[Payload]


def _columns(cls: type, overrides: Mapping[str, str]) -> sql.Composable:
    names = [a.name for a in attrs.fields(cls) if a.name != "payloads"]
    return sql.SQL(", ").join(sql.SQL(overrides[n] + " AS ") + sql.Identifier(n) if n in overrides
                              else sql.SQL("t.") + sql.Identifier(n) for n in names)


# inet comes back as an ipaddress object, which JSON cannot carry.
_SUMMARY_COLUMNS = _columns(TrafficSummary, {})
_EVENT_COLUMNS = _columns(TrafficEvent, {"source_ip": "host(t.source_ip)"})


async def locate_traffic(call: Call) -> Target:
    return await org_scope(call, "gateway", "traffic", call.query.org)


async def search_traffic(call: Call) -> Reply:
    q: TrafficQuery = call.query
    since, until = window(q.since, q.until, dt.timedelta(hours=24), MAX_TRAFFIC_WINDOW)
    # The ts bounds come first: they prune the day partitions before anything else is read.
    where: list[sql.Composable] = [sql.SQL("t.ts >= %s"), sql.SQL("t.ts < %s")]
    args: list[Any] = [since, until]
    path = scope_of(call.target)
    if path is not None:
        clause, scope_args = subtree_clause("t.org_id", path)
        where.append(clause)
        args += scope_args
    for name in ("project_id", "virtual_key_id", "user_id", "provider", "model", "source"):
        value = getattr(q, name)
        if value is not None:
            where.append(sql.SQL("t.") + sql.Identifier(name) + sql.SQL(" = %s"))
            args.append(value)
    if q.decision is not None:
        where.append(sql.SQL("(t.request_decision = %s OR t.response_decision = %s)"))
        args += [q.decision, q.decision]
    if q.status is not None:
        where.append(sql.SQL("t.status_code = %s"))
        args.append(q.status)
    if q.min_cost_micro_usd is not None:
        where.append(sql.SQL("t.cost_micro_usd >= %s"))
        args.append(q.min_cost_micro_usd)
    if q.q is not None:
        parts = ["t.request_id = %s", "t.request_id LIKE %s", "t.trace_id = %s"]
        args += [q.q, like_prefix(q.q), q.q]
        try:
            args.append(uuid.UUID(q.q))
            parts.append("t.event_id = %s")
        except ValueError:
            pass
        where.append(sql.SQL("(" + " OR ".join(parts) + ")"))
    if q.cursor:
        ts, event_id = decode_cursor(q.cursor)
        if not isinstance(ts, dt.datetime):
            raise invalid("cursor: not a cursor this API issued", "cursor")
        where.append(sql.SQL("(t.ts, t.event_id) < (%s, %s)"))
        args += [ts, event_id]
    query = (sql.SQL("SELECT ") + _SUMMARY_COLUMNS + sql.SQL(" FROM traffic_event t WHERE ")
             + sql.SQL(" AND ").join(where) + sql.SQL(" ORDER BY t.ts DESC, t.event_id DESC LIMIT %s"))
    cur = await call.conn.execute(query, [*args, q.limit + 1])
    names = [d.name for d in cur.description or ()]
    rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    cursor = encode_cursor(rows[-1]["ts"], rows[-1]["event_id"]) if more else None
    return Reply({"items": [schema.converter.structure(r, TrafficSummary) for r in rows], "next_cursor": cursor})


def event_key(call: Call) -> tuple[uuid.UUID, dt.datetime]:
    """(event_id, ts) from the path: ts is a function of the UUIDv7, which lets the query hit one partition."""
    raw = call.params.get("event_id", "")
    try:
        event_id = uuid.UUID(raw)
        return event_id, uuid7_time(event_id)
    except ValueError:
        raise not_found("traffic event") from None


async def locate_event(call: Call) -> Target:
    event_id, ts = event_key(call)
    cur = await call.conn.execute(
        "SELECT t.org_id, o.path FROM traffic_event t LEFT JOIN organization o ON o.id = t.org_id "
        "WHERE t.event_id = %s AND t.ts = %s", (event_id, ts))
    row = await cur.fetchone()
    if row is None:
        raise not_found("traffic event")
    # An event of a deleted org keeps its org id but has no path: only system-wide readers see it.
    return Target(nrn=nrn("gateway", row[1], "traffic", str(event_id)), org_id=row[0] if row[1] else None)


async def get_event(call: Call) -> Reply:
    event_id, ts = event_key(call)
    cur = await call.conn.execute(sql.SQL("SELECT ") + _EVENT_COLUMNS
                                  + sql.SQL(" FROM traffic_event t WHERE t.event_id = %s AND t.ts = %s"),
                                  (event_id, ts))
    names = [d.name for d in cur.description or ()]
    row = await cur.fetchone()
    if row is None:
        raise not_found("traffic event")
    cur = await call.conn.execute(
        "SELECT kind, content_type, size_bytes, truncated, redacted, "
        "CASE WHEN body IS NULL THEN 'spilled' ELSE 'inline' END AS stored "
        "FROM traffic_event_payload WHERE event_id = %s AND ts = %s ORDER BY kind", (event_id, ts))
    pnames = [d.name for d in cur.description or ()]
    payloads = [dict(zip(pnames, p, strict=True)) for p in await cur.fetchall()]
    event = {**dict(zip(names, row, strict=True)), "payloads": payloads}
    return Reply(schema.converter.structure(event, TrafficEvent))


def payload_view(row: Mapping[str, Any], spilled: bytes | None = None) -> Payload:
    body = row["body"] if row["body"] is not None else spilled
    text: str | None = None
    encoding: Literal["utf-8", "base64"] | None = None
    if body is not None:
        raw = bytes(body)
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode(), "base64"
    spill = None
    if row["spill_key"] is not None:
        spill = SpillReference(backend=row["spill_backend"], key=row["spill_key"], size=int(row["spill_size"]),
                               sha256=bytes(row["spill_sha256"]).hex())
    return Payload(kind=row["kind"], content_type=row["content_type"], size_bytes=int(row["size_bytes"]),
                   truncated=row["truncated"], redacted=row["redacted"], body=text, encoding=encoding, spill=spill)


async def get_payloads(call: Call) -> Reply:
    event_id, ts = event_key(call)
    cur = await call.conn.execute(
        "SELECT kind, content_type, size_bytes, truncated, redacted, body, spill_backend, spill_key, spill_size, "
        "spill_sha256 FROM traffic_event_payload WHERE event_id = %s AND ts = %s ORDER BY kind", (event_id, ts))
    names = [d.name for d in cur.description or ()]
    rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    return Reply(TrafficPayloads(event_id=event_id,
                                 payloads=[payload_view(r, await _spilled(call, r)) for r in rows]))


async def _spilled(call: Call, row: Mapping[str, Any]) -> bytes | None:
    """A spilled body read back from the local spill store (checked against its SHA-256), if it is here."""
    store = call.services.spill
    if row["spill_key"] is None or store is None or row["spill_backend"] != store.backend:
        return None
    ref = SpillRef(backend=row["spill_backend"], key=row["spill_key"], size=int(row["spill_size"]),
                   sha256=bytes(row["spill_sha256"]))
    try:
        return await trio.to_thread.run_sync(store.get, ref)
    except SpillError as exc:
        log.warning("spilled payload of %s unreadable: %s", row["spill_key"], exc)
        return None


def traffic_operations() -> list[Operation]:
    base = "/api/admin/traffic"
    return [
        Operation("GET", base, "admin:traffic.read", "Search traffic events", TAG, search_traffic, locate_traffic,
                  query=TrafficQuery, response=TrafficSummary, paged=True),
        Operation("GET", base + "/{event_id}", "admin:traffic.read", "Get a traffic event with its hook trace", TAG,
                  get_event, locate_event, response=TrafficEvent),
        Operation("GET", base + "/{event_id}/payload", "admin:traffic.read-payload",
                  "Get a traffic event's captured bodies", TAG, get_payloads, locate_event, response=TrafficPayloads),
    ]
