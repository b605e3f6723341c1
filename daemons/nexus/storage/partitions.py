"""Daily partitions of the traffic tables: create ahead, rescue the DEFAULT partition, drop at retention.

``traffic_event`` and ``traffic_event_payload`` are partitioned by range of ``ts``, one
partition per UTC day named ``<table>_pYYYYMMDD`` (see db/migrations/0005_traffic.sql).
Retention drops whole partitions: it never deletes rows.

Each table also has a DEFAULT partition, so an event whose day has no partition yet
(first start before maintenance ran, a skewed agent clock) is stored, not lost. When
``ensure_partitions`` creates a day's partition it moves that day's rows out of the
DEFAULT partition first (a day's partition cannot be attached while the DEFAULT one holds
rows of that day), and it creates partitions for every past day found there, so those rows
then age out with their day. Rows dated beyond the create-ahead window stay in the DEFAULT
partition; ``check_default`` counts them and logs a warning while any are there.

``plan_create`` and ``plan_drop`` are the pure decisions; the rest runs them with sync
psycopg (the CLI, or the hub's maintenance job through ``trio.to_thread``). Maintenance
from several hubs is serialised by a transaction-level advisory lock (``LOCK_KEY``). The
steps that need exclusive locks (attach, drop) wait at most ``LOCK_TIMEOUT_MS`` per
attempt, so traffic never queues behind them for longer, and retry with backoff; a step
still blocked after ``LOCK_ATTEMPTS`` fails and the next run catches up.

Resource handling: functions take a caller-owned connection (autocommit or not), which
must not be inside a transaction; each step runs in its own short transaction on it, and
the caller closes it.

Error handling: PostgreSQL failures (including a lock timeout) surface as
``PartitionError`` naming the table; a failed step is rolled back and earlier steps stay
committed. Bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

__all__ = [
    "DAYS_AHEAD",
    "LOCK_ATTEMPTS",
    "LOCK_KEY",
    "LOCK_TIMEOUT_MS",
    "PARTITIONED_TABLES",
    "DefaultPartitionRows",
    "MaintenanceReport",
    "PartitionError",
    "check_default",
    "day_bounds",
    "drop_expired",
    "ensure_partitions",
    "existing_partitions",
    "maintain",
    "partition_day",
    "partition_name",
    "plan_create",
    "plan_drop",
    "uuid7_time",
]

PARTITIONED_TABLES: tuple[str, ...] = ("traffic_event", "traffic_event_payload")
DAYS_AHEAD = 7

# "nexusprt" read as a big-endian int64; distinct from the migration lock.
LOCK_KEY = int.from_bytes(b"nexusprt", "big")

# Dropping a partition locks the parent table exclusively, and attaching one locks the
# DEFAULT partition exclusively: both wait for in-flight writes and reads, and meanwhile
# new ones queue behind them. So each attempt gives up after LOCK_TIMEOUT_MS and is
# retried, up to LOCK_ATTEMPTS times (about 40 s in all), before the step fails.
LOCK_TIMEOUT_MS = 250
LOCK_ATTEMPTS = 40

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")
_log = logging.getLogger(__name__)


class PartitionError(Exception):
    """A partition maintenance step failed in PostgreSQL; the message names the table."""


@attrs.frozen
class DefaultPartitionRows:
    """What a table's DEFAULT partition holds: rows whose day has no partition."""

    table: str
    rows: int
    oldest: datetime | None
    newest: datetime | None


