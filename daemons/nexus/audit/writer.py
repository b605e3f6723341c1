"""The audit writer (runs in the hub): JetStream ``NEXUS_EVENTS`` → PostgreSQL, each event stored once.

A durable pull consumer (``audit-writer``, explicit acks) is read in batches of
up to ``writer_batch_max`` messages or ``writer_batch_interval`` seconds,
whichever comes first.  One task fetches and decodes; ``writer_concurrency``
workers store, each batch in one transaction on a connection the worker keeps:

1. binary ``COPY`` of the events into a temporary staging table (``ON COMMIT
   DELETE ROWS``; uuid, inet and jsonb staged as text, cast by PostgreSQL);
2. ``INSERT INTO traffic_event … SELECT … ON CONFLICT (event_id, ts) DO
   NOTHING RETURNING …``: the events actually inserted go back to the writer,
   and their rollup facts into a second temporary table;
3. binary ``COPY`` of the payloads of exactly those events straight into
   ``traffic_event_payload``.  Its key contains the event's, so an event
   inserted by this transaction has no payload rows yet, and the payloads of a
   duplicate event are never sent: the ``ON CONFLICT`` of step 2 de-duplicates
   both tables (a staging round trip for payloads would only copy every body
   twice);
4. upsert of the 5-minute, hourly and daily usage rollups from those facts, in
   key order (two workers or hubs cannot deadlock on them) and last, so rollup
   rows stay locked only until the commit.  Only inserted events reach the
   rollups: a redelivered event is counted once;
5. commit, then ack every message of the batch.

The usage rollups are maintained here and nowhere else: migration 0006's
comment speaks of "the rollup job" upserting them, and this step is that job,
run per batch inside the events' own transaction rather than as a scheduled
hub job (hub.md's list of jobs) re-reading ``traffic_event``.  So a rollup
never counts an event that is not stored, nor one twice, and needs no lease or
high-water mark; what is in ``traffic_event`` is in the rollups at the same
commit.

A crash anywhere before the commit leaves nothing behind (the messages are
redelivered after ``writer_ack_wait``); a crash between commit and ack makes
the redelivery a no-op.

Poison: a message that does not decode, or whose rows PostgreSQL refuses (a
data or integrity error: the batch is split in halves until the culprit is
alone), is negatively acked with a growing delay and retried; on its
``max_deliver``-th failure it is written to ``traffic_event_dlq`` with the error
and terminated, so it is never delivered again.  Failures are counted in
memory: a writer restart starts the count afresh.  Messages on subjects that
are not traffic events (compliance, admin-audit) are acked without a row.

Partitions: rows of a day without a partition land in the DEFAULT partition;
the writer tells the :class:`~nexus.audit.retention.PartitionKeeper` the days
each batch touched so it creates the missing ones early and moves those rows.

Resource handling: each worker borrows one pool connection for as long as it
works (it holds the temporary tables) and gives it back on a database error or
when ``run`` ends; the writer owns no NATS connection.

Error handling: nothing propagates out of ``run``.  PostgreSQL or pool
failures (``psycopg.OperationalError`` and kin, a write past
``_WRITE_TIMEOUT``) retry the same batch with capped backoff, keeping its
messages' ack timers alive meanwhile; NATS failures retry the fetch.  Both are
logged (the first of a run as a warning) and counted.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson
import psycopg
import trio
from prometheus_client import Counter, Gauge, Histogram
from psycopg import errors

from nexus.audit.events import (
    EVENT_SQL_TYPES,
    PAYLOAD_COLUMNS,
    PAYLOAD_TYPES,
    STAGE_EVENT_COLUMNS,
    STAGE_EVENT_TYPES,
    DecodeError,
    Staged,
    peek_event_id,
    stage_rows,
)
from nexus.audit.retention import PartitionKeeper
from nexus.audit.stream import EVENTS, EventStream, ensure_stream
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import JetStreamError, NatsConnectionError, NatsError
from nexus.net.nats.jetstream import JetStream, JsMsg
from nexus.runtime.metrics import REGISTRY
from nexus.storage.pg import TrioConnection
from nexus.storage.pgpool import PgPool

__all__ = ["DURABLE", "AuditWriter"]

log = logging.getLogger(__name__)

DURABLE = "audit-writer"

WRITER_EVENTS = Counter(
    "nexus_audit_writer_events",
    "Messages the writer handled: inserted, duplicate (already stored), dead_lettered, retried, skipped (not traffic)",
    ["result"], registry=REGISTRY,
)
_INSERTED = WRITER_EVENTS.labels("inserted")
_DUPLICATE = WRITER_EVENTS.labels("duplicate")
_DEAD = WRITER_EVENTS.labels("dead_lettered")
_RETRIED = WRITER_EVENTS.labels("retried")
_SKIPPED = WRITER_EVENTS.labels("skipped")
WRITER_ERRORS = Counter("nexus_audit_writer_errors", "Failed attempts to store a batch or fetch", ["kind"],
                        registry=REGISTRY)
WRITER_LAG = Gauge("nexus_audit_writer_lag", "Messages pending on the writer's consumer (num_pending)",
                   registry=REGISTRY)
WRITER_BATCH = Histogram("nexus_audit_writer_batch_events", "Messages per stored batch", registry=REGISTRY,
                         buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
WRITER_SECONDS = Histogram("nexus_audit_writer_batch_seconds", "Time to store one batch, staging to commit",
                           registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WRITER_RATE = Gauge("nexus_audit_writer_rows_per_second", "Events stored per second over the last batch",
                    registry=REGISTRY)

_WRITE_TIMEOUT = 60.0
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 2.0
_FAILURES_KEPT = 10_000
_DAY_MS = 86_400_000
# Errors that belong to the rows, not to the database's state: isolate the culprit, never retry blindly.
_POISON = (errors.DataError, errors.IntegrityError)


# ------------------------------------------------------------------------------------------- SQL

_STAGE = "audit_stage_event"
_KEPT = "audit_inserted"
_EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
# What the rollups need of each inserted event.
_FACTS = ("ts, source, org_id, project_id, virtual_key_id, user_id, provider, model, error_code, request_decision,"
          " response_decision, cache_status, input_tokens, output_tokens, cached_input_tokens,"
          " cache_creation_tokens, reasoning_tokens, cost_micro_usd, cache_savings_micro_usd, total_us")
_DIMS = "source, org_id, project_id, virtual_key_id, user_id, provider, model"
_MEASURES = ("requests", "errors", "blocked", "cache_hits", "input_tokens", "output_tokens", "cached_input_tokens",
             "cache_creation_tokens", "reasoning_tokens", "cost_micro_usd", "cache_savings_micro_usd", "total_us")


def _cast(column: str) -> str:
    sql_type = EVENT_SQL_TYPES[column]
    return f"s.{column}::{sql_type}" if sql_type in ("uuid", "inet", "jsonb") else f"s.{column}"


def _rollup(table: str, width: str) -> str:
    """Upsert this batch's facts into one rollup table, binned to ``width``, in key order."""
    sums = ", ".join(f"sum({m})::bigint" for m in _MEASURES)
    updates = ", ".join(f"{m} = u.{m} + EXCLUDED.{m}" for m in _MEASURES)
    return (
        f"INSERT INTO {table} AS u (bucket, {_DIMS}, {', '.join(_MEASURES)})"
        f" SELECT date_bin('{width}', bucket, {_EPOCH}) AS b, {_DIMS}, {sums} FROM facts"
        f" GROUP BY b, {_DIMS} ORDER BY b, {_DIMS}"
        f" ON CONFLICT ON CONSTRAINT {table}_key DO UPDATE SET {updates}, updated_at = now()"
    )


