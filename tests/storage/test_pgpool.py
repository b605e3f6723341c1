"""The Trio PostgreSQL pool against a real server: bounds, queueing, returns, and reconnection."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
import trio
from psycopg import pq

from nexus.devstack.services import PrivatePostgres
from nexus.storage.pg import TrioConnection, connect
from nexus.storage.pgpool import PgPool, PoolClosed, PoolTimeout, PoolUnavailable

IDLE = pq.TransactionStatus.IDLE
SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"


async def _scalar(conn: TrioConnection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):  # 5 s
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def _started(nursery: trio.Nursery, pool: PgPool) -> PgPool:
    await nursery.start(pool.run)
    assert await pool.wait_ready(5)
    return pool


async def test_min_size_is_opened_and_state_is_up(empty_db_url: str, nursery: trio.Nursery) -> None:
    pool = await _started(nursery, PgPool(empty_db_url, min_size=2, max_size=4, name="db"))
    await _until(lambda: pool.idle == 2)
    assert pool.size == 2
    assert pool.state.ok
    assert pool.state.name == "db"
    async with pool.connection() as conn:
        assert await _scalar(conn, SESSIONS) == 2
    await pool.aclose()
    assert not pool.state.ok
    assert pool.size == 0
    with pytest.raises(PoolClosed):
        async with pool.connection():
            pass


async def test_at_most_max_size_connections_and_the_rest_queue(
    empty_db_url: str, nursery: trio.Nursery,
) -> None:
    pool = await _started(nursery, PgPool(empty_db_url, min_size=1, max_size=3, acquire_timeout=5))
    busy = peak = 0

    async def borrower() -> None:
        nonlocal busy, peak
        async with pool.connection() as conn:
            busy += 1
            peak = max(peak, busy)
            await conn.execute("SELECT pg_sleep(0.05)")
            busy -= 1

    async with trio.open_nursery() as borrowers:
        for _ in range(15):
            borrowers.start_soon(borrower)
    assert peak == 3
    assert pool.size == 3
    async with pool.connection() as conn:
        assert await _scalar(conn, SESSIONS) == 3


async def test_acquire_times_out_then_queued_borrower_gets_the_returned_connection(
    empty_db_url: str, nursery: trio.Nursery,
) -> None:
    pool = await _started(nursery, PgPool(empty_db_url, min_size=1, max_size=2, acquire_timeout=0.3))
    release = trio.Event()
    holders_ready = trio.Semaphore(0)
    held_pids: list[int] = []

    async def holder() -> None:
        async with pool.connection() as conn:
            held_pids.append(conn.info.backend_pid)
            holders_ready.release()
            await release.wait()

    nursery.start_soon(holder)
    nursery.start_soon(holder)
    await holders_ready.acquire()
    await holders_ready.acquire()

    start = time.monotonic()
    with pytest.raises(PoolTimeout, match=r"0\.3 s"):
        async with pool.connection():
            pass
    assert 0.25 <= time.monotonic() - start < 1.0

    pool.acquire_timeout = 5
    got: list[int] = []

    async def waiter() -> None:
        async with pool.connection() as conn:
            got.append(conn.info.backend_pid)

    async with trio.open_nursery() as waiters:
        waiters.start_soon(waiter)
        await trio.sleep(0.1)
        assert not got
        release.set()
    assert got[0] in held_pids
    assert pool.size == 2


async def test_returned_connection_in_a_failed_transaction_is_rolled_back_and_reused(
    empty_db_url: str, nursery: trio.Nursery,
) -> None:
    pool = await _started(nursery, PgPool(empty_db_url, min_size=1, max_size=1))
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE t (id int)")
        pid = conn.info.backend_pid
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
    async with pool.connection() as conn:
        assert conn.info.backend_pid == pid
        assert conn.pgconn.transaction_status == IDLE
        assert await _scalar(conn, "SELECT count(*) FROM t") == 0

    # Cancelled inside a transaction block: still rolled back, still the same connection.
    with trio.move_on_after(0.2):
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO t VALUES (2)")
            await conn.execute("SELECT pg_sleep(10)")
    async with pool.connection() as conn:
        assert conn.info.backend_pid == pid
        assert await _scalar(conn, "SELECT count(*) FROM t") == 0


async def test_broken_connections_are_discarded_not_reused(empty_db_url: str, nursery: trio.Nursery) -> None:
    pool = await _started(nursery, PgPool(empty_db_url, min_size=1, max_size=2))
    async with await connect(empty_db_url) as admin:
        # Broken while lent: the statement fails, the connection is dropped on return.
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
            await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT 1")
        async with pool.connection() as conn:
            assert conn.info.backend_pid != pid
            pid = conn.info.backend_pid

        # Broken while idle: noticed before it is lent again.
        await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        async with pool.connection() as conn:
            assert conn.info.backend_pid != pid
            assert await _scalar(conn, "SELECT 1") == 1
    assert pool.state.ok


async def test_start_does_not_block_when_the_database_is_down(nursery: trio.Nursery) -> None:
    # A server that accepts and never answers: every connect takes the whole connect_timeout.
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    pool = PgPool(f"postgresql://127.0.0.1:{port}/x?sslmode=disable", connect_timeout=1, name="down",
                  reconnect_max_delay=0.2)
    with trio.fail_after(0.5):
        await nursery.start(pool.run)
    assert not await pool.wait_ready(0.3)
    assert pool.state.detail == "not connected"
    await _until(lambda: pool.state.detail.startswith("connect failed"))
    assert not pool.state.ok

    # Borrowers fail at once instead of each waiting out a connect to a dead server.
    start = time.monotonic()
    with pytest.raises(PoolUnavailable, match="down: database unavailable"):
        async with pool.connection():
            pass
    assert time.monotonic() - start < 0.2
    await pool.aclose()


async def test_reconnects_after_the_server_restarts(private_postgres: PrivatePostgres) -> None:
    server = private_postgres
    pool = PgPool(server.url, min_size=2, max_size=4, connect_timeout=2, acquire_timeout=2, name="restart",
                  reconnect_max_delay=0.3, health_interval=0.2)
    outcomes: list[tuple[str, BaseException | None]] = []
    phase = "before"

    async def traffic() -> None:
        while True:
            # A query that hangs fails the test (TooSlowError) instead of being recorded.
            # Classify by the phase the query started in: one started before the stop may still succeed.
            started_in = phase
            with trio.fail_after(5):
                try:
                    async with pool.connection() as conn:
                        assert await _scalar(conn, "SELECT 1") == 1
                except psycopg.OperationalError as ex:
                    outcomes.append((started_in, ex))
                else:
                    outcomes.append((started_in, None))
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        assert await pool.wait_ready(10)
        nursery.start_soon(traffic)
        await trio.sleep(0.3)

        phase = "stopping"
        await trio.to_thread.run_sync(server.stop)
        phase = "down"
        await _until(lambda: not pool.state.ok)
        assert "connect failed" in pool.state.detail
        await trio.sleep(0.3)
        start = time.monotonic()
        with pytest.raises(PoolUnavailable, match="restart: database unavailable"):
            async with pool.connection():
                pass
        assert time.monotonic() - start < 1.0  # far below connect_timeout: it did not try the dead server

        await trio.to_thread.run_sync(server.start)
        phase = "recovering"
        assert await pool.wait_ready(10)
        phase = "after"
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()

    before = [ex for p, ex in outcomes if p == "before"]
    down = [ex for p, ex in outcomes if p == "down"]
    after = [ex for p, ex in outcomes if p == "after"]
    assert before and not any(before)
    assert down and all(isinstance(ex, psycopg.OperationalError) for ex in down)
    assert after and not any(after)
    assert pool.size == 0  # the end of run() closed the pool
