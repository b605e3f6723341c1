"""The one input record of the compliance engine, and the text it scans.  Pure.

Every pipe (gateway, proxy, agent) builds an ``Exchange`` per stage: who sent it
(org, project, key, user, source ip), where it goes (provider type, instance,
region, model), and the text ``Segment`` list to scan.  A segment's ``locator``
is its path inside the canonical (OpenAI chat) body, e.g.
``("messages", 3, "content", 0, "text")`` or
``("choices", 0, "message", "tool_calls", 1, "function", "arguments")``, so a
redaction maps straight back onto the body (``apply_segments``).

What is scanned: message contents (a string, or the ``text`` and ``refusal``
parts of a part list), so system prompts and tool results too; tool-call and
legacy function-call arguments (the raw JSON string); for responses also
``refusal`` and reasoning text.  Never JSON punctuation, image or audio parts,
or base64 payloads.  Reasoning in request history is not scanned: it is the
provider's own earlier output, and rewriting it would break thinking signatures.

Streams: ``chunk_texts`` lists the text of one canonical chunk, each with its
locator inside the chunk and its ``channel``, the locator of the same text in
the assembled response (``("choices", c, "message", "content")`` …), so the
text of a stream is the concatenation of its chunks per channel.

Errors: ``apply_segments`` raises ``ExchangeError`` (a ``ValueError``) when a
locator does not name a string in the body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import orjson

__all__ = [
    "ChunkText",
    "Exchange",
    "ExchangeError",
    "Ingress",
    "Locator",
    "Segment",
    "Stage",
    "apply_segments",
    "chunk_texts",
    "request_segments",
    "response_segments",
]

Stage = Literal["connection", "request", "response"]
Ingress = Literal["gateway", "proxy", "agent"]
Locator = tuple[str | int, ...]
Obj = dict[str, Any]


class ExchangeError(ValueError):
    """A locator names nothing rewritable in the body."""


@attrs.frozen(slots=True)
class Segment:
    locator: Locator
    text: str


@attrs.frozen(slots=True)
class ChunkText:
    """Text of one stream chunk: ``locator`` inside the chunk, ``channel`` in the assembled response."""

    channel: Locator
    locator: Locator
    text: str


@attrs.frozen(slots=True, kw_only=True)
class Exchange:
    """One stage of one request as the hooks see it.

    ``body_size`` is the body length on the wire in bytes (the request-size
    validator reads it).  ``classifications`` are data labels the pipe knows
    before any hook ran (from the key, project or route), merged with the tags
    hooks find for data residency.  Ids are strings (UUID text).
    """

    stage: Stage
    ingress: Ingress
    segments: tuple[Segment, ...] = ()
    org_id: str | None = None
    project_id: str | None = None
    key_id: str | None = None
    user_id: str | None = None
    source_ip: str | None = None
    host: str | None = None
    provider_type: str | None = None
    provider_id: str | None = None
    provider_region: str | None = None
    model: str | None = None
    body_size: int = 0
    request_id: str | None = None
    classifications: frozenset[str] = frozenset()
    stream: bool = False

    @classmethod
    def for_request(cls, body: Mapping[str, Any], *, ingress: Ingress, **meta: Any) -> Exchange:
        """A request-stage exchange over a canonical chat request (``model`` read from it unless given)."""
        meta.setdefault("model", _str_or_none(body.get("model")))
        meta.setdefault("stream", body.get("stream") is True)
        return cls(stage="request", ingress=ingress, segments=request_segments(body), **meta)

    @classmethod
    def for_response(cls, body: Mapping[str, Any], *, ingress: Ingress, **meta: Any) -> Exchange:
        """A response-stage exchange over a canonical ``chat.completion``."""
        meta.setdefault("model", _str_or_none(body.get("model")))
        return cls(stage="response", ingress=ingress, segments=response_segments(body), **meta)

    def with_segments(self, segments: tuple[Segment, ...]) -> Exchange:
        return attrs.evolve(self, segments=segments)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _content(out: list[Segment], content: object, base: Locator) -> None:
    if isinstance(content, str):
        if content:
            out.append(Segment((*base, "content"), content))
        return
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            field = "text"
        elif kind == "refusal":
            field = "refusal"
        else:
            # image_url, input_audio, file: binary payloads are not text to scan.
            continue
        text = part.get(field)
        if isinstance(text, str) and text:
            out.append(Segment((*base, "content", j, field), text))


def _calls(out: list[Segment], msg: Mapping[str, Any], base: Locator) -> None:
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        for k, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            args = fn.get("arguments") if isinstance(fn, dict) else None
            if isinstance(args, str) and args:
                out.append(Segment((*base, "tool_calls", k, "function", "arguments"), args))
    legacy = msg.get("function_call")
    if isinstance(legacy, dict):
        args = legacy.get("arguments")
        if isinstance(args, str) and args:
            out.append(Segment((*base, "function_call", "arguments"), args))


def request_segments(body: Mapping[str, Any]) -> tuple[Segment, ...]:
    """The text of a canonical chat request: every message's content and tool-call arguments."""
    out: list[Segment] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        base: Locator = ("messages", i)
        _content(out, msg.get("content"), base)
        _calls(out, msg, base)
    return tuple(out)


