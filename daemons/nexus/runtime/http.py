"""Put ``/healthz``, ``/readyz`` and ``/metrics`` in front of a hot-path HTTP handler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nexus.config.schema import HttpLimits, Listen
from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Handler, Limits, Request, Response
from nexus.runtime import health
from nexus.runtime.daemon import Endpoint

_JSON_HEADERS = [(b"content-type", b"application/json")]


def with_health(
    daemon: str, handler: Handler, dependencies: Sequence[health.HasState], draining: Callable[[], bool]
) -> Handler:
    async def healthz(_req: Request) -> Response:
        return Response(200, _JSON_HEADERS, health.HEALTHZ_BODY)

    async def readyz(_req: Request) -> Response:
        status, body = health.readiness(daemon, dependencies, draining())
        return Response(status, _JSON_HEADERS, body)

    async def metrics(_req: Request) -> Response:
        body, ctype = health.metrics_body()
        return Response(200, [(b"content-type", ctype)], body)

    special = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}

    async def handle(req: Request) -> Response:
        route = special.get(req.path)
        if route is not None and req.method in ("GET", "HEAD"):
            return await route(req)
        return await handler(req)

    return handle


def limits_from(cfg: HttpLimits) -> Limits:
    return Limits(
        max_header_bytes=cfg.max_header_bytes, max_body_bytes=cfg.max_body_bytes, header_timeout=cfg.header_timeout,
        body_timeout=cfg.body_timeout, idle_timeout=cfg.idle_timeout, max_inflight=cfg.max_inflight,
    )


def endpoint(
    listen: Listen, handler: Handler, limits: HttpLimits, *,
    error_response: Callable[[int, str], Response] | None = None,
) -> Endpoint:
    return Endpoint(fd_name=listen.fd_name, host=listen.host, port=listen.port,
                    server=HttpServer(handler, limits_from(limits), error_response=error_response))
