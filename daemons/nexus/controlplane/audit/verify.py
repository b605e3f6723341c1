"""Verifying the admin audit chain: stream every row by ``seq`` and report what broke.

Rows are read in keyset batches up to the ``seq`` that was last when verification
began (later appends are the next run's), so memory stays bounded whatever the length
of the log.  For each row:

- its hash is recomputed from its predecessor's hash and its canonical encoding; a
  mismatch is ``modified`` (the row was edited after it was written, or its stored hash
  was);
- its ``prev_hash`` must be the hash of the row before it in ``seq`` order (NULL for the
  first row).  When it is not, one indexed lookup of ``prev_hash`` names the break:

  * no row has that hash, and ``seq`` values are missing in between: ``deleted``;
  * no row has that hash and no ``seq`` is missing: ``broken_link`` (the row before was
    rewritten with a fresh hash: its successor still names the old one);
  * the row before names the same predecessor: that row is ``forged`` (inserted into the
    chain, which takes dropping the table's uniqueness constraint);
  * a second chain start (``prev_hash`` NULL): ``forged``;
  * the hash belongs to another row: ``broken_link`` (rows re-ordered or inserted).

``seq`` gaps alone are not reported: an aborted append consumes a sequence value.
What a hash chain cannot show is a forged suffix whose hashes were all recomputed, or a
truncated tail: record ``VerifyReport.last_hash`` somewhere else to anchor it.
"""

from __future__ import annotations

from typing import Any

import attrs

from nexus.controlplane.audit.chain import link_hash
from nexus.controlplane.audit.record import SELECT_COLUMNS, AuditError, AuditRow
from nexus.storage.pg import TrioConnection
from nexus.storage.pgpool import PgPool

__all__ = ["Problem", "VerifyReport", "verify"]

MAX_PROBLEMS = 100

_BATCH = f"SELECT {SELECT_COLUMNS} FROM admin_audit_log WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s"


@attrs.frozen
class Problem:
    seq: int
    kind: str  # modified | deleted | forged | broken_link
    detail: str


@attrs.frozen
class VerifyReport:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None
    problems: list[Problem]
    problems_total: int  # problems beyond the first ``MAX_PROBLEMS`` are counted, not listed
    last_seq: int | None
    last_hash: str | None  # hex; the anchor to keep outside the database


@attrs.define
class _Walk:
    max_problems: int
    rows: int = 0
    prev: AuditRow | None = None
    problems: list[Problem] = attrs.Factory(list)
    total: int = 0

    def report(self, seq: int, kind: str, detail: str) -> None:
        self.total += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(seq, kind, detail))


async def _seq_of(conn: TrioConnection[Any], digest: bytes) -> int | None:
    cur = await conn.execute("SELECT seq FROM admin_audit_log WHERE hash = %s", (digest,))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def _check_link(conn: TrioConnection[Any], walk: _Walk, row: AuditRow) -> None:
    prev = walk.prev
    expected = prev.hash if prev is not None else None
    if row.prev_hash == expected:
        return
    if row.prev_hash is None:
        walk.report(row.seq, "forged", f"a second chain start (prev_hash NULL) after seq {prev.seq if prev else 0}")
        return
    found = await _seq_of(conn, row.prev_hash)
    if found is None:
        if prev is None:
            walk.report(row.seq, "deleted", "the chain start is missing: the first row names a predecessor")
        elif row.seq > prev.seq + 1:
            walk.report(row.seq, "deleted",
                        f"predecessor missing: rows between seq {prev.seq} and {row.seq} were deleted")
        else:
            walk.report(row.seq, "broken_link",
                        f"prev_hash names no row: seq {prev.seq} was rewritten with a new hash")
    elif prev is not None and prev.prev_hash == row.prev_hash:
        walk.report(prev.seq, "forged", f"seq {prev.seq} and seq {row.seq} both follow seq {found}: "
                                        f"seq {prev.seq} was inserted")
    else:
        walk.report(row.seq, "broken_link", f"links to seq {found}, which is not the row before it "
                                            "(rows inserted or reordered)")


async def verify(pool: PgPool, *, batch: int = 5000, max_problems: int = MAX_PROBLEMS) -> VerifyReport:
    """Recompute the whole chain, ``batch`` rows at a time; ``ok`` when no problem was found."""
    if not 1 <= batch <= 100_000:
        raise AuditError("batch must be between 1 and 100000")
    walk = _Walk(max_problems)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT max(seq) FROM admin_audit_log")
        top = await cur.fetchone()
        upper = int(top[0]) if top is not None and top[0] is not None else 0
        after = 0
        while after < upper:
            cur = await conn.execute(_BATCH, (after, upper, batch))
            rows = await cur.fetchall()
            if not rows:
                break
            for raw in rows:
                row = AuditRow.from_db(raw)
                walk.rows += 1
                if link_hash(row.prev_hash, row.chain_row()) != row.hash:
                    walk.report(row.seq, "modified", "stored hash does not match the row's contents")
                await _check_link(conn, walk, row)
                walk.prev = row
            after = walk.prev.seq if walk.prev is not None else upper
    first = min((p.seq for p in walk.problems), default=None)
    last = walk.prev
    return VerifyReport(
        ok=walk.total == 0, rows_checked=walk.rows, first_bad_seq=first, problems=walk.problems,
        problems_total=walk.total, last_seq=last.seq if last else None,
        last_hash=last.hash.hex() if last else None,
    )
