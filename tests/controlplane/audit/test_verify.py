"""Verification against tampering done the only way the database allows: as a superuser with the append-only
trigger disabled.  Each test tampers with a database of its own (``own_pool``), never the session's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest

from nexus.controlplane.audit import AuditError
from nexus.controlplane.audit.chain import ChainRow, link_hash
from nexus.controlplane.audit.log import append, append_in
from nexus.controlplane.audit.record import SELECT_COLUMNS, AuditRow
from nexus.controlplane.audit.verify import verify
from nexus.storage.pgpool import PgPool

from .conftest import make_entry

ROWS = 12


@contextmanager
def tampering(url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE admin_audit_log DISABLE TRIGGER admin_audit_log_no_change")
        try:
            yield conn
        finally:
            conn.execute("ALTER TABLE admin_audit_log ENABLE TRIGGER admin_audit_log_no_change")


async def _chain(pool: PgPool, n: int = ROWS) -> list[int]:
    org = uuid.uuid4()
    seqs = [(await append(pool, make_entry(org, i, before={"rpm": i - 1} if i else None))).seq for i in range(n)]
    report = await verify(pool)
    assert report.ok and report.rows_checked == n and report.problems == []
    return seqs


async def test_an_untouched_chain_verifies_in_small_batches(own_pool: PgPool) -> None:
    seqs = await _chain(own_pool)
    report = await verify(own_pool, batch=5)
    assert report.ok and report.rows_checked == ROWS and report.first_bad_seq is None
    assert report.last_seq == seqs[-1] and report.last_hash is not None and len(report.last_hash) == 64


async def test_an_empty_log_verifies(own_pool: PgPool) -> None:
    report = await verify(own_pool)
    assert report.ok and report.rows_checked == 0 and report.last_hash is None


async def test_the_triggers_refuse_changes(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool, 2)
    with psycopg.connect(own_db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE admin_audit_log SET actor_label = 'x' WHERE seq = %s", (seqs[0],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM admin_audit_log WHERE seq = %s", (seqs[0],))


async def test_a_modified_row_is_reported_as_modified(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool)
    victim = seqs[5]
    with tampering(own_db_url) as conn:
        conn.execute("""UPDATE admin_audit_log SET after = '{"name": "key-5", "rpm": 5000, "allowed_models": ["*"]}'
                        WHERE seq = %s""", (victim,))
    report = await verify(own_pool, batch=4)
    assert not report.ok and report.first_bad_seq == victim
    assert [(p.seq, p.kind) for p in report.problems] == [(victim, "modified")]


async def test_an_edit_that_jsonb_would_normalise_away_is_still_seen(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool, 3)
    with tampering(own_db_url) as conn:  # rpm 1 -> 1.0: equal as a float, not as stored digits
        conn.execute("""UPDATE admin_audit_log SET after = jsonb_set(after, '{rpm}', '1.0') WHERE seq = %s""",
                     (seqs[1],))
    report = await verify(own_pool)
    assert [(p.seq, p.kind) for p in report.problems] == [(seqs[1], "modified")]


async def test_a_deleted_middle_row_is_reported(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool)
    with tampering(own_db_url) as conn:
        conn.execute("DELETE FROM admin_audit_log WHERE seq = %s", (seqs[4],))
    report = await verify(own_pool, batch=3)
    assert not report.ok and report.rows_checked == ROWS - 1
    assert [(p.seq, p.kind) for p in report.problems] == [(seqs[5], "deleted")]
    assert str(seqs[3]) in report.problems[0].detail


async def test_a_deleted_first_row_is_reported(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool, 4)
    with tampering(own_db_url) as conn:
        conn.execute("DELETE FROM admin_audit_log WHERE seq = %s", (seqs[0],))
    report = await verify(own_pool)
    assert [(p.seq, p.kind) for p in report.problems] == [(seqs[1], "deleted")]


async def test_a_consistently_rehashed_row_breaks_the_next_link(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool)
    victim = seqs[6]
    with tampering(own_db_url) as conn:
        conn.execute("UPDATE admin_audit_log SET actor_label = 'someone-else' WHERE seq = %s", (victim,))
        raw = conn.execute(f"SELECT {SELECT_COLUMNS} FROM admin_audit_log WHERE seq = %s", (victim,)).fetchone()
        assert raw is not None
        row = AuditRow.from_db(raw)
        conn.execute("UPDATE admin_audit_log SET hash = %s WHERE seq = %s",
                     (link_hash(row.prev_hash, row.chain_row()), victim))
    report = await verify(own_pool)
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(seqs[7], "broken_link")]


async def test_swapped_rows_are_reported(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool)
    a, b = seqs[3], seqs[4]
    with tampering(own_db_url) as conn, conn.transaction():
        conn.execute("UPDATE admin_audit_log SET seq = -1 WHERE seq = %s", (a,))
        conn.execute("UPDATE admin_audit_log SET seq = %s WHERE seq = %s", (a, b))
        conn.execute("UPDATE admin_audit_log SET seq = %s WHERE seq = -1", (b,))
    report = await verify(own_pool)
    assert not report.ok and report.first_bad_seq == a
    assert [(p.seq, p.kind) for p in report.problems] == [(a, "broken_link"), (b, "broken_link"),
                                                          (seqs[5], "broken_link")]


async def test_a_row_inserted_into_the_chain_is_reported_as_forged(own_pool: PgPool, own_db_url: str) -> None:
    """Inserting mid-chain takes dropping the uniqueness of prev_hash; the forger even computes a valid hash."""
    org = uuid.uuid4()
    before = [await append(own_pool, make_entry(org, i)) for i in range(3)]
    with pytest.raises(ZeroDivisionError):  # a rolled-back append leaves a seq gap for the forger to use
        async with own_pool.connection() as conn, conn.transaction():
            await append_in(conn, make_entry(org, 99))
            1 / 0  # noqa: B018
    after = [await append(own_pool, make_entry(org, i)) for i in range(3, 5)]
    gap = before[-1].seq + 1
    assert after[0].seq > gap
    with tampering(own_db_url) as conn:
        conn.execute("ALTER TABLE admin_audit_log DROP CONSTRAINT admin_audit_log_chain_key")
        forged = ChainRow(id=str(uuid.uuid4()), ts=datetime.now(UTC), actor_type="system", actor_id=None,
                          actor_label="", action="admin:user.delete", resource_nrn="nrn:nexus:iam::user/x", org_id=None,
                          outcome="success", before=None, after=None, source_ip=None, user_agent=None, request_id=None)
        conn.execute("INSERT INTO admin_audit_log (seq, id, ts, actor_type, action, resource_nrn, outcome, prev_hash, "
                     "hash) VALUES (%s, %s, %s, 'system', 'admin:user.delete', 'nrn:nexus:iam::user/x', 'success', "
                     "%s, %s)", (gap, forged.id, forged.ts, before[-1].hash, link_hash(before[-1].hash, forged)))
    report = await verify(own_pool)
    assert [(p.seq, p.kind) for p in report.problems] == [(gap, "forged")]


async def test_a_forged_row_with_a_made_up_hash_is_reported(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool, 5)
    with tampering(own_db_url) as conn:
        tail = conn.execute("SELECT hash FROM admin_audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        assert tail is not None
        forged = conn.execute(
            "INSERT INTO admin_audit_log (actor_type, action, resource_nrn, outcome, prev_hash, hash) "
            "VALUES ('system', 'admin:user.delete', 'nrn:nexus:iam::user/x', 'success', %s, %s) RETURNING seq",
            (tail[0], b"\x07" * 32)).fetchone()
    assert forged is not None
    report = await verify(own_pool)
    assert [(p.seq, p.kind) for p in report.problems] == [(forged[0], "modified")]
    assert seqs[-1] < forged[0]


async def test_the_problem_list_is_capped_but_counted(own_pool: PgPool, own_db_url: str) -> None:
    seqs = await _chain(own_pool)
    with tampering(own_db_url) as conn:
        conn.execute("UPDATE admin_audit_log SET actor_label = 'x' WHERE seq = ANY(%s)", (seqs[::2],))
    report = await verify(own_pool, max_problems=2)
    assert len(report.problems) == 2 and report.problems_total == len(seqs[::2])
    assert report.first_bad_seq == seqs[0]


async def test_bad_batch_sizes_are_refused(own_pool: PgPool) -> None:
    with pytest.raises(AuditError, match="batch"):
        await verify(own_pool, batch=0)
