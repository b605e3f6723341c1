"""Conformance checks for HTTP/1.1 server shells, run over loopback with raw sockets.

Serve ``echo_handler`` (or anything that behaves the same) on a port, then call
``await check_http_server(host, port, max_header_bytes=..., max_body_bytes=...)`` with
the limits the server was given.  Each check opens its own connection, writes exact
bytes and reads the answer with the pure ``ResponseParser``, so it judges the wire, not
a client library's interpretation of it.  A failed check raises ``ConformanceError``
naming the check.  Every wait is bounded by ``timeout`` seconds.

The echo contract: ``GET /stream?n=N`` answers ``chunk-0\\n`` … ``chunk-{N-1}\\n`` as a
streaming body; every other request is answered 200 with its body echoed and headers
``x-method``, ``x-path``, ``x-query`` and ``x-body-length``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from nexus.net.http1.parser import END_OF_MESSAGE, Data, ProtocolError, ResponseHead, ResponseParser
from nexus.net.http1.types import Headers, Request, Response

__all__ = ["CHECKS", "ConformanceError", "RawConnection", "check_http_server", "echo_handler"]


class ConformanceError(AssertionError):
    pass


async def echo_handler(request: Request) -> Response:
    """The handler every server under ``check_http_server`` must serve."""
    if request.path == "/stream":
        count = int(request.query.partition("n=")[2] or "3")

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(count):
                yield b"chunk-%d\n" % i
                await trio.lowlevel.checkpoint()

        return Response(200, [(b"content-type", b"text/plain")], chunks())
    return Response(
        200,
        [
            (b"x-method", request.method.encode()),
            (b"x-path", request.path.encode()),
            (b"x-query", request.query.encode()),
            (b"x-body-length", b"%d" % len(request.body)),
        ],
        request.body,
    )


class RawConnection:
    """One TCP connection that writes raw bytes and reads parsed responses."""

    def __init__(self, stream: trio.SocketStream, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout
        self.parser = ResponseParser()
        self.events: list[object] = []

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 5.0) -> RawConnection:
        with trio.fail_after(timeout):
            return cls(await trio.open_tcp_stream(host, port), timeout)

    async def send(self, data: bytes) -> None:
        with trio.fail_after(self.timeout):
            await self.stream.send_all(data)

    async def receive_raw(self) -> bytes:
        """Bytes as they come, bypassing the parser (b"" at EOF)."""
        with trio.fail_after(self.timeout):
            try:
                return await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return b""

    async def response(self, *, head: bool = False) -> tuple[int, Headers, bytes]:
        """The next complete response: (status, headers, body)."""
        self.parser.start(head=head)
        status: ResponseHead | None = None
        parts: list[bytes] = []
        with trio.fail_after(self.timeout):
            while True:
                while self.events:
                    ev = self.events.pop(0)
                    if isinstance(ev, ResponseHead):
                        status = ev
                    elif isinstance(ev, Data):
                        parts.append(ev.data)
                    elif ev is END_OF_MESSAGE and status is not None:
                        return status.status, Headers(status.headers), b"".join(parts)
                    elif isinstance(ev, ProtocolError):
                        raise ConformanceError(f"malformed response: {ev.reason}")
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                self.events.extend(self.parser.feed(data) if data else self.parser.feed_eof())
                if not data and not self.events:
                    raise ConformanceError("connection closed before a complete response")

    async def closed_by_peer(self) -> bool:
        """True when the server closes the connection within the timeout."""
        with trio.move_on_after(self.timeout):
            while True:
                try:
                    if not await self.stream.receive_some(65536):
                        return True
                except trio.BrokenResourceError:
                    return True
        return False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


_Check = Callable[[str, int, int, int, float], Awaitable[None]]


async def _with_conn(host: str, port: int, timeout: float) -> RawConnection:
    return await RawConnection.open(host, port, timeout)


async def check_keep_alive(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    conn = await _with_conn(host, port, timeout)
    try:
        for i in range(3):
            await conn.send(b"GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            status, headers, _ = await conn.response()
            _expect(status == 200, f"keep-alive: request {i} got {status}")
            _expect(headers.get("x-path") == f"/k{i}", f"keep-alive: request {i} answered for another path")
            _expect(headers.get("connection") != "close", "keep-alive: server asked to close")
    finally:
        await conn.aclose()


async def check_pipelining(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    conn = await _with_conn(host, port, timeout)
    try:
        await conn.send(
            b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /p2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /stream?n=2 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"HEAD /p4 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /p5 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        _, h1, _ = await conn.response()
        _, h2, b2 = await conn.response()
        _, _, b3 = await conn.response()
        _, h4, b4 = await conn.response(head=True)
        _, h5, _ = await conn.response()
        _expect(h1.get("x-path") == "/p1" and h2.get("x-path") == "/p2", "pipelining: answers out of order")
        _expect(b2 == b"hello" and b3 == b"chunk-0\nchunk-1\n", "pipelining: bodies mixed up")
        _expect(h4.get("x-path") == "/p4" and h5.get("x-path") == "/p5", "pipelining: answers out of order")
        _expect(b4 == b"", "pipelining: HEAD answer carried a body")
    finally:
        await conn.aclose()


async def check_chunked_request(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    conn = await _with_conn(host, port, timeout)
    try:
        await conn.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await conn.send(b"lo\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: y\r\n\r\n")
        status, headers, body = await conn.response()
        _expect(status == 200 and body == b"hello world", f"chunked body: got {status} {body!r}")
        _expect(headers.get("x-body-length") == "11", "chunked body: wrong length seen by handler")
    finally:
        await conn.aclose()


async def _rejected(host: str, port: int, timeout: float, data: bytes, want: int, name: str) -> None:
    conn = await _with_conn(host, port, timeout)
    try:
        await conn.send(data)
        status, headers, _ = await conn.response()
        _expect(status == want, f"{name}: expected {want}, got {status}")
        _expect(headers.get("connection") == "close", f"{name}: answer did not announce close")
        _expect(await conn.closed_by_peer(), f"{name}: connection left open")
    finally:
        await conn.aclose()


async def check_bad_framing(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    cases = [
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "CL+TE"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "two CLs"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "chunk size"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400, "chunk end"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n", 400, "obs-fold"),
        (b"GET / HTTP/1.1\nHost: t\n\n", 400, "bare LF"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "coding"),
    ]
    for data, want, name in cases:
        await _rejected(host, port, timeout, data, want, f"bad framing ({name})")


async def check_limits(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    big = b"x" * (max_header + 1)
    await _rejected(host, port, timeout, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + big + b"\r\n\r\n", 431, "header")
    await _rejected(
        host, port, timeout, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (max_body + 1), 413, "body"
    )
    conn = await _with_conn(host, port, timeout)
    try:
        # A chunked body announces no size: it is cut off once it passes the limit.
        await conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        await conn.send(b"%x\r\n" % (max_body + 1) + b"y" * (max_body + 1) + b"\r\n0\r\n\r\n")
        status, _, _ = await conn.response()
        _expect(status == 413, f"chunked body over the limit: got {status}")
    finally:
        await conn.aclose()


async def check_http10_and_close(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    for request, name in (
        (b"GET /a HTTP/1.0\r\n\r\n", "HTTP/1.0"),
        (b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "Connection: close"),
    ):
        conn = await _with_conn(host, port, timeout)
        try:
            await conn.send(request)
            status, _, _ = await conn.response()
            _expect(status == 200, f"{name}: got {status}")
            _expect(await conn.closed_by_peer(), f"{name}: connection left open")
        finally:
            await conn.aclose()
    conn = await _with_conn(host, port, timeout)
    try:
        await conn.send(b"GET /stream?n=2 HTTP/1.0\r\n\r\n")
        status, headers, body = await conn.response()
        _expect(headers.get("transfer-encoding") is None, "HTTP/1.0: chunked coding sent to a 1.0 client")
        _expect(body == b"chunk-0\nchunk-1\n", f"HTTP/1.0: streamed body {body!r}")
    finally:
        await conn.aclose()


async def check_head_and_continue(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    conn = await _with_conn(host, port, timeout)
    try:
        await conn.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = await conn.response(head=True)
        _expect(status == 200 and body == b"", "HEAD: body sent")
        await conn.send(b"GET /after-head HTTP/1.1\r\nHost: t\r\n\r\n")
        _, headers, _ = await conn.response()
        _expect(headers.get("x-path") == "/after-head", "HEAD: connection unusable afterwards")
        await conn.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = await conn.receive_raw()
        _expect(interim.startswith(b"HTTP/1.1 100 "), f"Expect: 100-continue: got {interim[:40]!r}")
        await conn.send(b"ping")
        status, _, body = await conn.response()
        _expect(status == 200 and body == b"ping", "Expect: 100-continue: body lost")
    finally:
        await conn.aclose()


async def check_streaming(host: str, port: int, max_header: int, max_body: int, timeout: float) -> None:
    conn = await _with_conn(host, port, timeout)
    try:
        await conn.send(b"GET /stream?n=5 HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        _, headers, body = await conn.response()
        _expect(headers.get("transfer-encoding") == "chunked", "streaming: not chunked")
        _expect(body == b"".join(b"chunk-%d\n" % i for i in range(5)), f"streaming: body {body!r}")
        _, headers, _ = await conn.response()
        _expect(headers.get("x-path") == "/next", "streaming: connection unusable afterwards")
    finally:
        await conn.aclose()


CHECKS: dict[str, _Check] = {
    "keep_alive": check_keep_alive,
    "pipelining": check_pipelining,
    "chunked_request": check_chunked_request,
    "bad_framing": check_bad_framing,
    "limits": check_limits,
    "http10_and_close": check_http10_and_close,
    "head_and_continue": check_head_and_continue,
    "streaming": check_streaming,
}


async def check_http_server(
    host: str,
    port: int,
    *,
    max_header_bytes: int = 64 * 1024,
    max_body_bytes: int = 32 * 1024 * 1024,
    timeout: float = 5.0,
) -> None:
    """Run every check in ``CHECKS`` against the echo server at ``host:port``."""
    for check in CHECKS.values():
        await check(host, port, max_header_bytes, max_body_bytes, timeout)
