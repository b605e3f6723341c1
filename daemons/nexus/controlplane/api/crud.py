"""Table-backed resources: one declaration gives list, get, create, update and delete operations.

Most admin resources are a row in one table scoped to an organisation. ``Resource`` names the
table, the response schema (whose field names are the selected columns), the create and
update schemas and the IAM resource type; ``operations()`` derives the five endpoints with
keyset pagination, org-subtree scoping, the NRN each row is authorised as, and the config
signal gateways reload on. Resources with secrets or side effects pass ``prepare`` (body →
columns) and add their own operations next to these.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import orjson
from psycopg import sql
from psycopg.types.json import Jsonb

from nexus.controlplane.api import schema
from nexus.controlplane.api.errors import ApiError, not_found
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field

OrgMode = Literal["column", "self", "none"]
Prepare = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


@attrs.frozen
class ListQuery:
    """Common list parameters: page size, cursor and the organisation subtree to list."""

    limit: int = field(default=50, minimum=1, maximum=500, description="page size")
    cursor: str | None = field(default=None, max_length=512, description="next_cursor from the previous page")
    org: str | None = field(default=None, max_length=512,
                            description="org path whose subtree to list; default the caller's org; * for all")


def encode_cursor(order_value: Any, row_id: Any) -> str:
    is_time = isinstance(order_value, dt.datetime)
    value = order_value.isoformat() if is_time else order_value
    return base64.urlsafe_b64encode(orjson.dumps([is_time, value, str(row_id)])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, uuid.UUID]:
    try:
        is_time, value, rid = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return (dt.datetime.fromisoformat(value) if is_time else value), uuid.UUID(rid)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ApiError(422, "validation_error", "cursor: not a cursor this API issued", {"field": "cursor"}) from None


_column_types: dict[str, dict[str, str]] = {}


async def column_types(call: Call, table: str) -> dict[str, str]:
    """The table's column types, read once, so values are adapted right (jsonb vs text[] vs inet)."""
    cached = _column_types.get(table)
    if cached is None:
        cur = await call.conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema()", (table,))
        cached = {name: kind for name, kind in await cur.fetchall()}
        _column_types[table] = cached
    return cached


def adapt(value: Any, kind: str) -> Any:
    if kind == "jsonb" and value is not None:
        return Jsonb(schema.unstructure(value))
    return value


async def org_path(call: Call, org_id: uuid.UUID) -> str:
    cur = await call.conn.execute("SELECT path FROM organization WHERE id = %s", (org_id,))
    row = await cur.fetchone()
    if row is None:
        raise ApiError(422, "validation_error", "org_id: no such organization", {"field": "org_id"})
    return str(row[0])


async def scope_path(call: Call, requested: str | None) -> str:
    """The org path a list or create acts in: the requested one (it must exist) or the caller's."""
    if requested is None or requested == "*":
        return requested or call.principal.org_path
    cur = await call.conn.execute("SELECT 1 FROM organization WHERE path = %s", (requested,))
    if await cur.fetchone() is None:
        raise ApiError(404, "not_found", f"no organization at path {requested!r}")
    return requested


@attrs.frozen
class Condition:
    """A list filter: query parameter of ``type`` applied as ``sql`` (one ``%s`` placeholder)."""

    type: Any
    sql: str
    description: str


ScopeOf = Callable[[Call], Awaitable[uuid.UUID | None]]


