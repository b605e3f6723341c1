"""Valkey/Redis client on Trio streams: a connection pool, pipelining, EVALSHA, reconnects.

``ValkeyClient`` is the Trio shell around the pure codec in ``codec.py``.  A
daemon starts ``client.run`` with ``nursery.start``; it returns at once and then
keeps one dedicated health connection, pinging it every ``health_interval``
seconds and reconnecting with capped, jittered exponential backoff.  ``state``
(a ``DependencyState``) follows it for ``/readyz``.  Commands never use the
health connection: they take a pooled one, one task per connection at a time,
so replies never interleave.

While ``run`` has found the server down, commands fail at once with
``ValkeyConnectionError`` instead of each waiting out a connect attempt; they
flow again as soon as the health task reconnects.  Without ``run`` (a CLI, a
test) the pool connects on demand and ``state`` stays "not connected".

Resource handling: the client owns every socket it opens.  A connection that
saw a timeout, a cancellation, an I/O error or a protocol error is closed at
once and never returned to the pool; a lost connection (EOF, reset) also closes
the idle ones, which most likely died with it, and wakes the health task.
``aclose`` closes the idle and health connections and makes ``run`` return;
connections in use are closed when their command finishes.

Error handling: a server error reply raises ``ValkeyError`` (inside a pipeline
it is returned in the result list instead).  Everything else — refused,
unreachable, reset, EOF, TLS failure, no reply within ``command_timeout``, no
free pooled connection within ``command_timeout`` — raises
``ValkeyConnectionError`` (``ValkeyAuthError`` when AUTH is refused), with the
Trio or OS error as ``__cause__``.  Messages name host and port, never the
password.  Cancellation propagates unchanged (the connection is dropped).
"""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

import trio

from nexus.net.resp.codec import (
    NEED_DATA,
    Arg,
    ReplyParser,
    Script,
    ValkeyAuthError,
    ValkeyConnectionError,
    ValkeyError,
    ValkeyProtocolError,
    encode_command,
    encode_pipeline,
    parse_url,
)
from nexus.runtime.dependency import DependencyState

# The codec's errors and Script are re-exported: callers import everything from here.
__all__ = [
    "Script",
    "ValkeyAuthError",
    "ValkeyClient",
    "ValkeyConnectionError",
    "ValkeyError",
    "ValkeyProtocolError",
]

_RECV_SIZE: Final = 65536
_PING: Final = encode_command((b"PING",))
_BACKOFF_INITIAL: Final = 0.05
# Any error answering AUTH is an auth failure; these codes are one on other commands.
_AUTH_CODES: Final = frozenset({"NOAUTH", "WRONGPASS", "NOPERM"})
_IO_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def _describe(exc: BaseException) -> str:
    # Trio's BrokenResourceError is often empty and open_tcp_stream's OSError
    # generic; the OS or TLS error that says why is in the cause.
    text = str(exc)
    cause = exc.__cause__
    if cause is None:
        return text or type(exc).__name__
    if isinstance(cause, BaseExceptionGroup):
        detail = "; ".join(str(sub) for sub in cause.exceptions)
    else:
        detail = f"{type(cause).__name__}: {cause}"
    return f"{text} ({detail})" if text else detail


