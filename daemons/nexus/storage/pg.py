"""PostgreSQL under Trio: psycopg 3's ``AsyncConnection`` driven by Trio instead of asyncio.

psycopg runs every exchange with the server as a generator that yields "wait
until the socket is readable / writable" and is resumed with what became ready.
``AsyncConnection`` needs an asyncio loop in four places (``wait``,
``connect``, ``cancel_safe`` and its lock); ``TrioConnection`` replaces each:

- ``wait()`` (queries, COPY, pipelines, transactions) waits with
  ``trio.lowlevel.wait_readable`` / ``wait_writable``;
- ``connect()`` and ``cancel_safe()`` drive their generators (whose socket
  changes between steps) the same way, and resolve host names on a worker
  thread;
- ``lock`` is a Trio lock (``_ConnectionLock``), so tasks sharing a connection
  take turns in arrival order.

Everything else (cursors, ``transaction()``, ``cursor.copy()``, adapters) is
psycopg's own code.  It relies on psycopg internals, so ``pyproject.toml`` pins
the minor version and ``tests/storage/test_pg.py`` is the conformance suite to
run on every upgrade.

Cancellation: when a Trio cancel scope interrupts a statement, the adapter asks
the server to cancel it (``cancel_safe``), then drains the interrupted exchange
in a shielded scope bounded by ``TrioConnection.cancel_timeout``, and only then
lets ``trio.Cancelled`` through: the connection stays usable.  psycopg's own
cleanup on the way out (the rollback of an ``async with conn.transaction()``
block, the end of a COPY) still runs under the cancellation: its statements
are drained the same way and the lock takes no checkpoint.  If the server does
not finish within the bound, the connection is closed instead of being left in
an unknown state.

Resource handling: ``connect()`` returns an open connection the caller closes
(``async with`` closes it, ``close()`` too).  A connect that fails or is
cancelled closes its half-open socket.  ``close()`` wakes any task still
waiting on the socket, which then gets ``OperationalError``.

Errors: psycopg's own exceptions propagate (``psycopg.errors.*``, SQLSTATE
classes included); socket failures become ``psycopg.OperationalError`` and a
connect that overruns ``connect_timeout`` raises
``psycopg.errors.ConnectionTimeout``.  No Trio or OS exception escapes, except
``trio.Cancelled``.
"""

from __future__ import annotations

import contextlib
import logging
from time import monotonic
from types import TracebackType
from typing import Any, Self, TypeVar

import trio
from psycopg import AsyncConnection, capabilities, pq, sql
from psycopg import errors as e
from psycopg.abc import AdaptContext, ConnParam, PQGen, PQGenConn
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_attempts, conninfo_to_dict, make_conninfo, timeout_from_conninfo
from psycopg.cursor_async import AsyncCursor
from psycopg.rows import AsyncRowFactory, Row
from psycopg.waiting import Ready, Wait, _ready

__all__ = ["TrioConnection", "connect", "ensure_database"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

WAIT_R = Wait.R
WAIT_W = Wait.W
READY_R = Ready.R
READY_W = Ready.W
ACTIVE = pq.TransactionStatus.ACTIVE
OK = pq.ConnStatus.OK

# How long a run of waits that never blocks (COPY into a writable socket) may
# keep the loop before yielding once, as psycopg's own asyncio waiter does.
MAX_BUSY_TIME = 0.005
# A send that finds the socket full must also notice data from the server (the
# server may be blocked writing to us), and Trio waits for one direction at a
# time: wait for writability in slices and poll both in between.
_RW_POLL = 0.01
# TCP keepalives so a silently dead server fails a waiting query within about a
# minute instead of hanging on the kernel's two-hour default.
_KEEPALIVES: dict[str, ConnParam] = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}

_last_yield = 0.0


class _ConnectionLock:
    """First come, first served like ``trio.Lock``, but a free lock is taken without a checkpoint.

    psycopg's cleanup code (transaction exit, COPY end, pipeline exit) takes the
    lock while an exception, often a cancellation, unwinds.  asyncio delivers a
    cancellation once, so that cleanup runs; Trio raises ``Cancelled`` at every
    checkpoint of a cancelled scope, so ``trio.Lock`` would skip the rollback
    and leave psycopg's transaction bookkeeping stuck (no further transaction,
    no rollback).  Waiting for another task's turn is still cancellable.
    Taking the lock is no scheduling point; the statement's own socket wait is.
    """

    __slots__ = ("_lot", "_owner")

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()
        self._owner: trio.lowlevel.Task | None = None

    async def __aenter__(self) -> None:
        task = trio.lowlevel.current_task()
        if self._owner is None and not self._lot:
            self._owner = task
            return
        if self._owner is task:
            raise RuntimeError("the connection lock is already held by this task")
        # __aexit__ hands the lock straight to the first parked task.
        await self._lot.park()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owner is not trio.lowlevel.current_task():
            raise RuntimeError("the connection lock is released by a task that does not hold it")
        woken = self._lot.unpark()
        self._owner = woken[0] if woken else None


