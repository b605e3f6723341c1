"""Token usage: one record for every dialect, read from and written back to each.

Pure.  :class:`Usage` is the gateway's accounting unit; the ``from_*`` readers
take a provider's usage object (the parsed dict, or ``None``) and never raise on
missing or null fields — a provider that reports nothing costs nothing rather
than failing a paid-for answer.  The ``to_*`` writers build the caller's usage
object from a record.

Conventions (what the numbers mean, whatever the provider called them):

- ``prompt_tokens`` counts *every* input token, cached ones included.  Anthropic
  reports uncached input, cache reads and cache writes separately, so its prompt
  is their sum; Gemini's ``promptTokenCount`` already includes the cached part,
  and tool-use prompt tokens are added to it.
- ``completion_tokens`` counts every output token, reasoning included.  Gemini
  reports thoughts beside the candidates, so its completion is their sum.
- ``cached_tokens`` is the part of the prompt read from a cache;
  ``cache_write_tokens`` the part written to one (Anthropic ``cache_creation``,
  billed above the input price); ``reasoning_tokens`` the part of the completion
  spent thinking.  In OpenAI-shaped usage, cache writes travel as the side
  field ``prompt_tokens_details.cache_write_tokens`` so they survive a trip
  through canonical form.
"""

from __future__ import annotations

from typing import Any

import attrs

Obj = dict[str, Any]


@attrs.define(slots=True)
class Usage:
    """Token counts of one request; mutable so stream translators update it in place."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(value: Any) -> int:
    # Providers send null, absent, or (rarely) floats for counts.
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def from_openai(u: Obj | None) -> Usage:
    """OpenAI chat ``usage``, including the OpenAI-compatible providers' variants.

    DeepSeek reports cache hits as ``prompt_cache_hit_tokens`` and Moonshot as a
    top-level ``cached_tokens``; both are read when the standard detail is absent.
    """
    if not u:
        return Usage()
    details = u.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    if not cached:
        cached = _int(u.get("prompt_cache_hit_tokens")) or _int(u.get("cached_tokens"))
    out = u.get("completion_tokens_details") or {}
    reasoning = _int(out.get("reasoning_tokens")) if isinstance(out, dict) else 0
    return Usage(
        prompt_tokens=_int(u.get("prompt_tokens")),
        completion_tokens=_int(u.get("completion_tokens")),
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cache_write_tokens=_int(details.get("cache_write_tokens")) if isinstance(details, dict) else 0,
    )


def to_openai(u: Usage) -> Obj:
    """OpenAI chat ``usage``; cache writes (a side field) only appear when there were some."""
    details: Obj = {"cached_tokens": u.cached_tokens}
    if u.cache_write_tokens:
        details["cache_write_tokens"] = u.cache_write_tokens
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def from_anthropic(u: Obj | None) -> Usage:
    """Anthropic ``usage`` (a whole message's, or a stream's running totals)."""
    if not u:
        return Usage()
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    details = u.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=_int(u.get("input_tokens")) + read + write,
        completion_tokens=_int(u.get("output_tokens")),
        cached_tokens=read,
        reasoning_tokens=_int(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
        cache_write_tokens=write,
    )


def to_anthropic(u: Usage) -> Obj:
    return {
        "input_tokens": max(u.prompt_tokens - u.cached_tokens - u.cache_write_tokens, 0),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    }


def from_gemini(m: Obj | None) -> Usage:
    """Gemini ``usageMetadata``."""
    if not m:
        return Usage()
    thoughts = _int(m.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=_int(m.get("promptTokenCount")) + _int(m.get("toolUsePromptTokenCount")),
        completion_tokens=_int(m.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_int(m.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def to_gemini(u: Usage) -> Obj:
    meta: Obj = {
        "promptTokenCount": u.prompt_tokens,
        "candidatesTokenCount": u.completion_tokens - u.reasoning_tokens,
        "totalTokenCount": u.total,
    }
    if u.cached_tokens:
        meta["cachedContentTokenCount"] = u.cached_tokens
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    return meta


def from_responses(u: Obj | None) -> Usage:
    """OpenAI Responses ``usage``."""
    if not u:
        return Usage()
    inp = u.get("input_tokens_details") or {}
    out = u.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=_int(u.get("input_tokens")),
        completion_tokens=_int(u.get("output_tokens")),
        cached_tokens=_int(inp.get("cached_tokens")) if isinstance(inp, dict) else 0,
        reasoning_tokens=_int(out.get("reasoning_tokens")) if isinstance(out, dict) else 0,
        cache_write_tokens=_int(inp.get("cache_write_tokens")) if isinstance(inp, dict) else 0,
    )


def to_responses(u: Usage) -> Obj:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total,
    }
