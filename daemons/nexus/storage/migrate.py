"""Plain-SQL schema migrations: discover the files, apply the pending ones, report status.

Migrations are ``NNNN_name.sql`` files (four or more digits, then a name) in
``db/migrations`` of the repository, or in ``$NEXUS_MIGRATIONS_DIR``, or in the directory
given by the caller. They are forward-only: an applied file is never edited (its SHA-256
is recorded and checked), and a fix is a new file with a higher number.

``migrate`` takes a session-level PostgreSQL advisory lock (``LOCK_KEY``) before it reads
``schema_migrations``, so concurrent migrators (two appliances upgrading against one
database, a CLI run racing first boot) serialise: the second waits, then finds nothing
pending. Each file runs in its own transaction together with the row that records it,
so a file is either applied and recorded or neither; statements that cannot run in a
transaction (``CREATE INDEX CONCURRENTLY``, ``VACUUM``) and transaction control are not
allowed in a file.

This is synchronous psycopg: it serves the CLI and first boot, never a daemon's event loop.

Resource handling: every function opens its own connection and closes it before it
returns; closing the session also releases the advisory lock, whatever failed.

Error handling: everything that goes wrong surfaces as ``MigrationError`` with a message
fit for an operator: connection failures, a malformed or duplicate file name, an applied
migration that changed or vanished, a migration out of order, a lock held too long, and
a failing migration (named, with the PostgreSQL message, SQLSTATE and line; it has been
rolled back and nothing after it runs). ``OSError`` from reading the directory is mapped
too.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import attrs
import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS_DIR",
    "MIGRATIONS_ENV",
    "AppliedMigration",
    "Migration",
    "MigrationError",
    "discover",
    "ensure_database",
    "migrate",
    "status",
]

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "db" / "migrations"
MIGRATIONS_ENV = "NEXUS_MIGRATIONS_DIR"

# "nexusmig" read as a big-endian int64: one fixed key all migrators agree on, unlikely to
# collide with any other advisory lock in the database.
LOCK_KEY = int.from_bytes(b"nexusmig", "big")

# How long a migrator waits for another one to finish before giving up.
LOCK_WAIT_SECONDS = 600.0

# Applied to connections only where the DSN does not say otherwise: bounded connect, and
# TCP keepalives so a dead server is noticed during a long migration instead of hanging.
_CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "application_name": "nexus-migrate",
}

_Conn: TypeAlias = psycopg.Connection[tuple[Any, ...]]

_FILE_NAME = re.compile(r"(?P<version>[0-9]{4,})_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)\.sql")

_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     bigint PRIMARY KEY CHECK (version > 0),
    name        text NOT NULL,
    checksum    text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL CHECK (duration_ms >= 0)
)
"""


class MigrationError(Exception):
    """A migration cannot be discovered, verified or applied; the message says which and why."""


@attrs.frozen
class Migration:
    """One migration file. ``checksum`` is the SHA-256 (hex) of its bytes at discovery."""

    version: int
    name: str
    path: Path
    checksum: str

    def read(self) -> bytes:
        """The file's bytes, refusing them if the file changed since it was discovered."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise MigrationError(f"{self.path.name}: cannot read: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != self.checksum:
            raise MigrationError(f"{self.path.name} changed while migrations were running")
        return data


@attrs.frozen
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime
    duration_ms: int


def migrations_dir(directory: Path | None = None) -> Path:
    """The directory to use: the argument, else ``$NEXUS_MIGRATIONS_DIR``, else the repository's."""
    if directory is not None:
        return directory
    configured = os.environ.get(MIGRATIONS_ENV)
    return Path(configured) if configured else MIGRATIONS_DIR


