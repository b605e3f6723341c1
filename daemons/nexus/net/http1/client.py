"""Trio shell of the pooled HTTP/1.1 client around a pure ``ResponseParser``.

One pool per origin (scheme, host, port) holds idle keep-alive connections, newest
first, up to ``max_connections_per_origin`` open at once; a request waits up to
``Timeouts.pool_acquire`` for a free slot.  There are no background tasks: each
request owns its connection from acquire to release, so nothing runs between requests
and nothing needs a nursery.

Stale connections and retries.  A pooled connection is checked before use: if it is
readable (the server closed it, or sent bytes nobody asked for) or idle past
``keepalive_expiry``, it is discarded before any byte is sent.  Past that check a
request is retried once, on a fresh connection, only when no byte of it can have been
processed:

* the send itself failed on a reused connection (the server had already reset it, so it
  never read a complete request), for any method; or
* a reused connection closed or reset before any response byte arrived, and the method
  is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE).  A POST in that window may
  have reached the application, so it is never replayed: the caller gets
  ``RemoteProtocolError`` and decides.

Resource handling: ``request`` returns with the connection back in its pool (or closed).
``stream`` yields a ``StreamingResponse`` whose connection goes back to the pool when its
body has been read to the end, and is closed when the block exits early.  ``aclose``
closes idle connections; connections in use are closed as they come back.

Error handling: every Trio, OS and TLS failure is mapped at this boundary to an
``HttpClientError`` subclass (``ConnectError``, ``ConnectTimeout``, ``FirstByteTimeout``,
``ReadTimeout``, ``PoolTimeout``, ``RemoteProtocolError``, ``InvalidURL``).
Cancellation propagates and discards the connection in use.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from urllib.parse import quote, urlsplit

import trio

from nexus.net.http1.parser import (
    END_OF_MESSAGE,
    IDLE,
    Data,
    Event,
    ProtocolError,
    ResponseHead,
    ResponseParser,
)
from nexus.net.http1.transport import FdTransport, StreamTransport, TransportError, make_transport
from nexus.net.http1.types import ClientResponse, Headers, Timeouts

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "FirstByteTimeout",
    "HttpClient",
    "HttpClientError",
    "HttpTimeout",
    "InvalidURL",
    "PoolTimeout",
    "ReadTimeout",
    "RemoteProtocolError",
    "StreamingResponse",
]


class HttpClientError(Exception):
    """Base of every error the client raises."""


class InvalidURL(HttpClientError, ValueError):
    pass


class ConnectError(HttpClientError):
    """TCP connect, name resolution or TLS handshake failed."""


class HttpTimeout(HttpClientError):
    """Base of the timeouts."""


class ConnectTimeout(HttpTimeout):
    pass


class FirstByteTimeout(HttpTimeout):
    """No response head within ``Timeouts.first_byte`` of sending the request."""


class ReadTimeout(HttpTimeout):
    """No body bytes within ``Timeouts.read``."""


class PoolTimeout(HttpTimeout):
    """No connection slot for the origin within ``Timeouts.pool_acquire``."""


class RemoteProtocolError(HttpClientError):
    """Malformed response, or the connection broke before the response was complete."""


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_MANAGED = frozenset({b"host", b"content-length", b"transfer-encoding"})
_INLINE_BODY = 64 * 1024
_URL_CACHE_MAX = 4096
# Printable ASCII that may stand in a request target unescaped.
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:-._~%"
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_METHODS: dict[str, bytes] = {}


class _Url:
    __slots__ = ("host", "host_header", "key", "port", "scheme", "target")

    def __init__(self, scheme: str, host: str, port: int, target: bytes, host_header: bytes) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.target = target
        self.host_header = host_header
        self.key = (scheme, host, port)


def _parse_url(url: str) -> _Url:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL(f"unsupported URL scheme in {url!r}")
    host = parts.hostname
    if not host:
        raise InvalidURL(f"no host in URL {url!r}")
    default_port = 443 if scheme == "https" else 80
    if port is None:
        port = default_port
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if not target.isascii() or " " in target:
        target = quote(target, safe=_TARGET_SAFE)
    authority = f"[{host}]" if ":" in host else host
    if port != default_port:
        authority = f"{authority}:{port}"
    return _Url(scheme, host, port, target.encode("ascii"), authority.encode("idna"))


class _Connection:
    __slots__ = ("closed", "idle_since", "parser", "pool", "transport", "used")

    def __init__(self, pool: _Pool, transport: FdTransport | StreamTransport) -> None:
        self.pool = pool
        self.transport = transport
        self.parser = ResponseParser()
        self.idle_since = 0.0
        self.used = False
        self.closed = False


class _Pool:
    __slots__ = ("host", "idle", "lot", "max", "port", "scheme", "total")

    def __init__(self, url: _Url, limit: int) -> None:
        self.scheme = url.scheme
        self.host = url.host
        self.port = url.port
        self.idle: list[_Connection] = []
        self.total = 0
        self.max = limit
        self.lot = trio.lowlevel.ParkingLot()


class HttpClient:
    """Pooled HTTP/1.1 client.  See the module docstring for pooling, retries and errors."""

    def __init__(
        self,
        *,
        max_connections_per_origin: int = 1024,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, so one shared default is safe
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = 30.0,
    ) -> None:
        self._max = max_connections_per_origin
        self._timeouts = timeouts
        self._ssl = ssl_context
        self._expiry = keepalive_expiry
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._urls: dict[str, _Url] = {}
        self._closed = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close idle connections; those in use close when their response is done."""
        self._closed = True
        for pool in self._pools.values():
            idle, pool.idle = pool.idle, []
            for conn in idle:
                await self._discard(conn)
            pool.lot.unpark_all()

    # -- public requests -------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        timeouts: Timeouts | None = None,
    ) -> ClientResponse:
        """Send a request and read the whole response."""
        t = timeouts or self._timeouts
        conn, head, pending = await self._start(method, url, headers, body, t)
        parts: list[bytes] = []
        try:
            while True:
                while pending:
                    ev = pending.popleft()
                    if type(ev) is Data:
                        parts.append(ev.data)
                    elif ev is END_OF_MESSAGE:
                        await self._finish(conn, head, pending)
                        body_bytes = b"" if not parts else parts[0] if len(parts) == 1 else b"".join(parts)
                        return ClientResponse(head.status, Headers(head.headers), body_bytes, head.http_version)
                    elif type(ev) is ProtocolError:
                        raise RemoteProtocolError(ev.reason)
                events = await self._read(conn, t.read, ReadTimeout, True)
                if events:
                    pending.extend(events)
        except BaseException:
            await self._discard(conn)
            raise

    def stream(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        timeouts: Timeouts | None = None,
    ) -> _StreamContext:
        """``async with client.stream(...) as resp``: the head is read on entry, the body as
        the caller iterates ``resp.iter_bytes()`` or awaits ``resp.read()``."""
        return _StreamContext(self, method, url, headers, body, timeouts or self._timeouts)

    # -- exchange --------------------------------------------------------------------

    def _url(self, url: str) -> _Url:
        u = self._urls.get(url)
        if u is None:
            u = _parse_url(url)
            if len(self._urls) >= _URL_CACHE_MAX:
                self._urls.clear()
            self._urls[url] = u
        return u

    async def _start(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]] | None,
        body: bytes,
        t: Timeouts,
    ) -> tuple[_Connection, ResponseHead, deque[Event]]:
        """Send the request and read up to the response head.  Returns the connection, the
        head and the events already parsed after it."""
        if self._closed:
            raise HttpClientError("client is closed")
        u = self._url(url)
        pool = self._pools.get(u.key)
        if pool is None:
            pool = self._pools[u.key] = _Pool(u, self._max)
        head_bytes = _render(method, u, headers, body)
        is_head = method == "HEAD"
        for attempt in (0, 1):
            conn = await self._acquire(pool, t, fresh=attempt == 1)
            reused = conn.used
            conn.used = True
            conn.parser.start(head=is_head)
            try:
                try:
                    if len(body) <= _INLINE_BODY:
                        await conn.transport.send_all(head_bytes + body if body else head_bytes)
                    else:
                        await conn.transport.send_all(head_bytes)
                        await conn.transport.send_all(body)
                except TransportError as exc:
                    await self._discard(conn)
                    if reused and attempt == 0:
                        continue
                    raise RemoteProtocolError(f"sending the request failed: {exc}") from exc
                pending: deque[Event] = deque()
                while True:
                    events = await self._read(conn, t.first_byte, FirstByteTimeout, False)
                    if events is None:
                        await self._discard(conn)
                        if reused and attempt == 0 and method in _IDEMPOTENT:
                            break
                        raise RemoteProtocolError("server closed the connection without a response")
                    for i, ev in enumerate(events):
                        if type(ev) is ResponseHead:
                            pending.extend(events[i + 1 :])
                            return conn, ev, pending
                        if type(ev) is ProtocolError:
                            raise RemoteProtocolError(ev.reason)
            except BaseException:
                await self._discard(conn)
                raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _read(
        self, conn: _Connection, within: float, timeout_error: type[HttpTimeout], started: bool
    ) -> list[Event] | None:
        """Receive and parse once.  None when the connection ended before any response byte
        (``started`` False only): the caller may retry."""
        with trio.move_on_after(within):
            try:
                data = await conn.transport.receive()
            except TransportError as exc:
                if not started and conn.parser.phase == IDLE:
                    return None
                raise RemoteProtocolError(f"connection broke mid-response: {exc}") from exc
            if not data:
                if not started and conn.parser.phase == IDLE:
                    return None
                return conn.parser.feed_eof() or [ProtocolError(502, "connection closed mid-response")]
            return conn.parser.feed(data)
        raise timeout_error(f"no response bytes within {within} s")

    async def _finish(self, conn: _Connection, head: ResponseHead, pending: deque[Event]) -> None:
        """The response is complete: pool the connection if it can carry another."""
        if not head.keep_alive or pending or conn.parser.phase != IDLE or self._closed:
            await self._discard(conn)
            return
        pool = conn.pool
        conn.idle_since = trio.current_time()
        pool.idle.append(conn)
        pool.lot.unpark()

    async def _discard(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.closed = True
            conn.pool.total -= 1
            conn.pool.lot.unpark()
        await conn.transport.aclose()

    # -- pool ------------------------------------------------------------------------

    async def _acquire(self, pool: _Pool, t: Timeouts, *, fresh: bool) -> _Connection:
        deadline = None
        while True:
            idle = pool.idle
            if fresh:
                if idle and pool.total >= pool.max:
                    await self._discard(idle.pop(0))
            else:
                now = trio.current_time()
                while idle:
                    conn = idle.pop()
                    if now - conn.idle_since <= self._expiry and not conn.transport.readable_now():
                        return conn
                    await self._discard(conn)
            if pool.total < pool.max:
                pool.total += 1
                try:
                    transport = await self._connect(pool, t)
                except BaseException:
                    pool.total -= 1
                    pool.lot.unpark()
                    raise
                return _Connection(pool, transport)
            if deadline is None:
                deadline = trio.current_time() + t.pool_acquire
            with trio.CancelScope(deadline=deadline) as scope:
                await pool.lot.park()
            if scope.cancelled_caught:
                raise PoolTimeout(f"no connection to {pool.host}:{pool.port} free within {t.pool_acquire} s")
            if self._closed:
                raise HttpClientError("client is closed")

    async def _connect(self, pool: _Pool, t: Timeouts) -> FdTransport | StreamTransport:
        where = f"{pool.host}:{pool.port}"
        with trio.move_on_after(t.connect):
            try:
                tcp = await trio.open_tcp_stream(pool.host, pool.port)
            except OSError as exc:
                raise ConnectError(f"connect to {where} failed: {exc}") from exc
            if pool.scheme != "https":
                return make_transport(tcp, t.read)
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = trio.SSLStream(tcp, self._ssl, server_hostname=pool.host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                await trio.aclose_forcefully(tcp)
                raise ConnectError(f"TLS handshake with {where} failed: {exc.__cause__ or exc}") from exc
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return make_transport(tls, t.read)
        raise ConnectTimeout(f"connect to {where} took longer than {t.connect} s")


def _method_bytes(method: str) -> bytes:
    raw = _METHODS.get(method)
    if raw is None:
        if not method or not all(c in _TOKEN_CHARS for c in method):
            raise HttpClientError(f"invalid method {method!r}")
        raw = method.encode("ascii")
        if len(_METHODS) < 64:
            _METHODS[method] = raw
    return raw


def _render(method: str, u: _Url, headers: list[tuple[bytes, bytes]] | None, body: bytes) -> bytes:
    parts = [_method_bytes(method), b" ", u.target, b" HTTP/1.1\r\nhost: ", u.host_header, b"\r\n"]
    lines = 3  # request line, host and the blank line
    if headers:
        for name, value in headers:
            lname = name.lower()
            if lname in _MANAGED:
                if lname != b"host":
                    continue  # framing is ours
                if lines == 3 and parts[4] is u.host_header:
                    # The caller's Host replaces ours.
                    parts[3] = b" HTTP/1.1\r\n"
                    parts[4] = parts[5] = b""
                    lines -= 1
            parts += (name, b": ", value, b"\r\n")
            lines += 1
    if body or method in _BODY_METHODS:
        parts += (b"content-length: ", b"%d" % len(body), b"\r\n")
        lines += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise HttpClientError("CR or LF inside a request header")
    return head


class StreamingResponse:
    """A response whose body is read as it arrives."""

    __slots__ = (
        "_client",
        "_conn",
        "_done",
        "_head",
        "_pending",
        "_timeouts",
        "headers",
        "http_version",
        "status",
    )

    def __init__(
        self, client: HttpClient, conn: _Connection, head: ResponseHead, pending: deque[Event], t: Timeouts
    ) -> None:
        self._client = client
        self._conn = conn
        self._head = head
        self._pending = pending
        self._timeouts = t
        self._done = False
        self.status = head.status
        self.headers = Headers(head.headers)
        self.http_version = head.http_version

    async def _next(self) -> bytes | None:
        """The next body chunk, or None at the end (the connection is then back in its pool)."""
        pending = self._pending
        client = self._client
        while True:
            while pending:
                ev = pending.popleft()
                if type(ev) is Data:
                    return ev.data
                if ev is END_OF_MESSAGE:
                    self._done = True
                    await client._finish(self._conn, self._head, pending)
                    return None
                if type(ev) is ProtocolError:
                    raise RemoteProtocolError(ev.reason)
            events = await client._read(self._conn, self._timeouts.read, ReadTimeout, True)
            if events:
                pending.extend(events)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive, de-chunked."""
        if self._done:
            return
        try:
            while (chunk := await self._next()) is not None:
                yield chunk
        except BaseException:
            await self.aclose()
            raise

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = [chunk async for chunk in self.iter_bytes()]
        return b"".join(parts)

    async def aclose(self) -> None:
        """Give the connection back: pooled if the body was read (or is already buffered
        whole), closed otherwise."""
        if self._done:
            return
        self._done = True
        if END_OF_MESSAGE in self._pending and not any(type(ev) is ProtocolError for ev in self._pending):
            while self._pending.popleft() is not END_OF_MESSAGE:
                pass
            await self._client._finish(self._conn, self._head, self._pending)
        else:
            await self._client._discard(self._conn)


class _StreamContext:
    __slots__ = ("_args", "_client", "_response")

    def __init__(
        self,
        client: HttpClient,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]] | None,
        body: bytes,
        t: Timeouts,
    ) -> None:
        self._client = client
        self._args = (method, url, headers, body, t)
        self._response: StreamingResponse | None = None

    async def __aenter__(self) -> StreamingResponse:
        method, url, headers, body, t = self._args
        conn, head, pending = await self._client._start(method, url, headers, body, t)
        self._response = StreamingResponse(self._client, conn, head, pending, t)
        return self._response

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._response is not None:
            await self._response.aclose()
