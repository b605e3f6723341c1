"""The control plane's ASGI app: admin API, sign-in, OpenAPI and health, in one Starlette app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from nexus.controlplane.api import openapi
from nexus.controlplane.api.errors import error_response
from nexus.controlplane.api.operation import Operation
from nexus.controlplane.api.router import Router
from nexus.controlplane.services import Services

VERSION = "0.1.0"


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unexpected(_request: Request, _exc: Exception) -> Response:
    # The traceback goes to the log through Starlette's ServerErrorMiddleware; the caller gets the shape.
    return error_response(500, "internal_error", "internal error; see the control plane log with the request id")


def build_app(
    services: Services,
    operations: Sequence[Operation],
    *,
    extra_routes: Sequence[BaseRoute],
    health_routes: Sequence[BaseRoute],
) -> Starlette:
    router = Router(services, operations)
    spec = orjson.dumps(openapi.document(operations, title="Nexus control plane admin API", version=VERSION,
                                         server_url=services.public_url))

    async def openapi_json(_request: Request) -> Response:
        return Response(spec, media_type="application/json")

    routes: list[BaseRoute] = [*health_routes, Route("/api/openapi.json", openapi_json), *extra_routes,
                               *router.routes()]
    handlers: dict[Any, Callable[..., Any]] = {HTTPException: _http_error, Exception: _unexpected}
    return Starlette(routes=routes, exception_handlers=handlers)

