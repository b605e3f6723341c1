"""What every /v1 route does first: request id, authentication, body parsing, model resolution
within the key's scope, and running a handler so that any ``GatewayError`` becomes an answer in the
caller's dialect."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import orjson

from nexus.audit.capture import CapturePolicy
from nexus.audit.emitter import Emitter
from nexus.gateway.cache.exact import ExactCache
from nexus.gateway.cache.semantic import SemanticCache
from nexus.gateway.catalog import CatalogHolder, ModelRoute
from nexus.gateway.compliance import Compliance
from nexus.gateway.errors import Caller, GatewayError, NotFound, error_response
from nexus.gateway.keys.extract import KeyInQuery, extract_key
from nexus.gateway.keys.store import KeyStore, VirtualKey
from nexus.gateway.quota.engine import QuotaEngine
from nexus.gateway.router_llm import ask_router
from nexus.gateway.routing.health import Health
from nexus.gateway.routing.planner import NeedsSmartChoice, Plan
from nexus.gateway.routing.predicate import Endpoint, RouteRequest
from nexus.gateway.routing.smart import run_smart
from nexus.gateway.routing.store import RouterHolder
from nexus.net.http1 import client as http
from nexus.net.http1.types import Request, Response, Timeouts
from nexus.runtime import logs

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")

_AUTH_MESSAGES = {
    "unknown": "invalid virtual key",
    "revoked": "this virtual key has been revoked",
    "expired": "this virtual key has expired",
}


ENDPOINTS: dict[Caller, Endpoint] = {
    "openai": "chat", "responses": "responses", "anthropic": "messages", "gemini": "gemini",
}


@attrs.define
class Gateway:
    keys: KeyStore
    catalog: CatalogHolder
    client: http.HttpClient
    timeouts: Timeouts
    router: RouterHolder = attrs.Factory(RouterHolder)
    health: Health = attrs.Factory(Health)
    forward_headers: tuple[bytes, ...] = ()
    service_token: bytes = b""
    quota: QuotaEngine | None = None
    compliance: Compliance | None = None
    cache: ExactCache | None = None
    semantic: SemanticCache | None = None
    emitter: Emitter | None = None
    capture: CapturePolicy = attrs.Factory(CapturePolicy)

    async def plan(self, key: VirtualKey, req: Request, caller: Caller, model: Any, rid: str,
                   parsed: dict[str, Any]) -> Plan:
        """The ordered upstream targets for this request (routing rules, fallbacks, health)."""
        model = _allowed_model(key, model)
        metadata = parsed.get("metadata")
        request = RouteRequest(
            model=model, endpoint=ENDPOINTS[caller], request_id=rid, virtual_key_id=key.id, org_id=key.org_id,
            org_path=key.org_path, project_id=key.project_id, user_id=key.owner_user_id, headers=req.headers,
            metadata=metadata if isinstance(metadata, dict) else {}, messages=parsed.get("messages") or (),
        )
        planned = self.router.current.plan(request, self.catalog.current, self.health, key.allows)
        if isinstance(planned, NeedsSmartChoice):
            planned = await run_smart(planned, partial(ask_router, self.client))
        if planned.denied is not None:
            raise GatewayError("invalid_request", f"model {model!r} is denied by routing policy: {planned.denied}",
                               status=403)
        if not planned.targets:
            raise NotFound(f"model {model!r} does not exist or this key may not use it")
        return planned

    async def authenticate(self, req: Request, caller: Caller) -> VirtualKey:
        try:
            presented = extract_key(req.headers, req.query, "azure" if req.path.startswith("/openai/") else
                                    ("openai" if caller == "responses" else caller))
        except KeyInQuery:
            raise GatewayError("invalid_request", "API keys must not be sent in the URL; use the Authorization "
                               "header", status=400) from None
        if presented is None:
            raise GatewayError("auth_failed", "missing virtual key: send Authorization: Bearer nvk_…")
        result = await self.keys.authenticate(presented)
        if result.key is not None:
            return result.key
        if result.verdict == "unavailable":
            raise GatewayError("upstream_error", "key store unavailable, try again", status=503,
                               headers=((b"retry-after", b"1"),))
        raise GatewayError("auth_failed", _AUTH_MESSAGES[result.verdict])

    def resolve(self, key: VirtualKey, model: Any) -> ModelRoute:
        """The first catalog route of ``model`` (routes that do not go through routing rules)."""
        model = _allowed_model(key, model)
        route = self.catalog.current.resolve(model)
        if route is None:
            raise NotFound(f"model {model!r} does not exist or this key may not use it")
        return route


def _allowed_model(key: VirtualKey, model: Any) -> str:
    if not isinstance(model, str) or not model:
        raise GatewayError("invalid_request", "`model` is required and must be a string", param="model")
    if not key.allows(model):
        # The same answer as for an unknown model: the key learns nothing about what exists.
        raise NotFound(f"model {model!r} does not exist or this key may not use it")
    return model




def request_id(req: Request) -> str:
    given = req.headers.get("x-request-id")
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(12)


async def answer(
    req: Request, caller: Caller, work: Callable[[str, float], Awaitable[Response]]
) -> Response:
    """Run ``work(request_id, started)`` with the request id in the log context; a ``GatewayError`` becomes
    the caller's error shape with the standard headers."""
    rid = request_id(req)
    started = time.perf_counter()
    token = logs.request_id.set(rid)
    try:
        return await work(rid, started)
    except GatewayError as err:
        overhead = f"{(time.perf_counter() - started) * 1000:.3f}".encode()
        return error_response(caller, err, [(b"x-request-id", rid.encode()), (b"x-nexus-overhead-ms", overhead)])
    finally:
        logs.request_id.reset(token)


def parse_json(req: Request) -> dict[str, Any]:
    if not req.body:
        raise GatewayError("invalid_request", "request body is empty; expected a JSON object")
    try:
        parsed = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError("invalid_request", f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise GatewayError("invalid_request", "request body must be a JSON object")
    return parsed


def stream_flag(parsed: dict[str, Any]) -> bool:
    value = parsed.get("stream", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise GatewayError("invalid_request", "`stream` must be a boolean", param="stream")
    return value


def check_chat(parsed: dict[str, Any]) -> None:
    messages = parsed.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError("invalid_request", "`messages` must be a non-empty array", param="messages")
