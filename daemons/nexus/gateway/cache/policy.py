"""Cache rules: whether a request may use the cache, and whether an answer may be stored.

Pure.  ``CachePolicy`` is the exact cache's configuration (attrs, validated);
``lookup_reason`` returns why a request must bypass the cache (None: it may
use it); ``poison_reason`` returns why an answer must not be stored (None: it
may be).  The gateway reports a bypass as ``X-Nexus-Cache: bypass``.

``SemanticPolicy`` configures the semantic cache; ``semantic_wanted`` says
whether one request opted in (config or the ``x-nexus-semantic-cache``
header); ``semantic_poison_reason`` is the stricter guard for answers served
to *other* prompts: on top of ``poison_reason`` it refuses tool calls (their
arguments were derived from the exact wording), empty answers, and any
exchange a hook flagged, even in observe mode where nothing was changed.

Never stored (the poison guard): error answers, answers a hook blocked or
redacted, and truncated ones — a stream that ended without a finish reason
(upstream failure, client gone), ``length`` (cut at the token limit) and
``content_filter`` (the provider withheld it).  A cached answer is replayed to
every later identical request for the whole TTL, so a partial or filtered
answer must never become one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
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


@attrs.frozen
class SemanticPolicy:
    """The semantic cache's settings (``gateway.cache.semantic`` of the config).

    ``threshold``: the cosine similarity a neighbour needs to be a hit.
    ``budget_ms``: embedding plus search; past it the lookup is a miss.
    ``default_on`` / ``models`` (globs over model codes) / ``keys`` (virtual
    key ids): who is opted in without the header.  ``max_chars``: longer
    prompts are not embedded.
    """

    embedding_model: str
    threshold: float = attrs.field(default=0.96, validator=[attrs.validators.gt(0.0), attrs.validators.le(1.0)])
    budget_ms: float = attrs.field(default=20.0, validator=attrs.validators.gt(0.0))
    default_on: bool = False
    models: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()
    dimensions: int = 0
    max_chars: int = 8000


def semantic_header(value: str | None) -> bool | None:
    """``x-nexus-semantic-cache``: True (on), False (off) or None (absent); ``ValueError`` for anything else."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("on", "1", "true", "yes"):
        return True
    if text in ("off", "0", "false", "no"):
        return False
    raise ValueError("x-nexus-semantic-cache must be on or off")


def semantic_wanted(policy: SemanticPolicy, *, header: bool | None, model: str, key_id: str) -> bool:
    """Whether this request uses the semantic cache: the header decides when present, else the config."""
    if header is not None:
        return header
    return policy.default_on or key_id in policy.keys or any(fnmatchcase(model, g) for g in policy.models)


def semantic_poison_reason(response: Mapping[str, Any], *, flagged: bool = False) -> str | None:
    """Why an answer that ``poison_reason`` accepted must still not answer *similar* prompts, or None.

    ``response`` is the canonical answer; ``flagged``: a request or response
    hook reported anything but approve (observe mode included).
    """
    if flagged:
        return "flagged by a hook"
    choices = [c for c in response.get("choices") or () if isinstance(c, dict)]
    if not choices:
        return "no answer"
    text = False
    for choice in choices:
        message = choice.get("message") or {}
        if message.get("tool_calls") or message.get("function_call"):
            return "tool calls"
        content = message.get("content")
        if isinstance(content, str) and content.strip():
            text = True
    return None if text else "empty answer"
