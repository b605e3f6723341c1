"""Error kinds, error bodies in each caller dialect, and upstream error parsing.

Pure.  Every failure the gateway reports is one of the normalised *kinds* in
:data:`STATUS`, each with its HTTP status.  The codecs raise :class:`WireError`
(a kind plus a message) when a request cannot be translated or an upstream
stream reports an error; the gateway turns it into the caller's error shape:

- whole-response bodies: :func:`openai_error`, :func:`anthropic_error`,
  :func:`gemini_error`, or :func:`error_body` to choose by dialect and kind
  (the Responses API uses the OpenAI shape);
- mid-stream frames, after which the stream ends: :func:`stream_error` for the
  OpenAI chat, Gemini and Anthropic grammars.  A Responses stream fails with a
  ``response.failed`` event that needs the stream's state, so it comes from
  ``responses.StreamFromChat.fail`` (or ``StreamObserver.fail`` in passthrough).

:func:`parse_upstream_error` reads a provider's error answer into (kind,
message), so an upstream 429 from Anthropic reaches an OpenAI caller as a 429
``rate_limited`` in OpenAI's shape.  Nothing here raises except
``WireError``'s constructor on an unknown kind (``KeyError``).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson

Obj = dict[str, Any]

Dialect = Literal["openai", "responses", "anthropic", "gemini"]

Kind = Literal[
    "invalid_request",
    "auth_failed",
    "rate_limited",
    "timeout",
    "upstream_error",
    "endpoint_unsupported",
    "not_implemented",
    "no_compatible_provider",
]

#: HTTP status of each kind.  endpoint_unsupported and no_compatible_provider are
#: "cross-format impossible" (400): the request is valid but nothing routed can
#: serve it; not_implemented is a gateway feature gap (501).
STATUS: Final[dict[str, int]] = {
    "invalid_request": 400,
    "auth_failed": 401,
    "rate_limited": 429,
    "timeout": 504,
    "upstream_error": 502,
    "endpoint_unsupported": 400,
    "not_implemented": 501,
    "no_compatible_provider": 400,
}

_OPENAI_TYPE: Final = {
    "invalid_request": "invalid_request_error",
    "auth_failed": "authentication_error",
    "rate_limited": "rate_limit_error",
    "timeout": "timeout_error",
    "upstream_error": "server_error",
    "endpoint_unsupported": "invalid_request_error",
    "not_implemented": "invalid_request_error",
    "no_compatible_provider": "invalid_request_error",
}

_ANTHROPIC_TYPE: Final = {
    "invalid_request": "invalid_request_error",
    "auth_failed": "authentication_error",
    "rate_limited": "rate_limit_error",
    "timeout": "timeout_error",
    "upstream_error": "api_error",
    "endpoint_unsupported": "invalid_request_error",
    "not_implemented": "invalid_request_error",
    "no_compatible_provider": "invalid_request_error",
}

_ANTHROPIC_TYPE_BY_STATUS: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# google.rpc.Code names, which Gemini puts in error.status.
_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_KIND_BY_ANTHROPIC_TYPE: Final[dict[str, Kind]] = {
    "invalid_request_error": "invalid_request",
    "request_too_large": "invalid_request",
    "not_found_error": "invalid_request",
    "authentication_error": "auth_failed",
    "permission_error": "auth_failed",
    "billing_error": "auth_failed",
    "rate_limit_error": "rate_limited",
    "timeout_error": "timeout",
    "api_error": "upstream_error",
    # Overload is the provider's capacity, not the caller's rate: another
    # provider may well serve the request, so it is retryable as upstream_error.
    "overloaded_error": "upstream_error",
}

_KIND_BY_GOOGLE_STATUS: Final[dict[str, Kind]] = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "NOT_FOUND": "invalid_request",
    "UNAUTHENTICATED": "auth_failed",
    "PERMISSION_DENIED": "auth_failed",
    "RESOURCE_EXHAUSTED": "rate_limited",
    "DEADLINE_EXCEEDED": "timeout",
    "UNIMPLEMENTED": "endpoint_unsupported",
    "INTERNAL": "upstream_error",
    "UNAVAILABLE": "upstream_error",
}

_KIND_BY_OPENAI_CODE: Final[dict[str, Kind]] = {
    "rate_limit_exceeded": "rate_limited",
    "insufficient_quota": "rate_limited",
    "invalid_api_key": "auth_failed",
    "context_length_exceeded": "invalid_request",
}


class WireError(Exception):
    """A request that cannot be translated, or an error an upstream reported in-stream.

    ``kind`` is one of :data:`STATUS`'s keys, ``status`` its HTTP status unless
    given, ``param`` the offending request field when known.
    """

    def __init__(self, kind: Kind, message: str, *, param: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: Kind = kind
        self.message = message
        self.param = param
        self.status = status if status is not None else STATUS[kind]


def openai_error(status: int, message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    """``{"error":{"message","type","code","param"}}``; ``status`` is the HTTP status, not in the body."""
    del status  # OpenAI bodies do not repeat the status; kept for a uniform signature.
    return orjson.dumps({"error": {"message": message, "type": type, "code": code, "param": param}})


def anthropic_error(status: int, message: str, type: str | None = None) -> bytes:
    """``{"type":"error","error":{"type","message"}}``, the type derived from the status unless given."""
    kind_type = type or _ANTHROPIC_TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind_type, "message": message}})


def gemini_error(status: int, message: str, status_name: str | None = None) -> bytes:
    """``{"error":{"code","message","status"}}`` with the google.rpc status name for ``status``."""
    return orjson.dumps({"error": _gemini_error_obj(status, message, status_name)})


def _gemini_error_obj(status: int, message: str, status_name: str | None) -> Obj:
    name = status_name or _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"code": status, "message": message, "status": name}


def error_body(
    dialect: Dialect, kind: Kind, message: str, *, status: int | None = None, param: str | None = None
) -> tuple[int, bytes]:
    """(HTTP status, body) for ``kind`` in the caller's ``dialect`` (OpenAI ``code`` = the kind)."""
    code = status if status is not None else STATUS[kind]
    if dialect == "anthropic":
        return code, anthropic_error(code, message, _ANTHROPIC_TYPE[kind])
    if dialect == "gemini":
        return code, gemini_error(code, message)
    return code, openai_error(code, message, _OPENAI_TYPE[kind], kind, param)