def discover(directory: Path | None = None) -> list[Migration]:
    """Every ``*.sql`` file of the directory as a migration, in version order.

    A ``.sql`` file whose name is not ``NNNN_name.sql``, or two files with the same
    version, is an error: a migration that silently never runs is worse than a refusal.
    Other files (a README) and dotfiles are ignored.
    """
    root = migrations_dir(directory)
    try:
        paths = sorted(p for p in root.iterdir() if p.suffix == ".sql" and not p.name.startswith("."))
    except OSError as exc:
        raise MigrationError(f"cannot list migrations in {root}: {exc}") from exc
    found: dict[int, Migration] = {}
    for path in paths:
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: not a migration file name (expected NNNN_name.sql)")
        version = int(match["version"])
        if version == 0:
            raise MigrationError(f"{path}: migration numbers start at 0001")
        if version in found:
            raise MigrationError(f"{path}: version {version} is also used by {found[version].path.name}")
        try:
            checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise MigrationError(f"{path}: cannot read: {exc}") from exc
        found[version] = Migration(version=version, name=match["name"], path=path, checksum=checksum)
    return [found[v] for v in sorted(found)]


def ensure_database(dsn: str) -> bool:
    """Create the database the DSN names if it does not exist; True if this call created it.

    Connects to the ``postgres`` maintenance database of the same server (``template1``
    when that one is absent). Two callers racing both return without error, exactly one
    of them True. The database is UTF-8, made from ``template0``.
    """
    name = conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise MigrationError("the database URL names no database")
    failure: psycopg.Error | None = None
    for maintenance in ("postgres", "template1"):
        try:
            conn = _open(make_conninfo(dsn, dbname=maintenance))
        except psycopg.Error as exc:
            failure = exc
            continue
        with conn:
            try:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    return False
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                        sql.Identifier(str(name))
                    )
                )
            except (errors.DuplicateDatabase, errors.UniqueViolation):
                # Another caller created it between our check and our CREATE.
                return False
            except psycopg.Error as exc:
                raise MigrationError(f"cannot create database {name!r}: {_pg_message(exc)}") from exc
            return True
    detail = _pg_message(failure) if failure is not None else "no maintenance database"
    raise MigrationError(f"cannot reach a maintenance database to create {name!r}: {detail}") from failure


def migrate(
    dsn: str,
    directory: Path | None = None,
    *,
    log: Callable[[str], None] = print,
    lock_wait: float = LOCK_WAIT_SECONDS,
) -> list[Migration]:
    """Apply every pending migration in order; return those this call applied.

    Verifies first, under the lock, that every applied migration is still on disk and
    unchanged and that no pending one is older than the newest applied; if not, nothing
    is applied. Waits at most ``lock_wait`` seconds for a concurrent migrator.
    """
    migrations = discover(directory)
    with _connect(dsn) as conn:
        _lock(conn, lock_wait)
        try:
            conn.execute(_CREATE_TABLE)
        except psycopg.Error as exc:
            raise MigrationError(f"cannot create schema_migrations: {_pg_message(exc)}") from exc
        pending = _pending(migrations, _applied(conn), migrations_dir(directory))
        for migration in pending:
            _apply(conn, migration, log)
        # Closing the connection ends the session, which releases the advisory lock.
    return pending


def status(dsn: str, directory: Path | None = None) -> list[tuple[Migration, AppliedMigration | None]]:
    """Each migration on disk with its ``schema_migrations`` row, or None while pending.

    A changed file shows as a checksum that differs from the recorded one. A version the
    database has applied but the directory lacks cannot be listed against a file, so it
    is an error (this build is older than the database).
    """
    migrations = discover(directory)
    with _connect(dsn) as conn:
        applied = _applied(conn)
    _refuse_unknown(migrations, applied, migrations_dir(directory))
    return [(m, applied.get(m.version)) for m in migrations]


def _open(conninfo: str) -> _Conn:
    params = conninfo_to_dict(conninfo)
    extra = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in params}
    return psycopg.connect(make_conninfo(conninfo, **extra), autocommit=True)


def _connect(conninfo: str) -> _Conn:
    try:
        return _open(conninfo)
    except psycopg.Error as exc:
        params = conninfo_to_dict(conninfo)
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        raise MigrationError(f"cannot connect to PostgreSQL at {where}: {_pg_message(exc)}") from exc


