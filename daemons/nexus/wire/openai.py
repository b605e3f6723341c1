"""OpenAI Chat Completions: SSE framing, passthrough observation, canonical → upstream body.

Pure.  The canonical shape *is* OpenAI chat, so this dialect needs no codec:

- :func:`encode` frames one chunk (``data: {json}\\n\\n``) and :data:`DONE`
  ends a stream; mid-stream errors are ``errors.stream_error("openai", …)``.
- :class:`StreamObserver` watches a passthrough stream (OpenAI itself and the
  OpenAI-compatible providers) for usage and finish reason, and hides the
  usage chunk the gateway asked for on the client's behalf.
- :func:`upstream_request` turns a canonical request that came from another
  caller dialect into a body an OpenAI-family upstream accepts: Nexus side
  fields (see ``canonical``) are removed, because OpenAI rejects unknown
  parameters.

Error handling: ``StreamObserver.feed`` raises ``WireError`` when the upstream
sends an error object in the stream; ``finish`` raises it when the stream ended
before any finish reason.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from nexus.wire.canonical import Event, Obj
from nexus.wire.errors import WireError, error_from_stream_event
from nexus.wire.usage import Usage, from_openai

DONE: Final = b"data: [DONE]\n\n"


def encode(event: str | None, data: Obj) -> bytes:
    """One SSE frame; OpenAI chat frames carry no event name, so ``event`` is ignored."""
    del event
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _usage_of(data: Obj) -> Obj | None:
    u = data.get("usage")
    if u:
        return u  # type: ignore[no-any-return]
    # Groq reports stream usage under its own key on the last chunk.
    x = data.get("x_groq")
    return x.get("usage") if isinstance(x, dict) else None


class StreamObserver:
    """Watches an OpenAI-chat stream that passes through untouched.

    ``feed`` returns ``[(None, data)]`` with the *same* dict it was given when the
    frame may be forwarded as the raw bytes it came in; a different dict means
    the frame was edited (the usage removed from a chunk that also carries
    choices) and must be re-encoded; an empty list means the frame is dropped
    (the usage-only chunk the client did not ask for).
    """

    def __init__(self, *, strip_usage: bool) -> None:
        self._strip = strip_usage
        self.usage = Usage()
        self.finish_reason: str | None = None

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        if "error" in data:
            raise error_from_stream_event("openai", data["error"])
        choices = data.get("choices")
        if choices:
            for c in choices:
                fr = c.get("finish_reason")
                if fr:
                    self.finish_reason = fr
        u = _usage_of(data)
        if u:
            self.usage = from_openai(u)
            if self._strip:
                if not choices:
                    return []
                return [(event, {k: v for k, v in data.items() if k != "usage"})]
        return [(event, data)]

    def finish(self) -> list[Event]:
        if self.finish_reason is None:
            raise WireError("upstream_error", "upstream stream ended before a finish reason")
        return []


# Request keys that exist only in canonical form.
_SIDE_KEYS: Final = ("thinking", "top_k")


def _clean_message(msg: Obj) -> Obj:
    out = msg
    if "thinking_blocks" in msg or "reasoning_content" in msg or "is_error" in msg:
        out = {k: v for k, v in msg.items() if k not in ("thinking_blocks", "reasoning_content", "is_error")}
    content = out.get("content")
    if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
        out = {**out, "content": [_without(p, "cache_control") for p in content]}
    calls = out.get("tool_calls")
    if calls and any("extra_content" in tc for tc in calls):
        out = {**out, "tool_calls": [_without(tc, "extra_content") for tc in calls]}
    return out


def _without(d: Any, key: str) -> Any:
    if isinstance(d, dict) and key in d:
        return {k: v for k, v in d.items() if k != key}
    return d


def upstream_request(chat: Obj, model: str, *, include_usage: bool = True, legacy_max_tokens: bool = False) -> Obj:
    """A canonical request as the body for an OpenAI-family upstream.

    Sets ``model``; removes Nexus side fields (request ``thinking`` and
    ``top_k``, message ``thinking_blocks`` / ``reasoning_content`` /
    ``is_error``, part ``cache_control``, tool-call ``extra_content``); asks for
    stream usage when streaming and ``include_usage``.  ``legacy_max_tokens``
    sends the limit as ``max_tokens`` for providers that do not know
    ``max_completion_tokens``.  Only containers that change are copied.
    """
    out = {k: v for k, v in chat.items() if k not in _SIDE_KEYS}
    out["model"] = model
    out["messages"] = [_clean_message(m) for m in chat.get("messages") or ()]
    tools = out.get("tools")
    if tools and any("cache_control" in t for t in tools):
        out["tools"] = [_without(t, "cache_control") for t in tools]
    if legacy_max_tokens and "max_completion_tokens" in out:
        out["max_tokens"] = out.pop("max_completion_tokens")
    if include_usage and out.get("stream") is True:
        opts = out.get("stream_options")
        out["stream_options"] = {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
    return out
