"""nexus.audit.retention: maintenance passes in PostgreSQL, spill pruning, and the keeper task."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import trio

from nexus.audit.retention import PartitionKeeper, maintain_once
from nexus.audit.spill import FsSpillStore
from nexus.storage import migrate, partitions

from .conftest import eventually

TODAY = datetime.now(UTC).date()


def epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


@pytest.fixture
def migrated(empty_db_url: str) -> Iterator[str]:
    migrate.migrate(empty_db_url, log=lambda _line: None)
    yield empty_db_url


def test_a_full_pass_creates_ahead_drops_expired_and_prunes_spill(migrated: str, tmp_path: Path) -> None:
    old = TODAY - timedelta(days=45)
    with psycopg.connect(migrated, autocommit=True) as conn:
        partitions.ensure_partitions(conn, today=old, days_ahead=0)
    store = FsSpillStore(tmp_path)
    stale, fresh = store.put(b"old body"), store.put(b"new body")
    past = time.time() - 40 * 86400
    os.utime(store.path_for(stale.key), (past, past))

    result = maintain_once(migrated, retention_days=30, days_ahead=2, spill_store=store)
    assert result.report is not None
    assert result.report.dropped == [partitions.partition_name(t, old) for t in partitions.PARTITIONED_TABLES]
    assert result.days == frozenset(epoch_day(TODAY + timedelta(days=n)) for n in range(3))
    assert result.pruned == 1
    assert not store.path_for(stale.key).exists() and store.get(fresh) == b"new body"
    # Again: nothing left to do.
    again = maintain_once(migrated, retention_days=30, days_ahead=2, spill_store=store)
    assert again.report is not None and again.report.created == [] and again.report.dropped == []


async def test_the_keeper_runs_at_start_and_early_only_once_per_missing_day(migrated: str) -> None:
    keeper = PartitionKeeper(migrated, retention_days=30, days_ahead=1, min_gap=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        await eventually(lambda: keeper.passes == 1, what="the first pass")
        assert epoch_day(TODAY) in keeper.days
        missing = epoch_day(TODAY - timedelta(days=3))  # no rows in DEFAULT: the pass cannot create it
        keeper.saw_days([epoch_day(TODAY), missing])
        await eventually(lambda: keeper.passes == 2, what="the early pass")
        keeper.saw_days([missing])  # asked already: no new pass
        await trio.sleep(0.3)
        assert keeper.passes == 2
        nursery.cancel_scope.cancel()


async def test_a_failing_pass_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    keeper = PartitionKeeper("postgresql://127.0.0.1:1/nope", retention_days=30, retry_delay=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        await eventually(lambda: sum("maintenance failed" in r.message for r in caplog.records) >= 2,
                         seconds=20, what="two failed passes")
        nursery.cancel_scope.cancel()
    assert keeper.passes == 0