def _lock(conn: _Conn, wait: float) -> None:
    # lock_timeout bounds the wait for the advisory lock; it is reset so that it does not
    # also cut short the lock waits of the migrations themselves.
    try:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(wait * 1000))}ms",))
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        conn.execute("RESET lock_timeout")
    except errors.LockNotAvailable as exc:
        raise MigrationError(f"another migration has held the migration lock for over {wait:g} s") from exc
    except psycopg.Error as exc:
        raise MigrationError(f"cannot take the migration lock: {_pg_message(exc)}") from exc


def _applied(conn: _Conn) -> dict[int, AppliedMigration]:
    try:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return {}
        rows = conn.execute(
            "SELECT version, name, checksum, applied_at, duration_ms FROM schema_migrations ORDER BY version"
        ).fetchall()
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read schema_migrations: {_pg_message(exc)}") from exc
    return {row[0]: AppliedMigration(*row) for row in rows}


def _refuse_unknown(
    migrations: Iterable[Migration], applied: dict[int, AppliedMigration], root: Path
) -> None:
    unknown = sorted(set(applied) - {m.version for m in migrations})
    if unknown:
        names = ", ".join(f"{v:04d}_{applied[v].name}.sql" for v in unknown)
        raise MigrationError(
            f"the database has applied {names}, missing from {root}: this build is older than the database"
        )


def _pending(
    migrations: list[Migration], applied: dict[int, AppliedMigration], root: Path
) -> list[Migration]:
    _refuse_unknown(migrations, applied, root)
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            continue
        if recorded.checksum != migration.checksum:
            raise MigrationError(
                f"{migration.path} was changed after it was applied (recorded sha256 {recorded.checksum}, "
                f"file {migration.checksum}); applied migrations are never edited: restore the file "
                "and put the change in a new migration"
            )
        if recorded.name != migration.name:
            raise MigrationError(
                f"{migration.path}: version {migration.version} was applied as {recorded.name!r}; "
                "applied migrations are never renamed"
            )
    pending = [m for m in migrations if m.version not in applied]
    if pending and applied and pending[0].version < max(applied):
        raise MigrationError(
            f"{pending[0].path.name} is numbered below the newest applied migration "
            f"({max(applied):04d}); renumber it after that one"
        )
    return pending


def _apply(conn: _Conn, migration: Migration, log: Callable[[str], None]) -> None:
    data = migration.read()
    log(f"applying {migration.path.name}")
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute(data)
            if conn.info.transaction_status != TransactionStatus.INTRANS:
                raise MigrationError(
                    f"{migration.path.name} ends the migration's transaction itself (COMMIT/ROLLBACK); "
                    "what ran before that is committed and must be checked by hand"
                )
            duration_ms = round((time.monotonic() - started) * 1000)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, duration_ms)"
                " VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, migration.checksum, duration_ms),
            )
    except psycopg.Error as exc:
        reason = _describe(exc, data)
        raise MigrationError(f"{migration.path.name} failed and was rolled back: {reason}") from exc
    log(f"applied {migration.path.name} in {duration_ms} ms")


def _describe(exc: psycopg.Error, script: bytes) -> str:
    diag = exc.diag
    text = _pg_message(exc)
    position = diag.statement_position
    if position and position.isdigit():
        line = script.decode("utf-8", "replace")[: int(position) - 1].count("\n") + 1
        text += f" (line {line})"
    if exc.sqlstate:
        text += f" [SQLSTATE {exc.sqlstate}]"
    extras = (("detail", diag.message_detail), ("hint", diag.message_hint), ("context", diag.context))
    for label, extra in extras:
        if extra:
            text += f"; {label}: {extra}"
    return text


def _pg_message(exc: psycopg.Error) -> str:
    return exc.diag.message_primary or str(exc).strip() or type(exc).__name__
