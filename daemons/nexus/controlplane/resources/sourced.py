"""``SourcedResource``: a table-backed resource read through a derived table that decides each row's org.

``crud.Resource`` scopes a row by its own ``org_id`` column and lists rows without one (system-wide)
in every org's list. Two cases need otherwise, and both are expressed as the derived table's
``org_id`` column, which the generic list filter and the NRN then use:

- the org is not on the row itself (a hook scoped to a project or a virtual key belongs to that
  project's or key's org);
- system-wide rows must stay out of org lists because org callers cannot read them one by one
  (the hub and gateways as things, system alerts): ``hide_system_rows`` maps their NULL org to an
  id no org has, so only ``org=*`` lists show them.

Writes still go to ``table`` itself; row locks (``FOR UPDATE OF t``) reach through the derived
table to the underlying row.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from psycopg import sql

from nexus.controlplane.api.crud import Resource

NO_ORG = "00000000-0000-0000-0000-000000000000"


def hide_system_rows(table: str, columns: Iterable[str]) -> str:
    """A derived table of ``table`` whose org_id is never NULL; the stored value is ``own_org_id``."""
    listed = ", ".join(f"x.{c}" for c in columns if c != "org_id")
    return f"(SELECT {listed}, x.org_id AS own_org_id, COALESCE(x.org_id, '{NO_ORG}'::uuid) AS org_id FROM {table} x)"


@attrs.frozen
class SourcedResource(Resource):
    """A ``Resource`` whose reads select from ``source`` (a parenthesised SELECT with an ``org_id`` column)."""

    source: str = ""

    def _select(self) -> sql.Composable:
        columns = []
        for attribute in attrs.fields(attrs.resolve_types(self.read)):
            expr = self.expressions.get(attribute.name)
            columns.append(sql.SQL(expr) + sql.SQL(" AS ") + sql.Identifier(attribute.name) if expr
                           else sql.SQL("t.") + sql.Identifier(attribute.name))
        tags = f"t.{self.tags_column}" if self.tags_column else "NULL::jsonb"
        owner = f"t.{self.owner_column}::text" if self.owner_column else "NULL::text"
        extra = sql.SQL(f"o.path AS _org_path, o.id AS _org_id, {tags} AS _tags, {owner} AS _owner, "
                        f"t.{self.order} AS _order")
        return (sql.SQL("SELECT ") + sql.SQL(", ").join([*columns, extra]) + sql.SQL(" FROM ")
                + sql.SQL(self.source) + sql.SQL(" t LEFT JOIN organization o ON o.id = t.org_id"))
