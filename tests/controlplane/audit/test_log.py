"""Appending: concurrent appenders form one unbroken chain, append_in commits with the caller's transaction,
secrets are masked before they are stored, and bad entries are refused with a clear error."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import trio

from nexus.controlplane.audit import AdminAuditEntry, AuditError
from nexus.controlplane.audit.chain import ChainRow, link_hash
from nexus.controlplane.audit.log import AppendedRow, append, append_in
from nexus.controlplane.audit.mask import MASK
from nexus.controlplane.audit.verify import verify
from nexus.storage.pgpool import PgPool

from .conftest import make_entry


def _rows(db_url: str, org_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT seq, id, prev_hash, hash, after FROM admin_audit_log WHERE org_id = %s "
                            "ORDER BY seq", (org_id,)).fetchall()


async def test_concurrent_appends_form_one_chain(pool: PgPool, db_url: str, org_id: uuid.UUID) -> None:
    tasks, per_task = 8, 25
    appended = []

    async def appender(t: int) -> None:
        for i in range(per_task):
            appended.append(await append(pool, make_entry(org_id, t * 1000 + i)))

    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(appender, t)

    assert len(appended) == tasks * per_task
    stored = _rows(db_url, org_id)
    assert sorted(r[0] for r in stored) == sorted(a.seq for a in appended)
    assert {bytes(r[3]) for r in stored} == {a.hash for a in appended}
    report = await verify(pool, batch=37)  # several batches, whatever else the session appended
    assert report.ok, report.problems
    assert report.rows_checked >= tasks * per_task
    # Serialised appenders: each row names the row appended just before it (by seq) as its predecessor.
    with psycopg.connect(db_url) as conn:
        broken = conn.execute("SELECT count(*) FROM admin_audit_log a JOIN LATERAL (SELECT hash FROM admin_audit_log "
                              "WHERE seq < a.seq ORDER BY seq DESC LIMIT 1) p ON true "
                              "WHERE a.prev_hash IS DISTINCT FROM p.hash").fetchone()
    assert broken == (0,)


async def test_an_appender_that_skips_the_lock_collides_and_the_append_retries(
        pool: PgPool, db_url: str, org_id: uuid.UUID, caplog: pytest.LogCaptureFixture) -> None:
    """A rogue writer (no lock) chains a row in; the locked appender read the old tail, collides, and retries."""
    caplog.set_level(logging.DEBUG, logger="nexus.controlplane.audit.log")
    await append(pool, make_entry(org_id, 0))
    result: list[AppendedRow] = []
    async with trio.open_nursery() as nursery, pool.connection() as rogue, rogue.transaction():
        tail = await (await rogue.execute("SELECT hash FROM admin_audit_log ORDER BY seq DESC LIMIT 1")).fetchone()
        assert tail is not None
        row = ChainRow(id=str(uuid.uuid4()), ts=datetime.now(UTC), actor_type="system", actor_id=None,
                       actor_label="rogue", action="admin:test.rogue", resource_nrn="nrn:nexus:platform::x",
                       org_id=str(org_id), outcome="success", before=None, after=None, source_ip=None,
                       user_agent=None, request_id=None)
        rogue_hash = link_hash(bytes(tail[0]), row)
        await rogue.execute(
            "INSERT INTO admin_audit_log (id, ts, actor_type, actor_label, action, resource_nrn, org_id, outcome, "
            "prev_hash, hash) VALUES (%s, %s, 'system', 'rogue', 'admin:test.rogue', 'nrn:nexus:platform::x', "
            "%s, 'success', %s, %s)", (row.id, row.ts, org_id, bytes(tail[0]), rogue_hash))

        async def appender() -> None:
            result.append(await append(pool, make_entry(org_id, 2)))

        nursery.start_soon(appender)
        # Until the rogue commits, the appender's INSERT waits on the unique index.  (Watched from
        # another session: inside a transaction, pg_stat_activity is a snapshot.)
        with trio.fail_after(20):
            while True:
                async with pool.connection() as watcher:
                    waiting = await (await watcher.execute(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                        "WHERE NOT l.granted AND l.locktype = 'transactionid' AND a.datname = current_database()"
                    )).fetchone()
                if waiting is not None and waiting[0] > 0:
                    break
                await trio.sleep(0.02)
    assert result[0].prev_hash == rogue_hash
    assert "collided" in caplog.text
    assert (await verify(pool)).ok


async def test_append_in_commits_and_rolls_back_with_the_caller(
        pool: PgPool, db_url: str, org_id: uuid.UUID) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pool.connection() as conn, conn.transaction():
            await append_in(conn, make_entry(org_id, 1))
            raise Boom
    assert _rows(db_url, org_id) == []

    first = await append(pool, make_entry(org_id, 2))
    async with pool.connection() as conn, conn.transaction():
        # A failed append (here: an id used twice) does not spoil the caller's transaction.
        with pytest.raises(psycopg.errors.UniqueViolation):
            await append_in(conn, make_entry(org_id, 3, id=first.id))
        await append_in(conn, make_entry(org_id, 4))
        await conn.execute("SELECT 1")
    assert len(_rows(db_url, org_id)) == 2

    async with pool.connection() as conn:
        with pytest.raises(AuditError, match="open transaction"):
            await append_in(conn, make_entry(org_id, 5))
    assert (await verify(pool)).ok


async def test_secrets_are_masked_before_they_are_stored(pool: PgPool, db_url: str, org_id: uuid.UUID) -> None:
    before = {"name": "primary", "secret_hint": "abcd", "key_id": "k1", "ciphertext": "3q2+7w==", "nonce": "AAAA"}
    after = {"name": "primary", "secret": "sk-live-super-secret", "weight": 2}
    await append(pool, make_entry(org_id, 1, action="admin:credential.update", before=before, after=after))
    (row,) = _rows(db_url, org_id)
    assert row[4] == {"name": "primary", "secret": MASK, "weight": 2}
    with psycopg.connect(db_url) as conn:
        text = conn.execute("SELECT before::text || after::text FROM admin_audit_log WHERE org_id = %s",
                            (org_id,)).fetchone()
    assert text is not None and "sk-live" not in text[0] and "3q2+" not in text[0] and "abcd" in text[0]


@pytest.mark.parametrize(("fields", "message"), [
    ({"actor_type": "robot"}, "actor_type"),
    ({"outcome": "maybe"}, "outcome"),
    ({"action": "create key"}, "action"),
    ({"resource_nrn": "arn:aws:s3:::x"}, "resource_nrn"),
    ({"actor_id": None}, "actor_id is required"),
    ({"actor_id": "not-a-uuid"}, "actor_id must be a uuid"),
    ({"source_ip": "10.0.0.300"}, "source_ip"),
    ({"after": {"x": float("nan")}}, "after"),
    ({"after": ["not", "an", "object"]}, "after must be a JSON object"),
    ({"before": {"x": "nul\x00"}}, "NUL"),
    ({"actor_label": "nul\x00"}, "NUL"),
    ({"ts": __import__("datetime").datetime(2025, 1, 1)}, "timezone-aware"),
])
def test_bad_entries_are_refused_by_field(org_id: uuid.UUID, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(AuditError, match=message):
        make_entry(org_id, **fields)


def test_system_actors_need_no_id_and_user_agents_are_bounded() -> None:
    entry = AdminAuditEntry(actor_type="system", action="admin:vault.rotate", resource_nrn="nrn:nexus:platform::vault",
                            user_agent="x" * 5000)
    assert entry.actor_id is None and entry.user_agent == "x" * 1024