class TrioConnection(AsyncConnection[Row]):
    """A psycopg ``AsyncConnection`` whose I/O runs on Trio.

    Open it with ``await connect(dsn)`` (or ``await TrioConnection.connect(...)``,
    psycopg's signature); use it exactly like an ``AsyncConnection``.
    """

    # Bound on cancelling and draining an interrupted statement (see module docstring).
    cancel_timeout: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # psycopg only ever uses `async with conn.lock`.
        self.lock = _ConnectionLock()  # type: ignore[assignment]

    @classmethod
    async def connect(
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        context: AdaptContext | None = None,
        row_factory: AsyncRowFactory[Row] | None = None,
        cursor_factory: type[AsyncCursor[Row]] | None = None,
        **kwargs: ConnParam,
    ) -> Self:
        """psycopg's ``AsyncConnection.connect`` without asyncio: same parameters, same errors.

        Each host attempt is bounded by the conninfo ``connect_timeout`` (libpq's
        default when absent); the module-level ``connect()`` bounds the whole.
        """
        params = await cls._get_connection_params(conninfo, **kwargs)
        timeout = timeout_from_conninfo(params)
        # getaddrinfo blocks; psycopg's async resolver would need an asyncio loop.
        attempts = await trio.to_thread.run_sync(conninfo_attempts, params, abandon_on_cancel=True)
        failures: list[tuple[e.Error, str]] = []
        conn: Self | None = None
        for attempt in attempts:
            descr = "host: {!r}, port: {!r}, hostaddr: {!r}".format(
                attempt.get("host"), attempt.get("port"), attempt.get("hostaddr"))
            with trio.move_on_after(timeout) as scope:
                try:
                    conn = await _wait_conn(cls._connect_gen(make_conninfo("", **attempt)))
                except e.Error as ex:
                    failures.append((ex, descr))
            if conn is not None:
                break
            if scope.cancelled_caught:
                failures.append((e.ConnectionTimeout("connection timeout expired"), descr))
        if conn is None:
            last = failures[-1][0]
            if len(failures) == 1:
                raise last.with_traceback(None)
            lines = [str(last), "Multiple connection attempts failed. All failures were:"]
            lines.extend(f"- {descr}: {error}" for error, descr in failures)
            raise type(last)("\n".join(lines), pgconn=last.pgconn).with_traceback(None)
        conn._autocommit = bool(autocommit)
        if row_factory:
            conn.row_factory = row_factory
        if cursor_factory:
            conn.cursor_factory = cursor_factory
        if context:
            conn._adapters = AdaptersMap(context.adapters)
        conn.prepare_threshold = prepare_threshold
        return conn

    async def wait(self, gen: PQGen[T], interval: float = 0.0, timeout: float | None = None) -> T:
        """Run one protocol generator to completion, waiting on the socket through Trio.

        ``interval`` is ignored: Trio wakes on readiness or cancellation, never
        to poll.  ``timeout`` (psycopg's ``notifies()`` uses it) abandons the
        wait with ``psycopg.errors._WaitTimeout`` as psycopg expects.
        """
        global _last_yield
        fileno = self.pgconn.socket
        try:
            s = next(gen)
        except StopIteration as ex:
            # Done without blocking (COPY rows that fit the buffer). Yield now and
            # then so a long COPY cannot starve the other tasks; the result is in
            # hand, so this yield must not raise Cancelled.
            if monotonic() - _last_yield >= MAX_BUSY_TIME:
                await trio.lowlevel.cancel_shielded_checkpoint()
                _last_yield = monotonic()
            rv: T = ex.value
            return rv
        if timeout is None:
            return await self._pump(gen, s, fileno, False)
        with trio.move_on_after(timeout):
            return await self._pump(gen, s, fileno, False)
        raise e._WaitTimeout("wait timeout expired")

    async def _pump(self, gen: PQGen[T], s: Wait, fileno: int, draining: bool) -> T:
        global _last_yield
        try:
            while True:
                if s == WAIT_R:
                    await trio.lowlevel.wait_readable(fileno)
                    ready: Ready | int = READY_R
                else:
                    # A socket asked for writing is nearly always writable: polling
                    # it is far cheaper than a trip through the scheduler, which
                    # COPY and pipelines would pay on every flush.
                    ready = _ready(fileno, s)
                    if ready:
                        if monotonic() - _last_yield >= MAX_BUSY_TIME:
                            await trio.lowlevel.checkpoint()
                            _last_yield = monotonic()
                    elif s == WAIT_W:
                        await trio.lowlevel.wait_writable(fileno)
                        ready = READY_W
                    else:
                        with trio.move_on_after(_RW_POLL):
                            await trio.lowlevel.wait_writable(fileno)
                        ready = _ready(fileno, s)
                        if not ready:
                            continue
                s = gen.send(ready)
        except StopIteration as ex:
            rv: T = ex.value
            return rv
        except trio.Cancelled:
            if not draining:
                await self._abort(gen, s, fileno)
            raise
        except (OSError, trio.ClosedResourceError) as ex:
            raise e.OperationalError("connection socket closed") from ex

    async def _abort(self, gen: PQGen[Any], s: Wait, fileno: int) -> None:
        """Leave the connection usable after ``gen`` was interrupted while waiting for ``s``."""
        if self.pgconn.transaction_status != ACTIVE:
            # Nothing in flight (e.g. waiting for notifications): just drop the generator.
            gen.close()
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.cancel_timeout
            await self._try_cancel(timeout=self.cancel_timeout)
            try:
                await self._pump(gen, s, fileno, True)
            except e.QueryCanceled:
                pass
            except e.Error as ex:
                logger.debug("error while draining a cancelled statement: %s", ex)
        if scope.cancelled_caught:
            logger.warning("statement not finished %.1f s after cancellation: closing the connection",
                           self.cancel_timeout)
            self.close_now()

    async def cancel_safe(self, *, timeout: float = 30.0) -> None:
        """Ask the server to cancel the running statement; shielded and bounded by ``timeout``.

        Shielded because it runs while a cancellation is being handled; raises
        ``psycopg.errors.CancellationTimeout`` when the bound passes.
        """
        if not self._should_cancel():
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + (timeout or 30.0)
            if capabilities.has_cancel_safe():
                await _wait_conn(self._cancel_gen())
            else:
                await trio.to_thread.run_sync(self.cancel, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise e.CancellationTimeout("cancellation timeout expired")

    def close_now(self) -> None:
        """Close at once; a task still waiting on the socket wakes with ``OperationalError``."""
        if self._closed:
            return
        self._closed = True
        pgconn = self.pgconn
        if pgconn.status == OK:
            # Outside trio.run (RuntimeError) nobody can be waiting.
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(pgconn.socket)
        pgconn.finish()

    async def close(self) -> None:
        self.close_now()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc_val, exc_tb)
        finally:
            # psycopg skips close() when the rollback is interrupted (Cancelled).
            self.close_now()


