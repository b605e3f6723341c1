"""Reading the admin audit log: filtered pages, newest first, by keyset on ``seq``.

The cursor is the last ``seq`` of the previous page (exclusive); pages stay stable while
rows are appended, since new rows only ever get higher ``seq`` values.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import attrs

from nexus.controlplane.audit.record import ACTOR_TYPES, OUTCOMES, SELECT_COLUMNS, AuditError, AuditRow
from nexus.storage.pgpool import PgPool

__all__ = ["MAX_LIMIT", "AuditFilter", "AuditPage", "list_entries"]

MAX_LIMIT = 1000


@attrs.frozen(kw_only=True)
class AuditFilter:
    actor_id: uuid.UUID | None = None
    actor_type: str | None = None
    action_prefix: str | None = None  # "admin:virtual-key." matches every verb on virtual keys
    nrn_prefix: str | None = None  # "nrn:nexus:gateway:acme" covers the org's resources and its children's
    org_id: uuid.UUID | None = None
    outcome: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@attrs.frozen
class AuditPage:
    entries: list[AuditRow]
    next_cursor: int | None  # None on the last page


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(f: AuditFilter, cursor: int | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if cursor is not None:
        clauses.append("seq < %s")
        params.append(cursor)
    if f.actor_id is not None:
        clauses.append("actor_id = %s")
        params.append(f.actor_id)
    if f.actor_type is not None:
        if f.actor_type not in ACTOR_TYPES:
            raise AuditError(f"actor_type must be one of {', '.join(sorted(ACTOR_TYPES))}")
        clauses.append("actor_type = %s")
        params.append(f.actor_type)
    if f.outcome is not None:
        if f.outcome not in OUTCOMES:
            raise AuditError(f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
        clauses.append("outcome = %s")
        params.append(f.outcome)
    for column, prefix in (("action", f.action_prefix), ("resource_nrn", f.nrn_prefix)):
        if prefix:
            if "\x00" in prefix:
                raise AuditError(f"{column} prefix must not contain NUL characters")
            clauses.append(f"{column} LIKE %s")
            params.append(_like_prefix(prefix))
    if f.org_id is not None:
        clauses.append("org_id = %s")
        params.append(f.org_id)
    for op, instant, name in ((">=", f.since, "since"), ("<", f.until, "until")):
        if instant is not None:
            if instant.tzinfo is None:
                raise AuditError(f"{name} must be timezone-aware")
            clauses.append(f"ts {op} %s")
            params.append(instant)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


async def list_entries(
    pool: PgPool, filters: AuditFilter | None = None, cursor: int | None = None, limit: int = 100,
) -> AuditPage:
    """One page of rows matching ``filters``, newest first, after ``cursor`` (a ``next_cursor``)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise AuditError(f"limit must be between 1 and {MAX_LIMIT}")
    if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0):
        raise AuditError("cursor must be a non-negative integer from a previous page")
    where, params = _where(filters or AuditFilter(), cursor)
    query = f"SELECT {SELECT_COLUMNS} FROM admin_audit_log{where} ORDER BY seq DESC LIMIT %s"
    async with pool.connection() as conn:
        cur = await conn.execute(query, (*params, limit + 1))
        rows = [AuditRow.from_db(r) for r in await cur.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, rows[-1].seq if more else None)