@attrs.frozen
class MaintenanceReport:
    created: list[str]
    dropped: list[str]
    default_rows: list[DefaultPartitionRows]


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def partition_day(table: str, name: str) -> date | None:
    """The day of a partition name made by ``partition_name``, or None for any other name."""
    match = re.fullmatch(re.escape(table) + r"_p([0-9]{8})", name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The [lower, upper) range of a day's partition: UTC midnight to the next."""
    lower = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return lower, lower + timedelta(days=1)


def uuid7_time(event_id: uuid.UUID) -> datetime:
    """The millisecond timestamp inside a UUIDv7: the ``ts`` its traffic rows must carry.

    The Python twin of the SQL function ``uuid7_time`` that the traffic tables' CHECK uses.
    """
    if (event_id.int >> 76) & 0xF != 7:
        raise ValueError(f"{event_id} is not a UUIDv7")
    return _EPOCH + timedelta(milliseconds=event_id.int >> 80)


def plan_create(
    existing: Iterable[date], default_days: Iterable[date], today: date, days_ahead: int
) -> list[date]:
    """Days that need a partition: today through today + days_ahead, and every day up to
    the end of that window that has rows in the DEFAULT partition, less those that exist."""
    if days_ahead < 0:
        raise ValueError("days_ahead must be >= 0")
    last = today + timedelta(days=days_ahead)
    wanted = {today + timedelta(days=n) for n in range(days_ahead + 1)}
    wanted.update(day for day in default_days if day <= last)
    return sorted(wanted.difference(existing))


def plan_drop(existing: Iterable[date], today: date, retention_days: int) -> list[date]:
    """Partitions past retention: those of days before today - retention_days. Data is
    thus kept for today plus at least ``retention_days`` whole days before it."""
    if retention_days < 1:
        raise ValueError("retention_days must be >= 1")
    cutoff = today - timedelta(days=retention_days)
    return sorted(day for day in existing if day < cutoff)


def existing_partitions(conn: psycopg.Connection[Any], table: str) -> list[date]:
    """Days that have a partition of ``table``, ascending."""
    try:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            (table,),
        ).fetchall()
    except psycopg.Error as exc:
        raise PartitionError(f"{table}: cannot list partitions: {_message(exc)}") from exc
    return sorted(day for (name,) in rows if (day := partition_day(table, name)) is not None)


def ensure_partitions(
    conn: psycopg.Connection[Any],
    *,
    days_ahead: int = DAYS_AHEAD,
    today: date | None = None,
    tables: Sequence[str] = PARTITIONED_TABLES,
) -> list[str]:
    """Create the partitions ``plan_create`` asks for; return their names (empty when all exist).

    Idempotent. Rows of a new partition's day are moved out of the DEFAULT partition in
    the same transaction that attaches it, so no reader sees them twice or not at all.
    """
    _check_idle(conn)
    day = today or _utc_today()
    created: list[str] = []
    for table in tables:
        try:
            created += _ensure_table(conn, table, day, days_ahead)
        except psycopg.Error as exc:
            raise PartitionError(f"{table}: cannot create partitions: {_message(exc)}") from exc
    return created


def drop_expired(
    conn: psycopg.Connection[Any],
    *,
    retention_days: int,
    today: date | None = None,
    tables: Sequence[str] = PARTITIONED_TABLES,
) -> list[str]:
    """Drop the partitions ``plan_drop`` names, one short transaction each; return their names.

    Never touches the DEFAULT partition or a partition inside the retention window.
    """
    _check_idle(conn)
    day = today or _utc_today()
    dropped: list[str] = []
    for table in tables:
        with conn.transaction():
            existing = existing_partitions(conn, table)
        for expired in plan_drop(existing, day, retention_days):
            name = partition_name(table, expired)
            drop = sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name))
            try:
                _locked(conn, functools.partial(conn.execute, drop))
            except psycopg.Error as exc:
                raise PartitionError(f"{table}: cannot drop {name}: {_message(exc)}") from exc
            _log.info("dropped partition %s (retention %d days)", name, retention_days)
            dropped.append(name)
    return dropped


def check_default(
    conn: psycopg.Connection[Any], tables: Sequence[str] = PARTITIONED_TABLES
) -> list[DefaultPartitionRows]:
    """Count the rows each table's DEFAULT partition holds; log a warning for every non-empty one."""
    _check_idle(conn)
    reports: list[DefaultPartitionRows] = []
    for table in tables:
        try:
            with conn.transaction():
                default = _default_partition(conn, table)
                if default is None:
                    continue
                count, oldest, newest = conn.execute(
                    sql.SQL("SELECT count(*), min(ts), max(ts) FROM {}").format(sql.Identifier(default))
                ).fetchone() or (0, None, None)
        except psycopg.Error as exc:
            raise PartitionError(f"{table}: cannot inspect the default partition: {_message(exc)}") from exc
        report = DefaultPartitionRows(table=table, rows=count, oldest=oldest, newest=newest)
        if count:
            _log.warning(
                "%s holds %d rows without a day partition (ts %s .. %s); "
                "they are moved when their day's partition is created",
                default,
                count,
                oldest,
                newest,
            )
        reports.append(report)
    return reports


