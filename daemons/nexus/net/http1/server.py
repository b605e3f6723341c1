"""Trio shell of the HTTP/1.1 server: accept loops, then one reader and one worker task
per connection around a pure ``RequestParser``.

The reader receives bytes, feeds the parser and queues what the worker must answer, in
wire order: complete requests, ``100 Continue`` interim answers, and a final protocol-error
answer (400, 408, 413, 414, 431, 501).  The worker calls the handler and writes each
response.  Because the reader keeps reading while a handler runs, a client that goes away
is noticed at once: the reader cancels the connection's nursery, and with it the handler
and whatever upstream call it awaits.  Nothing is created per request but the records
themselves: the reader's one ``CancelScope`` carries the head, body and idle deadlines by
moving its deadline, and the two tasks hand work over by parking and rescheduling.  While
a pipelined request already waits for the worker, the reader stops reading (backpressure),
so at most one receive buffer of requests is held per connection; while paused (and after
a protocol error) a disconnect is noticed at the next write instead.

Resource handling: ``serve`` owns every accepted stream and closes it when its connection
ends; it closes the listeners when accepting stops.  After a protocol error the server
answers, half-closes and discards input for up to two seconds before closing, so the client
reads the answer instead of a reset.

Error handling: a handler exception becomes a 500 built by ``error_response`` and its
traceback is logged on the ``nexus.http`` logger, never sent; an exception from a streaming
body mid-stream is logged and the connection closed with no chunked terminator, so the
client sees truncation.  Transport failures end the connection quietly.  Only
cancellation, and errors of the listeners themselves, propagate out of ``serve``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterable, Callable, Sequence
from http import HTTPStatus
from urllib.parse import unquote

import trio

from nexus.net.http1.parser import (
    BODY,
    END_OF_MESSAGE,
    HEAD,
    IDLE,
    Data,
    Event,
    ProtocolError,
    RequestHead,
    RequestParser,
    Upgrade,
)
from nexus.net.http1.transport import TransportError, make_transport
from nexus.net.http1.types import Handler, Headers, Limits, Request, Response

__all__ = ["HttpServer", "default_error_response"]

log = logging.getLogger("nexus.http")

_STATUS_LINES: dict[int, bytes] = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
# Names the server writes itself; a handler's copies are dropped (see Response).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_CONTINUE_BYTES = b"HTTP/1.1 100 Continue\r\n\r\n"
_INLINE_BODY = 64 * 1024
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 16 * 1024 * 1024
_CAPACITY_ERRNOS = frozenset({errno.ENFILE, errno.EMFILE, errno.ENOMEM, errno.ENOBUFS})
# How _prepare says a body goes out.
_BYTES, _CHUNKED, _RAW, _DISCARD = range(4)


def default_error_response(status: int, message: str) -> Response:
    """A small JSON body: ``{"error": {"status": ..., "message": ...}}``."""
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    return Response(status, [(b"content-type", b"application/json")], body)


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status!r}")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def _request_path(target: bytes) -> tuple[str, str]:
    q = target.find(b"?")
    if q < 0:
        raw, query = target, ""
    else:
        raw, query = target[:q], target[q + 1 :].decode("latin-1")
    if raw[:1] != b"/":
        # absolute-form (a proxy request) carries scheme and authority before the path;
        # authority-form (CONNECT) and "*" are kept as they are.
        scheme_end = raw.find(b"://")
        if scheme_end >= 0:
            slash = raw.find(b"/", scheme_end + 3)
            raw = raw[slash:] if slash >= 0 else b"/"
    path = raw.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    return path, query


class _ErrorAnswer:
    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


_CONTINUE = object()
_QueueItem = Request | _ErrorAnswer | object


class _Conn:
    """State shared by one connection's reader and worker tasks."""

    __slots__ = (
        "abort_reader",
        "abort_worker",
        "body",
        "busy",
        "client",
        "head",
        "idle_since",
        "parser",
        "queue",
        "reader_done",
        "reader_task",
        "reader_waiting",
        "scope",
        "stream",
        "transport",
        "worker_task",
        "worker_waiting",
    )

    def __init__(self, stream: trio.abc.Stream, limits: Limits) -> None:
        self.stream = stream
        self.transport = make_transport(stream, limits.write_timeout)
        self.parser = RequestParser(max_header_bytes=limits.max_header_bytes, max_body_bytes=limits.max_body_bytes)
        self.queue: deque[_QueueItem] = deque()
        self.client = _peer(stream)
        # Before the first request the idle deadline is the header timeout: a connection
        # that never sends a byte is dropped as soon as a slow head would be.
        self.idle_since = trio.current_time() - limits.idle_timeout + limits.header_timeout
        self.scope: trio.CancelScope | None = None
        self.head: RequestHead | None = None
        self.body: list[bytes] | None = None
        self.busy = False
        self.reader_done = False
        self.worker_waiting = False
        self.reader_waiting = False
        self.worker_task: trio.lowlevel.Task | None = None
        self.reader_task: trio.lowlevel.Task | None = None
        # Bound once: the abort callbacks run on every park.
        self.abort_worker = self._abort_worker
        self.abort_reader = self._abort_reader

    def _abort_worker(self, _: object) -> trio.lowlevel.Abort:
        self.worker_waiting = False
        return trio.lowlevel.Abort.SUCCEEDED

    def _abort_reader(self, _: object) -> trio.lowlevel.Abort:
        self.reader_waiting = False
        return trio.lowlevel.Abort.SUCCEEDED

    def wake_worker(self) -> None:
        if self.worker_waiting and self.worker_task is not None:
            self.worker_waiting = False
            trio.lowlevel.reschedule(self.worker_task)

    def wake_reader(self) -> None:
        if self.reader_waiting and self.reader_task is not None:
            self.reader_waiting = False
            trio.lowlevel.reschedule(self.reader_task)

    def cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


