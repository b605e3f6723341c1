"""POST /v1/embeddings: OpenAI-shaped embeddings, forwarded to an OpenAI-compatible upstream with only
``model`` rewritten."""

from __future__ import annotations

import time

from nexus.gateway.core import Gateway, answer, parse_json
from nexus.gateway.errors import JSON, GatewayError
from nexus.gateway.generate import from_upstream_status, upstream_failure
from nexus.gateway.providers.upstream import embeddings_call
from nexus.net.http1 import client as http
from nexus.net.http1.types import Request, Response
from nexus.wire import rawjson


async def embeddings(gw: Gateway, req: Request) -> Response:
    async def work(rid: str, started: float) -> Response:
        key = await gw.authenticate(req, "openai")
        parsed = parse_json(req)
        if "input" not in parsed:
            raise GatewayError("invalid_request", "`input` is required", param="input")
        route = gw.resolve(key, parsed.get("model"))
        if route.provider.family != "openai":
            raise GatewayError("endpoint_unsupported",
                               f"model {route.code!r} is served by a {route.provider.adapter} provider, which this "
                               "gateway does not call for embeddings yet")
        call = embeddings_call(route, rawjson.rewrite_model(req.body, route.upstream_model), req.headers,
                               gw.forward_headers)
        upstream_started = time.perf_counter()
        try:
            resp = await gw.client.request("POST", call.url, call.headers, call.body, gw.timeouts)
        except http.HttpClientError as exc:
            raise upstream_failure(exc) from None
        upstream = time.perf_counter() - upstream_started
        if resp.status >= 400:
            raise from_upstream_status("openai", resp.status, resp.body, resp.headers.get_bytes("retry-after"))
        overhead = (time.perf_counter() - started - upstream) * 1000
        headers = [JSON, (b"x-request-id", rid.encode()), (b"x-nexus-provider", route.provider.name.encode()),
                   (b"x-nexus-model", route.code.encode()), (b"x-nexus-overhead-ms", f"{overhead:.3f}".encode())]
        return Response(200, headers, resp.body)

    return await answer(req, "openai", work)