def maintain(
    conn: psycopg.Connection[Any],
    *,
    retention_days: int,
    days_ahead: int = DAYS_AHEAD,
    today: date | None = None,
    tables: Sequence[str] = PARTITIONED_TABLES,
) -> MaintenanceReport:
    """One maintenance pass, as the hub's retention job runs it: create, drop, check."""
    day = today or _utc_today()
    created = ensure_partitions(conn, days_ahead=days_ahead, today=day, tables=tables)
    dropped = drop_expired(conn, retention_days=retention_days, today=day, tables=tables)
    return MaintenanceReport(created=created, dropped=dropped, default_rows=check_default(conn, tables))


def _ensure_table(conn: psycopg.Connection[Any], table: str, today: date, days_ahead: int) -> list[str]:
    # Plan once without locks: on most runs nothing is missing and the DEFAULT partition is
    # empty, and then no exclusive lock is taken at all.
    with conn.transaction():
        default = _default_partition(conn, table)
        if not plan_create(existing_partitions(conn, table), _default_days(conn, default), today, days_ahead):
            return []
    created = _locked(conn, lambda: _create(conn, table, default, today, days_ahead))
    for name in created:
        _log.info("created partition %s", name)
    return created


def _create(
    conn: psycopg.Connection[Any], table: str, default: str | None, today: date, days_ahead: int
) -> list[str]:
    if default is not None:
        # ATTACH takes this lock anyway; taking it first also stops a writer from adding a
        # row of the new day to the DEFAULT partition between the move and the attach.
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(default)))
    default_days = _default_days(conn, default)
    columns = sql.SQL(", ").join(map(sql.Identifier, _columns(conn, table)))
    created: list[str] = []
    for day in plan_create(existing_partitions(conn, table), default_days, today, days_ahead):
        name = partition_name(table, day)
        lower, upper = day_bounds(day)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                " INCLUDING STORAGE INCLUDING COMPRESSION)"
            ).format(sql.Identifier(name), sql.Identifier(table))
        )
        if default is not None and day in default_days:
            moved = conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {default} WHERE ts >= {lower} AND ts < {upper}"
                    " RETURNING {cols}) INSERT INTO {name} ({cols}) SELECT {cols} FROM moved"
                ).format(
                    default=sql.Identifier(default),
                    name=sql.Identifier(name),
                    cols=columns,
                    lower=sql.Literal(lower),
                    upper=sql.Literal(upper),
                )
            ).rowcount
            _log.warning("moved %d rows from %s into new partition %s", moved, default, name)
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(table),
                sql.Identifier(name),
                sql.Literal(lower.isoformat()),
                sql.Literal(upper.isoformat()),
            )
        )
        created.append(name)
    return created


def _default_partition(conn: psycopg.Connection[Any], table: str) -> str | None:
    row = conn.execute(
        "SELECT d.relname FROM pg_partitioned_table p"
        " LEFT JOIN pg_class d ON d.oid = p.partdefid WHERE p.partrelid = %s::regclass",
        (table,),
    ).fetchone()
    if row is None:
        raise PartitionError(f"{table} is not a partitioned table")
    name: str | None = row[0]
    return name


def _default_days(conn: psycopg.Connection[Any], default: str | None) -> set[date]:
    if default is None:
        return set()
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM {}").format(sql.Identifier(default))
    ).fetchall()
    return {day for (day,) in rows}


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return [name for (name,) in rows]


def _locked(conn: psycopg.Connection[Any], step: Callable[[], _T]) -> _T:
    """Run ``step`` in a transaction holding the maintenance lock, retrying lock timeouts.

    Each attempt waits at most LOCK_TIMEOUT_MS for any lock, so traffic queued behind a
    waiting DROP or ATTACH is held up for no longer than that; between attempts the
    in-flight transactions that held the lock get to finish.
    """
    attempt = 1
    while True:
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{LOCK_TIMEOUT_MS}ms",))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                return step()
        except errors.LockNotAvailable:
            if attempt >= LOCK_ATTEMPTS:
                raise
            time.sleep(min(1.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
            attempt += 1


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    # Inside a caller's transaction every step would become a savepoint and every lock
    # would be held until the caller commits: exactly what the short transactions avoid.
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("partition maintenance needs a connection that is not inside a transaction")


def _utc_today() -> date:
    return datetime.now(UTC).date()


def _message(exc: psycopg.Error) -> str:
    if isinstance(exc, errors.LockNotAvailable):
        return (
            f"still waiting for locks after {LOCK_ATTEMPTS} attempts of {LOCK_TIMEOUT_MS} ms"
            " (a long transaction on the table?)"
        )
    return exc.diag.message_primary or str(exc).strip() or type(exc).__name__
