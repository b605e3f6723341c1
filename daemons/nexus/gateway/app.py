"""The gateway's route table: /v1 routes of every dialect, plus the native shims (Gemini
``/v1beta/models/{m}:generateContent``, Azure ``/openai/deployments/{d}/chat/completions``)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from nexus.audit.capture import StreamCapture
from nexus.gateway import audit, embeddings, estimate, models
from nexus.gateway import generate as gen
from nexus.gateway.cache import request as cache
from nexus.gateway.catalog import ModelRoute
from nexus.gateway.compliance import Blocked
from nexus.gateway.core import Gateway, check_chat, parse_json, request_id, stream_flag
from nexus.gateway.errors import JSON, Caller, GatewayError, error_response
from nexus.gateway.keys.store import VirtualKey
from nexus.gateway.quota import request as quota
from nexus.gateway.routing.simulate import simulate_handler
from nexus.net.http1.types import Handler, Request, Response
from nexus.runtime import logs
from nexus.wire.errors import openai_error

_GEMINI_ROUTE = re.compile(r"/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)")
_AZURE_ROUTE = re.compile(r"/openai/deployments/([^/]+)/chat/completions")

Route = Callable[[Request], Awaitable[Response]]


async def _request_hooks(gw: Gateway, call: gen.Call, key: VirtualKey, req: Request, parsed: dict[str, Any],
                         route: ModelRoute) -> None:
    """Run the request hooks (unless passthrough or the kill switch says not to); arm the response stage."""
    compliance = gw.compliance
    if compliance is None:
        return
    flags = compliance.flags(route.provider.adapter, route.provider.id)
    call.passthrough_flags = flags.labels()
    call.bypass_cache, call.kill_switch = flags.bypass_cache, flags.kill_switch
    if compliance.state.pipeline is None:
        return
    if flags.skip_hooks:
        call.hook_header = b"bypassed"
        return
    meta = {
        "org_id": key.org_id, "project_id": key.project_id, "key_id": key.id, "user_id": key.owner_user_id,
        "source_ip": req.client[0] if req.client else None, "provider_type": route.provider.adapter,
        "provider_id": route.provider.id, "provider_region": route.provider.region, "model": call.model,
        "body_size": len(req.body), "request_id": call.request_id, "stream": call.stream,
    }
    try:
        call.request_decision, call.rewritten = await compliance.check_request(call.canonical(parsed), meta)
    except Blocked as blocked:
        call.hook_header = b"block"
        call.request_decision = blocked.decision
        raise
    call.hook_header = (call.request_decision.decision.value if call.request_decision else "approve").encode()
    call.compliance, call.compliance_meta = compliance, meta


async def recorded(gw: Gateway, req: Request, call: gen.Call, work: Callable[[], Awaitable[Response]]) -> Response:
    """Run one upstream-bound request so that it ends in exactly one audit event, whatever happens: an answer
    (for a stream, when the relay ends), a ``GatewayError`` answered in the caller's dialect, or the client
    going away.  The event is recorded before the answer is returned to the server, so with ``[audit] loss_mode
    = "block"`` nothing is answered before its event is durable (``audit.recorder``)."""
    token = logs.request_id.set(call.request_id)
    if gw.emitter is not None:
        call.on_finish.append(audit.recorder(gw.emitter, req, gw.capture))
        if gw.capture.level != "off":
            call.stream_capture = StreamCapture(gw.capture)
    try:
        response = await work()
        if isinstance(response.body, bytes):
            await call.finish()
        return response
    except GatewayError as err:
        call.status, call.error_kind, call.error_message = err.status or 0, err.kind, err.message
        answer = error_response(call.caller, err, call.headers(time.perf_counter()))
        call.status = answer.status
        call.response_body = answer.body if isinstance(answer.body, bytes) else None
        await call.finish()
        return answer
    except trio.Cancelled:
        call.client_closed = True
        await call.finish()
        raise
    finally:
        logs.request_id.reset(token)


def make_gateway_handler(gw: Gateway) -> Handler:
    async def generation(req: Request, caller: Caller, model: str | None = None, stream: bool | None = None
                         ) -> Response:
        call = gen.Call(request_id(req), caller, time.perf_counter())

        async def work() -> Response:
            key = call.key = await gw.authenticate(req, caller)
            parsed = parse_json(req)
            if caller in ("openai", "anthropic"):
                check_chat(parsed)
            requested = model if model is not None else parsed.get("model")
            call.stream = stream if stream is not None else stream_flag(parsed)
            plan = await gw.plan(key, req, caller, requested, call.request_id, parsed)
            call.model = str(requested)
            route = plan.targets[0].route
            await _request_hooks(gw, call, key, req, parsed, route)
            plan, quota_headers = await quota.reserve(gw, call, key, req, plan, caller, parsed)
            route = plan.targets[0].route  # another model when a quota downgraded the request
            cached, cache_header = await cache.serve(gw.cache, call, key, route, req, parsed, gw.semantic)
            if cached is not None:
                cached.headers.extend(quota_headers)
                return cached
            response = await gen.generate(gw.client, gw.timeouts, req, call, parsed, plan, gw.health,
                                          gw.forward_headers)
            response.headers.extend(quota_headers)
            if cache_header is not None:
                response.headers.append(cache_header)
            return response

        return await recorded(gw, req, call, work)

    async def embed(req: Request) -> Response:
        call = gen.Call(request_id(req), "openai", time.perf_counter(), endpoint="embeddings")
        return await recorded(gw, req, call, lambda: embeddings.embeddings(gw, req, call))

    async def chat(req: Request) -> Response:
        return await generation(req, "openai")

    async def responses(req: Request) -> Response:
        return await generation(req, "responses")

    async def messages(req: Request) -> Response:
        return await generation(req, "anthropic")

    routes: dict[tuple[str, str], Route] = {
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/v1/responses"): responses,
        ("POST", "/v1/messages"): messages,
        ("POST", "/v1/embeddings"): embed,
        ("POST", "/v1/estimate"): lambda req: estimate.estimate(gw, req),
        ("POST", "/v1/messages/count_tokens"): lambda req: estimate.count_tokens(gw, req),
        ("GET", "/v1/models"): lambda req: models.list_models(gw, req),
        ("GET", "/v1/usage"): lambda req: models.usage(gw, req),
        ("POST", "/internal/routing/simulate"): lambda req: simulate_handler(
            req, service_token=gw.service_token, router=gw.router.current, catalog=gw.catalog.current,
            health=gw.health),
    }
    known_paths = {path for _method, path in routes}

    async def handle(req: Request) -> Response:
        route = routes.get((req.method, req.path))
        if route is not None:
            return await route(req)
        if req.method == "POST":
            m = _GEMINI_ROUTE.fullmatch(req.path)
            if m is not None:
                return await generation(req, "gemini", m.group(1), m.group(2) == "streamGenerateContent")
            m = _AZURE_ROUTE.fullmatch(req.path)
            if m is not None:
                return await generation(req, "openai", m.group(1))
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            return await models.one_model(gw, req, req.path[len("/v1/models/"):])
        if req.path in known_paths:
            return error_response("openai", GatewayError(
                "invalid_request", f"method {req.method} not allowed on {req.path}", status=405))
        return Response(404, [JSON], openai_error(404, f"no such route: {req.method} {req.path}",
                                                  "invalid_request_error", "not_found"))

    return handle
