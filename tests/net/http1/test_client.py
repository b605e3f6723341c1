"""HttpClient against HttpServer and against raw socket servers that send odd framings,
close connections at awkward moments, or never answer."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nexus.net.http1.client import (
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    HttpClient,
    HttpClientError,
    InvalidURL,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
)
from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Request, Response, Timeouts
from nexus.net.testing import echo_handler

Serving = Callable[..., AbstractAsyncContextManager[tuple[HttpServer, int]]]
Behaviour = Callable[[trio.SocketStream, int], Awaitable[None]]
HOST = "127.0.0.1"


class Buffered:
    """Reads whole requests off a raw server-side stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def request(self) -> bytes | None:
        """The next request head plus its Content-Length body, or None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += await self.stream.receive_some(65536)
        self.buf = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


@asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server running ``behaviour(stream, connection_number)``; yields the port and
    the list of requests the behaviours record."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        port = listeners[0].socket.getsockname()[1]
        count = 0

        async def handle(stream: trio.SocketStream) -> None:
            nonlocal count
            count += 1
            try:
                await behaviour(stream, count)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield port, []
        nursery.cancel_scope.cancel()


def canned(*responses: bytes, close: bool = True) -> Behaviour:
    """Answer each request with the next canned response, then close."""

    async def behaviour(stream: trio.SocketStream, n: int) -> None:
        reader = Buffered(stream)
        for response in responses:
            if await reader.request() is None:
                return
            await stream.send_all(response)
        if not close:
            await trio.sleep_forever()

    return behaviour


# -- against HttpServer -----------------------------------------------------------------


async def test_request_round_trip(serve: Serving) -> None:
    async def handler(req: Request) -> Response:
        return Response(
            201,
            [
                (b"x-host", (req.headers.get("host") or "").encode()),
                (b"x-length", (req.headers.get("content-length") or "-").encode()),
                (b"x-custom", (req.headers.get("x-custom") or "").encode()),
                (b"x-target", req.target),
            ],
            req.body[::-1],
        )

    async with serve(handler) as (_, port), HttpClient() as client:
        got = await client.request("POST", f"http://{HOST}:{port}/p?q=1", [(b"X-Custom", b"v")], b"abc")
        assert (got.status, got.body, got.http_version) == (201, b"cba", "1.1")
        assert got.headers.get("x-host") == f"{HOST}:{port}"
        assert got.headers.get("x-length") == "3"
        assert got.headers.get("x-custom") == "v"
        assert got.headers.get("x-target") == "/p?q=1"
        empty_post = await client.request("POST", f"http://{HOST}:{port}/")
        assert empty_post.headers.get("x-length") == "0"
        get = await client.request("GET", f"http://{HOST}:{port}/é x")
        assert (get.headers.get("x-length"), get.headers.get("x-target")) == ("-", "/%C3%A9%20x")
        own_host = await client.request("GET", f"http://{HOST}:{port}/", [(b"Host", b"other.example")])
        assert own_host.headers.get("x-host") == "other.example"


async def test_pool_reuses_one_connection(serve: Serving) -> None:
    peers: list[object] = []

    async def handler(req: Request) -> Response:
        peers.append(req.client)
        return Response(200, body=b"ok")

    async with serve(handler) as (server, port), HttpClient() as client:
        for _ in range(5):
            assert (await client.request("GET", f"http://{HOST}:{port}/")).body == b"ok"
        head = await client.request("HEAD", f"http://{HOST}:{port}/")
        assert (head.headers.get("content-length"), head.body) == ("2", b"")
        await client.request("GET", f"http://{HOST}:{port}/")
        assert len(peers) == 7 and len(set(peers)) == 1
        assert server.connections == 1


async def test_large_bodies_both_ways(serve: Serving) -> None:
    async with serve(echo_handler) as (_, port), HttpClient() as client:
        payload = bytes(range(256)) * 4096  # 1 MiB
        got = await client.request("PUT", f"http://{HOST}:{port}/big", body=payload)
        assert got.body == payload


async def test_stream_yields_chunks_as_they_arrive(serve: Serving) -> None:
    first_read = trio.Event()

    async def handler(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"one"
            await first_read.wait()
            yield b"two"

        return Response(200, body=body())

    async with serve(handler) as (server, port), HttpClient() as client:
        async with client.stream("GET", f"http://{HOST}:{port}/") as resp:
            assert resp.status == 200
            assert resp.headers.get("transfer-encoding") == "chunked"
            chunks = resp.iter_bytes()
            assert await chunks.__anext__() == b"one"
            first_read.set()
            assert [c async for c in chunks] == [b"two"]
        again = await client.request("GET", f"http://{HOST}:{port}/")
        assert again.body == b"onetwo"
        assert server.connections == 1


async def test_stream_closed_early_discards_the_connection(serve: Serving) -> None:
    async with serve(echo_handler) as (server, port), HttpClient() as client:
        async with client.stream("GET", f"http://{HOST}:{port}/stream?n=1000") as resp:
            async for chunk in resp.iter_bytes():
                assert chunk.startswith(b"chunk-0")
                break
        # The discarded connection is closed at once, so the server's side ends.
        with trio.fail_after(2):
            while server.connections:  # noqa: ASYNC110 - no event to wait on in the server's API
                await trio.sleep(0.01)
        assert (await client.request("GET", f"http://{HOST}:{port}/x")).headers.get("x-path") == "/x"
        async with client.stream("GET", f"http://{HOST}:{port}/y") as resp:
            assert await resp.read() == b""


async def test_pool_limit_and_pool_timeout(serve: Serving) -> None:
    release = trio.Event()

    async def handler(req: Request) -> Response:
        if req.path == "/hold":
            await release.wait()
        return Response(200, body=req.path.encode())

    async with serve(handler) as (server, port), HttpClient(max_connections_per_origin=1) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.request, "GET", f"http://{HOST}:{port}/hold")
            await trio.sleep(0.1)
            with pytest.raises(PoolTimeout):
                await client.request("GET", f"http://{HOST}:{port}/x", timeouts=Timeouts(pool_acquire=0.2))

            async def waiter() -> None:
                assert (await client.request("GET", f"http://{HOST}:{port}/after")).body == b"/after"

            nursery.start_soon(waiter)
            await trio.sleep(0.1)
            release.set()
        assert server.connections == 1


# -- odd framings from raw servers ------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"abcde",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
async def test_reusable_framings(response: bytes, body: bytes) -> None:
    async with raw_server(canned(response, response, close=False)) as (port, _), HttpClient() as client:
        for _ in range(2):
            got = await client.request("GET", f"http://{HOST}:{port}/")
            assert got.body == body
        assert client._pools[("http", HOST, port)].total == 1


async def test_close_delimited_and_http10_bodies() -> None:
    responses = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
        b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n1.0!",
    ]
    for response in responses:
        async with raw_server(canned(response)) as (port, _), HttpClient() as client:
            got = await client.request("GET", f"http://{HOST}:{port}/")
            assert got.body in (b"until the end", b"1.0!")
            assert client._pools[("http", HOST, port)].total == 0  # not pooled


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_broken_responses_raise_remote_protocol_error(response: bytes) -> None:
    async with raw_server(canned(response)) as (port, _), HttpClient() as client:
        with pytest.raises(RemoteProtocolError):
            await client.request("GET", f"http://{HOST}:{port}/")
        assert client._pools[("http", HOST, port)].total == 0


async def test_closed_before_answering_on_a_fresh_connection_is_not_retried() -> None:
    attempts = 0

    async def behaviour(stream: trio.SocketStream, n: int) -> None:
        nonlocal attempts
        await Buffered(stream).request()
        attempts += 1

    async with raw_server(behaviour) as (port, _), HttpClient() as client:
        with pytest.raises(RemoteProtocolError):
            await client.request("GET", f"http://{HOST}:{port}/")
        assert attempts == 1


# -- stale connections ------------------------------------------------------------------


async def test_idle_closed_connection_is_replaced_before_sending() -> None:
    requests: list[tuple[int, bytes]] = []

    async def behaviour(stream: trio.SocketStream, n: int) -> None:
        reader = Buffered(stream)
        request = await reader.request()
        assert request is not None
        requests.append((n, request.split(b" ")[0]))
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        # Keep-alive promised, then an idle close, as servers do.

    async with raw_server(behaviour) as (port, _), HttpClient() as client:
        await client.request("GET", f"http://{HOST}:{port}/")
        await trio.sleep(0.1)
        got = await client.request("POST", f"http://{HOST}:{port}/", body=b"once")
        assert got.body == b"ok"
        assert requests == [(1, b"GET"), (2, b"POST")]


def closes_after_reading_the_second_request() -> tuple[Behaviour, list[tuple[int, bytes]]]:
    seen: list[tuple[int, bytes]] = []

    async def behaviour(stream: trio.SocketStream, n: int) -> None:
        reader = Buffered(stream)
        while (request := await reader.request()) is not None:
            seen.append((n, request.split(b" ")[0]))
            if n == 1 and len(seen) == 2:
                return  # the request reached us; we die before answering
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return behaviour, seen


async def test_idempotent_request_is_retried_once_on_a_fresh_connection() -> None:
    behaviour, seen = closes_after_reading_the_second_request()
    async with raw_server(behaviour) as (port, _), HttpClient() as client:
        await client.request("GET", f"http://{HOST}:{port}/")
        got = await client.request("GET", f"http://{HOST}:{port}/")
        assert got.body == b"ok"
        assert seen == [(1, b"GET"), (1, b"GET"), (2, b"GET")]


async def test_post_is_never_replayed_after_it_may_have_been_processed() -> None:
    behaviour, seen = closes_after_reading_the_second_request()
    async with raw_server(behaviour) as (port, _), HttpClient() as client:
        await client.request("GET", f"http://{HOST}:{port}/")
        with pytest.raises(RemoteProtocolError):
            await client.request("POST", f"http://{HOST}:{port}/", body=b"charge card")
        assert seen == [(1, b"GET"), (1, b"POST")]


async def test_expired_keepalive_is_not_reused() -> None:
    peers: list[int] = []

    async def behaviour(stream: trio.SocketStream, n: int) -> None:
        peers.append(n)
        await canned(*[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] * 5, close=False)(stream, n)

    async with raw_server(behaviour) as (port, _), HttpClient(keepalive_expiry=0.05) as client:
        await client.request("GET", f"http://{HOST}:{port}/")
        await trio.sleep(0.1)
        await client.request("GET", f"http://{HOST}:{port}/")
        assert peers == [1, 2]


# -- timeouts and connect errors --------------------------------------------------------


async def test_connect_error_on_refused_port() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    async with HttpClient() as client:
        with pytest.raises(ConnectError):
            await client.request("GET", f"http://{HOST}:{port}/")


async def test_connect_timeout_when_the_backlog_is_full() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect((HOST, port))
            fillers.append(filler)
        try:
            async with HttpClient(timeouts=Timeouts(connect=0.3)) as client:
                start = trio.current_time()
                with pytest.raises(ConnectTimeout):
                    await client.request("GET", f"http://{HOST}:{port}/")
                assert trio.current_time() - start < 2
        finally:
            for filler in fillers:
                filler.close()


async def test_first_byte_timeout() -> None:
    async def silent(stream: trio.SocketStream, n: int) -> None:
        await Buffered(stream).request()
        await trio.sleep_forever()

    async with raw_server(silent) as (port, _), HttpClient() as client:
        with pytest.raises(FirstByteTimeout):
            await client.request("GET", f"http://{HOST}:{port}/", timeouts=Timeouts(first_byte=0.2))


async def test_read_timeout_between_chunks() -> None:
    async def stalls(stream: trio.SocketStream, n: int) -> None:
        await Buffered(stream).request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await trio.sleep_forever()

    async with raw_server(stalls) as (port, _), HttpClient(timeouts=Timeouts(read=0.2)) as client:
        with pytest.raises(ReadTimeout):
            await client.request("GET", f"http://{HOST}:{port}/")
        async with client.stream("GET", f"http://{HOST}:{port}/") as resp:
            assert resp.status == 200
            with pytest.raises(ReadTimeout):
                await resp.read()


async def test_invalid_input() -> None:
    async with HttpClient() as client:
        for url in ("ftp://h/", "http:///nohost", "http://h:99999/", "nonsense"):
            with pytest.raises(InvalidURL):
                await client.request("GET", url)
        with pytest.raises(HttpClientError):
            await client.request("GET", "http://127.0.0.1:9/", [(b"x", b"a\r\nevil: 1")])
        with pytest.raises(HttpClientError):
            await client.request("GET /x", "http://127.0.0.1:9/")


# -- TLS --------------------------------------------------------------------------------


def _issue(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA and a leaf for localhost/127.0.0.1: the server context and the CA file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nexus test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp / "leaf.pem", tmp / "key.pem")
    return server_ctx, tmp / "ca.pem"


async def test_tls_with_verification(tmp_path: Path) -> None:
    server_ctx, ca_file = _issue(tmp_path)
    server = HttpServer(echo_handler)
    tcp = await trio.open_tcp_listeners(0, host=HOST)
    port = tcp[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [trio.SSLListener(tcp[0], server_ctx, https_compatible=True)])
        trusting = ssl.create_default_context(cafile=str(ca_file))
        async with HttpClient(ssl_context=trusting) as client:
            for url in (f"https://localhost:{port}/tls", f"https://{HOST}:{port}/tls"):
                got = await client.request("POST", url, body=b"secret")
                assert (got.status, got.body) == (200, b"secret")
            async with client.stream("GET", f"https://localhost:{port}/stream?n=3") as resp:
                assert await resp.read() == b"chunk-0\nchunk-1\nchunk-2\n"
            assert client._pools[("https", "localhost", port)].total == 1
        async with HttpClient() as default_trust:
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await default_trust.request("GET", f"https://localhost:{port}/")
        nursery.cancel_scope.cancel()
