"""list_entries: filters, newest-first keyset pages that stay stable while rows are appended, clear errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nexus.controlplane.audit import AuditError
from nexus.controlplane.audit.log import append
from nexus.controlplane.audit.query import AuditFilter, list_entries
from nexus.storage.pgpool import PgPool

from .conftest import make_entry

T0 = datetime(2030, 5, 1, tzinfo=UTC)


async def test_filters_and_pages(pool: PgPool, org_id: uuid.UUID) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    seqs = []
    for i in range(7):
        seqs.append((await append(pool, make_entry(
            org_id, i, actor_id=alice if i % 2 else bob, ts=T0 + timedelta(minutes=i),
            action="admin:virtual-key.create" if i < 5 else "admin:provider.update",
            resource_nrn=f"nrn:nexus:gateway:org/acme{'/emea' if i == 3 else ''}:virtual-key/{i}",
            outcome="denied" if i == 6 else "success"))).seq)

    mine = AuditFilter(org_id=org_id)
    page = await list_entries(pool, mine, limit=3)
    assert [r.seq for r in page.entries] == seqs[::-1][:3] and page.next_cursor == seqs[4]
    # A row appended meanwhile does not shift the next pages.
    await append(pool, make_entry(org_id, 7, ts=T0 + timedelta(minutes=7)))
    page2 = await list_entries(pool, mine, page.next_cursor, 3)
    page3 = await list_entries(pool, mine, page2.next_cursor, 3)
    assert [r.seq for r in page2.entries + page3.entries] == seqs[::-1][3:] and page3.next_cursor is None

    async def seqs_for(**kw: object) -> list[int]:
        return [r.seq for r in (await list_entries(pool, AuditFilter(org_id=org_id, **kw), limit=100)).entries]

    assert await seqs_for(actor_id=alice) == [s for i, s in enumerate(seqs) if i % 2][::-1]
    assert await seqs_for(action_prefix="admin:provider.") == seqs[5:][::-1]
    assert await seqs_for(nrn_prefix="nrn:nexus:gateway:org/acme/emea") == [seqs[3]]
    assert await seqs_for(nrn_prefix="nrn:nexus:gateway:org/acme_") == []  # "_" is literal, not a wildcard
    assert await seqs_for(outcome="denied") == [seqs[6]]
    assert await seqs_for(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)) == [seqs[3], seqs[2]]
    row = (await list_entries(pool, AuditFilter(org_id=org_id, outcome="denied"))).entries[0]
    assert row.after == {"name": "key-6", "rpm": 6, "allowed_models": ["*"]} and row.source_ip == "10.0.0.1"
    assert row.ts == T0 + timedelta(minutes=6) and row.actor_id == bob


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"limit": 0}, "limit"), ({"limit": 5000}, "limit"), ({"cursor": -1}, "cursor"),
    ({"filters": AuditFilter(outcome="nope")}, "outcome"), ({"filters": AuditFilter(actor_type="x")}, "actor_type"),
    ({"filters": AuditFilter(since=datetime(2030, 1, 1))}, "since"),
])
async def test_bad_queries_are_refused(pool: PgPool, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AuditError, match=message):
        await list_entries(pool, **kwargs)  # type: ignore[arg-type]
