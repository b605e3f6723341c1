"""NATS client on Trio: one connection, subscriptions, request/reply, reconnect.

:class:`NatsClient` is the Trio shell around :mod:`nexus.net.nats.protocol`.
``run`` is its long-lived task (``await nursery.start(client.run)``): it reports
started at once, so a daemon starts while NATS is down, then connects, serves
the connection and reconnects with capped exponential backoff and jitter for as
long as it runs.  Per connection it runs three tasks: a reader (parse, dispatch,
answer server PINGs), a writer (sends whatever accumulated in the output buffer
in one ``send_all``, so a burst of PUBs costs one syscall) and a keepalive that
declares the connection stale when a PING goes unanswered for ``ping_interval``.
After a reconnect every live subscription is subscribed again before anything
else is sent.  One server URL: the cluster URLs a server advertises in INFO
are not used for failover.

Delivery is core NATS: at most once.  Publishing while disconnected raises
:class:`NatsConnectionError` at once instead of buffering; bytes still in the
output buffer when a connection drops are discarded.  Use JetStream for
at-least-once.  A subscription whose buffer is full drops new messages (counted
in ``Subscription.dropped``) rather than stalling every other subscription on
the connection.  ``max_pending_bytes`` bounds the output buffer: past it,
``publish`` waits for the writer (or raises when the connection drops).

Echo stays on (``echo: true`` in CONNECT): a daemon must see its own change
signals on subjects it both publishes and subscribes to, so replicas and the
publishing process react the same way.

Requests share one wildcard inbox subscription (``_INBOX.<client id>.>``), muxed
by the token after the prefix; ``no_responders`` is on, so a request nobody
listens to fails at once with :class:`NatsNoResponders` instead of timing out.

Resource handling: the client owns its socket; ``run`` closes it when a
connection ends and when ``run`` itself is cancelled.  ``aclose`` flushes what
is buffered (bounded by ``connect_timeout``), stops ``run`` and ends every
subscription's iteration.

Error handling: network and TLS errors end the connection and are logged, never
propagated out of ``run``; callers see :class:`NatsConnectionError` (not
connected, or lost mid-operation), :class:`NatsTimeout`, :class:`NatsNoResponders`
and ``ValueError`` for a subject or header that would break the framing.
Authentication failures (``-ERR 'Authorization Violation'``) show in ``state``
and are retried with backoff like any other failed connect.  Only the server's
"Permissions Violation" errors leave the connection up; they are logged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import random
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
import trio

from nexus.net.nats.errors import (
    NatsConnectionError,
    NatsError,
    NatsNoResponders,
    NatsProtocolError,
    NatsTimeout,
)
from nexus.net.nats.protocol import (
    DEFAULT_MAX_PAYLOAD,
    PING,
    PONG,
    Err,
    Info,
    Msg,
    Parser,
    Ping,
    Pong,
    encode_connect,
    encode_pub,
    encode_sub,
    encode_unsub,
)
from nexus.net.nats.subscription import Inbox, Subscription
from nexus.runtime.dependency import DependencyState

__all__ = ["Inbox", "Msg", "NatsClient", "Subscription"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 4222
_READ_SIZE = 256 * 1024
# Past this many buffered bytes a publisher yields once, so the writer runs
# even when a producer publishes in a loop that never blocks.
_SOFT_PENDING = 64 * 1024
_INBOX_SID = 1


@attrs.frozen
class _Target:
    host: str
    port: int
    tls: bool
    user: str | None
    password: str | None = attrs.field(repr=False)
    token: str | None = attrs.field(repr=False)

    @property
    def display(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        # Not the URL itself: it may carry a password.
        raise ValueError(f"NATS URL must be nats:// or tls://, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError("NATS URL has no host")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    token = None
    if user is not None and password is None:
        user, token = None, user
    return _Target(parts.hostname, parts.port or DEFAULT_PORT, parts.scheme == "tls", user, password, token)


def _describe(exc: BaseException) -> str:
    # trio raises BrokenResourceError from the SSL or OS error, often with no text of its own.
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if cause is not None:
        text = f"{text} ({cause})"
    return text


class _Lost(Exception):
    """The current connection is unusable; the message says why."""


class _PongWaiter:
    __slots__ = ("event", "lost")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.lost = False


class NatsClient:
    """A NATS connection that survives server restarts; see the module docstring.

    ``url`` is ``nats://[user:pass@|token@]host[:port]`` or ``tls://...`` (TLS
    through ``trio.SSLStream`` with certificate and host name verification, using
    ``ssl_context`` or the system's default trust store).  A ``nats://`` server
    that requires TLS is upgraded the same way.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "nexus",
        connect_timeout: float = 2.0,
        ping_interval: float = 10.0,
        max_pending_bytes: int = 64 * 1024 * 1024,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        dependency: str = "nats",
    ) -> None:
        self._target = _parse_url(url)
        self.name = name
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._max_pending_bytes = max_pending_bytes
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._ssl_context = ssl_context
        self._state = DependencyState(name=dependency)

        self._server_info: Mapping[str, Any] = {}
        self._max_payload = DEFAULT_MAX_PAYLOAD
        # _wired: a connection's writer is running, so SUB/UNSUB go out now;
        # _connected: its handshake finished, so publishing is allowed.
        self._wired = False
        self._connected = False
        self._closed = False
        self._running = False
        self._ready = trio.Event()
        self._run_done = trio.Event()
        self._run_scope: trio.CancelScope | None = None
        self._conn_scope: trio.CancelScope | None = None
        self._lost_reason: str | None = None

        self._out = bytearray()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._pongs: collections.deque[_PongWaiter] = collections.deque()

        self._subs: dict[int, Subscription] = {}
        self._next_sid = _INBOX_SID + 1
        self._id = secrets.token_hex(11)
        self._inbox_prefix = f"_INBOX.{self._id}."
        self._replies: dict[str, trio.MemorySendChannel[Msg]] = {}
        self._next_token = 0
        self._next_inbox = 0

    # ----------------------------------------------------------------- status

    @property
    def state(self) -> DependencyState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def server_info(self) -> Mapping[str, Any]:
        """The last INFO the server sent (empty before the first connection)."""
        return self._server_info

    async def wait_ready(self, timeout: float | None) -> bool:
        """True once connected (at once if already), False if ``timeout`` s pass first (None: no limit)."""
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._ready.wait()
            return True
        return False

    # ------------------------------------------------------------- publishing

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        reply: str | None = None,
    ) -> None:
        """Queue a PUB (HPUB with ``headers``) for the writer; see the module docstring for delivery."""
        frame = encode_pub(subject, payload, reply, headers, self._max_payload)
        if len(self._out) >= self._max_pending_bytes:
            await self._wait_for_space()
        self._enqueue(frame)
        if len(self._out) > _SOFT_PENDING:
            await trio.lowlevel.checkpoint()

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until the server has processed everything sent so far (a PING/PONG round trip)."""
        waiter = _PongWaiter()
        self._enqueue(PING)
        self._pongs.append(waiter)
        with trio.move_on_after(timeout):
            await waiter.event.wait()
        if waiter.lost:
            raise NatsConnectionError(f"connection lost during flush: {self._state.detail}")
        if not waiter.event.is_set():
            raise NatsTimeout(f"no PONG within {timeout} s")

    def _enqueue(self, frame: bytes) -> None:
        if not self._connected:
            raise NatsConnectionError(f"NATS not connected: {self._state.detail}")
        self._out += frame
        if self._writer_lot:
            self._writer_lot.unpark()

    async def _wait_for_space(self) -> None:
        while len(self._out) >= self._max_pending_bytes:
            if not self._connected:
                raise NatsConnectionError(f"NATS not connected: {self._state.detail}")
            await self._space_lot.park()

    # ----------------------------------------------------------- subscribing

    def subscribe(
        self, subject: str, queue: str | None = None, *, max_pending: int = 4096, resubscribe: bool = True
    ) -> Subscription:
        """Subscribe now if connected, else on the next connect.

        With ``resubscribe`` (the default) the subscription is renewed after
        every reconnect; without, a lost connection ends it, for subscriptions
        that only make sense on one connection (a pull's reply subject).
        """
        if self._closed:
            raise NatsConnectionError("NATS client is closed")
        sid = self._next_sid
        frame = encode_sub(subject, sid, queue)
        self._next_sid += 1
        sub = Subscription(self, sid, subject, queue, max_pending, resubscribe)
        self._subs[sid] = sub
        if self._wired:
            self._out += frame
            self._writer_lot.unpark()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.sid, None) is None:
            return
        sub._close()
        if self._wired:
            self._out += encode_unsub(sub.sid)
            self._writer_lot.unpark()

    # ----------------------------------------------------------------- replies

    def new_inbox(self) -> str:
        """A unique subject for a subscription of its own, outside the shared inbox's wildcard.

        Replies that keep their original subject (JetStream deliveries) cannot
        be routed by the shared inbox, whose mux reads the token in the subject.
        """
        self._next_inbox += 1
        return f"_INBOX.{self._id}-{self._next_inbox:x}"

    def inbox(self, capacity: int = 1) -> Inbox:
        """A fresh reply subject on the shared inbox subscription (see :class:`Inbox`)."""
        self._next_token += 1
        box = Inbox(self, format(self._next_token, "x"), capacity)
        self._replies[box.token] = box._send
        return box

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        timeout: float = 2.0,
    ) -> Msg:
        """Publish with a reply subject and return the first reply.

        Raises ``NatsNoResponders`` when nobody subscribes to ``subject``,
        ``NatsTimeout`` when no reply comes within ``timeout`` s and
        ``NatsConnectionError`` when not connected or the connection drops.
        """
        with self.inbox() as box:
            await self.publish(subject, payload, headers, box.subject)
            msg = await box.receive(trio.current_time() + timeout)
        if msg is None:
            raise NatsTimeout(f"no reply on {subject} within {timeout} s")
        if msg.status == 503:
            raise NatsNoResponders(f"no responders on {subject}")
        return msg

    # ------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and stay connected until cancelled or ``aclose``; started() is immediate."""
        if self._running:
            raise RuntimeError("NatsClient.run is already running")
        self._running = True
        try:
            with trio.CancelScope() as scope:
                self._run_scope = scope
                if self._closed:
                    scope.cancel()
                task_status.started()
                attempt = 0
                while True:
                    was_up = await self._connection()
                    attempt = 0 if was_up else attempt + 1
                    delay = min(self._reconnect_max, self._reconnect_min * 2.0 ** min(attempt, 30))
                    await trio.sleep(random.uniform(delay / 2, delay))
        finally:
            self._running = False
            self._run_done.set()

    async def aclose(self) -> None:
        """Flush (bounded by ``connect_timeout``), stop ``run`` and end every subscription."""
        if self._closed:
            return
        if self._connected:
            try:
                await self.flush(self._connect_timeout)
            except NatsError as exc:
                log.warning("nats: flush on close failed: %s", exc)
        self._closed = True
        for sub in list(self._subs.values()):
            sub._close()
        self._subs.clear()
        if self._run_scope is not None:
            self._run_scope.cancel()
        if self._running:
            await self._run_done.wait()
        self._state.mark_down("closed")

    async def __aenter__(self) -> NatsClient:
        return self

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        await self.aclose()

    # ------------------------------------------------------------ connection

    async def _connection(self) -> bool:
        """Connect, serve until the connection ends; True if the handshake had succeeded."""
        target = self._target
        parser = Parser()
        stream: trio.abc.Stream | None = None
        was_up = False
        self._lost_reason = None
        try:
            try:
                with trio.fail_after(self._connect_timeout):
                    stream = await trio.open_tcp_stream(target.host, target.port)
                    info = await self._read_info(stream, parser)
                    if target.tls or info.get("tls_required"):
                        stream = await self._start_tls(stream)
            except trio.TooSlowError:
                self._lost(f"connect to {target.display} timed out after {self._connect_timeout} s")
                return False
            except (OSError, trio.BrokenResourceError, NatsError, _Lost) as exc:
                self._lost(f"connect to {target.display} failed: {_describe(exc)}")
                return False
            with trio.CancelScope() as scope:
                self._conn_scope = scope
                async with trio.open_nursery() as nursery:
                    handshake = self._wire(info)
                    nursery.start_soon(self._guard, self._reader, stream, parser)
                    nursery.start_soon(self._guard, self._writer, stream)
                    with trio.move_on_after(self._connect_timeout):
                        await handshake.event.wait()
                    if not handshake.event.is_set():
                        self._lost(f"no PONG from {target.display} within {self._connect_timeout} s")
                    else:
                        was_up = True
                        self._connected = True
                        self._ready.set()
                        self._state.mark_up(f"connected to {target.display} ({info.get('version', '?')})")
                        log.info("nats: connected to %s", target.display)
                        nursery.start_soon(self._guard, self._pinger)
            return was_up
        finally:
            self._unwire()
            self._conn_scope = None
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _read_info(self, stream: trio.abc.Stream, parser: Parser) -> Mapping[str, Any]:
        while True:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                raise _Lost("server closed the connection before INFO")
            events = parser.feed(data)
            if events:
                first = events[0]
                if not isinstance(first, Info):
                    raise NatsProtocolError(f"expected INFO, got {first!r}")
                self._server_info = first.info
                self._max_payload = int(first.info.get("max_payload", DEFAULT_MAX_PAYLOAD))
                return first.info

    async def _start_tls(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        tls = trio.SSLStream(stream, self._ssl_context, server_hostname=self._target.host)
        await tls.do_handshake()
        return tls

    def _wire(self, info: Mapping[str, Any]) -> _PongWaiter:
        """Queue CONNECT, the SUB of every live subscription and the handshake PING."""
        target = self._target
        options: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": target.tls or bool(info.get("tls_required")),
            "name": self.name,
            "lang": "python-trio",
            "version": "nexus",
            "protocol": 1,
            "headers": True,
            "no_responders": True,
            "echo": True,
        }
        if target.user is not None:
            options["user"] = target.user
            options["pass"] = target.password
        if target.token is not None:
            options["auth_token"] = target.token
        out = bytearray(encode_connect(options))
        out += encode_sub(f"{self._inbox_prefix}>", _INBOX_SID)
        for sub in self._subs.values():
            out += encode_sub(sub.subject, sub.sid, sub.queue)
        out += PING
        waiter = _PongWaiter()
        self._pongs.append(waiter)
        self._out = out
        self._wired = True
        return waiter

    def _unwire(self) -> None:
        # No reason means ``run`` was cancelled: the owner is stopping, nothing was lost.
        reason = self._lost_reason or "stopped"
        if self._connected and self._lost_reason is not None and not self._closed:
            log.warning("nats: connection to %s lost: %s", self._target.display, reason)
        self._wired = False
        self._connected = False
        self._out = bytearray()
        while self._pongs:
            waiter = self._pongs.popleft()
            waiter.lost = True
            waiter.event.set()
        for send in self._replies.values():
            send.close()
        self._replies.clear()
        for sid in [sid for sid, sub in self._subs.items() if not sub.resubscribe]:
            self._subs.pop(sid)._close()
        self._space_lot.unpark_all()
        if self._ready.is_set():
            self._ready = trio.Event()
        if not self._closed:
            self._state.mark_down(reason)

    def _lost(self, reason: str) -> None:
        """Record why the connection ended (the first reason wins) and cancel its tasks."""
        if self._lost_reason is None:
            self._lost_reason = reason
            # While down, log each new reason once, not every retry.
            if not self._connected and reason != self._state.detail:
                log.info("nats: %s", reason)
        if self._conn_scope is not None:
            self._conn_scope.cancel()

    async def _guard(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await fn(*args)
        except (_Lost, NatsError) as exc:
            self._lost(str(exc))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._lost(f"connection error: {_describe(exc)}")

    async def _reader(self, stream: trio.abc.Stream, parser: Parser) -> None:
        subs = self._subs
        replies = self._replies
        prefix = self._inbox_prefix
        cut = len(prefix)
        while True:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                raise _Lost("server closed the connection")
            for event in parser.feed(data):
                if type(event) is Msg:
                    if event.sid == _INBOX_SID:
                        send = replies.get(event.subject[cut:].partition(".")[0])
                        if send is not None:
                            # A full or closed inbox drops the reply, as a full subscription does.
                            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                                send.send_nowait(event)
                    else:
                        sub = subs.get(event.sid)
                        if sub is not None:
                            sub._deliver(event)
                elif type(event) is Pong:
                    if self._pongs:
                        self._pongs.popleft().event.set()
                elif isinstance(event, Info):
                    self._server_info = event.info
                    self._max_payload = int(event.info.get("max_payload", self._max_payload))
                elif isinstance(event, Err):
                    if event.message.lower().startswith("permissions violation"):
                        log.warning("nats: server refused: %s", event.message)
                    else:
                        raise _Lost(f"server error: {event.message}")
                elif type(event) is Ping:
                    self._out += PONG
                    self._writer_lot.unpark()

    async def _writer(self, stream: trio.abc.Stream) -> None:
        while True:
            while not self._out:
                await self._writer_lot.park()
            data, self._out = self._out, bytearray()
            self._space_lot.unpark_all()
            await stream.send_all(data)

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self._ping_interval)
            try:
                await self.flush(self._ping_interval)
            except NatsTimeout:
                raise _Lost(f"stale connection: no PONG within {self._ping_interval} s") from None

