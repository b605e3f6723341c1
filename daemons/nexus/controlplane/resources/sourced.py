"""Derived tables for ``crud.Resource.source``: a table-backed resource read so that each row gets its org.

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

NO_ORG = "00000000-0000-0000-0000-000000000000"


def hide_system_rows(table: str, columns: Iterable[str]) -> str:
    """A derived table of ``table`` whose org_id is never NULL; the stored value is ``own_org_id``."""
    listed = ", ".join(f"x.{c}" for c in columns if c != "org_id")
    return f"(SELECT {listed}, x.org_id AS own_org_id, COALESCE(x.org_id, '{NO_ORG}'::uuid) AS org_id FROM {table} x)"


