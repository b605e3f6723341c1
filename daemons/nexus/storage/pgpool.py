"""A small Trio pool of ``TrioConnection``s that reconnects by itself and reports its state.

One long-lived task (``PgPool.run``) keeps ``min_size`` connections open,
checks idle ones, and reconnects with capped exponential backoff and jitter
when the server goes away; borrowers open further connections up to
``max_size`` themselves and queue beyond it.  ``PgPool.state`` is the
``DependencyState`` that ``/readyz`` shows.

Resource handling: the pool owns every connection it opened.  A borrowed one
comes back at the end of the ``async with pool.connection()`` block and is kept
only if it is healthy and idle (a transaction left open is rolled back first);
otherwise it is closed.  ``aclose()`` or the end of ``run`` closes the idle
connections at once and lent ones as they come back.

Errors: borrowing raises ``PoolTimeout`` (all connections busy for
``acquire_timeout``), ``PoolUnavailable`` (the database cannot be reached) or
``PoolClosed``, all subclasses of ``psycopg.OperationalError``, so code that
handles a lost connection handles these too.  Errors inside the block are the
caller's (psycopg exceptions, see ``nexus.storage.pg``).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import trio
from psycopg import errors as e
from psycopg import pq
from psycopg.waiting import Wait, _ready

from nexus.runtime.dependency import DependencyState
from nexus.storage.pg import TrioConnection, connect

__all__ = ["PgPool", "PoolClosed", "PoolError", "PoolTimeout", "PoolUnavailable"]

logger = logging.getLogger(__name__)

OK = pq.ConnStatus.OK
IDLE = pq.TransactionStatus.IDLE
INTRANS = pq.TransactionStatus.INTRANS
INERROR = pq.TransactionStatus.INERROR
PIPELINE_OFF = pq.PipelineStatus.OFF
_FIRST_RETRY = 0.1
_MAX_IDLE_READS = 4


class PoolError(e.OperationalError):
    """The pool could not lend a connection (subclass of ``psycopg.OperationalError``)."""


class PoolTimeout(PoolError):
    """Every connection stayed busy for ``acquire_timeout``."""


class PoolUnavailable(PoolError):
    """The database cannot be reached; the pool keeps reconnecting in the background."""


class PoolClosed(PoolError):
    """The pool was closed."""


class _Waiter:
    """A borrower queued at ``max_size``; whoever frees capacity fills in one field and sets ``event``."""

    __slots__ = ("conn", "error", "event", "slot")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.conn: TrioConnection[Any] | None = None
        self.slot = False  # may open a connection of its own
        self.error: PoolError | None = None


class _Lease(AbstractAsyncContextManager["TrioConnection[Any]"]):
    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool
        self._conn: TrioConnection[Any] | None = None

    async def __aenter__(self) -> TrioConnection[Any]:
        conn = self._conn = await self._pool._acquire()
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool._release(conn)


class PgPool:
    """At most ``max_size`` connections to one database, lent one task at a time.

    Start ``run`` with ``nursery.start(pool.run)``: it returns at once (a
    database that is down must not hold up the daemon), opens ``min_size``
    connections, checks idle ones every ``health_interval`` seconds and, when
    the server goes away, reconnects with capped exponential backoff and jitter
    (first retry after ~0.1 s, then at most ``reconnect_max_delay``).  ``state``
    says whether the database is reachable, for ``/readyz``; ``wait_ready``
    waits for it.

    Borrow with ``async with pool.connection() as conn:``.  An idle connection
    is lent at once; below ``max_size`` the borrower opens a new one; at
    ``max_size`` it queues (first come, first served) for up to
    ``acquire_timeout`` and then gets ``PoolTimeout``.  While the last connect
    attempt has failed (and ``run`` is reconnecting), borrowers get
    ``PoolUnavailable`` at once rather than waiting on a dead server.

    Connections are autocommit (see ``nexus.storage.pg.connect``).  One
    returned inside a transaction (say, the block was cancelled mid-way) is
    rolled back; a broken one, one with a statement still running, or one that
    fails the rollback is closed, never lent again.  Borrowers must leave
    session settings (``row_factory``, ``autocommit``) as they found them.
    """

    def __init__(
        self,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        name: str = "pg",
        *,
        reconnect_max_delay: float = 2.0,
        health_interval: float = 2.0,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not 1 <= min_size <= max_size:
            raise ValueError(f"{name}: need 1 <= min_size <= max_size, got {min_size} and {max_size}")
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self.name = name
        self.reconnect_max_delay = reconnect_max_delay
        self.health_interval = health_interval
        self._connect_kwargs = dict(connect_kwargs or {})
        self._state = DependencyState(name)
        self._idle: list[TrioConnection[Any]] = []
        self._waiters: deque[_Waiter] = deque()
        self._size = 0  # idle + lent + being opened
        self._failed = False  # the last connect attempt failed
        self._running = False
        self._closed = False
        self._kick = trio.Event()  # wakes run() early: a connection was dropped
        self._up = trio.Event()  # set while the database is reachable
        self._closing = trio.Event()

    @property
    def state(self) -> DependencyState:
        return self._state

    @property
    def size(self) -> int:
        """Connections open or being opened, idle and lent."""
        return self._size

    @property
    def idle(self) -> int:
        """Connections open and waiting to be lent."""
        return len(self._idle)

    def connection(self) -> AbstractAsyncContextManager[TrioConnection[Any]]:
        """Borrow a connection for the ``async with`` block (see the class docstring)."""
        return _Lease(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool filled and connected until cancelled or ``aclose()``d; then close it."""
        if self._running or self._closed:
            raise RuntimeError(f"{self.name}: run() called twice or after aclose()")
        self._running = True
        task_status.started()
        delay = _FIRST_RETRY
        try:
            while not self._closed:
                self._check_idle()
                if self._size < self.min_size:
                    if await self._grow():
                        delay = _FIRST_RETRY
                    else:
                        with trio.move_on_after(delay * random.uniform(0.5, 1.0)):
                            await self._closing.wait()
                        delay = min(delay * 2, self.reconnect_max_delay)
                    continue
                with trio.move_on_after(self.health_interval):
                    await self._kick.wait()
                self._kick = trio.Event()
        finally:
            self._running = False
            self._shutdown()

    async def wait_ready(self, timeout: float | None) -> bool:
        """Wait until the database is reachable; False if ``timeout`` passes first or the pool closes."""
        if not self._state.ok:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                await self._up.wait()
        return self._state.ok

    async def aclose(self) -> None:
        self._shutdown()
        await trio.lowlevel.checkpoint()

    # Lending and returning.  None of these await unless a connection must be
    # opened, waited for or rolled back, so the common path costs no scheduling.

    async def _acquire(self) -> TrioConnection[Any]:
        if self._closed:
            raise PoolClosed(f"{self.name}: pool closed")
        idle = self._idle
        while idle:
            conn = idle.pop()
            if _healthy(conn):
                return conn
            self._drop(conn)
        if self._failed and self._running:
            raise PoolUnavailable(f"{self.name}: database unavailable ({self._state.detail})")
        if self._size < self.max_size:
            self._size += 1
            return await self._open_reserved()
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            with trio.move_on_after(self.acquire_timeout):
                await waiter.event.wait()
        except BaseException:
            self._withdraw(waiter)
            raise
        if not waiter.event.is_set():
            self._waiters.remove(waiter)
            raise PoolTimeout(f"{self.name}: no connection free within {self.acquire_timeout:g} s"
                              f" (all {self.max_size} in use)")
        if waiter.conn is not None:
            return waiter.conn
        if waiter.slot:
            return await self._open_reserved()
        assert waiter.error is not None
        raise waiter.error

    async def _release(self, conn: TrioConnection[Any]) -> None:
        pgconn = conn.pgconn
        status = pgconn.transaction_status
        if status == IDLE and pgconn.pipeline_status == PIPELINE_OFF:
            self._give(conn)
            return
        if status in (INTRANS, INERROR):
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + conn.cancel_timeout
                try:
                    await conn.rollback()
                except e.Error as ex:
                    logger.debug("%s: rollback of a returned connection failed: %s", self.name, ex)
            if pgconn.transaction_status == IDLE and pgconn.pipeline_status == PIPELINE_OFF:
                self._give(conn)
                return
        self._drop(conn)

    def _give(self, conn: TrioConnection[Any]) -> None:
        if self._closed:
            self._size -= 1
            conn.close_now()
        elif self._waiters:
            waiter = self._waiters.popleft()
            waiter.conn = conn
            waiter.event.set()
        else:
            self._idle.append(conn)

    def _drop(self, conn: TrioConnection[Any]) -> None:
        self._size -= 1
        conn.close_now()
        if not self._closed:
            self._kick.set()
            self._pass_slot()

    def _pass_slot(self) -> None:
        """Capacity was freed: let the first queued borrower open a connection."""
        if self._waiters and self._size < self.max_size:
            self._size += 1
            waiter = self._waiters.popleft()
            waiter.slot = True
            waiter.event.set()

    def _withdraw(self, waiter: _Waiter) -> None:
        """A queued borrower gave up (cancelled); pass on whatever it was handed meanwhile."""
        if not waiter.event.is_set():
            self._waiters.remove(waiter)
        elif waiter.conn is not None:
            self._give(waiter.conn)
        elif waiter.slot:
            self._size -= 1
            self._pass_slot()

    # Connecting.

    async def _open_reserved(self) -> TrioConnection[Any]:
        """Open a connection in a slot the caller already counted in ``_size``."""
        try:
            conn = await connect(self.dsn, connect_timeout=self.connect_timeout, **self._connect_kwargs)
        except e.Error as ex:
            self._size -= 1
            self._connect_failed(ex)
            raise PoolUnavailable(f"{self.name}: database unavailable ({self._state.detail})") from ex
        except BaseException:
            self._size -= 1
            self._pass_slot()
            raise
        self._connected()
        return conn

    async def _grow(self) -> bool:
        self._size += 1
        try:
            conn = await self._open_reserved()
        except PoolUnavailable:
            return False
        self._give(conn)
        return True

    def _connected(self) -> None:
        self._failed = False
        if not self._state.ok:
            logger.info("%s: database reachable", self.name)
            self._state.mark_up()
            self._up.set()

    def _connect_failed(self, ex: e.Error) -> None:
        detail = "connect failed: " + (str(ex).strip().splitlines() or [type(ex).__name__])[0]
        self._failed = True
        if self._state.ok or self._state.detail == "not connected":
            logger.warning("%s: database unreachable: %s", self.name, detail)
        self._state.mark_down(detail)
        if self._up.is_set():
            self._up = trio.Event()
        # Nobody queued can be served until the server answers again.
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = PoolUnavailable(f"{self.name}: database unavailable ({detail})")
            waiter.event.set()

    def _check_idle(self) -> None:
        for conn in [c for c in self._idle if not _healthy(c)]:
            self._idle.remove(conn)
            self._drop(conn)

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._kick.set()
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            conn.close_now()
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = PoolClosed(f"{self.name}: pool closed")
            waiter.event.set()
        self._state.mark_down("closed")
        self._up.set()  # releases wait_ready(), which then reports the state: down


def _healthy(conn: TrioConnection[Any]) -> bool:
    """Whether an idle connection may be lent: open, and not told by the server that it is going away."""
    pgconn = conn.pgconn
    if pgconn.status != OK:
        return False
    sock = pgconn.socket
    try:
        # An idle connection has nothing to read unless the server is closing it
        # (shutdown, terminated backend) or sent a notification.  A closing
        # server's farewell message and its end of stream can take two reads.
        for _ in range(_MAX_IDLE_READS):
            if not _ready(sock, Wait.R):
                break
            pgconn.consume_input()
    except (e.Error, OSError):
        return False
    return pgconn.status == OK
