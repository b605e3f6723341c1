"""Conformance suite for the Trio adapter in nexus.storage.pg, against a real PostgreSQL.

Run it on every psycopg upgrade: the adapter replaces psycopg internals.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from typing import Any

import psycopg
import pytest
import trio
from psycopg import errors as e
from psycopg import pq
from psycopg.conninfo import make_conninfo

from nexus.storage.pg import TrioConnection, connect, ensure_database

IDLE = pq.TransactionStatus.IDLE


async def _scalar(conn: TrioConnection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_connect_runs_queries_without_asyncio_loop(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:
        assert isinstance(conn, TrioConnection)
        assert conn.autocommit
        assert await _scalar(conn, "SELECT %s::text || current_database()", ("db:",)) == (
            "db:" + conn.info.dbname)
    assert conn.closed


async def test_two_tasks_sharing_one_connection_take_turns(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:

        async def worker(tag: int) -> None:
            for _ in range(25):
                cur = await conn.execute("SELECT %s::int, n FROM generate_series(1, 40) AS n", (tag,))
                assert await cur.fetchall() == [(tag, n) for n in range(1, 41)]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 1)
            nursery.start_soon(worker, 2)

        # Two 0.1 s statements issued at once run one after the other.
        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(conn.execute, "SELECT pg_sleep(0.1)")
        assert time.monotonic() - start >= 0.2


async def test_cancelling_pg_sleep_returns_promptly_and_stops_it_on_the_server(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn, await connect(empty_db_url) as observer:
        start = time.monotonic()
        with trio.move_on_after(0.2) as scope:
            await conn.execute("SELECT pg_sleep(10)")
        assert scope.cancelled_caught
        assert time.monotonic() - start < 1.0
        assert conn.pgconn.transaction_status == IDLE
        assert await _scalar(conn, "SELECT 42") == 42
        cur = await observer.execute(
            "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (conn.info.backend_pid,))
        assert await cur.fetchone() == ("idle", "SELECT 42")


async def test_cancelling_inside_a_transaction_rolls_it_back(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:
        await conn.execute("CREATE TABLE t (id int)")
        with trio.move_on_after(0.2) as scope:
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1)")
                await conn.execute("SELECT pg_sleep(10)")
        assert scope.cancelled_caught
        assert conn.pgconn.transaction_status == IDLE
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (2)")
        cur = await conn.execute("SELECT id FROM t")
        assert await cur.fetchall() == [(2,)]


async def test_cancel_while_waiting_for_the_connection_lock(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.execute, "SELECT pg_sleep(0.3)")
            await trio.sleep(0.05)
            start = time.monotonic()
            with trio.move_on_after(0.05) as scope:
                await conn.execute("SELECT 1")
            assert scope.cancelled_caught
            assert time.monotonic() - start < 0.2
        assert await _scalar(conn, "SELECT 7") == 7


async def test_close_wakes_a_task_blocked_in_a_query(empty_db_url: str) -> None:
    conn = await connect(empty_db_url)
    outcome: list[BaseException] = []

    async def blocked() -> None:
        try:
            await conn.execute("SELECT pg_sleep(10)")
        except psycopg.OperationalError as ex:
            outcome.append(ex)

    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await trio.sleep(0.1)
            await conn.close()
    assert len(outcome) == 1
    assert conn.closed


def _blob(i: int) -> bytes:
    # Every byte value, including the ones COPY's text format escapes.
    return bytes(range(256)) * (i % 8 + 1) + i.to_bytes(4, "big")


async def test_copy_from_stdin_and_to_stdout_with_bytea(empty_db_url: str) -> None:
    rows = [(i, _blob(i)) for i in range(10_000)]
    async with await connect(empty_db_url) as conn:
        await conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, body bytea NOT NULL)")
        cur = conn.cursor()
        async with cur.copy("COPY blobs (id, body) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
        assert cur.rowcount == len(rows)
        async with cur.copy("COPY blobs (id, body) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "bytea"])
            await copy.write_row((-1, b"\x00binary\xff"))

        got = []
        async with cur.copy("COPY (SELECT id, body FROM blobs WHERE id >= 0 ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "bytea"])
            async for record in copy.rows():
                got.append(record)
        assert got == rows

        chunks = []
        async with cur.copy("COPY (SELECT body FROM blobs WHERE id = -1) TO STDOUT (FORMAT BINARY)") as copy:
            async for chunk in copy:
                chunks.append(bytes(chunk))
        assert b"\x00binary\xff" in b"".join(chunks)
        assert await _scalar(conn, "SELECT count(*) FROM blobs") == len(rows) + 1


async def test_cancelled_copy_is_aborted_and_connection_survives(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:
        await conn.execute("CREATE TABLE t (id int, body bytea)")
        cur = conn.cursor()
        written = 0
        with trio.CancelScope() as scope:
            async with cur.copy("COPY t FROM STDIN") as copy:
                for i in range(200_000):
                    if i == 1_000:
                        scope.cancel()
                    await copy.write_row((i, b"x" * 200))
                    written = i
        assert scope.cancelled_caught
        assert written < 100_000
        assert conn.pgconn.transaction_status == IDLE
        assert await _scalar(conn, "SELECT count(*) FROM t") == 0


async def test_transactions_commit_and_roll_back(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn, await connect(empty_db_url) as other:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")

        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (1)")
            assert await _scalar(other, "SELECT count(*) FROM t") == 0  # not visible before commit
        assert await _scalar(other, "SELECT count(*) FROM t") == 1

        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (2)")
                _ = 1 / 0

        async with conn.transaction() as tx:
            await conn.execute("INSERT INTO t VALUES (3)")
            raise psycopg.Rollback(tx)

        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (4)")
            with pytest.raises(e.UniqueViolation):
                async with conn.transaction():  # a savepoint
                    await conn.execute("INSERT INTO t VALUES (5)")
                    await conn.execute("INSERT INTO t VALUES (1)")

        cur = await other.execute("SELECT id FROM t ORDER BY id")
        assert await cur.fetchall() == [(1,), (4,)]


async def test_statement_errors_leave_the_connection_usable(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:
        with pytest.raises(e.UndefinedTable):
            await conn.execute("SELECT * FROM missing")
        with pytest.raises(e.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        assert await _scalar(conn, "SELECT 1") == 1
        with pytest.raises(e.SyntaxError):
            async with conn.transaction():
                await conn.execute("SELEC 1")
        assert conn.pgconn.transaction_status == IDLE
        assert await _scalar(conn, "SELECT 2") == 2


async def test_pipeline_mode(empty_db_url: str) -> None:
    async with await connect(empty_db_url) as conn:
        await conn.execute("CREATE TABLE t (id int)")
        async with conn.pipeline():
            cur = conn.cursor()
            await cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(500)])
        assert await _scalar(conn, "SELECT sum(id) FROM t") == sum(range(500))


async def test_connect_timeout_against_a_silent_server_leaks_nothing() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        await trio.to_thread.run_sync(lambda: None)  # start the worker thread the resolver uses
        before = _open_fds()
        start = time.monotonic()
        with pytest.raises(e.ConnectionTimeout):
            await connect(f"postgresql://127.0.0.1:{port}/x?sslmode=disable", connect_timeout=0.3)
        assert time.monotonic() - start < 1.0
        nursery.cancel_scope.cancel()
    await trio.sleep(0.05)
    assert _open_fds() <= before - 1  # only the listener and the server side went away


async def test_connect_refused_is_an_operational_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            await connect(f"postgresql://127.0.0.1:{port}/x", connect_timeout=2)
        assert time.monotonic() - start < 1.0


async def test_ensure_database_creates_once_even_when_racing(pg_server_url: str) -> None:
    name = f"nexus_t_{uuid.uuid4().hex[:12]}"
    dsn = make_conninfo(pg_server_url, dbname=name)
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(ensure_database, dsn)
        await ensure_database(dsn)
        async with await connect(dsn) as conn:
            assert await _scalar(conn, "SELECT current_database()") == name
    finally:
        async with await connect(make_conninfo(pg_server_url, dbname="postgres")) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
