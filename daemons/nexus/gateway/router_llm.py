"""The smart routing strategy's question to its router model, asked through the gateway's own provider
layer (so the router model can be any configured provider, in any family)."""

from __future__ import annotations

from typing import Any

import orjson

from nexus.gateway import dialects
from nexus.gateway.catalog import ModelRoute
from nexus.gateway.providers.upstream import generate_call
from nexus.net.http1 import client as http
from nexus.net.http1.types import Timeouts
from nexus.wire.errors import WireError


async def ask_router(client: http.HttpClient, route: ModelRoute, messages: list[dict[str, str]],
                     timeout_s: float) -> str | None:
    """The router model's answer text, or None on any failure (the planner then uses the default)."""
    family = route.provider.family
    if family is None:
        return None
    chat: dict[str, Any] = {"model": route.code, "messages": messages, "max_tokens": 64, "temperature": 0}
    try:
        body, _ = dialects.upstream_body(family, chat, route)
        call = generate_call(route, body, False)
        resp = await client.request("POST", call.url, call.headers, call.body,
                                    Timeouts(connect=timeout_s, first_byte=timeout_s, read=timeout_s))
        if resp.status >= 400:
            return None
        answer = dialects.chat_from_upstream(family, orjson.loads(resp.body), route.code)
        content = answer["choices"][0]["message"].get("content")
    except (http.HttpClientError, WireError, orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None
