"""Helpers shared by the HTTP/1.1 server and client tests: a server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio

from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Handler, Limits, Response


@asynccontextmanager
async def serving(
    handler: Handler,
    limits: Limits | None = None,
    *,
    error_response: Callable[[int, str], Response] | None = None,
) -> AsyncIterator[tuple[HttpServer, int]]:
    """An HttpServer on 127.0.0.1:<ephemeral>, cancelled when the block ends."""
    server = HttpServer(handler, limits or Limits(), error_response=error_response)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await nursery.start(server.serve, listeners)
        yield server, port
        nursery.cancel_scope.cancel()


Serving = Callable[..., AbstractAsyncContextManager[tuple[HttpServer, int]]]


@pytest.fixture
def serve() -> Serving:
    """``async with serve(handler, limits) as (server, port)``."""
    return serving
