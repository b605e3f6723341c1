"""Embeddings for the semantic cache, through the gateway's own provider layer.

The configured embedding model is a catalog model code: it resolves like any
model (``CatalogHolder.current``), the provider row's base URL and credential
apply, and the call goes over the gateway's pooled upstream client.  Only
OpenAI-compatible providers serve ``/embeddings`` here (as for the gateway's
own ``/v1/embeddings`` route).  Vectors are asked for as base64 float32 (a
fraction of the JSON float list to parse) and come back unit length.

Errors: every failure — not in the catalog, unreachable, timeout, error
status, a body that is not an embedding — raises ``EmbeddingFailed``; the
caller counts it against the circuit breaker.  Cancellation propagates (the
pooled connection is dropped by the client).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from nexus.gateway.cache.vectors import Vector, from_bytes, unit
from nexus.gateway.catalog import CatalogHolder
from nexus.gateway.providers.upstream import embeddings_call
from nexus.net.http1 import client as http
from nexus.net.http1.types import Timeouts


class EmbeddingFailed(Exception):
    """The embedding endpoint gave no usable vector; ``str()`` says why (no secrets)."""


class Embedder:
    """Embeds one text with ``model`` (a catalog code), asking for ``dimensions`` when not 0."""

    def __init__(self, client: http.HttpClient, catalog: CatalogHolder, model: str, dimensions: int = 0) -> None:
        self.client = client
        self.catalog = catalog
        self.model = model
        self.dimensions = dimensions

    async def embed(self, text: str, timeout: float) -> Vector:
        route = self.catalog.current.resolve(self.model)
        if route is None:
            raise EmbeddingFailed(f"embedding model {self.model!r} is not in the catalog")
        if route.provider.family != "openai":
            raise EmbeddingFailed(f"embedding model {self.model!r} is served by a {route.provider.adapter} "
                                  "provider; only OpenAI-compatible ones are called for embeddings")
        body: dict[str, Any] = {"model": route.upstream_model, "input": text, "encoding_format": "base64"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        call = embeddings_call(route, orjson.dumps(body))
        limits = Timeouts(connect=timeout, first_byte=timeout, read=timeout, pool_acquire=timeout)
        try:
            resp = await self.client.request("POST", call.url, call.headers, call.body, limits)
        except http.HttpClientError as exc:
            raise EmbeddingFailed(f"embedding upstream failed: {type(exc).__name__}: {exc}") from None
        if resp.status != 200:
            raise EmbeddingFailed(f"embedding upstream answered {resp.status}")
        vector = unit(_vector(resp.body))
        if vector is None:
            raise EmbeddingFailed("embedding upstream returned a zero or non-finite vector")
        return vector


def _vector(body: bytes) -> Any:
    try:
        data = orjson.loads(body)["data"][0]["embedding"]
        if isinstance(data, str):
            return from_bytes(base64.b64decode(data, validate=True))
        if isinstance(data, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in data):
            return data
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, binascii.Error):
        pass
    raise EmbeddingFailed("embedding upstream answered with a body that holds no embedding")
