"""Error shapes per caller dialect, stream error frames, and upstream error parsing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types.shared import ErrorResponse
from tests.wire.conftest import load

from nexus.wire import errors
from nexus.wire.errors import WireError


def test_kind_statuses() -> None:
    assert errors.STATUS == {
        "invalid_request": 400,
        "auth_failed": 401,
        "rate_limited": 429,
        "timeout": 504,
        "upstream_error": 502,
        "endpoint_unsupported": 400,
        "not_implemented": 501,
        "no_compatible_provider": 400,
    }
    assert WireError("timeout", "slow").status == 504
    assert WireError("rate_limited", "quota", status=503).status == 503


def test_openai_body() -> None:
    body = errors.openai_error(404, "model not allowed", "invalid_request_error", "model_not_found", "model")
    assert orjson.loads(body) == {
        "error": {
            "message": "model not allowed",
            "type": "invalid_request_error",
            "code": "model_not_found",
            "param": "model",
        }
    }


def test_anthropic_body_types_follow_status() -> None:
    for status, etype in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ]:
        body = orjson.loads(errors.anthropic_error(status, "m"))
        assert body == {"type": "error", "error": {"type": etype, "message": "m"}}
    ErrorResponse.model_validate(orjson.loads(errors.anthropic_error(429, "slow")))


def test_gemini_body_status_names() -> None:
    for status, name in [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (501, "UNIMPLEMENTED"),
        (502, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (500, "INTERNAL"),
    ]:
        assert orjson.loads(errors.gemini_error(status, "m")) == {
            "error": {"code": status, "message": "m", "status": name}
        }


@pytest.mark.parametrize("kind", sorted(errors.STATUS))
def test_error_body_per_dialect(kind: errors.Kind) -> None:
    status, body = errors.error_body("openai", kind, "nope", param="model")
    assert status == errors.STATUS[kind]
    err = orjson.loads(body)["error"]
    assert (err["code"], err["param"], err["message"]) == (kind, "model", "nope")

    status, body = errors.error_body("anthropic", kind, "nope")
    parsed = orjson.loads(body)
    assert parsed["type"] == "error" and parsed["error"]["message"] == "nope"
    ErrorResponse.model_validate(parsed)

    status, body = errors.error_body("gemini", kind, "nope")
    assert orjson.loads(body)["error"]["code"] == errors.STATUS[kind]

    # A gateway-level error keeps its own status (403 hook block).
    assert errors.error_body("responses", kind, "blocked", status=403)[0] == 403


def test_stream_frames() -> None:
    frame = errors.stream_error("openai", "rate_limited", "slow down")
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert orjson.loads(frame[6:]) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limited", "param": None}
    }
    frame = errors.stream_error("anthropic", "upstream_error", "Overloaded")
    assert frame == b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"Overloaded"}}\n\n'
    frame = errors.stream_error("gemini", "timeout", "late")
    assert frame == b'data: {"error":{"code":504,"message":"late","status":"DEADLINE_EXCEEDED"}}\n\n'


@pytest.mark.parametrize("case", load("upstream_errors.json"), ids=lambda c: f"{c['dialect']}-{c['status']}")
def test_parse_upstream_error(case: dict[str, Any]) -> None:
    kind, message = errors.parse_upstream_error(case["dialect"], case["status"], orjson.dumps(case["body"]))
    assert (kind, message) == (case["kind"], case["message"])


def test_anthropic_429_reaches_an_openai_caller_as_429() -> None:
    case = next(c for c in load("upstream_errors.json") if c["dialect"] == "anthropic" and c["status"] == 429)
    kind, message = errors.parse_upstream_error("anthropic", 429, orjson.dumps(case["body"]))
    status, body = errors.error_body("openai", kind, message)
    assert status == 429
    assert orjson.loads(body)["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (502, b"<html>Bad Gateway</html>", "upstream_error", "<html>Bad Gateway</html>"),
        (408, b"", "timeout", "upstream error without a body"),
        (503, b'{"unexpected": true}', "upstream_error", '{"unexpected": true}'),
        (418, b"x" * 2000, "invalid_request", "x" * 500),
    ],
)
def test_parse_unstructured_errors(status: int, body: bytes, kind: str, message: str) -> None:
    assert errors.parse_upstream_error("openai", status, body) == (kind, message)


def test_in_stream_errors() -> None:
    err = errors.error_from_stream_event("anthropic", {"type": "rate_limit_error", "message": "slow"})
    assert (err.kind, err.message) == ("rate_limited", "slow")
    err = errors.error_from_stream_event("gemini", {"code": 429, "message": "q", "status": "RESOURCE_EXHAUSTED"})
    assert err.kind == "rate_limited"
    err = errors.error_from_stream_event("gemini", {"code": 504, "message": "late"})
    assert err.kind == "timeout"
    err = errors.error_from_stream_event("openai", "garbage")
    assert (err.kind, err.message) == ("upstream_error", "upstream stream failed")