@attrs.frozen
class Resource:
    path: str
    rtype: str
    service: str
    table: str
    read: type
    tag: str
    create: type | None = None
    update: type | None = None
    signal: str | None = None
    org: OrgMode = "column"
    filters: tuple[str, ...] = ()
    delete: bool = True
    tags_column: str | None = None
    owner_column: str | None = None
    order: str = "created_at"
    expressions: Mapping[str, str] = attrs.field(factory=dict)
    prepare: Prepare | None = None
    noun: str = ""
    # Where the row's organization comes from when it is not ``t.org_id`` (a quota policy's scope, …).
    scope_sql: str = "t.org_id"
    # A derived table read instead of ``table`` (a parenthesised SELECT), e.g. one that gives each row
    # the org it belongs to; writes still go to ``table``.
    source: str = ""
    # List filters that are conditions rather than column equality (``revoked=true``).
    conditions: Mapping[str, Condition] = attrs.field(factory=dict)
    # The org a new row will be in, when the body's ``org_id`` does not say it.
    new_scope: ScopeOf | None = None
    # IAM tags of a list request (a developer listing ``owner_user_id=<self>`` asks about keys they own).
    collection_tags: Callable[[Any], Mapping[str, str]] | None = None

    @property
    def label(self) -> str:
        return self.noun or self.rtype.replace("-", " ")

    @property
    def base(self) -> str:
        return f"/api/admin/{self.path}"

    # -- SQL --------------------------------------------------------------------------------
    def _select(self) -> sql.Composable:
        columns = []
        for attribute in attrs.fields(attrs.resolve_types(self.read)):
            expr = self.expressions.get(attribute.name)
            columns.append(sql.SQL(expr) + sql.SQL(" AS ") + sql.Identifier(attribute.name) if expr
                           else sql.SQL("t.") + sql.Identifier(attribute.name))
        org_path_expr, org_id_expr = {"column": ("o.path", "o.id"), "self": ("t.path", "t.id"),
                                      "none": ("NULL::text", "NULL::uuid")}[self.org]
        extra = [sql.SQL(f"{org_path_expr} AS _org_path, {org_id_expr} AS _org_id"),
                 sql.SQL(f"t.{self.tags_column} AS _tags" if self.tags_column else "NULL::jsonb AS _tags"),
                 sql.SQL(f"t.{self.owner_column}::text AS _owner" if self.owner_column else "NULL::text AS _owner"),
                 sql.SQL(f"t.{self.order} AS _order")]
        source = sql.SQL(self.source) if self.source else sql.Identifier(self.table)
        join = sql.SQL(f" LEFT JOIN organization o ON o.id = {self.scope_sql}" if self.org == "column" else "")
        return (sql.SQL("SELECT ") + sql.SQL(", ").join(columns + extra) + sql.SQL(" FROM ") + source
                + sql.SQL(" t") + join)

    def _org_filter(self) -> str:
        return {"column": "o.path", "self": "t.path", "none": ""}[self.org]

    def to_read(self, row: Mapping[str, Any]) -> Any:
        return schema.converter.structure({k: v for k, v in row.items() if not k.startswith("_")}, self.read)

    def target(self, row: Mapping[str, Any]) -> Target:
        tags = {str(k): str(v) for k, v in (row.get("_tags") or {}).items() if isinstance(v, str | int | bool)}
        if row.get("_owner"):
            tags["owner"] = row["_owner"]
        return Target(nrn=nrn(self.service, row.get("_org_path"), self.rtype, str(row["id"])),
                      org_id=row.get("_org_id"), tags=tags, before=schema.unstructure(self.to_read(row)))

    async def fetch(self, call: Call, rid: uuid.UUID, *, lock: bool) -> Mapping[str, Any]:
        query = self._select() + sql.SQL(" WHERE t.id = %s") + sql.SQL(" FOR UPDATE OF t" if lock else "")
        cur = await call.conn.execute(query, (rid,))
        row = await cur.fetchone()
        if row is None:
            raise not_found(self.label)
        return dict(zip([d.name for d in cur.description or ()], row, strict=True))

    # -- locators ---------------------------------------------------------------------------
    async def locate_collection(self, call: Call) -> Target:
        target = await self._collection(call)
        if self.collection_tags is not None and call.query is not None:
            target = attrs.evolve(target, tags=dict(self.collection_tags(call.query)))
        return target

    async def _collection(self, call: Call) -> Target:
        if self.org == "none":
            return Target(nrn=nrn(self.service, None, self.rtype))
        requested = call.query.org if isinstance(call.query, ListQuery) else None
        path = await scope_path(call, requested)
        if path == "*":
            return Target(nrn=nrn(self.service, "*", self.rtype))
        return Target(nrn=nrn(self.service, path, self.rtype))

    async def locate_new(self, call: Call) -> Target:
        if self.org == "none":
            return Target(nrn=nrn(self.service, None, self.rtype))
        if self.new_scope is not None:
            org_id = await self.new_scope(call)
        else:
            org_id = getattr(call.body, "org_id" if self.org == "column" else "parent_id", None)
        if org_id is None:  # a new root org, or a row with no org: the global scope
            return Target(nrn=nrn(self.service, None, self.rtype))
        return Target(nrn=nrn(self.service, await org_path(call, org_id), self.rtype), org_id=org_id)

    async def locate_row(self, call: Call) -> Target:
        return self.target(await self.fetch(call, call.path_uuid(), lock=call.request.method != "GET"))

    # -- handlers ---------------------------------------------------------------------------
    async def list_rows(self, call: Call) -> Reply:
        q: ListQuery = call.query
        where: list[sql.Composable] = []
        args: list[Any] = []
        org_column = self._org_filter()
        scope = call.target.nrn.split(":")[3]
        if org_column and scope.startswith("org/"):
            path = scope[4:]
            where.append(sql.SQL(f"({org_column} = %s OR {org_column} LIKE %s" +
                                 (f" OR {self.scope_sql} IS NULL)" if self.org == "column" else ")")))
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

    async def get(self, call: Call) -> Reply:
        return Reply(call.target.before)

    async def _columns(self, call: Call, values: dict[str, Any]) -> dict[str, Any]:
        values = await self.prepare(call, values) if self.prepare else values
        kinds = await column_types(call, self.table)
        return {k: adapt(v, kinds.get(k, "")) for k, v in values.items()}

    async def insert(self, call: Call) -> Reply:
        columns = await self._columns(call, attrs.asdict(call.body, recurse=False))
        query = (sql.SQL("INSERT INTO ") + sql.Identifier(self.table) + sql.SQL(" (")
                 + sql.SQL(", ").join(map(sql.Identifier, columns)) + sql.SQL(") VALUES (")
                 + sql.SQL(", ").join(sql.Placeholder() * len(columns)) + sql.SQL(") RETURNING id"))
        cur = await call.conn.execute(query, list(columns.values()))
        row = await cur.fetchone()
        assert row is not None
        created = self.target(await self.fetch(call, row[0], lock=False))
        return Reply(created.before, status=201, after=created.before, nrn=created.nrn,
                     signal=(self.signal, str(row[0])) if self.signal else None)

    async def modify(self, call: Call) -> Reply:
        columns = await self._columns(call, dict(call.body))
        rid = call.path_uuid()
        query = (sql.SQL("UPDATE ") + sql.Identifier(self.table) + sql.SQL(" SET ")
                 + sql.SQL(", ").join(sql.Identifier(k) + sql.SQL(" = %s") for k in columns)
                 + sql.SQL(" WHERE id = %s"))
        await call.conn.execute(query, [*columns.values(), rid])
        updated = self.target(await self.fetch(call, rid, lock=False))
        return Reply(updated.before, after=updated.before, signal=(self.signal, str(rid)) if self.signal else None)

    async def remove(self, call: Call) -> Reply:
        rid = call.path_uuid()
        await call.conn.execute(sql.SQL("DELETE FROM ") + sql.Identifier(self.table) + sql.SQL(" WHERE id = %s"),
                                (rid,))
        return Reply(status=204, signal=(self.signal, str(rid)) if self.signal else None)

    # -- operations -------------------------------------------------------------------------
    def list_query(self) -> type:
        if not self.filters and not self.conditions:
            return ListQuery
        read_fields = {a.name: a for a in attrs.fields(attrs.resolve_types(self.read))}
        extra = {name: attrs.field(default=None, type=read_fields[name].type | None,
                                   metadata={"schema": {"description": f"only rows with this {name}"}})
                 for name in self.filters}
        extra.update({name: attrs.field(default=None, type=c.type | None,
                                        metadata={"schema": {"description": c.description}})
                      for name, c in self.conditions.items()})
        return attrs.make_class(f"{self.read.__name__}ListQuery", extra, bases=(ListQuery,), frozen=True)

    def operations(self) -> list[Operation]:
        name = self.label
        ops = [
            Operation("GET", self.base, f"admin:{self.rtype}.read", f"List {name}s", self.tag, self.list_rows,
                      self.locate_collection, query=self.list_query(), response=self.read, paged=True),
            Operation("GET", f"{self.base}/{{id}}", f"admin:{self.rtype}.read", f"Get a {name}", self.tag, self.get,
                      self.locate_row, response=self.read),
        ]
        if self.create is not None:
            ops.append(Operation("POST", self.base, f"admin:{self.rtype}.create", f"Create a {name}", self.tag,
                                 self.insert, self.locate_new, body=self.create, response=self.read, status=201))
        if self.update is not None:
            ops.append(Operation("PATCH", f"{self.base}/{{id}}", f"admin:{self.rtype}.update", f"Update a {name}",
                                 self.tag, self.modify, self.locate_row, body=self.update, partial_body=True,
                                 response=self.read))
        if self.delete:
            ops.append(Operation("DELETE", f"{self.base}/{{id}}", f"admin:{self.rtype}.delete", f"Delete a {name}",
                                 self.tag, self.remove, self.locate_row, status=204))
        return ops


def operations(resources: Sequence[Resource]) -> list[Operation]:
    return [op for resource in resources for op in resource.operations()]
