"""HttpServer over loopback: the conformance suite, httpx as an independent client, and raw
sockets for malformed input, timeouts, admission, streaming, disconnects and drain."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import trio

from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Limits, Request, Response
from nexus.net.testing import RawConnection, check_http_server, echo_handler

Serving = Callable[..., AbstractAsyncContextManager[tuple[HttpServer, int]]]
HOST = "127.0.0.1"


async def in_thread(fn: Callable[[], httpx.Response]) -> httpx.Response:
    return await trio.to_thread.run_sync(fn)


async def test_conformance_suite(serve: Serving) -> None:
    async with serve(echo_handler, Limits(max_header_bytes=4096, max_body_bytes=8192)) as (_, port):
        await check_http_server(HOST, port, max_header_bytes=4096, max_body_bytes=8192)


async def test_httpx_keep_alive_post_and_head(serve: Serving) -> None:
    seen_clients: set[object] = set()

    async def handler(req: Request) -> Response:
        seen_clients.add(req.client)
        return await echo_handler(req)

    async with serve(handler) as (server, port):

        def talk() -> list[httpx.Response]:
            with httpx.Client(base_url=f"http://{HOST}:{port}") as client:
                return [
                    client.get("/a%20b", params={"q": "1"}),
                    client.post("/p", content=b"x" * 100_000),
                    client.head("/h"),
                ]

        get, post, head = await trio.to_thread.run_sync(talk)
        assert get.headers["x-path"] == "/a b"
        assert get.headers["x-query"] == "q=1"
        assert post.content == b"x" * 100_000
        assert head.headers["content-length"] == "0" and head.content == b""
        assert len(seen_clients) == 1  # one keep-alive connection
        assert server.inflight == 0


async def test_accepted_sockets_have_nodelay(serve: Serving) -> None:
    async with serve(echo_handler) as (server, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await conn.response()
        (accepted,) = server._conns
        assert isinstance(accepted.stream, trio.SocketStream)
        assert accepted.stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await conn.aclose()


async def test_handler_exception_is_500_and_logged_not_sent(serve: Serving, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(req: Request) -> Response:
        if req.path == "/boom":
            raise RuntimeError("secret detail")
        return Response(200, body=b"fine")

    async with serve(handler) as (_, port):
        conn = await RawConnection.open(HOST, port)
        with caplog.at_level(logging.ERROR, logger="nexus.http"):
            await conn.send(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = await conn.response()
        assert status == 500
        assert b"secret detail" not in body
        assert json.loads(body)["error"]["status"] == 500
        assert any("secret detail" in r.exc_text for r in caplog.records if r.exc_text)
        # The request was read whole, so the connection stays usable.
        await conn.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await conn.response())[2] == b"fine"
        await conn.aclose()


async def test_error_response_shapes_protocol_errors(serve: Serving) -> None:
    def shape(status: int, message: str) -> Response:
        return Response(status, [(b"x-shape", b"gateway")], json.dumps({"code": status}).encode())

    async def handler(req: Request) -> Response:
        raise ValueError

    async with serve(handler, error_response=shape) as (_, port):
        for request, want in (
            (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", 500),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ):
            conn = await RawConnection.open(HOST, port)
            await conn.send(request)
            status, headers, body = await conn.response()
            assert (status, headers.get("x-shape"), json.loads(body)) == (want, "gateway", {"code": want})
            await conn.aclose()


async def test_bad_response_headers_become_500(serve: Serving) -> None:
    async def handler(req: Request) -> Response:
        return Response(200, [(b"x-injected", b"a\r\nset-cookie: evil=1")], b"")

    async with serve(handler) as (_, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = await conn.response()
        assert status == 500 and "set-cookie" not in headers
        await conn.aclose()


async def test_handler_connection_close_is_honoured(serve: Serving) -> None:
    async def handler(req: Request) -> Response:
        return Response(200, [(b"Connection", b"close"), (b"Content-Length", b"999")], b"bye")

    async with serve(handler) as (_, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = await conn.response()
        assert (status, body, headers.get("connection"), headers.get("content-length")) == (200, b"bye", "close", "3")
        assert await conn.closed_by_peer()
        await conn.aclose()


async def test_slowloris_gets_408_within_header_timeout(serve: Serving) -> None:
    async with serve(echo_handler, Limits(header_timeout=0.5)) as (_, port):
        conn = await RawConnection.open(HOST, port)
        start = trio.current_time()
        await conn.send(b"GET / HTTP/1.1\r\n")
        answer = b""
        for i in range(30):
            await conn.send(b"X-Drip-%d: y\r\n" % i)
            with trio.move_on_after(0.1):
                answer = await conn.receive_raw()
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - start < 1.5
        assert await conn.closed_by_peer()
        await conn.aclose()


async def test_body_timeout_gets_408(serve: Serving) -> None:
    async with serve(echo_handler, Limits(body_timeout=0.3)) as (_, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        status, _, _ = await conn.response()
        assert status == 408
        await conn.aclose()


async def test_idle_connections_are_closed(serve: Serving) -> None:
    async with serve(echo_handler, Limits(idle_timeout=0.3, header_timeout=0.3)) as (_, port):
        silent = await RawConnection.open(HOST, port)
        used = await RawConnection.open(HOST, port)
        await used.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await used.response()
        start = trio.current_time()
        assert await silent.closed_by_peer()
        assert await used.closed_by_peer()
        assert trio.current_time() - start < 1.5
        await silent.aclose()
        await used.aclose()


async def test_oversized_body_413_seen_by_httpx(serve: Serving) -> None:
    called = 0

    async def handler(req: Request) -> Response:
        nonlocal called
        called += 1
        return Response(200)

    async with serve(handler, Limits(max_body_bytes=1024)) as (_, port):
        response = await in_thread(lambda: httpx.post(f"http://{HOST}:{port}/", content=b"z" * 50_000))
        assert response.status_code == 413
        assert called == 0


async def test_admission_control_429(serve: Serving) -> None:
    release = trio.Event()
    entered = trio.Event()
    calls = 0

    async def handler(req: Request) -> Response:
        nonlocal calls
        calls += 1
        entered.set()
        await release.wait()
        return Response(200, body=b"slow")

    async with serve(handler, Limits(max_inflight=1)) as (server, port):
        first = await RawConnection.open(HOST, port)
        await first.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await entered.wait()
        assert server.inflight == 1
        second = await RawConnection.open(HOST, port)
        await second.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = await second.response()
        assert (status, headers.get("retry-after")) == (429, "1")
        assert calls == 1
        release.set()
        assert (await first.response())[2] == b"slow"
        await second.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await second.response())[0] == 200
        await first.aclose()
        await second.aclose()


async def test_streaming_response_is_flushed_per_chunk(serve: Serving) -> None:
    first_seen = trio.Event()

    async def handler(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            # The second chunk exists only after the client has read the first.
            await first_seen.wait()
            yield b"data: two\n\n"

        return Response(200, [(b"content-type", b"text/event-stream")], body())

    async with serve(handler) as (_, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        while b"data: one" not in received:
            received += await conn.receive_raw()
        assert b"data: two" not in received
        first_seen.set()
        while not received.endswith(b"0\r\n\r\n"):
            received += await conn.receive_raw()
        assert b"data: two" in received
        await conn.aclose()


async def test_streaming_body_error_truncates(serve: Serving, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("upstream died")

        return Response(200, body=body())

    async with serve(handler) as (_, port):
        conn = await RawConnection.open(HOST, port)
        with caplog.at_level(logging.ERROR, logger="nexus.http"):
            await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while chunk := await conn.receive_raw():
                received += chunk
        assert b"partial" in received
        assert not received.endswith(b"0\r\n\r\n")
        assert any("mid-stream" in r.getMessage() for r in caplog.records)
        await conn.aclose()


async def test_client_disconnect_cancels_the_handler(serve: Serving) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def handler(req: Request) -> Response:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async with serve(handler) as (server, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await started.wait()
        await conn.aclose()
        with trio.fail_after(2):
            await cancelled.wait()
        assert server.inflight == 0


async def test_client_disconnect_mid_stream_closes_the_body(serve: Serving) -> None:
    finalized = trio.Event()

    async def handler(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick\n"
                    await trio.sleep(0.01)
            finally:
                finalized.set()

        return Response(200, body=body())

    async with serve(handler) as (server, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"tick" in await conn.receive_raw()
        await conn.aclose()
        with trio.fail_after(2):
            await finalized.wait()
        assert server.inflight == 0


async def test_connect_request_is_answered_then_closed(serve: Serving) -> None:
    async def handler(req: Request) -> Response:
        return Response(405, body=req.method.encode() + b" " + req.path.encode())

    async with serve(handler) as (_, port):
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n\x16\x03")
        status, _, body = await conn.response()
        assert (status, body) == (405, b"CONNECT api.example:443")
        assert await conn.closed_by_peer()
        await conn.aclose()


async def test_max_connections_defers_accepting(serve: Serving) -> None:
    async with serve(echo_handler, Limits(max_connections=1)) as (_, port):
        first = await RawConnection.open(HOST, port)
        await first.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        await first.response()
        second = await RawConnection.open(HOST, port)  # sits in the kernel's backlog
        await second.send(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        with trio.move_on_after(0.3) as waited:
            await second.receive_raw()
        assert waited.cancelled_caught
        await first.aclose()
        _, headers, _ = await second.response()
        assert headers.get("x-path") == "/2"
        await second.aclose()


async def test_drain_finishes_in_flight_work_then_serve_returns() -> None:
    entered = trio.Event()

    async def handler(req: Request) -> Response:
        if req.path == "/slow":
            entered.set()
            await trio.sleep(0.5)
        return Response(200, body=b"done " + req.path.encode())

    server = HttpServer(handler)
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    serve_returned = trio.Event()
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            await server.serve(listeners)
            serve_returned.set()

        nursery.start_soon(run)
        await trio.sleep(0.05)
        idle = await RawConnection.open(HOST, port)
        await idle.send(b"GET /quick HTTP/1.1\r\nHost: t\r\n\r\n")
        await idle.response()
        busy = await RawConnection.open(HOST, port)
        await busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await entered.wait()
        with trio.fail_after(5):
            assert await server.drain(5.0)
        status, headers, body = await busy.response()
        assert (status, body, headers.get("connection")) == (200, b"done /slow", "close")
        assert await idle.closed_by_peer()
        with trio.fail_after(2):
            await serve_returned.wait()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)
        await idle.aclose()
        await busy.aclose()


async def test_drain_timeout_cancels_stragglers() -> None:
    cancelled = trio.Event()
    entered = trio.Event()

    async def handler(req: Request) -> Response:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    server = HttpServer(handler)
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, listeners)
        conn = await RawConnection.open(HOST, port)
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await entered.wait()
        start = trio.current_time()
        assert not await server.drain(0.3)
        assert trio.current_time() - start < 1.0
        with trio.fail_after(2):
            await cancelled.wait()
    # Leaving the nursery proves serve() returned.
    await conn.aclose()
