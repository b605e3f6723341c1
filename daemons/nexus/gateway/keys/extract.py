"""Find the virtual key a request carries (pure).

Accepted: ``Authorization: Bearer nvk_…`` and ``x-nexus-virtual-key`` on every
route; on native routes also the header that dialect's SDK sends (``x-api-key``
for Anthropic, ``x-goog-api-key`` for Gemini, ``api-key`` for Azure).  A key in
the query string is refused outright: URLs end up in proxy and access logs.
"""

from __future__ import annotations

from typing import Literal

from nexus.net.http1.types import Headers

Dialect = Literal["openai", "anthropic", "gemini", "azure"]

_NATIVE = {"anthropic": "x-api-key", "gemini": "x-goog-api-key", "azure": "api-key"}
_QUERY_NAMES = ("key=", "api_key=", "api-key=", "apikey=", "access_token=", "virtual_key=")


class KeyInQuery(Exception):
    """The request put a credential in its URL."""


def key_in_query(query: str) -> bool:
    if not query:
        return False
    lowered = query.lower()
    return any(part.startswith(_QUERY_NAMES) for part in lowered.split("&")) or "nvk_" in lowered


def extract_key(headers: Headers, query: str, dialect: Dialect) -> str | None:
    if key_in_query(query):
        raise KeyInQuery
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    explicit = headers.get("x-nexus-virtual-key")
    if explicit:
        return explicit.strip()
    native = _NATIVE.get(dialect)
    if native is not None:
        value = headers.get(native)
        if value:
            return value.strip()
    # SDKs of every dialect may be pointed at us with their own header; accept ours from any of them.
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        value = headers.get(name)
        if value and value.startswith("nvk_"):
            return value.strip()
    return None
