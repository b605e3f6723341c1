"""nexus.storage.migrate against a real PostgreSQL, and the schema the migrations build."""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from nexus.storage import migrate as m

Conn = psycopg.Connection[tuple[object, ...]]
REPO_VERSIONS = [1, 2, 3, 4, 5, 6, 7]


def _copy(tmp_path: Path, versions: list[int] | None = None) -> Path:
    """The repository's migrations (or some of them) in a directory a test may edit."""
    target = tmp_path / "migrations"
    target.mkdir()
    for path in m.MIGRATIONS_DIR.glob("*.sql"):
        if versions is None or int(path.name[:4]) in versions:
            shutil.copy(path, target / path.name)
    return target


def _recorded(url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (row[0], row[1], row[2])
            for row in conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        ]


def _table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,)


# --- discovery ------------------------------------------------------------------------------


def test_discover_finds_the_repository_migrations_in_order() -> None:
    found = m.discover()
    assert [x.version for x in found] == REPO_VERSIONS
    assert found[0].name == "core_identity_iam"
    for migration in found:
        assert migration.path.parent == m.MIGRATIONS_DIR
        assert len(migration.checksum) == 64
        assert migration.read() == migration.path.read_bytes()


def test_discover_uses_the_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "0042_only.sql").write_text("SELECT 1;\n")
    (tmp_path / "README.md").write_text("not a migration\n")
    monkeypatch.setenv(m.MIGRATIONS_ENV, str(tmp_path))
    assert [(x.version, x.name) for x in m.discover()] == [(42, "only")]


@pytest.mark.parametrize(
    ("files", "complaint"),
    [
        (["0001_a.sql", "0001_b.sql"], "version 1 is also used"),
        (["0001_a.sql", "00001_b.sql"], "version 1 is also used"),
        (["001_short.sql"], "not a migration file name"),
        (["0001-dash.sql"], "not a migration file name"),
        (["0000_zero.sql"], "start at 0001"),
    ],
)
def test_discover_rejects_malformed_and_duplicate_numbers(
    tmp_path: Path, files: list[str], complaint: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(m.MigrationError, match=complaint):
        m.discover(tmp_path)


def test_a_file_changed_after_discovery_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    [migration] = m.discover(tmp_path)
    (tmp_path / "0001_a.sql").write_text("SELECT 2;\n")
    with pytest.raises(m.MigrationError, match="changed while"):
        migration.read()


# --- applying -------------------------------------------------------------------------------


def test_migrate_from_empty_applies_all_then_nothing(empty_db_url: str) -> None:
    messages: list[str] = []
    applied = m.migrate(empty_db_url, log=messages.append)
    assert [x.version for x in applied] == REPO_VERSIONS
    assert messages[0] == "applying 0001_core_identity_iam.sql"
    assert any(line.startswith("applied 0006_observability_admin.sql in ") for line in messages)
    assert _recorded(empty_db_url) == [(x.version, x.name, x.checksum) for x in m.discover()]

    assert m.migrate(empty_db_url, log=messages.append) == []
    assert len(_recorded(empty_db_url)) == len(REPO_VERSIONS)


def test_status_lists_applied_and_pending(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy(tmp_path, [1, 2, 3])
    assert [a for _, a in m.status(empty_db_url, directory)] == [None, None, None]
    m.migrate(empty_db_url, directory, log=lambda _: None)
    for path in m.MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:4]) > 3:
            shutil.copy(path, directory / path.name)

    report = m.status(empty_db_url, directory)
    assert [x.version for x, _ in report] == REPO_VERSIONS
    for migration, applied in report[:3]:
        assert applied is not None
        assert (applied.version, applied.name, applied.checksum) == (
            migration.version,
            migration.name,
            migration.checksum,
        )
        assert applied.applied_at.tzinfo is not None
        assert applied.duration_ms >= 0
    assert [a for _, a in report[3:]] == [None] * (len(REPO_VERSIONS) - 3)


def test_an_edited_applied_migration_is_an_error_and_nothing_is_applied(
    empty_db_url: str, tmp_path: Path
) -> None:
    directory = _copy(tmp_path, [1, 2])
    m.migrate(empty_db_url, directory, log=lambda _: None)
    edited = directory / "0002_gateway_providers.sql"
    edited.write_bytes(edited.read_bytes() + b"\n-- a harmless-looking edit\n")
    (directory / "0003_next.sql").write_text("CREATE TABLE next_thing (id int);\n")

    with pytest.raises(
        m.MigrationError, match=re.escape("0002_gateway_providers.sql was changed after it was applied")
    ):
        m.migrate(empty_db_url, directory, log=lambda _: None)
    assert not _table_exists(empty_db_url, "next_thing")
    assert [v for v, _, _ in _recorded(empty_db_url)] == [1, 2]

    # status still reports, and shows the mismatch.
    _, applied = m.status(empty_db_url, directory)[1]
    assert applied is not None and applied.checksum != m.discover(directory)[1].checksum


