"""Exact-cache rules: whether a request may use the cache, and whether an answer may be stored.

Pure.  ``CachePolicy`` is the configuration (attrs, validated);
``lookup_reason`` returns why a request must bypass the cache (None: it may
use it); ``poison_reason`` returns why an answer must not be stored (None: it
may be).  The gateway reports a bypass as ``X-Nexus-Cache: bypass``.

Never stored (the poison guard): error answers, answers a hook blocked or
redacted, and truncated ones — a stream that ended without a finish reason
(upstream failure, client gone), ``length`` (cut at the token limit) and
``content_filter`` (the provider withheld it).  A cached answer is replayed to
every later identical request for the whole TTL, so a partial or filtered
answer must never become one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import attrs

from nexus.gateway.cache.key import Scope

TTL_MIN: Final = 60
TTL_MAX: Final = 604_800
MAX_ENTRY_BYTES: Final = 1 << 20
# Finish reasons of a complete, unfiltered answer.
COMPLETE: Final = frozenset({"stop", "tool_calls", "function_call"})

Endpoint = Literal["chat", "embeddings"]


@attrs.frozen
class CachePolicy:
    """The exact cache's settings.

    ``ttl_seconds``: 60 to 604800.  ``max_entry_bytes``: the encoded entry, at
    most 1 MiB.  ``embeddings``: cache /v1/embeddings too.
    ``deterministic_only``: only chat requests with ``temperature`` 0 (absent
    counts as the provider default, 1).  ``scope``: see ``key.scope_tag``.
    """

    enabled: bool = True
    ttl_seconds: int = attrs.field(default=3600, validator=[attrs.validators.ge(TTL_MIN),
                                                            attrs.validators.le(TTL_MAX)])
    max_entry_bytes: int = attrs.field(default=MAX_ENTRY_BYTES, validator=[attrs.validators.ge(1),
                                                                           attrs.validators.le(MAX_ENTRY_BYTES)])
    embeddings: bool = False
    deterministic_only: bool = False
    scope: Scope = "global"


DEFAULT: Final = CachePolicy()


def no_cache_requested(value: str | bytes | None) -> bool:
    """``x-nexus-no-cache``: any value but ``0`` / ``false`` / ``no`` / empty skips the cache."""
    if value is None:
        return False
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return text.strip().lower() not in ("", "0", "false", "no")


def lookup_reason(policy: CachePolicy, endpoint: Endpoint, body: Mapping[str, Any], *,
                  no_cache: bool = False) -> str | None:
    """Why this request bypasses the cache, or None when it may use it."""
    if not policy.enabled:
        return "cache disabled"
    if no_cache:
        return "x-nexus-no-cache"
    if endpoint == "embeddings" and not policy.embeddings:
        return "embeddings are not cached"
    if policy.deterministic_only and endpoint == "chat":
        temperature = body.get("temperature", 1)
        if not isinstance(temperature, int | float) or isinstance(temperature, bool) or temperature != 0:
            return "temperature is not 0"
    return None


def finish_reasons(response: Mapping[str, Any]) -> list[str | None]:
    """The finish reason of every choice of a canonical ``chat.completion``."""
    return [c.get("finish_reason") for c in response.get("choices") or () if isinstance(c, dict)]


def poison_reason(*, status: int, error: str | None = None, finish: Iterable[str | None] = (),
                  blocked: bool = False, redacted: bool = False) -> str | None:
    """Why this answer must not be stored, or None.

    ``finish``: every choice's finish reason for a chat answer (``[None]`` for
    a stream that ended without one); empty for embeddings.
    """
    if status != 200 or error is not None:
        return "error answer"
    if blocked:
        return "blocked by a hook"
    if redacted:
        return "redacted by a hook"
    for reason in finish:
        if reason not in COMPLETE:
            return f"incomplete answer (finish reason {reason})"
    return None