_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{c} {t}" for c, t in zip(STAGE_EVENT_COLUMNS, STAGE_EVENT_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE IF NOT EXISTS {_KEPT} ON COMMIT DELETE ROWS AS"
    f" SELECT {_FACTS} FROM traffic_event WITH NO DATA",
)
_COPY_EVENTS = f"COPY {_STAGE} ({', '.join(STAGE_EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COPY_PAYLOADS = f"COPY traffic_event_payload ({', '.join(PAYLOAD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

# Step 2: the events that are new, kept aside for the rollups; their ids go back to the writer.
INSERT_EVENTS = (
    "WITH ins AS ("
    f" INSERT INTO traffic_event ({', '.join(STAGE_EVENT_COLUMNS)})"
    " SELECT " + ", ".join(_cast(c) for c in STAGE_EVENT_COLUMNS)
    + f" FROM {_STAGE} s ON CONFLICT (event_id, ts) DO NOTHING RETURNING event_id, {_FACTS}"
    f"), kept AS (INSERT INTO {_KEPT} SELECT {_FACTS} FROM ins)"
    " SELECT event_id::text FROM ins"
)

# Step 4, last before the commit so that rollup rows stay locked only briefly.
UPSERT_ROLLUPS = (
    "WITH flagged AS ("
    " SELECT *, (request_decision IS NOT DISTINCT FROM 'block'"
    f" OR response_decision IS NOT DISTINCT FROM 'block') AS is_blocked FROM {_KEPT}"
    "), facts AS ("
    f" SELECT date_bin('5 minutes', ts, {_EPOCH}) AS bucket, {_DIMS}, count(*) AS requests,"
    " count(*) FILTER (WHERE error_code IS NOT NULL AND NOT is_blocked) AS errors,"
    " count(*) FILTER (WHERE is_blocked) AS blocked,"
    " count(*) FILTER (WHERE cache_status IN ('hit', 'semantic')) AS cache_hits,"
    " sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,"
    " sum(cached_input_tokens) AS cached_input_tokens, sum(cache_creation_tokens) AS cache_creation_tokens,"
    " sum(reasoning_tokens) AS reasoning_tokens, sum(cost_micro_usd) AS cost_micro_usd,"
    " sum(cache_savings_micro_usd) AS cache_savings_micro_usd, coalesce(sum(total_us), 0) AS total_us"
    f" FROM flagged GROUP BY 1, {_DIMS}"
    f"), r5 AS ({_rollup('usage_rollup_5m', '5 minutes')}"
    f"), r1 AS ({_rollup('usage_rollup_1h', '1 hour')}"
    f") {_rollup('usage_rollup_1d', '1 day')}"
)

INSERT_DLQ = (
    "INSERT INTO traffic_event_dlq (stream, stream_seq, subject, event_id, headers, payload, error, attempts)"
    " VALUES (%s, %s, %s, %s::uuid, %s::jsonb, %s, %s, %s)"
    " ON CONFLICT (stream, stream_seq) DO UPDATE SET error = EXCLUDED.error,"
    " attempts = greatest(traffic_event_dlq.attempts, EXCLUDED.attempts), last_failed_at = now()"
)


# ----------------------------------------------------------------------------------------- batch


class _Batch:
    """One fetch's messages, sorted into rows to store, poison, and messages to ack unstored."""

    __slots__ = ("bad", "items", "msgs", "others", "touched_at")

    def __init__(self, msgs: list[JsMsg], traffic_subjects: frozenset[str], now: float) -> None:
        self.msgs = msgs
        self.items: list[tuple[JsMsg, Staged]] = []
        self.bad: list[tuple[JsMsg, str]] = []
        self.others: list[JsMsg] = []
        self.touched_at = now  # last time its messages' ack timers were reset
        for msg in msgs:
            if msg.subject not in traffic_subjects:
                self.others.append(msg)
                continue
            try:
                self.items.append((msg, stage_rows(msg.data)))
            except DecodeError as exc:
                self.bad.append((msg, str(exc)))


class AuditWriter:
    """The hub's writer task; see the module docstring."""

    def __init__(
        self,
        pool: PgPool,
        nats: NatsClient,
        config: AuditConfig,
        *,
        stream: EventStream = EVENTS,
        durable: str = DURABLE,
        keeper: PartitionKeeper | None = None,
    ) -> None:
        self._pool = pool
        self._nats = nats
        self._js = JetStream(nats)
        self._cfg = config
        self._stream = stream
        self._durable = durable
        self._keeper = keeper
        self._traffic_subjects = stream.traffic_subjects
        self._failures: dict[tuple[str, int], int] = {}
        self._consumer_ready = False
        # Totals since start, for tests and status pages.
        self.inserted = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.batches = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch and store until cancelled; started() at once, whatever the state of NATS and PostgreSQL."""
        task_status.started()
        send, recv = trio.open_memory_channel[_Batch](0)
        async with trio.open_nursery() as nursery, recv:
            nursery.start_soon(self._fetch_loop, send)
            for _ in range(self._cfg.writer_concurrency):
                nursery.start_soon(self._store_loop, recv.clone())

    # -------------------------------------------------------------------------------- fetching

    async def _fetch_loop(self, send: trio.MemorySendChannel[_Batch]) -> None:
        backoff = 0.0
        async with send:
            while True:
                try:
                    if not self._consumer_ready:
                        await self._ensure_consumer()
                    msgs = await self._js.fetch(self._stream.name, self._durable, self._cfg.writer_batch_max,
                                                self._cfg.writer_batch_interval)
                except NatsError as exc:
                    if isinstance(exc, JetStreamError):
                        self._consumer_ready = False
                    WRITER_ERRORS.labels("fetch").inc()
                    # The first failure of a run is worth a warning; the retries are not.
                    log.log(logging.DEBUG if backoff else logging.WARNING,
                            "audit writer: cannot fetch, retrying until NATS answers: %s", exc)
                    backoff = min(_BACKOFF_MAX, max(_BACKOFF_MIN, backoff * 2))
                    with trio.move_on_after(backoff * random.uniform(0.5, 1.0)):
                        await self._nats.wait_ready(None)
                        await trio.sleep(_BACKOFF_MIN)
                    continue
                if backoff:
                    log.info("audit writer: fetching again")
                backoff = 0.0
                if not msgs:
                    WRITER_LAG.set(0)
                    continue
                WRITER_LAG.set(msgs[-1].num_pending)
                await send.send(_Batch(msgs, self._traffic_subjects, trio.current_time()))

    async def _ensure_consumer(self) -> None:
        if not self._nats.is_connected:
            raise NatsConnectionError(f"NATS not connected: {self._nats.state.detail}")
        await ensure_stream(self._js, self._stream, self._cfg)
        await self._js.ensure_consumer(
            self._stream.name, self._durable, ack_wait=self._cfg.writer_ack_wait, max_deliver=-1,
            max_ack_pending=max(4 * self._cfg.writer_batch_max, 1000),
        )
        self._consumer_ready = True

    # --------------------------------------------------------------------------------- storing

    async def _store_loop(self, recv: trio.MemoryReceiveChannel[_Batch]) -> None:
        """One of ``writer_concurrency`` workers, each on a connection of its own."""
        batch: _Batch | None = None
        backoff = 0.0
        async with recv:
            while True:
                try:
                    async with self._pool.connection() as conn:
                        for ddl in _DDL:
                            await conn.execute(ddl)
                        while True:
                            if batch is None:
                                try:
                                    batch = await recv.receive()
                                except trio.EndOfChannel:
                                    return
                            await self._store(conn, batch)
                            batch = None
                            if backoff:
                                log.info("audit writer: storing again")
                            backoff = 0.0
                except (psycopg.Error, trio.TooSlowError) as exc:
                    WRITER_ERRORS.labels("store").inc()
                    log.log(logging.DEBUG if backoff else logging.WARNING,
                            "audit writer: cannot store, retrying the batch until PostgreSQL answers: %s",
                            _describe(exc))
                    backoff = min(_BACKOFF_MAX, max(_BACKOFF_MIN, backoff * 2))
                await trio.sleep(backoff * random.uniform(0.5, 1.0))
                if batch is not None:
                    await self._keep_alive(batch)

    async def _store(self, conn: TrioConnection[Any], batch: _Batch) -> None:
        started = trio.current_time()
        bad: list[tuple[JsMsg, str]] = []
        inserted = await self._write_isolating(conn, batch.items, bad)
        bad_ids = {id(msg) for msg, _ in bad}
        stored = [msg for msg, _ in batch.items if id(msg) not in bad_ids]
        await self._handle_poison(conn, [*batch.bad, *bad])
        for msg in [*stored, *batch.others]:
            await _settle(msg.ack)
        elapsed = trio.current_time() - started
        self.batches += 1
        self.inserted += inserted
        self.duplicates += len(stored) - inserted
        _INSERTED.inc(inserted)
        _DUPLICATE.inc(len(stored) - inserted)
        _SKIPPED.inc(len(batch.others))
        WRITER_BATCH.observe(len(batch.msgs))
        WRITER_SECONDS.observe(elapsed)
        if elapsed > 0:
            WRITER_RATE.set(len(stored) / elapsed)
        if self._keeper is not None and stored:
            self._keeper.saw_days({staged.ms // _DAY_MS for _msg, staged in batch.items})

    async def _write_isolating(
        self, conn: TrioConnection[Any], items: list[tuple[JsMsg, Staged]], bad: list[tuple[JsMsg, str]],
    ) -> int:
        """Write ``items``; on a row error, split until each culprit is alone and goes to ``bad``."""
        if not items:
            return 0
        try:
            return await self._write(conn, items)
        except _POISON as exc:
            if len(items) == 1:
                bad.append((items[0][0], _describe(exc)))
                return 0
            half = len(items) // 2
            return (await self._write_isolating(conn, items[:half], bad)
                    + await self._write_isolating(conn, items[half:], bad))

    async def _write(self, conn: TrioConnection[Any], items: list[tuple[JsMsg, Staged]]) -> int:
        """One transaction: stage, insert the new events, copy their payloads, upsert rollups."""
        with trio.fail_after(_WRITE_TIMEOUT):
            async with conn.transaction(), conn.cursor() as cur:
                async with cur.copy(_COPY_EVENTS) as copy:
                    copy.set_types(STAGE_EVENT_TYPES)
                    for _msg, staged in items:
                        await copy.write_row(staged.event)
                await cur.execute(INSERT_EVENTS)
                inserted = [row[0] for row in await cur.fetchall()]
                if not inserted:
                    return 0
                # Payload keys contain the event's, so an event inserted now has no payload rows
                # yet: they are copied straight in, once (a batch may carry an event twice).
                pending = set(inserted)
                rows = []
                for _msg, staged in items:
                    if staged.event_id in pending:
                        pending.discard(staged.event_id)
                        rows += staged.payload_rows()
                if rows:
                    async with cur.copy(_COPY_PAYLOADS) as copy:
                        copy.set_types(PAYLOAD_TYPES)
                        for row in rows:
                            await copy.write_row(row)
                await cur.execute(UPSERT_ROLLUPS)
        return len(inserted)

    # ---------------------------------------------------------------------------------- poison

    async def _handle_poison(self, conn: TrioConnection[Any], bad: list[tuple[JsMsg, str]]) -> None:
        if not bad:
            return
        dead: list[tuple[JsMsg, str, int]] = []
        retry: list[tuple[JsMsg, int]] = []
        for msg, error in bad:
            key = (msg.stream, msg.stream_seq)
            attempts = self._failures.pop(key, 0) + 1
            if attempts >= self._cfg.max_deliver:
                dead.append((msg, error, attempts))
            else:
                self._failures[key] = attempts
                retry.append((msg, attempts))
                log.warning("audit writer: message %s/%d refused (try %d of %d): %s",
                            msg.stream, msg.stream_seq, attempts, self._cfg.max_deliver, error)
        while len(self._failures) > _FAILURES_KEPT:
            del self._failures[next(iter(self._failures))]
        if dead:
            with trio.fail_after(_WRITE_TIMEOUT):
                async with conn.transaction(), conn.cursor() as cur:
                    for msg, error, attempts in dead:
                        await cur.execute(INSERT_DLQ, (
                            msg.stream, msg.stream_seq, msg.subject, peek_event_id(msg.data),
                            orjson.dumps(dict(msg.headers or {})).decode(), msg.data, error, attempts,
                        ))
            for msg, error, attempts in dead:
                log.error("audit writer: message %s/%d dead-lettered after %d tries: %s",
                          msg.stream, msg.stream_seq, attempts, error)
                await _settle(msg.term)
            self.dead_lettered += len(dead)
            _DEAD.inc(len(dead))
        for msg, attempts in retry:
            await _settle(lambda m=msg, a=attempts: m.nak(delay=min(_BACKOFF_MAX, 0.2 * a)))
        _RETRIED.inc(len(retry))

    async def _keep_alive(self, batch: _Batch) -> None:
        """While a batch waits for the database, stop JetStream from redelivering it meanwhile."""
        now = trio.current_time()
        if now - batch.touched_at < self._cfg.writer_ack_wait / 3:
            return
        batch.touched_at = now
        for msg in batch.msgs:
            try:
                await msg.in_progress()
            except NatsError:
                return


async def _settle(action: Any) -> None:
    """Ack, nak or term; a lost connection only means the message comes back after ack_wait."""
    try:
        await action()
    except NatsError as exc:
        log.debug("audit writer: ack not sent (the message will be redelivered): %s", exc)


def _describe(exc: BaseException) -> str:
    """One line for logs and the DLQ: never psycopg's DETAIL, which can quote a whole row with its bodies."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        diag = exc.diag
        text = f"{diag.sqlstate}: {diag.message_primary}"
        if diag.constraint_name:
            text += f" (constraint {diag.constraint_name})"
        if diag.column_name:
            text += f" (column {diag.column_name})"
        return text
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