class _Connection:
    """One socket with its reply parser; used by one task at a time."""

    __slots__ = ("feed", "gets", "sock", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        parser = ReplyParser()
        self.feed = parser.feed
        self.gets = parser.gets

    def close(self) -> None:
        # Closing the socket directly is synchronous, so dropping a connection
        # never awaits (it happens in except paths, under cancellation too).
        # A TLS stream skips close_notify, which Valkey does not need.
        self.sock.close()

    async def read_reply(self) -> Any:
        gets = self.gets
        reply = gets()
        while reply is NEED_DATA:
            data = await self.stream.receive_some(_RECV_SIZE)
            if not data:
                raise ValkeyConnectionError("connection closed by the server")
            self.feed(data)
            reply = gets()
        return reply

    async def read_replies(self, count: int) -> list[Any]:
        gets = self.gets
        replies: list[Any] = []
        while len(replies) < count:
            reply = gets()
            if reply is NEED_DATA:
                data = await self.stream.receive_some(_RECV_SIZE)
                if not data:
                    raise ValkeyConnectionError("connection closed by the server")
                self.feed(data)
            else:
                replies.append(reply)
        return replies


class ValkeyClient:
    """A pooled Valkey/Redis client; see the module docstring for the lifecycle.

    Args:
      url: ``redis://[user:password@]host[:port][/db]``; ``rediss://`` for TLS
        (certificate and host name verified unless ``ssl_context`` says
        otherwise); ``valkey://`` and ``valkeys://`` are aliases.
      pool_size: most connections used by commands at once; more callers wait
        for one, within ``command_timeout``.  The health task adds one more.
      connect_timeout: bound on TCP connect, TLS handshake, AUTH and SELECT.
      command_timeout: bound on one ``execute``/``pipeline``/``evalsha`` call,
        from waiting for a connection to the last reply.
      name: the dependency name in ``state`` and in error messages.
      health_interval: seconds between health pings while connected.
      backoff_max: cap on the wait between reconnect attempts.
      client_name: sent as ``CLIENT SETNAME`` on every connection.
      ssl_context: for ``rediss://`` URLs, instead of the system default.

    Every command runs on whichever pooled connection is free, so commands that
    change a connection's state (SELECT, AUTH, SUBSCRIBE, MONITOR, CLIENT REPLY,
    a MULTI not closed by EXEC in the same pipeline) must not be sent: the next
    caller would inherit that state.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        connect_timeout: float = 2.0,
        command_timeout: float = 2.0,
        name: str = "valkey",
        health_interval: float = 1.0,
        backoff_max: float = 2.0,
        client_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        endpoint = parse_url(url)
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        for label, value in (("connect_timeout", connect_timeout), ("command_timeout", command_timeout),
                             ("health_interval", health_interval), ("backoff_max", backoff_max)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a positive number of seconds, got {value}")
        if client_name is not None and (not client_name or any(c.isspace() for c in client_name)):
            raise ValueError(f"client_name must be one word, got {client_name!r}")
        if endpoint.tls:
            self._ssl_context: ssl.SSLContext | None = ssl_context or ssl.create_default_context()
        elif ssl_context is not None:
            raise ValueError("ssl_context given for a plain-text URL; use rediss://")
        else:
            self._ssl_context = None
        self.endpoint = endpoint
        self.name = name
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.health_interval = health_interval
        self.backoff_max = backoff_max
        self._where = f"{endpoint.host}:{endpoint.port}"

        handshake = endpoint.handshake()
        if client_name is not None:
            handshake.insert(len(handshake) - 1, (b"CLIENT", b"SETNAME", client_name.encode()))
        self._handshake = encode_pipeline(handshake)
        self._handshake_names = [command[0].decode() for command in handshake]

        self._state = DependencyState(name)
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(pool_size, max_value=pool_size)
        # Why commands are refused without trying (server down per run(), or
        # closed); None while they may go ahead.  One check on the hot path.
        self._refusal: str | None = None
        self._closed = False
        self._running = False
        self._ready = trio.Event()
        self._wake = trio.Event()
        self._closing = trio.Event()
        self._health: _Connection | None = None

    # -- public API ---------------------------------------------------------

    @property
    def state(self) -> DependencyState:
        return self._state

    async def execute(self, *args: Arg) -> Any:
        """Run one command and return its reply; an error reply raises ``ValkeyError``."""
        reply = await self._request(encode_command(args), 0)
        if isinstance(reply, ValkeyError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send all commands in one write on one connection; return their replies in order.

        An error reply is returned as a ``ValkeyError`` instance at its place in
        the list, not raised.  A connection failure raises for the whole
        pipeline, and some of its commands may have run.
        """
        if not commands:
            return []
        replies: list[Any] = await self._request(encode_pipeline(commands), len(commands))
        return replies

    async def evalsha(self, script: Script, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """EVALSHA the script; on NOSCRIPT load it and retry once, in one round trip."""
        call = script.encode_evalsha(keys, args)
        reply = await self._request(call, 0)
        if isinstance(reply, ValkeyError):
            if reply.code != "NOSCRIPT":
                raise reply
            # The server did not run it, so the retry cannot run it twice.
            loaded, reply = await self._request(script.load_command + call, 2)
            if isinstance(loaded, ValkeyError):
                raise loaded
            if isinstance(reply, ValkeyError):
                raise reply
        return reply

    async def load_script(self, script: Script) -> None:
        """SCRIPT LOAD ahead of time, so the first ``evalsha`` needs no retry."""
        reply = await self._request(script.load_command, 0)
        if isinstance(reply, ValkeyError):
            raise reply

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the health connection up and ``state`` current until cancelled or closed."""
        if self._running:
            raise RuntimeError(f"{self.name}: run() is already running")
        self._running = True
        task_status.started()
        try:
            await self._supervise()
        finally:
            self._running = False
            if not self._closed:
                # Nobody reconnects any more, so commands go back to connecting
                # on their own rather than being refused forever.
                self._refusal = None

    # The signature is the runtime's Dependency protocol, hence a timeout argument.
    async def wait_ready(self, timeout: float | None) -> bool:
        """Wait until ``run`` has a working connection; False if ``timeout`` passes first."""
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._ready.wait()
            return True
        return False

    async def aclose(self) -> None:
        """Close idle and health connections, refuse new commands, make ``run`` return."""
        if not self._closed:
            self._closed = True
            self._refusal = f"{self.name}: client closed"
            self._flush_idle()
            if self._health is not None:
                self._health.close()
            self._closing.set()
            self._wake.set()
            self._mark_down("closed")
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ValkeyClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- command path -------------------------------------------------------

    async def _request(self, data: bytes, count: int) -> Any:
        """Send ``data``; return one reply (``count`` 0) or a list of ``count`` replies."""
        if self._refusal is not None:
            raise ValkeyConnectionError(self._refusal)
        conn: _Connection | None = None
        with trio.CancelScope(deadline=trio.current_time() + self.command_timeout):
            conn = await self._acquire()
            try:
                await conn.stream.send_all(data)
                reply = await (conn.read_reply() if count == 0 else conn.read_replies(count))
            except _IO_ERRORS as exc:
                self._lost(conn)
                raise ValkeyConnectionError(
                    f"{self.name}: connection to {self._where} lost: {_describe(exc)}"
                ) from exc
            except ValkeyConnectionError as exc:
                self._lost(conn)
                raise type(exc)(f"{self.name}: {self._where}: {exc}") from exc
            except BaseException:
                # Timeout or cancellation mid-command: a late reply would be
                # read as the next command's, so the connection goes.
                self._discard(conn)
                raise
            if self._closed:
                self._discard(conn)
            else:
                self._idle.append(conn)
                self._slots.release()
            return reply
        if conn is None:
            raise ValkeyConnectionError(
                f"{self.name}: could not get a connection to {self._where} within {self.command_timeout}s "
                f"(pool_size {self.pool_size})"
            )
        raise ValkeyConnectionError(
            f"{self.name}: no reply from {self._where} within {self.command_timeout}s"
        )

    async def _acquire(self) -> _Connection:
        slots = self._slots
        # Skip the extra checkpoints of Semaphore.acquire when a slot is free:
        # send_all checkpoints right after anyway.
        if slots.value:
            slots.acquire_nowait()
        else:
            await slots.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            return await self._open()
        except BaseException as exc:
            slots.release()
            if isinstance(exc, ValkeyConnectionError):
                self._wake.set()
            raise

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._slots.release()

    def _lost(self, conn: _Connection) -> None:
        self._discard(conn)
        self._flush_idle()
        self._wake.set()

    def _flush_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connecting ---------------------------------------------------------

    async def _open(self) -> _Connection:
        """A new connection with AUTH/SELECT done, within ``connect_timeout``."""
        endpoint = self.endpoint
        try:
            with trio.fail_after(self.connect_timeout):
                tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                try:
                    stream: trio.abc.Stream = tcp
                    if self._ssl_context is not None:
                        tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=endpoint.host)
                        await tls.do_handshake()
                        stream = tls
                    conn = _Connection(stream, tcp.socket)
                    await stream.send_all(self._handshake)
                    replies = await conn.read_replies(len(self._handshake_names))
                except BaseException:
                    tcp.socket.close()
                    raise
        except trio.TooSlowError:
            raise ValkeyConnectionError(
                f"{self.name}: connecting to {self._where} timed out after {self.connect_timeout}s"
            ) from None
        except _IO_ERRORS as exc:
            raise ValkeyConnectionError(
                f"{self.name}: cannot connect to {self._where}: {_describe(exc)}"
            ) from exc
        except ValkeyConnectionError as exc:
            raise type(exc)(f"{self.name}: handshake with {self._where} failed: {exc}") from exc
        for command, reply in zip(self._handshake_names, replies, strict=True):
            if isinstance(reply, ValkeyError):
                conn.close()
                if command == "AUTH" or reply.code in _AUTH_CODES:
                    raise ValkeyAuthError(
                        f"{self.name}: authentication to {self._where} failed: {reply.message}"
                    ) from reply
                raise ValkeyConnectionError(
                    f"{self.name}: {command} on {self._where} failed: {reply.message}"
                ) from reply
        return conn

    # -- health -------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = _BACKOFF_INITIAL
        while not self._closed:
            try:
                conn = await self._open()
            except ValkeyConnectionError as exc:
                if self._closed:
                    return
                self._mark_down(str(exc))
                with trio.move_on_after(backoff * (0.5 + 0.5 * random.random())):
                    await self._closing.wait()
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if self._closed:
                # aclose() ran while this connection was being opened.
                conn.close()
                return
            backoff = _BACKOFF_INITIAL
            self._health = conn
            try:
                self._mark_up()
                await self._watch(conn)
            except ValkeyConnectionError as exc:
                if not self._closed:
                    self._mark_down(str(exc))
                    self._flush_idle()
            finally:
                self._health = None
                conn.close()

    async def _watch(self, conn: _Connection) -> None:
        """Ping every ``health_interval``, or at once when a command lost its connection."""
        while True:
            with trio.move_on_after(self.health_interval):
                await self._wake.wait()
            if self._closed:
                return
            if self._wake.is_set():
                self._wake = trio.Event()
            try:
                with trio.fail_after(self.command_timeout):
                    await conn.stream.send_all(_PING)
                    reply = await conn.read_reply()
            except trio.TooSlowError:
                raise ValkeyConnectionError(
                    f"{self.name}: no answer to PING from {self._where} within {self.command_timeout}s"
                ) from None
            except _IO_ERRORS as exc:
                raise ValkeyConnectionError(
                    f"{self.name}: connection to {self._where} lost: {_describe(exc)}"
                ) from exc
            except ValkeyConnectionError as exc:
                raise type(exc)(f"{self.name}: {self._where}: {exc}") from exc
            if isinstance(reply, ValkeyError):
                raise ValkeyConnectionError(f"{self.name}: PING on {self._where} failed: {reply.message}")

    def _mark_up(self) -> None:
        self._refusal = None
        self._state.mark_up()
        self._ready.set()

    def _mark_down(self, detail: str) -> None:
        if not self._closed:
            self._refusal = f"{self.name} unavailable: {detail}"
        self._state.mark_down(detail)
        if self._ready.is_set():
            self._ready = trio.Event()
