"""What the observability endpoints share: org-subtree scoping and bounded time windows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from psycopg import sql

from nexus.controlplane.api.crud import scope_path
from nexus.controlplane.api.errors import invalid
from nexus.controlplane.api.operation import Call, Target, nrn

TAG = "observability"
ORG_PARAM = "org path whose subtree to read; default the caller's org; * for every org"


def user_id(call: Call) -> uuid.UUID | None:
    return call.principal.id if call.principal.kind == "user" else None


def window(since: dt.datetime | None, until: dt.datetime | None, default: dt.timedelta,
           longest: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """The [since, until) a query reads: until defaults to now, since to ``default`` before it."""
    end = until or dt.datetime.now(dt.UTC)
    start = since or end - default
    if start >= end:
        raise invalid("since: must be before until", "since")
    if end - start > longest:
        raise invalid(f"since: the window is at most {longest.days} days", "since")
    return start, end


async def org_scope(call: Call, service: str, rtype: str, requested: str | None) -> Target:
    """The collection NRN for an org-subtree read: the requested org path (it must exist), or the caller's."""
    path = await scope_path(call, requested)
    return Target(nrn=nrn(service, path, rtype))


def scope_of(target: Target) -> str | None:
    """The org path a collection target names, or None for ``*`` (every org)."""
    scope = target.nrn.split(":")[3]
    return scope[4:] if scope.startswith("org/") else None


def like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def subtree_clause(column: str, path: str) -> tuple[sql.Composable, list[Any]]:
    """``column`` is the id of an org in ``path``'s subtree (the org itself or a descendant)."""
    return (sql.SQL(column + " IN (SELECT id FROM organization WHERE path = %s OR path LIKE %s)"),
            [path, like_prefix(path + "/")])
