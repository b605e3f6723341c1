"""The emitter: traffic events from a daemon's request tasks to JetStream, blocking a response only in block mode.

``emit(event)`` encodes the event and appends it to an in-memory queue bounded
by bytes (``queue_max_bytes``, counting events being published too); it is
synchronous, costs an encode (about 6 µs with two small bodies) and must be
called from the Trio thread.  ``emit_message`` does the same for events of
other kinds that come already encoded.  ``run`` is the background task
(``nursery.start(emitter.run)``), the only publisher: it takes a batch when
``batch_max`` events are queued or the oldest has waited ``batch_interval``,
moves bodies above ``inline_max`` to the spill store, and publishes the batch
to the ``NEXUS_EVENTS`` stream with ``publish_many`` (``Nats-Msg-Id`` = event
id, so a retry inside the stream's duplicate window is stored once), awaiting
every ack.

When NATS is unreachable, refuses or times out, or the queue is full, the loss
mode (``[audit] loss_mode``) decides:

- ``spill`` (default): events go to the local spool (:mod:`nexus.audit.spool`),
  fsync'd per batch.  While the spool holds anything, new batches are appended
  behind it, and once NATS is back the spool is published from the head in
  order, each chunk consumed only when every message of it was acknowledged,
  and its files deleted.  ``emit`` never waits: a full queue sends the event
  straight to the spool (one ``write`` to the page cache; the fsync follows in
  the background), so overflow events can precede events still queued.
- ``block``: no event is ever given up while the process runs.  Callers use
  ``await emit_wait(event)``, which returns only once the event is *durable*:
  acknowledged by JetStream, or appended to the spool and fsync'd.  While NATS
  is away events go to the spool as in ``spill`` mode; once the spool is full
  they stay in memory, and once the queue is full too (``queue_max_bytes``)
  callers wait for room: back-pressure on the requests instead of loss.  The
  synchronous ``emit`` raises :class:`QueueFull` on a full queue and does not
  wait for durability.  Batches do not wait for ``batch_interval``: one goes as
  soon as the previous one is acknowledged (or fsync'd), taking whatever
  queued meanwhile, so a request waits about one publish round trip, and
  batches grow with the load.
- ``drop``: nothing is spooled while running; a full queue drops the newest
  event, counted and logged (``overflow``).

Spool cap (``spool_max_bytes``, default 1 GiB of events not yet replayed): a
full spool never deletes what it holds, so the record of an outage is kept from
its start and a flood cannot push older evidence out.  What does not fit waits
in the memory queue (in order, behind the spool) until NATS is back.  Once the
queue is full too (``queue_max_bytes``, default 64 MiB), ``spill`` mode loses
the newest events, each counted in
``nexus_audit_events_lost_total{reason="spool_full"}`` with an error logged at
least every 10 s while it lasts (naming the count), and ``block`` mode makes
callers wait instead.  What any mode spools at shutdown and does not fit is
lost the same way (counted, logged).

Every lost event is counted in ``nexus_audit_events_lost_total{reason}``:
``overflow`` (drop mode, queue full), ``spool_full``, ``spool_error`` (the
spool cannot be written), ``too_large`` (over NATS's ``max_payload`` even with
every body spilled), and logged at error level (rate-limited, with the count).

Spool files found at start (from any mode's shutdown or an earlier crash) are
replayed the same way.

Shutdown: ``aclose()`` stops taking new batches, publishes what is queued
within ``shutdown_timeout`` and spools the rest; cancelling ``run`` instead
does the same in a shielded scope bounded by ``shutdown_timeout`` (NATS is
usually going away too, so that mostly spools).  Events emitted after ``run``
ended go straight to the spool (and are fsync'd there and then).  Every
``emit_wait`` still waiting is released when ``run`` ends.

Loss bound on SIGKILL (defaults: ``batch_interval`` 100 ms, ``batch_max`` 512,
``queue_max_bytes`` 64 MiB):

- ``spill``: what was in memory and not yet spooled or acknowledged by
  JetStream: the queued events (normally at most ``batch_interval`` of
  traffic or ``batch_max`` events, since a batch is taken when either is
  reached; never more than ``queue_max_bytes``, which it can reach only when
  NATS is slower than the traffic or the spool is full) plus the one batch
  being published whose acks had not arrived (at most ``batch_max`` events;
  those JetStream had stored are not lost).  At 1,000 requests/s that is
  about 100 events queued and 100 in flight (at most 512 each).  Overflow events spooled by
  ``emit`` are in the page cache, so a process kill spares them.
- ``block``: nothing that was answered.  A request whose event is in memory
  has not been answered yet; its client sees the connection drop and may
  retry.
- ``drop``: the whole queue, which holds everything while NATS is away (up to
  ``queue_max_bytes``).

Spooled events survive a process kill (they are in the page cache) and a
machine crash once fsync'd: in ``spill`` mode at most the last batch appended
in the preceding ``batch_interval`` is exposed to a power loss.

Resource handling: the emitter owns its spool's open segment (closed when
``run`` ends) and no socket; the caller runs and closes the ``NatsClient``.

Error handling: ``emit`` raises ``ValueError`` for an invalid event (a bug in
the caller) and, in block mode only, :class:`QueueFull`.  Nothing is raised out
of ``run`` for NATS, spill-store or spool failures: they are logged, counted in
metrics and retried with backoff; an event that cannot be kept at all is
counted as lost with its reason.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

import trio
from prometheus_client import Counter, Gauge, Histogram

from nexus.audit.events import TRAFFIC_KINDS, Payload, TrafficEvent, decode, encode
from nexus.audit.spill import FsSpillStore, SpillError, SpillStore
from nexus.audit.spool import Spool, SpoolError, SpoolRecord
from nexus.audit.stream import EVENTS, EventStream, ensure_stream
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import NatsError, NatsNoResponders, NatsPayloadTooLarge
from nexus.net.nats.jetstream import JetStream, JetStreamPublishError, JsPublish
from nexus.runtime.metrics import REGISTRY

__all__ = ["Emitter", "QueueFull"]

log = logging.getLogger(__name__)

EVENTS_TOTAL = Counter(
    "nexus_audit_events", "Audit events by stage reached: accepted, published, spooled, replayed",
    ["stage"], registry=REGISTRY,
)
LOST = Counter(
    "nexus_audit_events_lost", "Audit events given up: overflow (drop mode), spool_full, spool_error, too_large",
    ["reason"], registry=REGISTRY,
)
PUBLISH_FAILURES = Counter("nexus_audit_publish_failures", "Event batches JetStream did not fully ack",
                           registry=REGISTRY)
SPILLED = Counter("nexus_audit_bodies_spilled", "Bodies moved to the spill store", ["result"], registry=REGISTRY)
QUEUE_BYTES = Gauge("nexus_audit_queue_bytes", "Bytes of events queued or being published", registry=REGISTRY)
SPOOL_BYTES = Gauge("nexus_audit_spool_bytes", "Bytes of events in the local spool", registry=REGISTRY)
_ACCEPTED = EVENTS_TOTAL.labels("accepted")
_PUBLISHED = EVENTS_TOTAL.labels("published")
_SPOOLED = EVENTS_TOTAL.labels("spooled")
_REPLAYED = EVENTS_TOTAL.labels("replayed")
BATCH_SIZE = Histogram("nexus_audit_publish_batch_events", "Events per published batch", registry=REGISTRY,
                       buckets=(1, 4, 16, 64, 128, 256, 512, 1024))

# Bookkeeping per queued event counted against queue_max_bytes, so tiny events still fill it.
_ITEM_OVERHEAD = 200
# Room kept below the server's max_payload for the Nats-Msg-Id header and framing.
_HEADER_ROOM = 4096
_DEFAULT_MAX_PAYLOAD = 1024 * 1024
_WINDOW = 256
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0
_DROP_LOG_INTERVAL = 10.0
_REPLAY_MAX_BYTES = 8 * 1024 * 1024


class QueueFull(Exception):
    """Block mode: the queue is full and ``emit`` cannot wait; use ``await emit_wait(event)``."""


class _Item:
    __slots__ = ("data", "durable", "msg_id", "size", "subject")

    def __init__(self, subject: str, msg_id: str, data: bytes, size: int,
                 durable: trio.Event | None = None) -> None:
        self.subject = subject
        self.msg_id = msg_id
        self.data = data
        self.size = size  # what it holds of the queue's byte budget
        # Block mode: set once JetStream acked it or the spool holding it was fsync'd (or it was given up).
        self.durable = durable


def _release(items: Sequence[_Item]) -> None:
    for item in items:
        if item.durable is not None:
            item.durable.set()


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Emitter:
    """One per emitting daemon; see the module docstring."""

    def __init__(
        self,
        nats: NatsClient,
        config: AuditConfig,
        *,
        stream: EventStream = EVENTS,
        spill_store: SpillStore | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._nats = nats
        self._js = JetStream(nats, api_timeout=config.publish_timeout)
        self._cfg = config
        self._mode = config.loss_mode
        self._stream = stream
        self._subjects = {kind: stream.subject(kind) for kind in TRAFFIC_KINDS}
        self._traffic_subjects = stream.traffic_subjects
        self._spill_store: SpillStore = spill_store or FsSpillStore(config.spill_dir)
        self._spool = spool or Spool(Path(config.spool_dir), file_max=config.spool_file_max,
                                     max_bytes=config.spool_max_bytes)
        # spill and block modes write to the spool while NATS is away; drop only at shutdown.
        self._spools = config.loss_mode != "drop"
        self._batch_max = config.batch_max
        self._interval = config.batch_interval
        self._max_bytes = config.queue_max_bytes
        self._inline_max = config.inline_max

        self._queue: collections.deque[_Item] = collections.deque()
        self._held = 0  # bytes of queued and in-flight items
        self._inflight: Sequence[_Item] = ()
        self._first_at = 0.0
        self._wake = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._running = False
        self._closing = False
        self._closed = False
        self._done = trio.Event()
        self._stream_ready = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._degraded = False
        self._last_drop_log = -math.inf
        self._drops_unlogged = 0
        self._nudged = False
        self._accepted_counted = 0
        self._unsynced: list[_Item] = []  # spooled block-mode items waiting for the next fsync
        self._full_warned = False  # the spool filled up since it was last empty

        # Totals since start, for tests and status pages (the metrics are per process).
        self.accepted = 0
        self.published = 0
        self.spooled = 0
        self.replayed = 0
        self.lost = 0

    # ------------------------------------------------------------------------------ status

    @property
    def queued(self) -> int:
        """Events waiting in memory (not counting a batch being published)."""
        return len(self._queue)

    @property
    def held_bytes(self) -> int:
        return self._held

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    # ---------------------------------------------------------------------------- emitting

    def emit(self, event: TrafficEvent) -> None:
        """Queue ``event`` for JetStream; synchronous, never waits (see the module docstring)."""
        data = encode(event)
        self._offer(_Item(self._subjects[event.kind], str(event.event_id), data, len(data) + _ITEM_OVERHEAD))

    async def emit_wait(self, event: TrafficEvent) -> None:
        """``emit``; in block mode, wait for room in the queue, then until the event is durable.

        Durable: acknowledged by JetStream, or in the spool and fsync'd (see the
        module docstring).  Cancellable; a cancelled wait leaves the event queued.
        """
        if self._mode != "block":
            self.emit(event)
            return
        data = encode(event)
        item = _Item(self._subjects[event.kind], str(event.event_id), data, len(data) + _ITEM_OVERHEAD,
                     trio.Event())
        while self._held and self._held + item.size > self._max_bytes and not self._closed:
            await self._room.park()
        self._offer(item)
        assert item.durable is not None
        await item.durable.wait()

    def emit_message(self, kind: str, msg_id: str, data: bytes) -> None:
        """Queue an already-encoded event of another kind (``compliance``, ``admin-audit``)."""
        self._offer(_Item(self._stream.subject(kind), msg_id, data, len(data) + _ITEM_OVERHEAD))

    def _offer(self, item: _Item) -> None:
        if self._closed:
            # No run task is left to fsync it: a late event is rare enough to sync here.
            self._spool_now([item])
            try:
                self._spool.sync()
            except OSError as exc:
                log.error("audit spool fsync failed: %s", exc)
            _release([item])
            return
        if self._held and self._held + item.size > self._max_bytes:
            if self._mode == "spill":
                self._spool_now([item])
            elif self._mode == "drop":
                self._lose(1, "overflow")
            else:
                raise QueueFull(f"audit queue full ({self._held} bytes); block mode needs emit_wait")
            return
        queue = self._queue
        if not queue:
            self._first_at = trio.current_time()
            self._wake.unpark()
        queue.append(item)
        self._held += item.size
        self.accepted += 1
        if len(queue) == self._batch_max:
            self._wake.unpark()

    def _spool_now(self, items: Sequence[_Item]) -> None:
        """Append to the spool without waiting (what does not fit is lost); the run task fsyncs soon after."""
        before = self.spooled
        handled = self._append_spool(items)
        if handled < len(items):
            self._lose(len(items) - handled, "spool_full", self._full_detail() + " and the queue full too")
        kept = self.spooled - before
        if not kept:
            return
        self.accepted += kept
        # The run task has an fsync and perhaps a replay to do, whatever the queue holds.
        self._nudged = True
        self._wake.unpark()

    def _append_spool(self, items: Sequence[_Item]) -> int:
        """Append what fits of ``items`` in order; return how many (all of them, or those before the
        first that did not fit).  An I/O error loses them all (counted)."""
        if not items:
            return 0
        try:
            kept = self._spool.append(SpoolRecord(it.subject, it.msg_id, it.data) for it in items)
        except SpoolError as exc:
            self._lose(len(items), "spool_error", str(exc))
            _release(items)
            return len(items)  # given up, not waiting for room: nothing of them is left to place
        self.spooled += kept
        _SPOOLED.inc(kept)
        self._unsynced.extend(it for it in items[:kept] if it.durable is not None)
        return kept

    def _full_detail(self) -> str:
        return (f"spool {self._spool.directory} full ({self._spool.pending_bytes} bytes to replay,"
                f" spool_max_bytes {self._spool.max_bytes})")

    def _lose(self, count: int, reason: str, detail: str = "") -> None:
        self.lost += count
        LOST.labels(reason).inc(count)
        self._drops_unlogged += count
        now = trio.current_time()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL:
            log.error("audit events lost: %d (%s)%s", self._drops_unlogged, reason, f": {detail}" if detail else "")
            self._last_drop_log = now
            self._drops_unlogged = 0

    # --------------------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The publisher; started() at once, NATS or not.  Ends after ``aclose`` or on cancellation."""
        if self._running or self._closed:
            raise RuntimeError("Emitter.run called twice")
        self._running = True
        try:
            self._spool.open()
        except SpoolError as exc:
            log.error("audit spool unusable: %s", exc)
        task_status.started()
        try:
            while not self._closing:
                await self._step()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._cfg.shutdown_timeout
                await self._flush_on_exit()
            self._closed = True
            self._spool.close()
            self._room.unpark_all()
            self._update_gauges()
            self._done.set()

    async def aclose(self) -> None:
        """Publish what is queued (spool what cannot be within ``shutdown_timeout``) and end ``run``."""
        self._closing = True
        self._wake.unpark_all()
        if self._running:
            await self._done.wait()
        elif not self._closed:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._spool_on_exit(pending)
            self._spool.close()
            self._room.unpark_all()

    async def _flush_on_exit(self) -> None:
        pending = [*self._inflight, *self._queue]
        self._inflight = ()
        self._queue.clear()
        try:
            # A non-empty spool comes first: the rest goes behind it.
            if not self._spools or self._spool.empty:
                while pending and await self._usable():
                    batch, pending = pending[: self._batch_max], pending[self._batch_max :]
                    failed = await self._publish(batch)
                    if failed:
                        pending = [*failed, *pending]
                        break
        finally:
            # Deadline passed (a publish was cut short: its batch is in _inflight) or NATS is gone.
            self._spool_on_exit([*self._inflight, *pending])
            self._inflight = ()

    def _spool_on_exit(self, pending: list[_Item]) -> None:
        """The last chance: spool what fits (the rest is lost, counted), fsync, release every waiter."""
        handled = self._append_spool(pending)
        if handled < len(pending):
            self._lose(len(pending) - handled, "spool_full", self._full_detail())
        self._settle(pending)
        fd = self._spool.dup_for_sync()
        if fd is not None:
            try:
                _fsync_close(fd)
            except OSError as exc:
                log.error("audit spool fsync failed: %s", exc)
        _release(pending)
        _release(self._unsynced)
        self._unsynced = []

    # ---------------------------------------------------------------------------- the loop

    async def _step(self) -> None:
        self._update_gauges()
        self._nudged = False
        spools = self._spools
        spool = self._spool
        if spools and self._queue and not spool.empty:
            # Keep the order: while the spool holds events, new ones queue up behind them on disk.
            queued = list(self._queue)
            self._queue.clear()
            self._to_spool(queued)
        await self._sync_spool()
        usable = await self._usable()
        if usable and not spool.empty:
            await self._replay()
            if spools or not self._due():
                return
        else:
            if not usable and self._stalled():
                # What is queued waits in memory until NATS is back (block mode: callers wait for room too).
                await self._wait_for_nats("spool full, holding events in memory")
                return
            wait = math.inf if usable else max(self._retry_at - trio.current_time(), _BACKOFF_MIN)
            await self._wait_due(wait)
            if not self._due():
                return
            usable = await self._usable()
        batch = self._take()
        if spools and (not usable or not spool.empty):
            self._to_spool(batch)
            await self._sync_spool()
            return
        if not usable:
            # Drop mode keeps events in memory until NATS is back and the backoff has passed.
            self._queue.extendleft(reversed(batch))
            await self._wait_for_nats("holding events in memory")
            return
        failed = await self._publish(batch)
        if not failed:
            return
        if spools:
            self._to_spool(failed)
            await self._sync_spool()
        else:
            self._queue.extendleft(reversed(failed))

    def _to_spool(self, items: list[_Item]) -> None:
        """Spool ``items``; what does not fit goes back to the head of the queue, in order."""
        handled = self._append_spool(items)
        if handled:
            self._degrade("spooling")
        self._settle(items[:handled])
        rest = items[handled:]
        if rest:
            if not self._full_warned:
                self._full_warned = True
                log.error("audit %s: holding events in memory until NATS is back (queue_max_bytes %d; then %s)",
                          self._full_detail(), self._max_bytes,
                          "callers wait" if self._mode == "block" else "the newest events are lost")
            self._queue.extendleft(reversed(rest))
            self._first_at = trio.current_time() - self._interval

    def _stalled(self) -> bool:
        """The spool is full: the head of the queue cannot go anywhere until NATS is back."""
        queue = self._queue
        return self._spools and bool(queue) and not self._spool.fits(len(queue[0].data))

    async def _wait_for_nats(self, reason: str) -> None:
        self._degrade(reason)
        resume = max(self._retry_at, trio.current_time() + _BACKOFF_MIN)
        with trio.move_on_at(resume):
            await self._nats.wait_ready(None)
            await trio.sleep_until(resume)

    def _due(self) -> bool:
        queue = self._queue
        if not queue:
            return False
        # Block mode: callers wait for their events, so a batch goes as soon as the previous one is done.
        return (len(queue) >= self._batch_max or self._closing or self._mode == "block"
                or trio.current_time() >= self._first_at + self._interval)

    async def _wait_due(self, limit: float) -> None:
        """Until a batch is due (``batch_max`` queued or the oldest waited ``batch_interval``) or ``limit`` s."""
        deadline = trio.current_time() + limit
        while not self._closing and not self._nudged:
            queue = self._queue
            if len(queue) >= self._batch_max or (queue and self._mode == "block"):
                return
            now = trio.current_time()
            if queue:
                due = self._first_at + self._interval
                if now >= due:
                    return
                wake_at = min(due, deadline)
            else:
                wake_at = deadline
            if now >= deadline:
                return
            with trio.move_on_at(wake_at):
                await self._wake.park()

    def _take(self) -> list[_Item]:
        queue = self._queue
        count = min(len(queue), self._batch_max)
        batch = [queue.popleft() for _ in range(count)]
        if queue:
            # What is left waited at least as long: due at once.
            self._first_at = trio.current_time() - self._interval
        return batch

    def _settle(self, items: Sequence[_Item]) -> None:
        """These items left memory (published, spooled or dropped): free their share of the budget."""
        self._held -= sum(it.size for it in items)
        if self._room:
            self._room.unpark_all()

    async def _usable(self) -> bool:
        if not self._nats.is_connected or trio.current_time() < self._retry_at:
            return False
        if not self._stream_ready:
            try:
                with trio.fail_after(self._cfg.publish_timeout):
                    await ensure_stream(self._js, self._stream, self._cfg)
            except (NatsError, trio.TooSlowError) as exc:
                self._failed(f"cannot ensure stream {self._stream.name}: {exc}")
                return False
            self._stream_ready = True
        return True

    def _failed(self, reason: str) -> None:
        PUBLISH_FAILURES.inc()
        self._backoff = min(_BACKOFF_MAX, max(_BACKOFF_MIN, self._backoff * 2))
        self._retry_at = trio.current_time() + self._backoff * random.uniform(0.5, 1.0)
        self._degrade(reason)

    def _degrade(self, reason: str) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning("audit events not reaching JetStream (%s); loss mode %s", reason, self._mode)

    def _recovered(self) -> None:
        self._backoff = 0.0
        self._retry_at = 0.0
        if self._spool.empty:
            self._full_warned = False
        if self._degraded and self._spool.empty:
            self._degraded = False
            log.info("audit events reach JetStream again")

    # -------------------------------------------------------------------------- publishing

    async def _publish(self, batch: list[_Item]) -> list[_Item]:
        """Publish and await every ack; return the items that failed (still held).

        While it runs the batch is in ``_inflight``, and stays there if the call is
        cancelled, so the exit path spools it.
        """
        self._inflight = batch
        ready, too_large = await self._prepare(batch)
        failed: list[_Item] = []
        try:
            await self._js.publish_many(
                [JsPublish(it.subject, it.data, it.msg_id) for it in ready],
                window=_WINDOW, timeout=self._cfg.publish_timeout,
            )
        except JetStreamPublishError as exc:
            failed, late = self._sort_failures(ready, exc)
            too_large += late
        except NatsError as exc:
            failed = list(ready)
            self._failed(str(exc))
        self._inflight = ()
        # A message the server refused as too large is in ``ready`` and in ``too_large``: count it once.
        failed_ids = {id(it) for it in (*failed, *too_large)}
        done_items = [it for it in ready if id(it) not in failed_ids]
        self.published += len(done_items)
        _PUBLISHED.inc(len(done_items))
        BATCH_SIZE.observe(len(ready))
        if not failed:
            self._recovered()
        self._settle(done_items)
        self._settle(too_large)
        _release(done_items)
        _release(too_large)
        return failed

    def _sort_failures(self, items: Sequence[_Item], exc: JetStreamPublishError) -> tuple[list[_Item], list[_Item]]:
        """Split a partly failed batch into (to retry, too large for NATS: dropped)."""
        failed: list[_Item] = []
        too_large: list[_Item] = []
        for item, result in zip(items, exc.results, strict=True):
            if isinstance(result, NatsPayloadTooLarge):
                self._lose(1, "too_large", f"event {item.msg_id} ({len(item.data)} bytes)")
                too_large.append(item)
            elif isinstance(result, NatsError):
                if isinstance(result, NatsNoResponders):
                    self._stream_ready = False
                failed.append(item)
        if failed:
            self._failed(str(exc))
        return failed, too_large

    async def _replay(self) -> None:
        spool = self._spool
        try:
            records, cursor = spool.read(self._batch_max, _REPLAY_MAX_BYTES)
        except SpoolError as exc:
            log.error("audit spool unreadable: %s", exc)
            self._failed(str(exc))
            return
        if not records:
            spool.consume(cursor)
            return
        ready, _too_large = await self._prepare([_Item(r.subject, r.msg_id, r.data, 0) for r in records])
        try:
            await self._js.publish_many(
                [JsPublish(it.subject, it.data, it.msg_id) for it in ready],
                window=_WINDOW, timeout=self._cfg.publish_timeout,
            )
        except JetStreamPublishError as exc:
            if self._sort_failures(ready, exc)[0]:
                return  # the whole chunk again later: JetStream drops what it already stored
        except NatsError as exc:
            self._failed(str(exc))
            return
        spool.consume(cursor)
        self.replayed += len(ready)
        _REPLAYED.inc(len(ready))
        if spool.empty:
            self._recovered()

    # ------------------------------------------------------------------------------ bodies

    async def _prepare(self, items: list[_Item]) -> tuple[list[_Item], list[_Item]]:
        """Move bodies above ``inline_max`` to the spill store; return (to publish, dropped as too large)."""
        inline_max = self._inline_max
        if all(len(it.data) <= inline_max for it in items):
            return items, []
        limit = int(self._nats.server_info.get("max_payload", _DEFAULT_MAX_PAYLOAD)) - _HEADER_ROOM
        ready: list[_Item] = []
        too_large: list[_Item] = []
        for item in items:
            if len(item.data) > inline_max and item.subject in self._traffic_subjects:
                item = await self._shrink(item, limit)
            if len(item.data) > limit:
                self._lose(1, "too_large", f"event {item.msg_id} ({len(item.data)} bytes)")
                too_large.append(item)
            else:
                ready.append(item)
        return ready, too_large

    async def _shrink(self, item: _Item, limit: int) -> _Item:
        try:
            event = decode(item.data)
        except ValueError:
            return item
        big = [p for p in event.payloads if p.body is not None and len(p.body) > self._inline_max]
        if not big:
            return item
        await self._spill(big)
        data = encode(event)
        if len(data) > limit:
            await self._spill([p for p in event.payloads if p.body is not None])
            data = encode(event)
        return _Item(item.subject, item.msg_id, data, item.size, item.durable)

    async def _spill(self, payloads: list[Payload]) -> None:
        for payload in payloads:
            body = payload.body
            assert body is not None
            try:
                payload.spill = await trio.to_thread.run_sync(self._spill_store.put, body)
            except SpillError as exc:
                # Keep what fits inline rather than lose the body and the event with it.
                log.error("audit: cannot spill a %d-byte %s body, keeping it cut at %d bytes: %s",
                          len(body), payload.kind, self._inline_max, exc)
                SPILLED.labels("failed").inc()
                payload.body = body[: self._inline_max]
                payload.truncated = True
                continue
            payload.body = None
            SPILLED.labels("stored").inc()

    # ------------------------------------------------------------------------------- spool

    async def _sync_spool(self) -> None:
        """fsync what was appended, then release the block-mode callers whose events that made durable."""
        waiting, self._unsynced = self._unsynced, []
        fd = self._spool.dup_for_sync()
        if fd is not None:
            try:
                await trio.to_thread.run_sync(_fsync_close, fd)
            except OSError as exc:
                # Nothing better to do than say so: the bytes are in the page cache, the disk is failing.
                log.error("audit spool fsync failed: %s", exc)
        _release(waiting)

    def _update_gauges(self) -> None:
        # The accepted counter is brought up to date here, not per emit: a Prometheus
        # increment takes a lock, which costs more than the rest of emit's bookkeeping.
        if self.accepted != self._accepted_counted:
            _ACCEPTED.inc(self.accepted - self._accepted_counted)
            self._accepted_counted = self.accepted
        QUEUE_BYTES.set(self._held)
        SPOOL_BYTES.set(self._spool.pending_bytes)