def error_object(dialect: Literal["openai", "anthropic", "gemini"], kind: Kind, message: str) -> Obj:
    """The parsed body :func:`error_body` would send, for encoders that emit error events as dicts."""
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPE[kind], "message": message}}
    if dialect == "gemini":
        return {"error": _gemini_error_obj(STATUS[kind], message, None)}
    return {"error": {"message": message, "type": _OPENAI_TYPE[kind], "code": kind, "param": None}}


def stream_error(dialect: Literal["openai", "anthropic", "gemini"], kind: Kind, message: str) -> bytes:
    """The SSE frame that ends a failing stream in the caller's grammar.

    OpenAI chat: ``data: {"error":{…}}``; Gemini: ``data: {"error":{code,message,status}}``;
    Anthropic: ``event: error`` with its error body.  No ``[DONE]`` follows.
    """
    if dialect == "anthropic":
        return b"event: error\ndata: " + anthropic_error(STATUS[kind], message, _ANTHROPIC_TYPE[kind]) + b"\n\n"
    if dialect == "gemini":
        return b"data: " + gemini_error(STATUS[kind], message) + b"\n\n"
    return b"data: " + openai_error(STATUS[kind], message, _OPENAI_TYPE[kind], kind) + b"\n\n"


def responses_error_code(kind: Kind) -> str:
    """The ``response.error.code`` a Responses ``response.failed`` event carries for ``kind``."""
    if kind == "rate_limited":
        return "rate_limit_exceeded"
    if kind == "invalid_request":
        return "invalid_prompt"
    return "server_error"


def kind_for_status(status: int) -> Kind:
    """The kind an upstream HTTP status means when its body says nothing better."""
    if status in (401, 403):
        return "auth_failed"
    if status == 429:
        return "rate_limited"
    if status in (408, 504):
        return "timeout"
    if status == 501:
        return "endpoint_unsupported"
    if status >= 500:
        return "upstream_error"
    return "invalid_request"


def kind_for_anthropic_type(error_type: str | None) -> Kind | None:
    """The kind of an Anthropic ``error.type`` (also used for in-stream ``event: error``)."""
    return _KIND_BY_ANTHROPIC_TYPE.get(error_type or "")


def kind_for_google_status(name: str | None) -> Kind | None:
    return _KIND_BY_GOOGLE_STATUS.get(name or "")


def _message_of(err: Any, body: bytes) -> str:
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str) and message:
            return message
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else "upstream error without a body"


def parse_upstream_error(
    dialect: Literal["openai", "anthropic", "gemini"], status: int, body: bytes
) -> tuple[Kind, str]:
    """(kind, message) from an upstream's non-2xx answer.

    The status decides the kind; a recognised error type in the body refines it
    (Anthropic's ``overloaded_error`` becomes upstream_error whatever the status,
    Gemini's ``RESOURCE_EXHAUSTED`` rate_limited).  A body that is not JSON, or
    not the expected shape, still yields the status's kind and the body's text.
    """
    kind = kind_for_status(status)
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    # Gemini wraps errors of a non-SSE stream in a one-element array.
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]
    err = parsed.get("error") if isinstance(parsed, dict) else None
    refined: Kind | None = None
    if isinstance(err, dict):
        if dialect == "anthropic":
            refined = kind_for_anthropic_type(err.get("type"))
        elif dialect == "gemini":
            refined = "auth_failed" if _google_key_invalid(err) else kind_for_google_status(err.get("status"))
        else:
            code = err.get("code")
            refined = _KIND_BY_OPENAI_CODE.get(code) if isinstance(code, str) else None
    return refined or kind, _message_of(err, body)


def _google_key_invalid(err: Obj) -> bool:
    # Google answers a bad API key with 400 INVALID_ARGUMENT; only the ErrorInfo
    # reason tells it apart from a bad request.
    for d in err.get("details") or ():
        if isinstance(d, dict) and str(d.get("reason", "")).startswith("API_KEY_"):
            return True
    return False


def error_from_stream_event(dialect: Literal["openai", "anthropic", "gemini"], err: Any) -> WireError:
    """The :class:`WireError` for an error object an upstream sent inside a stream."""
    kind: Kind | None = None
    if isinstance(err, dict):
        if dialect == "anthropic":
            kind = kind_for_anthropic_type(err.get("type"))
        elif dialect == "gemini":
            kind = kind_for_google_status(err.get("status"))
            code = err.get("code")
            if kind is None and isinstance(code, int):
                kind = kind_for_status(code)
        else:
            code = err.get("code")
            kind = _KIND_BY_OPENAI_CODE.get(code) if isinstance(code, str) else None
    return WireError(kind or "upstream_error", _message_of(err, b"upstream stream failed"))
