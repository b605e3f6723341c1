"""Build the upstream HTTP request for a routed model (pure).

Base URL conventions (what an operator types in the provider row):
OpenAI-compatible ``https://api.openai.com/v1`` (we append ``/chat/completions``),
Anthropic ``https://api.anthropic.com`` (we append ``/v1/messages``), Gemini
``https://generativelanguage.googleapis.com`` (we append ``/v1beta/models/…``).
"""

from __future__ import annotations

import attrs

from nexus.gateway.catalog import ModelRoute
from nexus.net.http1.types import Headers
from nexus.wire import gemini

ANTHROPIC_VERSION = b"2023-06-01"
_JSON = (b"content-type", b"application/json")
_SSE = (b"accept", b"text/event-stream")


@attrs.frozen(slots=True)
class UpstreamCall:
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _anthropic_base(base: str) -> str:
    return base[:-3] if base.endswith("/v1") else base


def _auth(route: ModelRoute) -> list[tuple[bytes, bytes]]:
    secret = route.provider.secret
    if secret is None:
        return []
    family = route.provider.family
    if family == "anthropic":
        return [(b"x-api-key", secret.encode())]
    if family == "gemini":
        return [(b"x-goog-api-key", secret.encode())]
    return [(b"authorization", b"Bearer " + secret.encode())]


def forwarded(client_headers: Headers | None, prefixes: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """The client's headers the operator chose to pass upstream (``gateway.forward_headers``)."""
    if client_headers is None or not prefixes:
        return []
    return [(k, v) for k, v in client_headers.raw() if k.startswith(prefixes)]


def generate_call(route: ModelRoute, body: bytes, stream: bool, client_headers: Headers | None = None,
                  forward: tuple[bytes, ...] = ()) -> UpstreamCall:
    """The chat-style generation call (chat completions, messages, generateContent)."""
    family = route.provider.family
    headers = [_JSON, *_auth(route), *forwarded(client_headers, forward)]
    if stream:
        headers.append(_SSE)
    base = route.provider.base_url
    if family == "anthropic":
        version = client_headers.get_bytes("anthropic-version") if client_headers is not None else None
        headers.append((b"anthropic-version", version or ANTHROPIC_VERSION))
        beta = client_headers.get_bytes("anthropic-beta") if client_headers is not None else None
        if beta:
            headers.append((b"anthropic-beta", beta))
        return UpstreamCall(_anthropic_base(base) + "/v1/messages", headers, body)
    if family == "gemini":
        return UpstreamCall(base + gemini.path(route.upstream_model, stream), headers, body)
    return UpstreamCall(base + "/chat/completions", headers, body)


def embeddings_call(route: ModelRoute, body: bytes, client_headers: Headers | None = None,
                    forward: tuple[bytes, ...] = ()) -> UpstreamCall:
    return UpstreamCall(route.provider.base_url + "/embeddings",
                        [_JSON, *_auth(route), *forwarded(client_headers, forward)], body)


def count_tokens_call(route: ModelRoute, body: bytes, client_headers: Headers) -> UpstreamCall:
    headers = [_JSON, *_auth(route),
               (b"anthropic-version", client_headers.get_bytes("anthropic-version") or ANTHROPIC_VERSION)]
    return UpstreamCall(_anthropic_base(route.provider.base_url) + "/v1/messages/count_tokens", headers, body)
