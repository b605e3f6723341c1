"""Gateway error answers, always in the caller's own dialect and status code."""

from __future__ import annotations

from typing import Literal

from nexus.net.http1.types import Response
from nexus.wire.errors import Kind, anthropic_error, error_body, gemini_error, openai_error

Caller = Literal["openai", "responses", "anthropic", "gemini"]

JSON = (b"content-type", b"application/json")


class GatewayError(Exception):
    """Raised anywhere below a handler; the handler answers it in the caller's dialect."""

    def __init__(self, kind: Kind, message: str, *, status: int | None = None, param: str | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.param = param
        self.headers = headers


class NotFound(GatewayError):
    """The model does not exist, or this key may not use it (one answer for both: no existence oracle)."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_request", message, status=404, param="model")


def _wire_dialect(caller: Caller) -> Literal["openai", "anthropic", "gemini"]:
    return "openai" if caller == "responses" else caller


def error_response(caller: Caller, err: GatewayError, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
    dialect = _wire_dialect(caller)
    if err.status == 404:
        body = (
            anthropic_error(404, err.message, "not_found_error") if dialect == "anthropic"
            else gemini_error(404, err.message, "NOT_FOUND") if dialect == "gemini"
            else openai_error(404, err.message, "invalid_request_error", "model_not_found", err.param)
        )
        status = 404
    else:
        status, body = error_body(dialect, err.kind, err.message, status=err.status, param=err.param)
    headers = [JSON, *err.headers]
    if extra:
        headers.extend(extra)
    return Response(status, headers, body)


def protocol_error(status: int, message: str) -> Response:
    """Answers the HTTP layer gives before any route is known (bad framing, 413, 408, 429): OpenAI shape."""
    kind: Kind = "rate_limited" if status == 429 else "invalid_request" if status < 500 else "upstream_error"
    _, body = error_body("openai", kind, message, status=status)
    return Response(status, [JSON], body)  # the server adds Retry-After to its own 429s
