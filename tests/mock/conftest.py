"""A mock provider on a loopback port, served in-process by our HTTP/1.1 server.

``serve_mock(**config)`` starts one with those ``MockProviderConfig`` fields and
returns its base URL; ``mock_url`` is one with the defaults.  Both stop when the
test ends (pytest-trio cancels the ``nursery`` fixture).  The official SDKs are
synchronous here, so tests call them through ``in_thread``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

from nexus.config.schema import MockProviderConfig
from nexus.mock.app import make_handler
from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Limits

T = TypeVar("T")
ServeMock = Callable[..., Awaitable[str]]


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


@pytest.fixture
def serve_mock(nursery: trio.Nursery) -> ServeMock:
    async def start(**config: Any) -> str:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        server = HttpServer(make_handler(MockProviderConfig(**config)), Limits())
        await nursery.start(server.serve, listeners)
        port = listeners[0].socket.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    return start


@pytest.fixture
async def mock_url(serve_mock: ServeMock) -> str:
    return await serve_mock()
