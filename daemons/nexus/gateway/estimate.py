"""Cost and token previews without generating: POST /v1/estimate (OpenAI-shaped request in, prices and a
cost range out) and POST /v1/messages/count_tokens (Anthropic's shape; asked of Anthropic upstreams,
estimated for the others)."""

from __future__ import annotations

import math
from typing import Any

import orjson

from nexus.gateway.catalog import ModelRoute
from nexus.gateway.core import Gateway, answer, parse_json
from nexus.gateway.errors import JSON, GatewayError
from nexus.gateway.generate import from_upstream_status, upstream_failure
from nexus.gateway.providers.upstream import count_tokens_call
from nexus.net.http1 import client as http
from nexus.net.http1.types import Request, Response
from nexus.wire import anthropic, rawjson
from nexus.wire.errors import WireError

# ~4 characters per token for English text; images at the low-detail flat rate most providers charge.
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 85
PER_MESSAGE_TOKENS = 4


def estimate_tokens(chat: dict[str, Any]) -> int:
    chars, images, messages = 0, 0, 0
    for msg in chat.get("messages") or ():
        if not isinstance(msg, dict):
            continue
        messages += 1
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") in ("image_url", "input_image", "image"):
                        images += 1
                    else:
                        chars += len(str(part.get("text") or ""))
        for call in msg.get("tool_calls") or ():
            if isinstance(call, dict):
                chars += len(orjson.dumps(call.get("function") or {}))
    for tool in chat.get("tools") or ():
        chars += len(orjson.dumps(tool))
    return math.ceil(chars / CHARS_PER_TOKEN) + images * IMAGE_TOKENS + messages * PER_MESSAGE_TOKENS


def _usd(micro: int) -> float:
    return round(micro / 1_000_000, 6)


def _cost(tokens: int, micro_per_mtok: int) -> int:
    return tokens * micro_per_mtok // 1_000_000


def preview(route: ModelRoute, prompt_tokens: int, max_output: int) -> dict[str, Any]:
    p = route.prices
    input_micro = _cost(prompt_tokens, p.input)
    output_micro = _cost(max_output, p.output)
    return {
        "object": "estimate", "model": route.code, "provider": route.provider.name,
        "prompt_tokens": prompt_tokens, "max_completion_tokens": max_output,
        "prices_usd_per_million_tokens": {
            "input": _usd(p.input), "output": _usd(p.output), "cached_input": _usd(p.cached_input),
            "reasoning": _usd(p.reasoning)},
        "cost_usd": {"input": _usd(input_micro), "max_output": _usd(output_micro),
                     "max_total": _usd(input_micro + output_micro)},
        "cost_micro_usd": {"input": input_micro, "max_output": output_micro, "max_total": input_micro + output_micro},
    }


async def estimate(gw: Gateway, req: Request) -> Response:
    async def work(rid: str, _started: float) -> Response:
        key = await gw.authenticate(req, "openai")
        parsed = parse_json(req)
        route = gw.resolve(key, parsed.get("model"))
        max_output = parsed.get("max_completion_tokens") or parsed.get("max_tokens") or route.default_max_tokens \
            or 4096
        if not isinstance(max_output, int) or max_output <= 0:
            raise GatewayError("invalid_request", "`max_tokens` must be a positive integer", param="max_tokens")
        body = preview(route, estimate_tokens(parsed), max_output)
        return Response(200, [JSON, (b"x-request-id", rid.encode())], orjson.dumps(body))

    return await answer(req, "openai", work)


async def count_tokens(gw: Gateway, req: Request) -> Response:
    async def work(rid: str, _started: float) -> Response:
        key = await gw.authenticate(req, "anthropic")
        parsed = parse_json(req)
        route = gw.resolve(key, parsed.get("model"))
        headers = [JSON, (b"x-request-id", rid.encode()), (b"x-nexus-provider", route.provider.name.encode())]
        if route.provider.family == "anthropic":
            call = count_tokens_call(route, rawjson.rewrite_model(req.body, route.upstream_model), req.headers)
            try:
                resp = await gw.client.request("POST", call.url, call.headers, call.body, gw.timeouts)
            except http.HttpClientError as exc:
                raise upstream_failure(exc) from None
            if resp.status >= 400:
                raise from_upstream_status("anthropic", resp.status, resp.body, None)
            return Response(200, headers, resp.body)
        try:
            chat = anthropic.chat_from_request({**parsed, "max_tokens": parsed.get("max_tokens") or 1})
        except WireError as exc:
            raise GatewayError(exc.kind, exc.message) from None
        return Response(200, [*headers, (b"x-nexus-estimated", b"true")],
                        orjson.dumps({"input_tokens": estimate_tokens(chat)}))

    return await answer(req, "anthropic", work)
