"""nexus.storage.partitions: the pure plans, and daily partitions of the traffic tables in PostgreSQL."""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg import errors

from nexus.storage import migrate
from nexus.storage import partitions as p

Conn = psycopg.Connection[tuple[object, ...]]
TODAY = datetime.now(UTC).date()


def uuid7_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 (RFC 9562) whose timestamp is ``moment``, truncated to the millisecond."""
    ms = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    rand_a, rand_b = secrets.randbits(12), secrets.randbits(62)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


def at_noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


# --- pure -----------------------------------------------------------------------------------


def test_names_and_bounds_are_utc_days() -> None:
    day = date(2025, 2, 28)
    assert p.partition_name("traffic_event", day) == "traffic_event_p20250228"
    assert p.partition_day("traffic_event", "traffic_event_p20250228") == day
    assert p.partition_day("traffic_event", "traffic_event_payload_p20250228") is None
    assert p.partition_day("traffic_event", "traffic_event_default") is None
    assert p.partition_day("traffic_event", "traffic_event_p20250230") is None
    assert p.day_bounds(day) == (datetime(2025, 2, 28, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC))


def test_uuid7_time_reads_the_embedded_milliseconds() -> None:
    # The example UUIDv7 of RFC 9562, appendix A.6: 2022-02-22 19:22:22 UTC.
    example = uuid.UUID("017F22E2-79B0-7CC3-98C4-DC0C0C07398F")
    assert p.uuid7_time(example) == datetime(2022, 2, 22, 19, 22, 22, tzinfo=UTC)
    moment = datetime(2031, 7, 4, 23, 59, 59, 999_999, tzinfo=UTC)
    assert p.uuid7_time(uuid7_at(moment)) == moment.replace(microsecond=999_000)
    with pytest.raises(ValueError, match="not a UUIDv7"):
        p.uuid7_time(uuid.uuid4())


def test_plan_create_covers_the_window_and_the_default_partition_days() -> None:
    today = date(2025, 1, 10)
    assert p.plan_create([], [], today, 2) == [date(2025, 1, 10), date(2025, 1, 11), date(2025, 1, 12)]
    assert p.plan_create([date(2025, 1, 10), date(2025, 1, 11)], [], today, 1) == []
    # Past days found in the DEFAULT partition get a partition; days past the window do not.
    planned = p.plan_create([date(2025, 1, 10)], [date(2024, 12, 1), date(2025, 3, 1)], today, 0)
    assert planned == [date(2024, 12, 1)]
    with pytest.raises(ValueError):
        p.plan_create([], [], today, -1)


def test_plan_drop_keeps_today_and_the_retention_window() -> None:
    today = date(2025, 1, 10)
    existing = [today - timedelta(days=n) for n in range(6)] + [today + timedelta(days=1)]
    assert p.plan_drop(existing, today, 3) == [date(2025, 1, 5), date(2025, 1, 6)]
    assert p.plan_drop(existing, today, 30) == []
    with pytest.raises(ValueError):
        p.plan_drop(existing, today, 0)


# --- against PostgreSQL ---------------------------------------------------------------------


@pytest.fixture
def db(empty_db_url: str) -> Iterator[Conn]:
    migrate.migrate(empty_db_url, log=lambda _: None)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        yield conn


def insert_event(conn: Conn, moment: datetime, event_id: uuid.UUID | None = None) -> uuid.UUID:
    event_id = event_id or uuid7_at(moment)
    conn.execute(
        "INSERT INTO traffic_event (event_id, ts, source, org_id, virtual_key_id, request_id, model,"
        " input_tokens, output_tokens, cost_micro_usd) VALUES (%s, %s, 'gateway', %s, %s, 'req-1',"
        " 'gpt-4o', 12, 34, 560)",
        (event_id, p.uuid7_time(event_id), uuid.uuid4(), uuid.uuid4()),
    )
    return event_id


def home(conn: Conn, table: str, event_id: uuid.UUID) -> object:
    row = conn.execute(
        f"SELECT tableoid::regclass::text FROM {table} WHERE event_id = %s", (event_id,)
    ).fetchone()
    return None if row is None else row[0]


def test_an_event_lands_in_its_day_and_a_duplicate_is_ignored(db: Conn) -> None:
    assert p.ensure_partitions(db, days_ahead=1) == [
        p.partition_name("traffic_event", TODAY),
        p.partition_name("traffic_event", TODAY + timedelta(days=1)),
        p.partition_name("traffic_event_payload", TODAY),
        p.partition_name("traffic_event_payload", TODAY + timedelta(days=1)),
    ]
    now = datetime.now(UTC)
    event_id = insert_event(db, now)
    assert home(db, "traffic_event", event_id) == p.partition_name("traffic_event", now.date())

    # The writer's de-duplication: a redelivered event is a no-op.
    ts = p.uuid7_time(event_id)
    again = db.execute(
        "INSERT INTO traffic_event (event_id, ts, source) VALUES (%s, %s, 'gateway')"
        " ON CONFLICT (event_id, ts) DO NOTHING",
        (event_id, ts),
    )
    assert again.rowcount == 0
    assert db.execute("SELECT count(*) FROM traffic_event").fetchone() == (1,)

    # ts is the id's own timestamp, so a copy cannot hide in another partition.
    with pytest.raises(errors.CheckViolation):
        db.execute(
            "INSERT INTO traffic_event (event_id, ts, source) VALUES (%s, %s, 'gateway')",
            (event_id, ts + timedelta(days=1)),
        )
    with pytest.raises(errors.CheckViolation):
        db.execute(
            "INSERT INTO traffic_event (event_id, ts, source) VALUES (%s, %s, 'gateway')",
            (uuid.uuid4(), ts),
        )
    # SQL and Python agree on the timestamp of an id.
    assert db.execute("SELECT uuid7_time(%s)", (event_id,)).fetchone() == (ts,)


def test_payloads_are_inline_or_spilled_and_deduplicated(db: Conn) -> None:
    p.ensure_partitions(db, days_ahead=0)
    event_id = insert_event(db, datetime.now(UTC))
    ts = p.uuid7_time(event_id)
    insert = (
        "INSERT INTO traffic_event_payload (event_id, ts, kind, size_bytes, body, spill_backend, spill_key,"
        " spill_size, spill_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (event_id, ts, kind) DO NOTHING"
    )
    digest = bytes(32)
    inline = (event_id, ts, "request", 17, b'{"messages": []}', None, None, None, None)
    assert db.execute(insert, inline).rowcount == 1
    spilled = (event_id, ts, "response", 300_000, None, "fs", "ab/abcdef", 300_000, digest)
    assert db.execute(insert, spilled).rowcount == 1
    assert db.execute(insert, spilled).rowcount == 0
    assert home(db, "traffic_event_payload", event_id) == p.partition_name("traffic_event_payload", ts.date())
    with pytest.raises(errors.CheckViolation):  # both inline and spilled
        db.execute(insert, (event_id, ts, "response_stream", 3, b"abc", "fs", "k", 3, digest))
    with pytest.raises(errors.CheckViolation):  # a partial spill reference
        db.execute(insert, (event_id, ts, "response_stream", 3, None, "fs", "k", None, None))


def test_ensure_is_idempotent_and_partitions_carry_the_indexes(db: Conn) -> None:
    created = p.ensure_partitions(db, days_ahead=3, today=TODAY)
    assert len(created) == 8
    assert p.ensure_partitions(db, days_ahead=3, today=TODAY) == []
    assert p.existing_partitions(db, "traffic_event") == [TODAY + timedelta(days=n) for n in range(4)]

    def indexes(table: str) -> int:
        row = db.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (table,)).fetchone()
        assert row is not None
        return int(str(row[0]))

    for table in p.PARTITIONED_TABLES:
        assert indexes(p.partition_name(table, TODAY)) == indexes(table)
    compression = "SELECT attcompression FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'body'"
    day_partition = p.partition_name("traffic_event_payload", TODAY)
    parent = db.execute(compression, ("traffic_event_payload",)).fetchone()
    assert db.execute(compression, (day_partition,)).fetchone() == parent


def test_concurrent_maintainers_do_not_collide(db: Conn, empty_db_url: str) -> None:
    start = threading.Barrier(2)
    created: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            start.wait()
            try:
                created.append(p.ensure_partitions(conn, days_ahead=5, today=TODAY))
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert sorted(len(names) for names in created) in ([0, 12], [6, 6])
    assert len(set(created[0] + created[1])) == 12


def test_retention_drops_only_partitions_older_than_the_cutoff(db: Conn) -> None:
    p.ensure_partitions(db, days_ahead=12, today=TODAY - timedelta(days=10))
    kept_event = insert_event(db, at_noon(TODAY - timedelta(days=3)))
    dropped_event = insert_event(db, at_noon(TODAY - timedelta(days=4)))

    dropped = p.drop_expired(db, retention_days=3, today=TODAY)
    expired_days = [TODAY - timedelta(days=n) for n in range(10, 3, -1)]
    assert dropped == [p.partition_name(t, d) for t in p.PARTITIONED_TABLES for d in expired_days]
    for table in p.PARTITIONED_TABLES:
        assert p.existing_partitions(db, table) == [TODAY + timedelta(days=n) for n in range(-3, 3)]
    assert home(db, "traffic_event", kept_event) is not None
    assert home(db, "traffic_event", dropped_event) is None
    assert db.execute("SELECT to_regclass('traffic_event_default')").fetchone() == ("traffic_event_default",)
    assert p.drop_expired(db, retention_days=3, today=TODAY) == []


def test_rows_without_a_partition_wait_in_default_and_move_when_it_is_created(
    db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    p.ensure_partitions(db, days_ahead=2, today=TODAY)
    future = at_noon(TODAY + timedelta(days=30))
    past = at_noon(TODAY - timedelta(days=5))
    future_event, past_event = insert_event(db, future), insert_event(db, past)
    assert home(db, "traffic_event", future_event) == "traffic_event_default"
    assert home(db, "traffic_event", past_event) == "traffic_event_default"

    with caplog.at_level(logging.WARNING, logger=p.__name__):
        [report, payload_report] = p.check_default(db)
    assert (report.table, report.rows) == ("traffic_event", 2)
    assert (report.oldest, report.newest) == (p.uuid7_time(past_event), p.uuid7_time(future_event))
    assert payload_report.rows == 0
    assert "traffic_event_default holds 2 rows" in caplog.text

    # The past day is rescued by the next pass; the far-future one only once it is in the window.
    created = p.ensure_partitions(db, days_ahead=2, today=TODAY)
    assert created == [p.partition_name("traffic_event", past.date())]
    assert home(db, "traffic_event", past_event) == p.partition_name("traffic_event", past.date())
    assert home(db, "traffic_event", future_event) == "traffic_event_default"

    created = p.ensure_partitions(db, days_ahead=30, today=TODAY)
    assert p.partition_name("traffic_event", future.date()) in created
    assert home(db, "traffic_event", future_event) == p.partition_name("traffic_event", future.date())
    assert [r.rows for r in p.check_default(db)] == [0, 0]
    assert db.execute("SELECT count(*) FROM traffic_event").fetchone() == (2,)


def test_maintain_rescues_then_ages_out_old_rows(db: Conn) -> None:
    ancient = insert_event(db, at_noon(TODAY - timedelta(days=40)))
    report = p.maintain(db, retention_days=30, days_ahead=1, today=TODAY)
    ancient_partition = p.partition_name("traffic_event", TODAY - timedelta(days=40))
    assert ancient_partition in report.created
    assert report.dropped == [ancient_partition]
    assert [r.rows for r in report.default_rows] == [0, 0]
    assert home(db, "traffic_event", ancient) is None


def test_maintenance_refuses_a_connection_inside_a_transaction(db: Conn) -> None:
    with db.transaction():
        with pytest.raises(ValueError, match="not inside a transaction"):
            p.ensure_partitions(db)
        with pytest.raises(ValueError, match="not inside a transaction"):
            p.drop_expired(db, retention_days=7)


def test_a_table_that_is_not_partitioned_is_a_partition_error(db: Conn) -> None:
    with pytest.raises(p.PartitionError, match="virtual_key is not a partitioned table"):
        p.ensure_partitions(db, tables=["virtual_key"])
    with pytest.raises(p.PartitionError, match="no_such_table"):
        p.ensure_partitions(db, tables=["no_such_table"])


def test_a_drop_waits_out_an_inflight_write_then_succeeds(db: Conn, empty_db_url: str) -> None:
    p.ensure_partitions(db, days_ahead=0, today=TODAY - timedelta(days=10))
    writing = threading.Event()

    def writer() -> None:
        # An ingest transaction in flight holds a lock on the parent that DROP must wait for.
        with psycopg.connect(empty_db_url) as conn:
            insert_event(conn, datetime.now(UTC))
            writing.set()
            time.sleep(0.6)
            conn.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(10)
    started = time.monotonic()
    dropped = p.drop_expired(db, retention_days=3, today=TODAY, tables=["traffic_event"])
    thread.join(timeout=10)
    assert dropped == [p.partition_name("traffic_event", TODAY - timedelta(days=10))]
    assert time.monotonic() - started >= 0.4
    assert db.execute("SELECT count(*) FROM traffic_event").fetchone() == (1,)


def test_a_lock_held_past_every_attempt_is_a_partition_error(
    db: Conn, empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(p, "LOCK_ATTEMPTS", 2)
    p.ensure_partitions(db, days_ahead=0, today=TODAY - timedelta(days=10))
    with psycopg.connect(empty_db_url) as reader:
        reader.execute("SELECT count(*) FROM traffic_event")  # a long analytics transaction
        with pytest.raises(p.PartitionError, match="still waiting for locks after 2 attempts"):
            p.drop_expired(db, retention_days=3, today=TODAY, tables=["traffic_event"])
        with pytest.raises(p.PartitionError, match="cannot create partitions"):
            p.ensure_partitions(db, days_ahead=1, today=TODAY, tables=["traffic_event"])
    assert p.existing_partitions(db, "traffic_event") == [TODAY - timedelta(days=10)]