async def _wait_conn(gen: PQGenConn[T]) -> T:
    """Drive a connect or cancel generator, which names its socket at every step."""
    try:
        fileno, s = next(gen)
        while True:
            if s == WAIT_R:
                await trio.lowlevel.wait_readable(fileno)
                fileno, s = gen.send(READY_R)
            else:
                await trio.lowlevel.wait_writable(fileno)
                fileno, s = gen.send(READY_W)
    except StopIteration as ex:
        rv: T = ex.value
        return rv
    except (OSError, trio.ClosedResourceError) as ex:
        gen.close()
        raise e.OperationalError("connection socket closed") from ex
    except BaseException:
        # Frees the half-open PGconn, and its socket, now rather than at GC.
        gen.close()
        raise


async def connect(
    dsn: str, *, connect_timeout: float = 5.0, autocommit: bool = True, **kwargs: Any,
) -> TrioConnection[Any]:
    """Open a ``TrioConnection``; the whole connect (DNS, every host) is bounded by ``connect_timeout``.

    ``autocommit`` defaults to True: write transactions explicitly with
    ``async with conn.transaction():`` so no statement leaves one open.
    TCP keepalives are on unless ``dsn`` or ``kwargs`` set them.  Other
    ``kwargs`` go to psycopg (``row_factory``, ``prepare_threshold``, libpq
    parameters).  Raises ``psycopg.errors.ConnectionTimeout`` on timeout and
    ``psycopg.OperationalError`` when the server refuses or is unreachable.
    """
    given = conninfo_to_dict(dsn)
    for key, value in _KEEPALIVES.items():
        if key not in given and key not in kwargs:
            kwargs[key] = value
    with trio.move_on_after(connect_timeout):
        conn: TrioConnection[Any] = await TrioConnection.connect(dsn, autocommit=autocommit, **kwargs)
        return conn
    raise e.ConnectionTimeout(f"connection timeout expired after {connect_timeout:g} s")


async def ensure_database(dsn: str, *, connect_timeout: float = 5.0) -> None:
    """Create the database ``dsn`` names, unless it exists, through the server's ``postgres`` database.

    Safe when several processes race: the losers' "already exists" is success.
    A ``dsn`` naming no database leaves nothing to do.  Errors (server down,
    missing privilege) propagate as psycopg exceptions.
    """
    dbname = conninfo_to_dict(dsn).get("dbname")
    if not dbname:
        return
    async with await connect(make_conninfo(dsn, dbname="postgres"), connect_timeout=connect_timeout) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if await cur.fetchone() is not None:
            return
        # Another process may create it between our check and our CREATE; two
        # concurrent CREATEs collide on pg_database's unique index instead.
        with contextlib.suppress(e.DuplicateDatabase, e.UniqueViolation):
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
