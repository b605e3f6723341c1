"""Shared pieces of the gateway area's admin resources.

``GatewayResource`` is ``crud.Resource`` with three things the gateway tables need and the
generic one does not offer: the row's organization may come from any SQL expression
(``scope_sql``: a quota policy is scoped by ``scope_org_id``, an override by its policy's, and
``org_id`` there is a quota *subject*), list filters that are conditions rather than column
equality (``revoked=true``, ``live=true``), and IAM tags on the collection (a developer listing
``owner_user_id=<self>`` is asking about keys they own). Everything else is inherited.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from psycopg import sql

from nexus.controlplane.api.crud import ListQuery, Resource, decode_cursor, encode_cursor, org_path
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Reply, Target, nrn

# Bounds of the PostgreSQL integer types, declared in the schemas so callers learn them up front.
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def invalid(field_name: str, problem: str) -> ApiError:
    """A 422 in the API's shape whose message and details name the field."""
    return ApiError(422, "validation_error", f"{field_name}: {problem}", {"field": field_name})


def actor(call: Call) -> uuid.UUID | None:
    """The caller as an ``app_user`` id for ``created_by``-style columns (API keys are not users)."""
    return call.principal.id if call.principal.kind == "user" else None


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.frozen
class Condition:
    """A list filter: query parameter of ``type`` applied as ``sql`` (one ``%s`` placeholder)."""

    type: Any
    sql: str
    description: str


ScopeOf = Callable[[Call], Awaitable[uuid.UUID | None]]


@attrs.frozen
class GatewayResource(Resource):
    scope_sql: str = "t.org_id"
    conditions: Mapping[str, Condition] = attrs.field(factory=dict)
    new_scope: ScopeOf | None = None
    collection_tags: Callable[[Any], Mapping[str, str]] | None = None

    def _select(self) -> sql.Composable:
        if self.org != "column":
            return super()._select()
        columns = []
        for attribute in attrs.fields(attrs.resolve_types(self.read)):
            expr = self.expressions.get(attribute.name)
            columns.append(sql.SQL(expr) + sql.SQL(" AS ") + sql.Identifier(attribute.name) if expr
                           else sql.SQL("t.") + sql.Identifier(attribute.name))
        extra = [sql.SQL("o.path AS _org_path"),
                 sql.SQL(f"{self.scope_sql} AS _org_id"),
                 sql.SQL(f"t.{self.tags_column} AS _tags" if self.tags_column else "NULL::jsonb AS _tags"),
                 sql.SQL(f"t.{self.owner_column}::text AS _owner" if self.owner_column else "NULL::text AS _owner"),
                 sql.SQL(f"t.{self.order} AS _order")]
        return (sql.SQL("SELECT ") + sql.SQL(", ").join(columns + extra) + sql.SQL(" FROM ")
                + sql.Identifier(self.table) + sql.SQL(" t")
                + sql.SQL(f" LEFT JOIN organization o ON o.id = {self.scope_sql}"))

    async def locate_collection(self, call: Call) -> Target:
        target = await super().locate_collection(call)
        if self.collection_tags is not None and call.query is not None:
            target = attrs.evolve(target, tags=dict(self.collection_tags(call.query)))
        return target

    async def locate_new(self, call: Call) -> Target:
        if self.new_scope is None:
            return await super().locate_new(call)
        org_id = await self.new_scope(call)
        if org_id is None:
            return Target(nrn=nrn(self.service, None, self.rtype))
        return Target(nrn=nrn(self.service, await org_path(call, org_id), self.rtype), org_id=org_id)

    async def list_rows(self, call: Call) -> Reply:
        q: ListQuery = call.query
        where: list[sql.Composable] = []
        args: list[Any] = []
        scope = call.target.nrn.split(":")[3]
        if self.org != "none" and scope.startswith("org/"):
            path = scope[4:]
            column = "o.path" if self.org == "column" else "t.path"
            where.append(sql.SQL(f"({column} = %s OR {column} LIKE %s"
                                 + (f" OR {self.scope_sql} IS NULL)" if self.org == "column" else ")")))
            args += [path, path.replace("%", r"\%").replace("_", r"\_") + "/%"]
        for name in self.filters:
            value = getattr(q, name, None)
            if value is not None:
                where.append(sql.SQL("t.") + sql.Identifier(name) + sql.SQL(" = %s"))
                args.append(value)
        for name, condition in self.conditions.items():
            value = getattr(q, name, None)
            if value is not None:
                where.append(sql.SQL(condition.sql))
                args.append(value)
        if q.cursor:
            order_value, rid = decode_cursor(q.cursor)
            where.append(sql.SQL(f"(t.{self.order}, t.id) < (%s, %s)"))
            args += [order_value, rid]
        query = self._select()
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(f" ORDER BY t.{self.order} DESC, t.id DESC LIMIT %s")
        args.append(q.limit + 1)
        cur = await call.conn.execute(query, args)
        names = [d.name for d in cur.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        cursor = encode_cursor(rows[-1]["_order"], rows[-1]["id"]) if more and rows else None
        return Reply({"items": [self.to_read(r) for r in rows], "next_cursor": cursor})

    def list_query(self) -> type:
        if not self.conditions:
            return super().list_query()
        read_fields = {a.name: a for a in attrs.fields(attrs.resolve_types(self.read))}
        extra = {name: attrs.field(default=None, type=read_fields[name].type | None,
                                   metadata={"schema": {"description": f"only rows with this {name}"}})
                 for name in self.filters}
        extra.update({name: attrs.field(default=None, type=c.type | None,
                                        metadata={"schema": {"description": c.description}})
                      for name, c in self.conditions.items()})
        return attrs.make_class(f"{self.read.__name__}ListQuery", extra, bases=(ListQuery,), frozen=True)


def merged(call: Call, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The row as it will be after a PATCH (``call.target.before`` is the current read form)."""
    return {**(call.target.before or {}), **patch}
