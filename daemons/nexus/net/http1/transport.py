"""The byte edge under the HTTP/1.1 server and client: one small interface, two backends.

``FdTransport`` drives a ``trio.SocketStream``'s non-blocking descriptor directly with
``os.read``/``os.write`` and ``trio.lowlevel.wait_readable``/``wait_writable``: a write
that fits in the kernel buffer costs one syscall and no trip through the scheduler, and
the write timeout costs nothing until a write would block.  ``StreamTransport`` wraps any
other ``trio.abc.Stream`` (``trio.SSLStream``, memory streams in tests).

Errors: every OS, Trio and TLS failure to move bytes becomes ``TransportError``; a
write that makes no progress for ``write_timeout`` seconds too.  Cancellation
propagates unchanged.  The transport does not own the stream: whoever made it closes
it (``aclose``, which is safe to call twice).
"""

from __future__ import annotations

import os
import select
from typing import Protocol

import trio

__all__ = ["FdTransport", "StreamTransport", "Transport", "TransportError", "make_transport"]

RECEIVE_SIZE = 64 * 1024
# Reads that find data waiting do not yield; after this many in a row, yield anyway so one
# busy connection cannot starve the others (or dodge its own deadline).
_READ_STREAK = 16
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)


class TransportError(Exception):
    """The connection broke, was reset, or stopped accepting bytes."""


class Transport(Protocol):
    async def receive(self) -> bytes | bytearray:
        """The next bytes from the peer; ``b""`` at end of stream."""
        ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_eof(self) -> bool:
        """Half-close the sending side where the stream allows it; False when it cannot."""
        ...

    def readable_now(self) -> bool:
        """True when bytes or EOF are already waiting (a pooled connection gone stale)."""
        ...

    async def aclose(self) -> None: ...


def _fd_is_readable(fd: int) -> bool:
    try:
        readable, _, _ = select.select((fd,), (), (), 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class FdTransport:
    __slots__ = ("_fd", "_streak", "_stream", "_write_timeout")

    def __init__(self, stream: trio.SocketStream, write_timeout: float) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._write_timeout = write_timeout
        self._streak = 0

    async def receive(self) -> bytes:
        fd = self._fd
        try:
            data = os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            self._streak = 0
            while True:
                await self._wait_readable()
                try:
                    return os.read(fd, RECEIVE_SIZE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise TransportError(str(exc)) from exc
        except OSError as exc:
            raise TransportError(str(exc)) from exc
        self._streak += 1
        if self._streak >= _READ_STREAK:
            self._streak = 0
            await trio.lowlevel.checkpoint()
        return data

    async def _wait_readable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._fd)
        except (trio.ClosedResourceError, trio.BusyResourceError, OSError) as exc:
            raise TransportError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise TransportError(str(exc)) from exc
        if sent < len(data):
            await self._send_rest(memoryview(data)[sent:])

    async def _send_rest(self, view: memoryview) -> None:
        with trio.CancelScope() as scope:
            while view:
                scope.deadline = trio.current_time() + self._write_timeout
                try:
                    await trio.lowlevel.wait_writable(self._fd)
                    sent = os.write(self._fd, view)
                except BlockingIOError:
                    continue
                except (trio.ClosedResourceError, trio.BusyResourceError, OSError) as exc:
                    raise TransportError(str(exc)) from exc
                view = view[sent:]
        if scope.cancelled_caught:
            raise TransportError("write timed out")

    async def send_eof(self) -> bool:
        try:
            await self._stream.send_eof()
        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.BusyResourceError, OSError):
            return False
        return True

    def readable_now(self) -> bool:
        return _fd_is_readable(self._fd)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


class StreamTransport:
    __slots__ = ("_fd", "_stream", "_write_timeout")

    def __init__(self, stream: trio.abc.Stream, write_timeout: float) -> None:
        self._stream = stream
        self._write_timeout = write_timeout
        self._fd = _underlying_fd(stream)

    async def receive(self) -> bytes | bytearray:
        try:
            return await self._stream.receive_some(RECEIVE_SIZE)
        except _STREAM_ERRORS as exc:
            raise TransportError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._write_timeout) as scope:
            try:
                await self._stream.send_all(data)
            except _STREAM_ERRORS as exc:
                raise TransportError(str(exc)) from exc
        if scope.cancelled_caught:
            raise TransportError("write timed out")

    async def send_eof(self) -> bool:
        if not isinstance(self._stream, trio.abc.HalfCloseableStream):
            return False
        try:
            await self._stream.send_eof()
        except _STREAM_ERRORS:
            return False
        return True

    def readable_now(self) -> bool:
        # Only the raw socket can be polled; a TLS record waiting there (a late session
        # ticket, a close_notify) reads as stale, which costs a reconnect, never a
        # wrong answer.
        return self._fd >= 0 and _fd_is_readable(self._fd)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


def _underlying_fd(stream: trio.abc.Stream) -> int:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket.fileno()
    return -1


def make_transport(stream: trio.abc.Stream, write_timeout: float) -> FdTransport | StreamTransport:
    """The fastest transport for ``stream``."""
    if type(stream) is trio.SocketStream:
        return FdTransport(stream, write_timeout)
    return StreamTransport(stream, write_timeout)
