"""The four caller dialects and the three upstream families: how a request becomes canonical,
goes upstream, and comes back, in one table per side (pure).

Same-family traffic (an OpenAI caller to an OpenAI-compatible upstream, Anthropic to
Anthropic, Gemini to Gemini) never goes through the codecs: the raw body is
forwarded with only ``model`` rewritten, and the stream is watched, not rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson

from nexus.gateway.catalog import Family, ModelRoute
from nexus.gateway.errors import Caller
from nexus.wire import anthropic, gemini, openai, rawjson, responses
from nexus.wire.canonical import Obj, StreamTranslator
from nexus.wire.usage import Usage, from_anthropic, from_gemini, from_openai

WireDialect = Literal["openai", "anthropic", "gemini"]

WIRE: dict[Caller, WireDialect] = {
    "openai": "openai", "responses": "openai", "anthropic": "anthropic", "gemini": "gemini",
}
# The upstream family a caller can be passed straight through to.
SAME_FAMILY: dict[Caller, Family | None] = {
    "openai": "openai", "responses": None, "anthropic": "anthropic", "gemini": "gemini",
}
DEFAULT_MAX_TOKENS = 4096


def to_chat(caller: Caller, parsed: Obj, model: str, stream: bool) -> Obj:
    """The caller's request as a canonical chat request (raises ``WireError`` when it cannot be expressed)."""
    if caller == "openai":
        return parsed
    if caller == "responses":
        return responses.chat_from_request(parsed)
    if caller == "anthropic":
        return anthropic.chat_from_request(parsed)
    return gemini.chat_from_request(model, parsed, stream)


def upstream_body(family: Family, chat: Obj, route: ModelRoute) -> tuple[bytes, list[str]]:
    """A canonical chat request in the upstream family's wire format, and what had to be coerced."""
    if family == "openai":
        return orjson.dumps(openai.upstream_request(chat, route.upstream_model)), []
    if family == "anthropic":
        body, coerced = anthropic.request_from_chat(
            chat, route.upstream_model, route.default_max_tokens or DEFAULT_MAX_TOKENS)
        return orjson.dumps(body), coerced
    body, coerced = gemini.request_from_chat(chat)
    return orjson.dumps(body), coerced


def passthrough_body(family: Family, raw: bytes, route: ModelRoute) -> tuple[bytes, bool]:
    """The caller's own bytes for a same-family upstream; True when we asked for stream usage ourselves."""
    if family == "openai":
        return rawjson.passthrough(raw, route.upstream_model)
    if family == "anthropic":
        return rawjson.rewrite_model(raw, route.upstream_model), False
    return raw, False  # Gemini names the model in the URL


def chat_from_upstream(family: Family, data: Obj, model: str) -> Obj:
    if family == "openai":
        return data
    if family == "anthropic":
        return anthropic.chat_from_response(data, model)
    return gemini.chat_from_response(data, model)


def response_for_caller(caller: Caller, chat_resp: Obj, request: Obj) -> Obj:
    if caller == "openai":
        return chat_resp
    if caller == "responses":
        return responses.response_from_chat(chat_resp, request)
    if caller == "anthropic":
        return anthropic.response_from_chat(chat_resp)
    return gemini.response_from_chat(chat_resp)


USAGE_OF: dict[Family, Callable[[Any], Usage]] = {
    "openai": lambda d: from_openai(d.get("usage")),
    "anthropic": lambda d: from_anthropic(d.get("usage")),
    "gemini": lambda d: from_gemini(d.get("usageMetadata")),
}


def upstream_error_in_body(family: Family, data: Any) -> Any:
    """A 200 whose body is an error object (some providers and proxies do this): the error, else None."""
    if not isinstance(data, dict):
        return {"message": "upstream answered with a non-object body"}
    if family == "anthropic":
        return data.get("error") if data.get("type") == "error" else None
    return data.get("error")


def stream_decoder(family: Family, model: str) -> StreamTranslator:
    """Upstream events → canonical chunks (for OpenAI-family upstreams an observer that checks for error frames
    and tracks usage while passing the chunks on)."""
    if family == "anthropic":
        return anthropic.StreamToChat(model)
    if family == "gemini":
        return gemini.StreamToChat(model)
    return openai.StreamObserver(strip_usage=False)


def stream_encoder(caller: Caller, request: Obj) -> Any:
    """Canonical chunks → the caller's events (None: the caller wants canonical chunks)."""
    if caller == "responses":
        return responses.StreamFromChat(request)
    if caller == "anthropic":
        return anthropic.StreamFromChat(request)
    if caller == "gemini":
        return gemini.StreamFromChat()
    return None


def stream_observer(family: Family, strip_usage: bool) -> Any:
    if family == "openai":
        return openai.StreamObserver(strip_usage=strip_usage)
    if family == "anthropic":
        return anthropic.StreamObserver()
    return gemini.StreamObserver()


ENCODE: dict[Caller, Callable[[str | None, Obj], bytes]] = {
    "openai": openai.encode, "responses": responses.encode, "anthropic": anthropic.encode, "gemini": gemini.encode,
}
