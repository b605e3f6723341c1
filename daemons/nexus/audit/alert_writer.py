"""The hub's alert writer: ``nexus.event.alert`` on JetStream ``NEXUS_EVENTS`` → the ``alert`` table.

A durable pull consumer of its own (``alert-writer``, explicit acks, filtered
on the alert subject), beside the audit writer's, which acks alert messages
without a row.  Alerts are rare (a soft limit alerts once per window), so each
one is stored in its own statement (``alerts.UPSERT``, autocommit) and acked
after it: a crash in between redelivers it, and the upsert ignores an event
it already counted.  No alert is lost while PostgreSQL is away: the message is
retried with capped backoff, its ack timer kept alive, until it is stored.

Poison: a message that is not an alert, or that the table refuses (a data or
integrity error), is logged, counted and terminated (never redelivered).

Resource handling: borrows one pool connection per alert; owns no NATS
connection.  Error handling: nothing propagates out of ``run`` but
cancellation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import psycopg
import trio
from prometheus_client import Counter
from psycopg import errors

from nexus.audit.alerts import KIND_ALERT, UPSERT, decode_alert, upsert_params
from nexus.audit.events import DecodeError
from nexus.audit.stream import EVENTS, EventStream, ensure_stream
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import JetStreamError, NatsConnectionError, NatsError
from nexus.net.nats.jetstream import JetStream, JsMsg
from nexus.runtime.metrics import REGISTRY
from nexus.storage.pgpool import PgPool

__all__ = ["DURABLE", "AlertWriter"]

log = logging.getLogger(__name__)

DURABLE: Final = "alert-writer"

ALERTS = Counter("nexus_alerts_stored", "Alert events the hub handled: stored, refused (poison)", ["result"],
                 registry=REGISTRY)
_STORED = ALERTS.labels("stored")
_REFUSED = ALERTS.labels("refused")

_BATCH: Final = 64
_WRITE_TIMEOUT: Final = 30.0
_BACKOFF_MIN: Final = 0.1
_BACKOFF_MAX: Final = 2.0
_POISON: Final = (errors.DataError, errors.IntegrityError)


class AlertWriter:
    """See the module docstring.  ``stored`` / ``refused`` count since start (tests, status pages)."""

    def __init__(self, pool: PgPool, nats: NatsClient, config: AuditConfig, *, stream: EventStream = EVENTS,
                 durable: str = DURABLE) -> None:
        self._pool = pool
        self._nats = nats
        self._js = JetStream(nats)
        self._cfg = config
        self._stream = stream
        self._durable = durable
        self._ready = False
        self.stored = 0
        self.refused = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch and store until cancelled; started() at once, whatever the state of NATS and PostgreSQL."""
        task_status.started()
        backoff = 0.0
        while True:
            try:
                if not self._ready:
                    await self._ensure_consumer()
                msgs = await self._js.fetch(self._stream.name, self._durable, _BATCH, self._cfg.writer_batch_interval)
            except NatsError as exc:
                if isinstance(exc, JetStreamError):
                    self._ready = False
                log.log(logging.DEBUG if backoff else logging.WARNING,
                        "alert writer: cannot fetch, retrying until NATS answers: %s", exc)
                backoff = min(_BACKOFF_MAX, max(_BACKOFF_MIN, backoff * 2))
                with trio.move_on_after(backoff * random.uniform(0.5, 1.0)):
                    await self._nats.wait_ready(None)
                    await trio.sleep(_BACKOFF_MIN)
                continue
            backoff = 0.0
            for msg in msgs:
                await self._handle(msg)

    async def _ensure_consumer(self) -> None:
        if not self._nats.is_connected:
            raise NatsConnectionError(f"NATS not connected: {self._nats.state.detail}")
        await ensure_stream(self._js, self._stream, self._cfg)
        await self._js.ensure_consumer(self._stream.name, self._durable, ack_wait=self._cfg.writer_ack_wait,
                                       max_deliver=-1, filter_subject=self._stream.subject(KIND_ALERT))
        self._ready = True

    async def _handle(self, msg: JsMsg) -> None:
        try:
            alert = decode_alert(msg.data)
        except DecodeError as exc:
            self._refuse(msg, str(exc))
            await _settle(msg.term)
            return
        params = upsert_params(alert)
        backoff = 0.0
        touched = trio.current_time()
        while True:
            try:
                with trio.fail_after(_WRITE_TIMEOUT):
                    async with self._pool.connection() as conn:
                        await conn.execute(UPSERT, params)
                break
            except _POISON as exc:
                self._refuse(msg, (str(exc).strip() or type(exc).__name__).splitlines()[0])
                await _settle(msg.term)
                return
            except (psycopg.Error, trio.TooSlowError) as exc:
                log.log(logging.DEBUG if backoff else logging.WARNING,
                        "alert writer: cannot store, retrying until PostgreSQL answers: %s", type(exc).__name__)
                backoff = min(_BACKOFF_MAX, max(_BACKOFF_MIN, backoff * 2))
                await trio.sleep(backoff * random.uniform(0.5, 1.0))
                if trio.current_time() - touched > self._cfg.writer_ack_wait / 3:
                    touched = trio.current_time()
                    await _settle(msg.in_progress)
        self.stored += 1
        _STORED.inc()
        await _settle(msg.ack)

    def _refuse(self, msg: JsMsg, why: str) -> None:
        self.refused += 1
        _REFUSED.inc()
        log.error("alert writer: message %s/%d refused and dropped: %s", msg.stream, msg.stream_seq, why)


async def _settle(action: Callable[[], Awaitable[None]]) -> None:
    """Ack, term or in-progress; a lost connection only means the message comes back after ack_wait."""
    try:
        await action()
    except NatsError as exc:
        log.debug("alert writer: reply not sent (the message will be redelivered): %s", exc)
