"""Where a :class:`~nexus.net.nats.client.NatsClient` hands over messages: subscriptions and reply inboxes.

The client's reader calls ``_deliver`` (or sends into an inbox) without ever
waiting: each has a bounded buffer and drops what does not fit, so one slow
consumer cannot stall the connection every other one shares.

Resource handling: a :class:`Subscription` lives until ``unsubscribe`` (or the
client closes); an :class:`Inbox` until ``close``.  Both are sync context
managers.  Errors: reading a closed one raises ``NatsConnectionError``, a
deadline passing ``NatsTimeout`` (``Subscription.next_msg``) or returns None
(``Inbox.receive``).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import trio

from nexus.net.nats.errors import NatsConnectionError, NatsTimeout
from nexus.net.nats.protocol import Msg

if TYPE_CHECKING:
    from nexus.net.nats.client import NatsClient

__all__ = ["Inbox", "Subscription"]


class Subscription:
    """Messages on one subject, an async iterator of :class:`Msg` with a bounded buffer.

    Iteration ends after ``unsubscribe`` (or the client's ``aclose``, or a lost
    connection when made with ``resubscribe=False``) once the buffered messages
    are read.  A full buffer drops new messages and counts them in ``dropped``.
    Also a context manager that unsubscribes on exit.
    """

    def __init__(
        self,
        client: NatsClient,
        sid: int,
        subject: str,
        queue: str | None,
        max_pending: int,
        resubscribe: bool,
    ) -> None:
        self._client = client
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.resubscribe = resubscribe
        self.dropped = 0
        self._send, self._recv = trio.open_memory_channel[Msg](max_pending)

    def _deliver(self, msg: Msg) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1

    def _close(self) -> None:
        self._send.close()

    def unsubscribe(self) -> None:
        self._client._unsubscribe(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Msg:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def next_msg(self, timeout: float) -> Msg:
        """The next message: ``NatsTimeout`` after ``timeout`` s, ``NatsConnectionError`` once closed."""
        with trio.move_on_after(timeout):
            try:
                return await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise NatsConnectionError(f"subscription to {self.subject} is closed") from None
        raise NatsTimeout(f"no message on {self.subject} within {timeout} s")

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.unsubscribe()


class Inbox:
    """Replies addressed to ``subject`` or to ``subject + ".<anything>"``, via the shared inbox.

    Made by :meth:`NatsClient.inbox`; a sync context manager that unregisters
    it.  Holds at most ``capacity`` unread replies (more are dropped).  When the
    connection drops, ``receive`` raises ``NatsConnectionError``: replies
    cannot arrive on the next connection.
    """

    def __init__(self, client: NatsClient, token: str, capacity: int) -> None:
        self._client = client
        self.token = token
        self.subject = client._inbox_prefix + token
        self._send, self._recv = trio.open_memory_channel[Msg](capacity)

    async def receive(self, deadline: float) -> Msg | None:
        """The next reply, or None when ``trio.current_time()`` reaches ``deadline``."""
        with trio.move_on_at(deadline):
            try:
                return await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise NatsConnectionError("connection lost while waiting for a reply") from None
        return None

    def drain(self) -> list[Msg]:
        """Every reply already received, without waiting."""
        ready: list[Msg] = []
        while True:
            try:
                ready.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return ready

    def close(self) -> None:
        self._client._replies.pop(self.token, None)
        self._send.close()
        self._recv.close()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()