def response_segments(body: Mapping[str, Any]) -> tuple[Segment, ...]:
    """The text of a canonical ``chat.completion``: content, refusal, reasoning, tool-call arguments."""
    out: list[Segment] = []
    choices = body.get("choices")
    if not isinstance(choices, list):
        return ()
    for c, choice in enumerate(choices):
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict):
            continue
        base: Locator = ("choices", c, "message")
        _content(out, msg.get("content"), base)
        for field in ("refusal", "reasoning_content", "reasoning"):
            text = msg.get(field)
            if isinstance(text, str) and text:
                out.append(Segment((*base, field), text))
        _calls(out, msg, base)
    return tuple(out)


def chunk_texts(chunk: Mapping[str, Any]) -> list[ChunkText]:
    """The text deltas of one canonical stream chunk, each with its channel.

    A channel uses the choice's and tool call's ``index`` fields (not list
    positions), because that is what ties deltas of one stream together.
    """
    out: list[ChunkText] = []
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return out
    for pos, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        c = choice.get("index", pos)
        base: Locator = ("choices", pos, "delta")
        channel: Locator = ("choices", c, "message")
        for field in ("content", "refusal", "reasoning_content", "reasoning"):
            text = delta.get(field)
            if isinstance(text, str) and text:
                name = "reasoning_content" if field == "reasoning" else field
                out.append(ChunkText((*channel, name), (*base, field), text))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for k, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                args = fn.get("arguments") if isinstance(fn, dict) else None
                if isinstance(args, str) and args:
                    t = call.get("index", k)
                    out.append(
                        ChunkText(
                            (*channel, "tool_calls", t, "function", "arguments"),
                            (*base, "tool_calls", k, "function", "arguments"),
                            args,
                        )
                    )
    return out


def apply_segments(body: Obj, rewrites: Iterable[Segment]) -> Obj:
    """A copy of ``body`` with each rewrite's text put at its locator; ``body`` is not changed.

    Only the containers on the rewritten paths are copied.  Tool-call arguments
    that were valid JSON stay valid JSON: when a rewrite broke them (a span that
    crossed a quote), the rewritten text is stored as one JSON string instead,
    so no masked value escapes and the arguments still parse.
    """
    trie: dict[Any, Any] = {}
    for seg in rewrites:
        if not seg.locator:
            raise ExchangeError("empty locator")
        node = trie
        for key in seg.locator[:-1]:
            node = node.setdefault(key, {})
            if isinstance(node, Segment):
                raise ExchangeError(f"locator {seg.locator!r} runs through a rewritten string")
        node[seg.locator[-1]] = seg
    if not trie:
        return body
    out = _rebuild(body, trie, ())
    assert isinstance(out, dict)
    return out


def _rebuild(obj: Any, node: dict[Any, Any], path: Locator) -> Any:
    if isinstance(obj, dict):
        copy: Any = dict(obj)
    elif isinstance(obj, list):
        copy = list(obj)
    else:
        raise ExchangeError(f"locator {path!r} does not name a container")
    for key, child in node.items():
        try:
            current = copy[key]
        except (KeyError, IndexError, TypeError):
            raise ExchangeError(f"locator {(*path, key)!r} names nothing in the body") from None
        if isinstance(child, Segment):
            if not isinstance(current, str):
                raise ExchangeError(f"locator {child.locator!r} does not name a string")
            copy[key] = _json_safe(current, child.text) if key == "arguments" else child.text
        else:
            copy[key] = _rebuild(current, child, (*path, key))
    return copy


def _json_safe(original: str, rewritten: str) -> str:
    try:
        orjson.loads(rewritten)
    except orjson.JSONDecodeError:
        try:
            orjson.loads(original)
        except orjson.JSONDecodeError:
            return rewritten
        return orjson.dumps(rewritten).decode()
    return rewritten
