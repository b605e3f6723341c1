"""Fixtures for the NATS client tests: a running client, and nats-py as an independent peer.

nats-py is asyncio, so the peer runs its own event loop in a thread and the Trio
tests hand it coroutines through ``trio.to_thread``.  (No ``__init__.py`` here:
it would make this folder a package named ``nats`` that shadows nats-py.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import nats
import pytest
import trio
from nats.aio.client import Client

from nexus.net.nats.client import NatsClient

T = TypeVar("T")


class NatsPyPeer:
    """A nats-py connection on an asyncio loop of its own thread."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-py", daemon=True)
        self._thread.start()
        self.nc: Client = self.run(nats.connect(url, allow_reconnect=False, connect_timeout=5))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def do(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Await ``coro`` on the peer's loop without blocking Trio."""
        return await trio.to_thread.run_sync(self.run, coro, timeout)

    def close(self) -> None:
        try:
            if not self.nc.is_closed:
                self.run(self.nc.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@pytest.fixture
def nats_py() -> Iterator[Callable[[str], NatsPyPeer]]:
    """Connect nats-py peers to any URL; all are closed after the test.

    Tests annotate peers as ``Any``: importing this class from ``conftest``
    would pick whichever conftest module pytest loaded last.
    """
    peers: list[NatsPyPeer] = []

    def connect(url: str) -> NatsPyPeer:
        peers.append(NatsPyPeer(url))
        return peers[-1]

    yield connect
    for p in peers:
        p.close()


@pytest.fixture
def peer(nats_url: str, nats_py: Callable[[str], NatsPyPeer]) -> NatsPyPeer:
    return nats_py(nats_url)


@pytest.fixture
async def client(nats_url: str, nursery: trio.Nursery) -> AsyncIterator[NatsClient]:
    c = NatsClient(nats_url, name="nexus-test")
    await nursery.start(c.run)
    assert await c.wait_ready(5)
    yield c
    await c.aclose()
