"""POST /v1/embeddings: OpenAI-shaped embeddings, forwarded to an OpenAI-compatible upstream with only
``model`` rewritten."""

from __future__ import annotations

import time

import orjson

from nexus.gateway.core import Gateway, parse_json
from nexus.gateway.errors import JSON, GatewayError
from nexus.gateway.generate import Call, from_upstream_status, upstream_failure
from nexus.gateway.providers.upstream import embeddings_call
from nexus.net.http1 import client as http
from nexus.net.http1.types import Request, Response
from nexus.wire import rawjson
from nexus.wire.usage import from_openai


async def embeddings(gw: Gateway, req: Request, call: Call) -> Response:
    """The embeddings answer; errors raise ``GatewayError`` (the caller records and answers them)."""
    key = call.key = await gw.authenticate(req, "openai")
    parsed = parse_json(req)
    if "input" not in parsed:
        raise GatewayError("invalid_request", "`input` is required", param="input")
    call.model = str(parsed.get("model"))
    route = call.route = gw.resolve(key, parsed.get("model"))
    if route.provider.family != "openai":
        raise GatewayError("endpoint_unsupported",
                           f"model {route.code!r} is served by a {route.provider.adapter} provider, which this "
                           "gateway does not call for embeddings yet")
    upstream = embeddings_call(route, rawjson.rewrite_model(req.body, route.upstream_model), req.headers,
                               gw.forward_headers)
    call.upstream_started = time.perf_counter()
    try:
        resp = await gw.client.request("POST", upstream.url, upstream.headers, upstream.body, gw.timeouts)
    except http.HttpClientError as exc:
        raise upstream_failure(exc) from None
    finally:
        call.upstream_done = call.upstream_first_byte = time.perf_counter()
    if resp.status >= 400:
        raise from_upstream_status("openai", resp.status, resp.body, resp.headers.get_bytes("retry-after"))
    try:
        call.usage = from_openai(orjson.loads(resp.body).get("usage"))
    except (orjson.JSONDecodeError, AttributeError):
        raise GatewayError("upstream_error", "upstream answered with a body that is not a JSON object") from None
    call.status = 200
    call.response_body = resp.body
    return Response(200, [JSON, *call.headers(time.perf_counter())], resp.body)