def test_an_applied_migration_missing_on_disk_is_an_error(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy(tmp_path, [1, 2])
    m.migrate(empty_db_url, directory, log=lambda _: None)
    (directory / "0002_gateway_providers.sql").unlink()
    with pytest.raises(m.MigrationError, match=re.escape("0002_gateway_providers.sql, missing from")):
        m.migrate(empty_db_url, directory, log=lambda _: None)
    with pytest.raises(m.MigrationError, match="older than the database"):
        m.status(empty_db_url, directory)


def test_a_renamed_applied_migration_is_an_error(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_thing (id int);\n")
    m.migrate(empty_db_url, tmp_path, log=lambda _: None)
    (tmp_path / "0001_first.sql").rename(tmp_path / "0001_renamed.sql")
    with pytest.raises(m.MigrationError, match="applied as 'first'"):
        m.migrate(empty_db_url, tmp_path, log=lambda _: None)


def test_a_pending_migration_below_the_newest_applied_is_an_error(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (tmp_path / "0003_c.sql").write_text("CREATE TABLE c (id int);\n")
    m.migrate(empty_db_url, tmp_path, log=lambda _: None)
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (id int);\n")
    with pytest.raises(m.MigrationError, match=re.escape("0002_b.sql is numbered below")):
        m.migrate(empty_db_url, tmp_path, log=lambda _: None)
    assert not _table_exists(empty_db_url, "b")


def test_a_failing_migration_rolls_back_entirely_and_records_nothing(
    empty_db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);\n")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\n\nSELEC oops;\n"
    )
    (tmp_path / "0003_after.sql").write_text("CREATE TABLE after_bad (id int);\n")

    with pytest.raises(m.MigrationError) as caught:
        m.migrate(empty_db_url, tmp_path, log=lambda _: None)
    message = str(caught.value)
    assert message.startswith("0002_bad.sql failed and was rolled back")
    assert 'syntax error at or near "SELEC"' in message
    assert "(line 4)" in message
    assert "SQLSTATE 42601" in message

    assert _table_exists(empty_db_url, "good")
    assert not _table_exists(empty_db_url, "half_done")
    assert not _table_exists(empty_db_url, "after_bad")
    assert [v for v, _, _ in _recorded(empty_db_url)] == [1]


def test_a_migration_that_ends_its_transaction_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_commits.sql").write_text("CREATE TABLE early (id int);\nCOMMIT;\n")
    with pytest.raises(m.MigrationError, match="ends the migration's transaction itself"):
        m.migrate(empty_db_url, tmp_path, log=lambda _: None)
    assert _recorded(empty_db_url) == []


def test_concurrent_migrators_apply_each_migration_exactly_once(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    # A slow last step widens the window in which the second migrator must wait on the lock.
    pause = REPO_VERSIONS[-1] + 1
    (directory / f"{pause:04d}_pause.sql").write_text("SELECT pg_sleep(0.3);\n")
    start = threading.Barrier(2)
    results: list[list[int]] = []
    failures: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append([x.version for x in m.migrate(empty_db_url, directory, log=lambda _: None)])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(results, key=len) == [[], [*REPO_VERSIONS, pause]]
    assert [v for v, _, _ in _recorded(empty_db_url)] == [*REPO_VERSIONS, pause]


def test_waiting_for_the_migration_lock_is_bounded(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);\n")
    with psycopg.connect(empty_db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (m.LOCK_KEY,))
        with pytest.raises(m.MigrationError, match="held the migration lock"):
            m.migrate(empty_db_url, tmp_path, log=lambda _: None, lock_wait=0.2)
    assert not _table_exists(empty_db_url, "a")


def test_an_unreachable_server_is_a_migration_error() -> None:
    with pytest.raises(
        m.MigrationError, match=re.escape("cannot connect to PostgreSQL at 127.0.0.1:1/nexus")
    ):
        m.migrate("postgresql://127.0.0.1:1/nexus", log=lambda _: None)


# --- ensure_database ------------------------------------------------------------------------


@pytest.fixture
def missing_db_url(pg_server_url: str) -> Iterator[str]:
    name = f"nexus_t_new_{uuid.uuid4().hex[:12]}"
    base, _, _ = pg_server_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_ensure_database_creates_a_missing_database_once_under_a_race(missing_db_url: str) -> None:
    start = threading.Barrier(4)
    results: list[bool] = []

    def run() -> None:
        start.wait()
        results.append(m.ensure_database(missing_db_url))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    assert m.ensure_database(missing_db_url) is False
    with psycopg.connect(missing_db_url) as conn:
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


def test_ensure_database_needs_a_database_name() -> None:
    with pytest.raises(m.MigrationError, match="names no database"):
        m.ensure_database("host=127.0.0.1 port=5432")


# --- the schema -----------------------------------------------------------------------------


@pytest.fixture
def schema_db(empty_db_url: str) -> Iterator[Conn]:
    m.migrate(empty_db_url, log=lambda _: None)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        yield conn


def _org(conn: Conn, slug: str, parent: object = None) -> object:
    row = conn.execute(
        "INSERT INTO organization (slug, name, parent_id) VALUES (%s, %s, %s) RETURNING id",
        (slug, slug.title(), parent),
    ).fetchone()
    assert row is not None
    return row[0]


def test_virtual_keys_are_unique_by_hash_and_tied_to_their_org(
    schema_db: Conn,
) -> None:
    conn = schema_db
    acme, globex = _org(conn, "acme"), _org(conn, "globex")
    project = conn.execute(
        "INSERT INTO project (org_id, slug, name) VALUES (%s, 'web', 'Web') RETURNING id", (acme,)
    ).fetchone()
    assert project is not None
    insert = (
        "INSERT INTO virtual_key (key_hash, key_prefix, name, kind, org_id, project_id)"
        " VALUES (%s, 'nvk_abcd', 'ci', 'application', %s, %s) RETURNING allowed_models"
    )
    digest = bytes(range(32))
    assert conn.execute(insert, (digest, acme, project[0])).fetchone() == (["*"],)
    looked_up = conn.execute("SELECT name FROM virtual_key WHERE key_hash = %s", (digest,)).fetchone()
    assert looked_up == ("ci",)

    with pytest.raises(errors.UniqueViolation):
        conn.execute(insert, (digest, acme, project[0]))
    with pytest.raises(errors.ForeignKeyViolation):  # acme's project under globex
        conn.execute(insert, (bytes(32), globex, project[0]))
    with pytest.raises(errors.CheckViolation):  # a personal key needs its owner
        conn.execute(
            "INSERT INTO virtual_key (key_hash, key_prefix, name, kind, org_id)"
            " VALUES (%s, 'nvk_efgh', 'mine', 'personal', %s)",
            (bytes(31) + b"\x01", acme),
        )
    with pytest.raises(errors.CheckViolation):  # never a clear-text key
        conn.execute(insert, (b"nvk_clear_text", acme, project[0]))


def test_organization_paths_follow_renames_and_moves(schema_db: Conn) -> None:
    conn = schema_db
    acme = _org(conn, "acme")
    emea = _org(conn, "emea", acme)
    _org(conn, "sales", emea)
    globex = _org(conn, "globex")

    def paths() -> list[object]:
        return [row[0] for row in conn.execute("SELECT path FROM organization ORDER BY path")]

    assert paths() == ["acme", "acme/emea", "acme/emea/sales", "globex"]
    conn.execute("UPDATE organization SET slug = 'acme-corp' WHERE id = %s", (acme,))
    conn.execute("UPDATE organization SET parent_id = %s WHERE id = %s", (globex, emea))
    assert paths() == ["acme-corp", "globex", "globex/emea", "globex/emea/sales"]
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "UPDATE organization SET parent_id = (SELECT id FROM organization WHERE slug = 'sales')"
            " WHERE id = %s",
            (globex,),
        )
    with pytest.raises(errors.UniqueViolation):
        _org(conn, "emea", globex)


def test_usage_rollups_upsert_with_null_dimensions(schema_db: Conn) -> None:
    upsert = (
        "INSERT INTO usage_rollup_5m (bucket, source, org_id, provider, model, requests, cost_micro_usd)"
        " VALUES (%s, 'proxy', NULL, 'openai', 'gpt-4o', 1, %s)"
        " ON CONFLICT ON CONSTRAINT usage_rollup_5m_key DO UPDATE SET"
        " requests = usage_rollup_5m.requests + EXCLUDED.requests,"
        " cost_micro_usd = usage_rollup_5m.cost_micro_usd + EXCLUDED.cost_micro_usd"
    )
    for cost in (1_500, 2_500):
        schema_db.execute(upsert, ("2025-03-01 10:05:00+00", cost))
    rows = schema_db.execute("SELECT requests, cost_micro_usd FROM usage_rollup_5m").fetchall()
    assert rows == [(2, 4_000)]
    with pytest.raises(errors.CheckViolation):
        schema_db.execute(upsert, ("2025-03-01 10:07:00+00", 1))


def test_the_admin_audit_log_is_one_append_only_chain(schema_db: Conn) -> None:
    insert = (
        "INSERT INTO admin_audit_log (actor_type, action, resource_nrn, outcome, prev_hash, hash)"
        " VALUES ('system', 'admin:virtual-key.create', 'nrn:nexus:gateway:acme:virtual-key/1',"
        " 'success', %s, %s)"
    )
    first, second, third = (bytes([n]) * 32 for n in (1, 2, 3))
    schema_db.execute(insert, (None, first))
    schema_db.execute(insert, (first, second))
    with pytest.raises(errors.UniqueViolation):  # a second genesis row
        schema_db.execute(insert, (None, third))
    with pytest.raises(errors.UniqueViolation):  # a fork: two rows after the same one
        schema_db.execute(insert, (first, third))
    with pytest.raises(errors.InsufficientPrivilege):
        schema_db.execute("UPDATE admin_audit_log SET outcome = 'denied'")
    with pytest.raises(errors.InsufficientPrivilege):
        schema_db.execute("DELETE FROM admin_audit_log")
    with pytest.raises(errors.InsufficientPrivilege):
        schema_db.execute("TRUNCATE admin_audit_log")
    assert schema_db.execute("SELECT count(*) FROM admin_audit_log").fetchone() == (2,)