def _peer(stream: trio.abc.Stream) -> tuple[str, int] | None:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            addr = stream.socket.getpeername()
        except OSError:
            return None
        if isinstance(addr, tuple):
            return (str(addr[0]), int(addr[1]))
    return None


async def _aclose_iter(it: object) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.exception("closing a streaming response body failed")


class HttpServer:
    """HTTP/1.1 server for the hot path.  See the module docstring for the design."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits = Limits(),  # noqa: B008 - frozen, so one shared default is safe
        *,
        error_response: Callable[[int, str], Response] | None = None,
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._error_response = error_response or default_error_response
        self._inflight = 0
        self._conns: set[_Conn] = set()
        self._accept_scope: trio.CancelScope | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._stopped = False
        self._draining = False
        self._all_closed: trio.Event | None = None
        self._slot_freed = trio.lowlevel.ParkingLot()

    @property
    def inflight(self) -> int:
        """Requests inside handlers, streaming bodies included."""
        return self._inflight

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- lifecycle -------------------------------------------------------------------

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until stopped, then return once all connections end."""
        async with trio.open_nursery() as conns:
            self._conn_nursery = conns
            try:
                with trio.CancelScope() as accept_scope:
                    self._accept_scope = accept_scope
                    if self._stopped:
                        accept_scope.cancel()
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, conns)
                        task_status.started()
            finally:
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

    def stop_accepting(self) -> None:
        """Close the listeners; connections already accepted carry on."""
        self._stopped = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, let in-flight requests (streams included) finish within
        ``timeout``, close idle keep-alive connections now and busy ones after their
        current response.  True when every connection ended in time; otherwise the rest
        are cancelled.  Either way ``serve`` returns afterwards."""
        self.stop_accepting()
        self._draining = True
        for conn in list(self._conns):
            conn.wake_worker()
        if self._conns:
            self._all_closed = trio.Event()
            with trio.move_on_after(timeout):
                await self._all_closed.wait()
        if not self._conns:
            return True
        if self._conn_nursery is not None:
            self._conn_nursery.cancel_scope.cancel()
        return False

    async def _accept_loop(self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery) -> None:
        limits = self._limits
        while True:
            while len(self._conns) >= limits.max_connections:
                await self._slot_freed.park()
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                log.error("accept failed, out of resources: %s", exc)
                await trio.sleep(0.1)
                continue
            conn = _Conn(stream, limits)
            self._conns.add(conn)
            nursery.start_soon(self._connection, conn)

    async def _connection(self, conn: _Conn) -> None:
        try:
            async with trio.open_nursery() as nursery:
                conn.scope = nursery.cancel_scope
                nursery.start_soon(self._worker, conn)
                await self._reader(conn)
        except Exception:
            log.exception("connection task failed")
        finally:
            self._conns.discard(conn)
            await conn.transport.aclose()
            self._slot_freed.unpark()
            if self._all_closed is not None and not self._conns:
                self._all_closed.set()

    # -- reader ----------------------------------------------------------------------

    async def _reader(self, conn: _Conn) -> None:
        conn.reader_task = trio.lowlevel.current_task()
        limits = self._limits
        parser = conn.parser
        transport = conn.transport
        head_armed = body_armed = 0
        # The deadline moves only when a head or body starts arriving across reads.  The
        # idle deadline is lazy: when the timer fires between messages it is checked
        # against the worker's ``idle_since`` and re-armed if the connection was busy, so
        # a request costs no deadline bookkeeping at all.
        deadline = conn.idle_since + limits.idle_timeout
        try:
            while True:
                with trio.CancelScope(deadline=deadline) as timer:
                    while True:
                        data = await transport.receive()
                        if not data:
                            break
                        events = parser.feed(data)
                        if events:
                            self._dispatch(conn, events)
                            if conn.reader_done:
                                return
                        phase = parser.phase
                        if phase == IDLE:
                            pass
                        elif phase == HEAD:
                            if parser.message_count != head_armed:
                                head_armed = parser.message_count
                                timer.deadline = trio.current_time() + limits.header_timeout
                        elif parser.message_count != body_armed:
                            body_armed = parser.message_count
                            timer.deadline = trio.current_time() + limits.body_timeout
                        if conn.queue and conn.busy:
                            # Backpressure: the worker has a request in hand and another queued.
                            saved = timer.deadline
                            timer.deadline = math.inf
                            conn.reader_waiting = True
                            await trio.lowlevel.wait_task_rescheduled(conn.abort_reader)
                            # The client was not slow while we did not read: restart its clock.
                            if parser.phase == HEAD:
                                saved = trio.current_time() + limits.header_timeout
                            elif parser.phase == BODY:
                                saved = trio.current_time() + limits.body_timeout
                            timer.deadline = saved
                if not timer.cancelled_caught:
                    break  # end of stream
                if parser.phase != IDLE:
                    conn.reader_done = True
                    conn.queue.append(_ErrorAnswer(408, "request timeout"))
                    conn.wake_worker()
                    return
                now = trio.current_time()
                if conn.busy or conn.queue:
                    deadline = now + limits.idle_timeout
                elif now < conn.idle_since + limits.idle_timeout:
                    deadline = conn.idle_since + limits.idle_timeout
                else:
                    break  # idle for idle_timeout
        except TransportError:
            pass
        # End of stream, a reset, or an idle timeout: nobody is left to answer.
        conn.cancel()

    def _dispatch(self, conn: _Conn, events: list[Event]) -> None:
        queue = conn.queue
        want_continue = False
        for ev in events:
            if type(ev) is Data:
                if conn.body is None:
                    conn.body = [ev.data]
                else:
                    conn.body.append(ev.data)
            elif ev is END_OF_MESSAGE:
                head = conn.head
                parts = conn.body
                conn.head = None
                conn.body = None
                if head is None:
                    continue
                body = b"" if parts is None else parts[0] if len(parts) == 1 else b"".join(parts)
                path, query = _request_path(head.target)
                queue.append(
                    Request(
                        head.method,
                        head.target,
                        path,
                        query,
                        Headers(head.headers),
                        body,
                        conn.client,
                        head.http_version,
                        head.keep_alive,
                    )
                )
            elif type(ev) is RequestHead:
                conn.head = ev
                want_continue = ev.expect_continue
            elif type(ev) is ProtocolError:
                queue.append(_ErrorAnswer(ev.status, ev.reason))
                conn.reader_done = True
                want_continue = False
                break
            elif type(ev) is Upgrade:
                # CONNECT: its request (keep_alive False) is queued; the rest is not HTTP.
                conn.reader_done = True
                want_continue = False
                break
        if want_continue and conn.head is not None:
            queue.append(_CONTINUE)
        if queue:
            conn.wake_worker()

    # -- worker ----------------------------------------------------------------------

    async def _worker(self, conn: _Conn) -> None:
        conn.worker_task = trio.lowlevel.current_task()
        try:
            await self._work(conn)
        except TransportError:
            pass
        finally:
            conn.cancel()

    async def _work(self, conn: _Conn) -> None:
        queue = conn.queue
        parser = conn.parser
        while True:
            if not queue:
                conn.busy = False
                if conn.reader_done:
                    return
                if parser.phase == IDLE:
                    if self._draining:
                        return
                    conn.idle_since = trio.current_time()
                conn.worker_waiting = True
                await trio.lowlevel.wait_task_rescheduled(conn.abort_worker)
                continue
            item = queue.popleft()
            conn.busy = True
            conn.wake_reader()
            if type(item) is Request:
                if not await self._respond(conn, item):
                    return
            elif item is _CONTINUE:
                await conn.transport.send_all(_CONTINUE_BYTES)
            else:
                assert isinstance(item, _ErrorAnswer)
                await self._answer_error(conn, item)
                return

    async def _respond(self, conn: _Conn, req: Request) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        is_head = req.method == "HEAD"
        version = req.http_version
        if self._inflight >= self._limits.max_inflight:
            resp = self._error(429, "too many requests in flight")
            resp.headers = [*resp.headers, (b"retry-after", b"1")]
            head, body, _, keep, _ = self._prepare(resp, req.keep_alive, is_head, version)
            await self._send(conn, head, body)
            return keep
        self._inflight += 1
        try:
            try:
                resp = await self._handler(req)
                head, body, stream, keep, mode = self._prepare(resp, req.keep_alive, is_head, version)
            except Exception:
                log.exception("handler failed: %s %s", req.method, req.path)
                resp = self._error(500, "internal server error")
                head, body, stream, keep, mode = self._prepare(resp, req.keep_alive, is_head, version)
            if stream is None:
                await self._send(conn, head, body)
                return keep
            return await self._stream(conn, head, stream, mode) and keep
        finally:
            self._inflight -= 1

    def _error(self, status: int, reason: str) -> Response:
        try:
            resp = self._error_response(status, reason)
            if type(resp) is Response:
                return resp
            log.error("error_response returned %r, using the default", type(resp))
        except Exception:
            log.exception("error_response failed, using the default")
        return default_error_response(status, reason)

    def _prepare(
        self, resp: Response, keep: bool, is_head: bool, version: str
    ) -> tuple[bytes, bytes, AsyncIterable[bytes] | None, bool, int]:
        """Render the head of ``resp``.

        Returns (head, body bytes to send, streaming body or None, keep_alive, mode); the
        byte body is ``b""`` when none may be sent, and a streaming body comes with the
        mode that says how to send it (or to discard it, for HEAD, 204 and 304).  Raises
        ValueError or TypeError for a response that cannot be rendered (bad status, CR or
        LF inside a header, not a Response)."""
        if type(resp) is not Response:
            raise TypeError(f"handler returned {type(resp).__name__}, not Response")
        status = resp.status
        parts = [_STATUS_LINES.get(status) or _status_line(status)]
        lines = 2  # status line and the blank line
        given_length: bytes | None = None
        for name, value in resp.headers:
            lname = name.lower()
            if lname in _FRAMING:
                if lname == b"connection":
                    if b"close" in value.lower():
                        keep = False
                elif is_head and lname == b"content-length":
                    given_length = value
                continue
            parts += (name, b": ", value, b"\r\n")
            lines += 1
        if self._draining:
            keep = False
        body = resp.body
        no_body = status < 200 or status == 204 or status == 304
        stream: AsyncIterable[bytes] | None = None
        mode = _BYTES
        if isinstance(body, bytes | bytearray | memoryview):
            if not no_body:
                parts += (b"content-length: ", given_length or b"%d" % len(body), b"\r\n")
                lines += 1
            body = b"" if no_body or is_head else bytes(body) if type(body) is not bytes else body
        else:
            stream = body
            body = b""
            if no_body or is_head:
                mode = _DISCARD
                if given_length is not None and not no_body:
                    parts += (b"content-length: ", given_length, b"\r\n")
                    lines += 1
            elif version == "1.1":
                mode = _CHUNKED
                parts.append(b"transfer-encoding: chunked\r\n")
                lines += 1
            else:
                # HTTP/1.0 has no chunked coding: the body ends where the connection does.
                mode = _RAW
                keep = False
        if not keep:
            parts.append(b"connection: close\r\n")
            lines += 1
        elif version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
            lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise ValueError("CR or LF inside a response header")
        return head, body, stream, keep, mode

    async def _send(self, conn: _Conn, head: bytes, body: bytes) -> None:
        if len(body) <= _INLINE_BODY:
            await conn.transport.send_all(head + body if body else head)
        else:
            await conn.transport.send_all(head)
            await conn.transport.send_all(body)

    async def _stream(self, conn: _Conn, head: bytes, body: AsyncIterable[bytes], mode: int) -> bool:
        send_all = conn.transport.send_all
        await send_all(head)
        if mode == _DISCARD:
            await _aclose_iter(body)
            return True
        chunked = mode == _CHUNKED
        it = body.__aiter__()
        done = False
        try:
            while True:
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    break
                except Exception:
                    log.exception("streaming response body failed mid-stream")
                    return False
                if not chunk:
                    continue
                if not chunked:
                    await send_all(chunk)
                elif len(chunk) <= _INLINE_BODY:
                    await send_all(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    await send_all(b"%x\r\n" % len(chunk))
                    await send_all(chunk)
                    await send_all(b"\r\n")
            done = True
        finally:
            if not done:
                await _aclose_iter(it)
        if chunked:
            await send_all(b"0\r\n\r\n")
        return True

    async def _answer_error(self, conn: _Conn, item: _ErrorAnswer) -> None:
        head, body, stream, _, _ = self._prepare(self._error(item.status, item.reason), False, False, "1.1")
        if stream is not None:
            await _aclose_iter(stream)
        await self._send(conn, head, body)
        if conn.reader_done and await conn.transport.send_eof():
            # Lingering close: read what the client still sends, so that closing with
            # unread bytes does not reset the connection before it reads our answer.
            with trio.move_on_after(_LINGER_SECONDS):
                discarded = 0
                while discarded < _LINGER_BYTES:
                    data = await conn.transport.receive()
                    if not data:
                        break
                    discarded += len(data)
