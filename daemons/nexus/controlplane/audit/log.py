"""Appending to the admin audit log (Trio, PostgreSQL).

An append runs in one transaction:

1. ``pg_advisory_xact_lock(LOCK_KEY)`` serialises appenders cheaply (the lock is held
   until the transaction ends).  The same statement round-trips ``before``/``after``
   through jsonb and ``source_ip`` through inet, so the hash is computed over the
   values exactly as they will read back (see ``nexus.controlplane.audit.chain``).
2. A new statement (so, under READ COMMITTED, a snapshot taken after the lock) reads
   the tail hash.
3. The INSERT carries ``prev_hash`` = that tail and the hash of the row.

The table's ``UNIQUE NULLS NOT DISTINCT (prev_hash)`` is the backstop: an appender that
did not take the lock and read the same tail collides, and the append is retried with
the new tail.  ``ts`` is fixed here (not by the column default) so that the hash covers
the stored value.

``append_in`` appends inside the caller's open transaction, so a resource write and
its audit row commit together.  It holds the lock until the caller commits: keep such
transactions short, and at READ COMMITTED (the default), or a retry cannot see the new
tail.

Errors: ``AuditError`` for an entry the log refuses (or ``append_in`` outside a
transaction); ``AuditConflict`` when retries ran out; psycopg's and the pool's own
errors otherwise.  ``trio.Cancelled`` rolls back the attempt.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

import attrs
from psycopg import errors as e
from psycopg import pq

from nexus.controlplane.audit.chain import ChainRow, link_hash
from nexus.controlplane.audit.mask import mask_secrets
from nexus.controlplane.audit.record import AdminAuditEntry, AuditError
from nexus.storage.pg import TrioConnection
from nexus.storage.pgpool import PgPool

__all__ = ["LOCK_KEY", "AppendedRow", "AuditConflict", "append", "append_in"]

logger = logging.getLogger(__name__)

# "nxaudit0" read as a big-endian int64, the same scheme as the migrator's and the
# partition keeper's keys, so the three never collide.
LOCK_KEY = int.from_bytes(b"nxaudit0", "big")
CHAIN_CONSTRAINT = "admin_audit_log_chain_key"
ATTEMPTS = 8

_NORMALISE = "SELECT pg_advisory_xact_lock(%s), %s::jsonb::text, %s::jsonb::text, abbrev(%s::inet)"
_TAIL = "SELECT hash FROM admin_audit_log ORDER BY seq DESC LIMIT 1"
_INSERT = (
    "INSERT INTO admin_audit_log (id, ts, actor_type, actor_id, actor_label, action, resource_nrn, org_id, "
    "outcome, before, after, source_ip, user_agent, request_id, prev_hash, hash) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::inet, %s, %s, %s, %s) RETURNING seq"
)


class AuditConflict(Exception):
    """Every attempt collided with another appender (one that does not take the lock, or a stale snapshot)."""


@attrs.frozen
class AppendedRow:
    seq: int
    id: uuid.UUID
    ts: datetime
    prev_hash: bytes | None
    hash: bytes


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(mask_secrets(value), ensure_ascii=False, allow_nan=False)


async def _one(conn: TrioConnection[Any], query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    cur = await conn.execute(query, params)
    row: tuple[Any, ...] | None = await cur.fetchone()
    return row


async def _append_once(conn: TrioConnection[Any], entry: AdminAuditEntry, ts: datetime) -> AppendedRow:
    try:
        normal = await _one(conn, _NORMALISE,
                            (LOCK_KEY, _json_text(entry.before), _json_text(entry.after), entry.source_ip))
    except (e.DataError, e.InvalidTextRepresentation) as exc:
        raise AuditError(f"entry refused by the database: {exc.diag.message_primary or exc}") from None
    assert normal is not None
    _, before, after, source_ip = normal
    tail = await _one(conn, _TAIL)
    prev_hash = bytes(tail[0]) if tail is not None else None
    row = ChainRow(
        id=str(entry.id), ts=ts, actor_type=entry.actor_type,
        actor_id=str(entry.actor_id) if entry.actor_id is not None else None,
        actor_label=entry.actor_label, action=entry.action, resource_nrn=entry.resource_nrn,
        org_id=str(entry.org_id) if entry.org_id is not None else None, outcome=entry.outcome,
        before=before, after=after, source_ip=source_ip, user_agent=entry.user_agent, request_id=entry.request_id,
    )
    digest = link_hash(prev_hash, row)
    inserted = await _one(conn, _INSERT, (
        entry.id, ts, entry.actor_type, entry.actor_id, entry.actor_label, entry.action, entry.resource_nrn,
        entry.org_id, entry.outcome, before, after, source_ip, entry.user_agent, entry.request_id, prev_hash, digest,
    ))
    assert inserted is not None
    return AppendedRow(int(inserted[0]), entry.id, ts, prev_hash, digest)


def _chain_collision(exc: e.UniqueViolation) -> bool:
    return exc.diag.constraint_name == CHAIN_CONSTRAINT


async def append_in(conn: TrioConnection[Any], entry: AdminAuditEntry) -> AppendedRow:
    """Append ``entry`` inside the transaction open on ``conn``; it commits (or not) with the caller's.

    Each attempt runs in a savepoint, so a collision (retried) or a refused entry
    (``AuditError``) leaves the caller's transaction usable.
    """
    if conn.pgconn.transaction_status != pq.TransactionStatus.INTRANS:
        raise AuditError("append_in needs a connection inside an open transaction (use append otherwise)")
    ts = entry.stamped()
    for _ in range(ATTEMPTS):
        try:
            async with conn.transaction():
                return await _append_once(conn, entry, ts)
        except e.UniqueViolation as exc:
            if not _chain_collision(exc):
                raise
            logger.debug("admin audit append collided on the chain tail; retrying")
    raise AuditConflict(f"admin audit append collided {ATTEMPTS} times; is the transaction READ COMMITTED?")


async def append(pool: PgPool, entry: AdminAuditEntry) -> AppendedRow:
    """Append ``entry`` in a transaction of its own, retrying when another appender took the tail."""
    ts = entry.stamped()
    for _ in range(ATTEMPTS):
        try:
            async with pool.connection() as conn, conn.transaction():
                return await _append_once(conn, entry, ts)
        except e.UniqueViolation as exc:
            if not _chain_collision(exc):
                raise
            logger.debug("admin audit append collided on the chain tail; retrying")
    raise AuditConflict(f"admin audit append collided {ATTEMPTS} times")
