"""Retention and partition upkeep of the traffic tables, as a hub background task.

:class:`PartitionKeeper` runs :func:`maintain_once` at start and every
``maintenance_interval``: create the daily partitions ahead, drop those past
``retention_days`` (whole partitions, never row deletes), warn about rows in
the DEFAULT partition, and prune spilled bodies nobody has put for longer than
the retention (plus two days of slack, see :mod:`nexus.audit.spill`).  Between
passes the writer tells it which days a batch touched; a day without a
partition triggers an early create pass (at most one per ``min_gap`` s) that
also moves that day's rows out of the DEFAULT partition, where they landed
meanwhile.  Several hubs may run it at once: the steps serialise on
PostgreSQL's advisory lock (:mod:`nexus.storage.partitions`).

Each pass runs sync psycopg in a worker thread (``trio.to_thread``) on a
connection of its own, opened and closed per pass.

Error handling: a failed pass (PostgreSQL down, lock timeouts, spill store
errors) is logged and retried after ``retry_delay``; nothing propagates out of
``run``.  :func:`maintain_once` raises ``PartitionError`` or ``SpillError``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import date

import attrs
import psycopg
import trio

from nexus.audit.spill import FsSpillStore, SpillError
from nexus.storage import partitions

__all__ = ["PartitionKeeper", "PassResult", "maintain_once"]

log = logging.getLogger(__name__)

_DAY_S = 86_400
# Spilled bodies outlive the rows that refer to them by this much (partition drop is by whole UTC days).
_SPILL_SLACK_DAYS = 2
_CONNECT_TIMEOUT = 10


@attrs.frozen
class PassResult:
    report: partitions.MaintenanceReport | None
    days: frozenset[int]  # epoch days with a partition in every traffic table
    pruned: int = 0


def _epoch_day(day: date) -> int:
    return day.toordinal() - date(1970, 1, 1).toordinal()


def _partition_days(conn: psycopg.Connection[tuple[object, ...]]) -> frozenset[int]:
    per_table = [set(partitions.existing_partitions(conn, table)) for table in partitions.PARTITIONED_TABLES]
    return frozenset(_epoch_day(day) for day in set.intersection(*per_table))


def maintain_once(
    dsn: str,
    *,
    retention_days: int,
    days_ahead: int = partitions.DAYS_AHEAD,
    spill_store: FsSpillStore | None = None,
    full: bool = True,
) -> PassResult:
    """One blocking pass: ``full`` = create, drop, check and prune; else only create (the writer's nudge)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
        if full:
            report: partitions.MaintenanceReport | None = partitions.maintain(
                conn, retention_days=retention_days, days_ahead=days_ahead
            )
        else:
            partitions.ensure_partitions(conn, days_ahead=days_ahead)
            report = None
        with conn.transaction():
            days = _partition_days(conn)
    pruned = 0
    if full and spill_store is not None:
        pruned = spill_store.prune(time.time() - (retention_days + _SPILL_SLACK_DAYS) * _DAY_S)
    return PassResult(report, days, pruned)


class PartitionKeeper:
    """The hub's retention task; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        retention_days: int,
        interval: float = 3600.0,
        spill_store: FsSpillStore | None = None,
        days_ahead: int = partitions.DAYS_AHEAD,
        min_gap: float = 30.0,
        retry_delay: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self._retention_days = retention_days
        self._interval = interval
        self._spill_store = spill_store
        self._days_ahead = days_ahead
        self._min_gap = min_gap
        self._retry_delay = retry_delay
        self._days: frozenset[int] = frozenset()
        self._asked: set[int] = set()  # days already asked for since the last full pass
        self._wake = trio.Event()
        self._early = False
        self.passes = 0
        self.last_result: PassResult | None = None

    @property
    def days(self) -> frozenset[int]:
        """Epoch days that have a partition in every traffic table, as of the last pass."""
        return self._days

    def saw_days(self, epoch_days: Iterable[int]) -> None:
        """The writer stored rows of these days: ask for an early pass if one has no partition.

        Rows of such a day sit in the DEFAULT partition until the pass moves
        them.  A day asked for once is not asked for again before the next full
        pass (one beyond the create-ahead window stays in DEFAULT by design).
        """
        missing = {day for day in epoch_days if day not in self._days and day not in self._asked}
        if missing:
            self._asked |= missing
            self._early = True
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_full = trio.current_time()
        last_pass = -math.inf
        while True:
            now = trio.current_time()
            if now >= next_full:
                ok = await self._pass(full=True)
                next_full = trio.current_time() + (self._interval if ok else self._retry_delay)
                last_pass = trio.current_time()
                continue
            if self._early and now - last_pass >= self._min_gap:
                self._early = False
                await self._pass(full=False)
                last_pass = trio.current_time()
                continue
            wake_at = next_full if not self._early else min(next_full, last_pass + self._min_gap)
            with trio.move_on_at(wake_at):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _pass(self, *, full: bool) -> bool:
        if full:
            self._asked.clear()
        try:
            result = await trio.to_thread.run_sync(
                lambda: maintain_once(self._dsn, retention_days=self._retention_days, days_ahead=self._days_ahead,
                                      spill_store=self._spill_store, full=full),
                abandon_on_cancel=True,
            )
        except (partitions.PartitionError, psycopg.Error, SpillError) as exc:
            log.error("traffic partition maintenance failed (retrying in %.0f s): %s", self._retry_delay, exc)
            return False
        self._days = result.days
        self.passes += 1
        self.last_result = result
        if result.report is not None and (result.report.created or result.report.dropped or result.pruned):
            log.info("traffic maintenance: created %d, dropped %d partitions; pruned %d spilled bodies",
                     len(result.report.created), len(result.report.dropped), result.pruned)
        return True
