"""Hypercorn in-process for the hub and the control plane, behind the same ``Server`` interface
as the hot-path HTTP server, plus the health routes as Starlette routes.

Hypercorn runs inside our own ``trio.run`` (never as a worker child), so socket
activation, notify and the watchdog stay in this process.  ``stop_accepting``
triggers hypercorn's graceful shutdown: listeners close at once and requests in
flight get until the drain deadline.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nexus.config.schema import Listen
from nexus.runtime import health
from nexus.runtime.daemon import Endpoint


class HypercornServer:
    def __init__(self, app: Any, *, drain_timeout: float = 25.0) -> None:
        self.app = app
        self.config = Config()
        self.config.graceful_timeout = drain_timeout
        self.config.accesslog = None
        self.config.keep_alive_timeout = 75
        self._shutdown = trio.Event()
        self._done = trio.Event()

    async def serve(
        self, listeners: Sequence[trio.SocketListener], *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # hypercorn takes stdlib sockets; hand over the fds without duplicating them.
        socks = [socket.socket(fileno=listener.socket.detach()) for listener in listeners]
        try:
            await worker_serve(
                wrap_app(self.app, self.config.wsgi_max_body_size, "asgi"),
                self.config,
                sockets=Sockets(secure_sockets=[], insecure_sockets=socks, quic_sockets=[]),
                shutdown_trigger=self._shutdown.wait,
                task_status=task_status,
            )
        finally:
            self._done.set()

    def stop_accepting(self) -> None:
        self._shutdown.set()

    async def drain(self, timeout: float) -> bool:
        # hypercorn itself cancels leftovers at graceful_timeout; allow it a moment past that.
        with trio.move_on_after(timeout + 1.0):
            await self._done.wait()
            return True
        return False


def health_routes(daemon: str, dependencies: Sequence[health.HasState], draining: Callable[[], bool]) -> list[Route]:
    async def healthz(_request: Request) -> Response:
        return Response(health.HEALTHZ_BODY, media_type="application/json")

    async def readyz(_request: Request) -> Response:
        status, body = health.readiness(daemon, dependencies, draining())
        return Response(body, status_code=status, media_type="application/json")

    async def metrics(_request: Request) -> Response:
        body, ctype = health.metrics_body()
        return Response(body, headers={"content-type": ctype.decode()})

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]


def asgi_endpoint(listen: Listen, app: Any, drain_timeout: float) -> Endpoint:
    return Endpoint(listen.fd_name, listen.host, listen.port, HypercornServer(app, drain_timeout=drain_timeout))
