"""The built-in semantic index: ``semantic_cache_entry`` rows in PostgreSQL, a vector matrix in each process.

PostgreSQL is the durable store: ``run`` loads the unexpired rows of the
configured embedding model (newest first, up to ``max_entries``) before it
reports started, so a restarted gateway finds what it had.  Lookups never
touch the database: ``search`` is a matrix-vector product in memory
(``vectors.VectorIndex``).

Writes: ``add`` and ``remove`` change this process's matrix at once and queue
the row for a writer task, which upserts / deletes in batches (one transaction
per batch) and then publishes each change on NATS (``SUBJECT``, the vector in
the message).  Every gateway process applies those messages to its own matrix,
so a paraphrase answered on one gateway hits on another within a NATS round
trip.

Why NATS signals rather than a periodic refresh alone: a refresh every few
seconds would be seconds stale and cost every process a scan of the table on
every tick; a signal costs one small message per stored answer and arrives in
milliseconds.  Signals are hints, as for config changes: a process that may
have missed some (NATS reconnected) and every ``refresh_interval`` reloads the
whole table, and applies again the changes that arrived while it loaded.

Expiry: rows expire with their answer (the exact cache's TTL).  Expired
vectors never match (``search`` masks them); every ``purge_interval`` each
process drops them from memory and deletes expired rows (idempotent across
processes, served by ``semantic_cache_entry_expires_idx``).

Errors: database and NATS failures are logged and counted, never raised to a
request; a full write queue drops the write (the vector stays in this
process's memory only), counted in ``dropped``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
import psycopg
import trio
from prometheus_client import Counter

from nexus.gateway.cache.semantic_index import IndexRow, Neighbour
from nexus.gateway.cache.semantic_key import Partition
from nexus.gateway.cache.vectors import Vector, VectorIndex, from_bytes, to_bytes, unit
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import NatsError
from nexus.runtime.dependency import DependencyState
from nexus.runtime.metrics import REGISTRY
from nexus.storage.pgpool import PgPool

log = logging.getLogger("nexus.gateway.cache.semantic")

SUBJECT: Final = "nexus.cache.semantic"
_BATCH: Final = 256

UPSERT: Final = (
    "INSERT INTO semantic_cache_entry (cache_key, provider, model, scope, embedding_model, dims, embedding, "
    "expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s)) "
    "ON CONFLICT (cache_key) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model, "
    "scope = EXCLUDED.scope, embedding_model = EXCLUDED.embedding_model, dims = EXCLUDED.dims, "
    "embedding = EXCLUDED.embedding, created_at = now(), expires_at = EXCLUDED.expires_at"
)
DELETE: Final = "DELETE FROM semantic_cache_entry WHERE cache_key = %s"
LOAD: Final = (
    "SELECT cache_key, provider, model, scope, embedding, extract(epoch FROM expires_at)::float8 "
    "FROM semantic_cache_entry WHERE embedding_model = %s AND expires_at > now() "
    "ORDER BY created_at DESC LIMIT %s"
)
PURGE: Final = "DELETE FROM semantic_cache_entry WHERE expires_at <= now()"

_WRITES = Counter("nexus_semantic_index_writes", "Built-in semantic index writes by outcome", ["result"],
                  registry=REGISTRY)


@attrs.frozen(slots=True)
class _Remove:
    partition: Partition
    cache_key: str


_Op = IndexRow | _Remove


def encode_signal(op: _Op) -> bytes:
    """One change as a NATS message: a JSON head line, then (for an add) the float32 vector."""
    p = op.partition
    head: dict[str, Any] = {"k": op.cache_key, "p": p.provider, "m": p.model, "s": p.scope, "e": p.embedding_model}
    if isinstance(op, IndexRow):
        head["x"] = op.expires
        return orjson.dumps(head) + b"\n" + to_bytes(op.vector)
    return orjson.dumps(head) + b"\n"


def decode_signal(data: bytes) -> _Op:
    """The change in a message; ``ValueError`` for one that is not ours."""
    head_bytes, sep, blob = data.partition(b"\n")
    try:
        head = orjson.loads(head_bytes)
        partition = Partition(str(head["p"]), str(head["m"]), str(head["s"]), str(head["e"]))
        key = str(head["k"])
        if "x" not in head:
            return _Remove(partition, key)
        expires = float(head["x"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError("not a semantic index signal") from None
    vector = unit(from_bytes(blob)) if sep else None
    if vector is None or not math.isfinite(expires):
        raise ValueError("a semantic index signal without a usable vector")
    return IndexRow(partition, key, vector, expires)


class BuiltinIndex:
    """See the module docstring.  ``clock`` is wall time (expiries are epoch seconds, shared across processes)."""

    backend = "builtin"

    def __init__(self, pool: PgPool, nats: NatsClient | None, embedding_model: str, *, max_entries: int = 50_000,
                 refresh_interval: float = 300.0, purge_interval: float = 60.0, queue_max: int = 4096,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.nats = nats
        self.embedding_model = embedding_model
        self.refresh_interval = refresh_interval
        self.purge_interval = purge_interval
        self.clock = clock
        self.index = VectorIndex(max_entries)
        self.state = DependencyState("semantic-cache", detail="loading")
        self.dropped = 0
        self.refused = 0
        self._send, self._recv = trio.open_memory_channel[_Op](queue_max)
        # Changes applied while a reload runs, applied again to the freshly loaded index.
        self._replay: list[_Op] | None = None
        self._reload_now = trio.Event()

    # -- the interface ------------------------------------------------------------------------------

    async def search(self, partition: Partition, vector: Vector) -> Neighbour | None:
        best = self.index.best(partition, vector, self.clock())
        return Neighbour(*best) if best is not None else None

    async def add(self, row: IndexRow) -> bool:
        if row.partition.embedding_model != self.embedding_model or not self._apply(row):
            self.refused += 1
            return False
        self._queue(row)
        return True

    async def remove(self, partition: Partition, cache_key: str) -> None:
        op = _Remove(partition, cache_key)
        self._apply(op)
        self._queue(op)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await self.reload()
            nursery.start_soon(self._writer)
            nursery.start_soon(self._upkeep)
            if self.nats is not None:
                nursery.start_soon(self._signals)
                nursery.start_soon(self._reconnects)
            task_status.started()

    # -- memory ---------------------------------------------------------------------------------------

    def _apply(self, op: _Op) -> bool:
        if self._replay is not None:
            self._replay.append(op)
        if isinstance(op, IndexRow):
            return self.index.put(op.partition, op.cache_key, op.vector, op.expires)
        self.index.remove(op.partition, op.cache_key)
        return True

    def _queue(self, op: _Op) -> None:
        try:
            self._send.send_nowait(op)
        except trio.WouldBlock:
            self.dropped += 1
            _WRITES.labels("dropped").inc()

    async def reload(self) -> bool:
        """Replace the in-memory index with the table's unexpired rows; False (index kept) on a database error."""
        self._replay = []
        try:
            fresh = VectorIndex(self.index.max_entries)
            async with self.pool.connection() as conn:
                cur = await conn.execute(LOAD, (self.embedding_model, self.index.max_entries))
                rows = await cur.fetchall()
            for key, provider, model, scope, blob, expires in rows:
                vector = unit(from_bytes(bytes(blob)))
                if vector is not None:
                    fresh.put(Partition(provider, model, scope, self.embedding_model), key, vector, expires)
            replay, self._replay = self._replay, None
            self.index = fresh
            for op in replay:
                self._apply(op)
        except (psycopg.Error, OSError, ValueError) as exc:
            self._replay = None
            log.warning("semantic index not loaded from PostgreSQL (keeping %d entries): %s", len(self.index), exc)
            self.state.mark_up(f"builtin: load failed, serving {len(self.index)} entries: {exc}")
            return False
        self.state.mark_up(f"builtin: {len(self.index)} entries")
        log.info("semantic index loaded: %d entries", len(self.index))
        return True

    # -- background -----------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            batch = [await self._recv.receive()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            if await self._write(batch):
                await self._publish(batch)
            else:
                await trio.sleep(1.0)  # the database is struggling: do not spin on it

    async def _write(self, batch: list[_Op]) -> bool:
        now = self.clock()
        upserts = [(op.cache_key, op.partition.provider, op.partition.model, op.partition.scope,
                    op.partition.embedding_model, int(op.vector.shape[0]), to_bytes(op.vector), op.expires)
                   for op in batch if isinstance(op, IndexRow) and op.expires > now + 1]
        deletes = [(op.cache_key,) for op in batch if isinstance(op, _Remove)]
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if upserts:
                    await cur.executemany(UPSERT, upserts)
                if deletes:
                    await cur.executemany(DELETE, deletes)
        except (psycopg.Error, OSError) as exc:
            _WRITES.labels("failed").inc(len(batch))
            log.warning("semantic index: %d changes not written to PostgreSQL: %s", len(batch), exc)
            return False
        _WRITES.labels("written").inc(len(batch))
        return True

    async def _publish(self, batch: list[_Op]) -> None:
        if self.nats is None:
            return
        try:
            for op in batch:
                await self.nats.publish(SUBJECT, encode_signal(op))
        except NatsError as exc:
            # Other processes catch up at their next reload.
            log.warning("semantic index changes not signalled: %s", exc)

    async def _signals(self) -> None:
        assert self.nats is not None
        async for msg in self.nats.subscribe(SUBJECT, max_pending=8192):
            try:
                op = decode_signal(msg.data)
            except ValueError as exc:
                log.warning("ignoring a malformed semantic index signal: %s", exc)
                continue
            if op.partition.embedding_model == self.embedding_model:
                self._apply(op)

    async def _reconnects(self) -> None:
        assert self.nats is not None
        was_up = self.nats.state.ok
        while True:
            await trio.sleep(1.0)
            up = self.nats.state.ok
            if up and not was_up:
                self._reload_now.set()  # signals may have been missed while it was down
            was_up = up

    async def _upkeep(self) -> None:
        next_refresh = trio.current_time() + self.refresh_interval
        while True:
            with trio.move_on_after(self.purge_interval):
                await self._reload_now.wait()
            if self._reload_now.is_set() or trio.current_time() >= next_refresh:
                self._reload_now = trio.Event()
                next_refresh = trio.current_time() + self.refresh_interval
                await self.reload()
                continue
            dropped = self.index.purge(self.clock())
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(PURGE)
            except (psycopg.Error, OSError) as exc:
                log.warning("expired semantic index rows not deleted: %s", exc)
            if dropped:
                log.info("semantic index: %d expired entries dropped", dropped)
