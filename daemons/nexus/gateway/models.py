"""GET /v1/models and /v1/models/{id} (the models this key may use, in OpenAI's list shape) and GET /v1/usage
(the key's own spend and remaining budget under every policy that applies to it)."""

from __future__ import annotations

import orjson

from nexus.gateway.catalog import ModelRoute
from nexus.gateway.core import Gateway, answer
from nexus.gateway.errors import JSON, NotFound
from nexus.gateway.quota.policy import subject_for
from nexus.gateway.quota.usage import read_usage
from nexus.net.http1.types import Request, Response


def _model_object(code: str, route: ModelRoute) -> dict[str, object]:
    return {"id": code, "object": "model", "created": route.created, "owned_by": route.provider.name}


async def list_models(gw: Gateway, req: Request) -> Response:
    async def work(rid: str, _started: float) -> Response:
        key = await gw.authenticate(req, "openai")
        catalog = gw.catalog.current
        data = [_model_object(code, routes[0]) for code, routes in sorted(catalog.routes.items())
                if routes and key.allows(code)]
        return Response(200, [JSON, (b"x-request-id", rid.encode())],
                        orjson.dumps({"object": "list", "data": data}))

    return await answer(req, "openai", work)


async def one_model(gw: Gateway, req: Request, model_id: str) -> Response:
    async def work(rid: str, _started: float) -> Response:
        key = await gw.authenticate(req, "openai")
        route = gw.catalog.current.resolve(model_id)
        if route is None or not key.allows(model_id):
            raise NotFound(f"model {model_id!r} does not exist or this key may not use it")
        return Response(200, [JSON, (b"x-request-id", rid.encode())], orjson.dumps(_model_object(model_id, route)))

    return await answer(req, "openai", work)


async def usage(gw: Gateway, req: Request) -> Response:
    async def work(rid: str, _started: float) -> Response:
        key = await gw.authenticate(req, "openai")
        engine = gw.quota
        if engine is None or engine.snapshot is None:
            body: dict[str, object] = {"object": "usage", "key": {"id": key.id, "name": key.name}, "policies": []}
        else:
            body = await read_usage(engine.valkey, engine.snapshot, subject_for(key), prefix=engine.prefix)
        return Response(200, [JSON, (b"x-request-id", rid.encode())], orjson.dumps(body))

    return await answer(req, "openai", work)
