"""The canonical shape (OpenAI Chat Completions) and helpers every codec shares.

Pure.  Canonical requests, responses and stream chunks are plain dicts exactly
as orjson parses an OpenAI chat body; codecs read them without copying and
build new dicts only for what they change.

Side fields.  A few things the OpenAI shape cannot hold travel in extra keys,
so they survive a trip through canonical form.  OpenAI clients ignore them;
``openai.upstream_request`` strips them before a body goes to an OpenAI-family
upstream, which would reject unknown fields.

- request: ``thinking`` (Anthropic's thinking config, verbatim: the Anthropic
  codec sends it as is and the Gemini codec reads ``budget_tokens``), ``top_k``;
- message: ``reasoning_content`` (reasoning text, as DeepSeek, Moonshot and
  others send it), ``thinking_blocks`` (an assistant message's Anthropic
  ``thinking`` / ``redacted_thinking`` blocks with their signatures, in order),
  ``is_error`` on tool messages (Anthropic ``tool_result.is_error``);
- content part: ``cache_control`` (Anthropic prompt caching), on text and
  image parts; also on a tool definition;
- tool call: ``extra_content.google.thought_signature`` (Gemini's thought
  signature, as Google's own OpenAI-compatible endpoint carries it);
- choice: ``native_finish_reason`` (the upstream's own stop reason) and
  ``stop_sequence`` (the Anthropic stop sequence that matched);
- chunk delta: ``reasoning_content`` (thinking text), ``reasoning_signature``
  (ends the current thinking block with its signature), ``redacted_thinking``
  (one opaque redacted block).  Encoders also accept ``reasoning`` (a string,
  as OpenRouter and Groq name it) for ``reasoning_content``.

Streams.  Every stream translator has the interface of
:class:`StreamTranslator`: ``feed(event_name, data)`` per upstream SSE frame and
``finish()`` at the end, each returning ``(event_name, data)`` pairs for the
caller (``None`` for a data-only frame), plus ``usage`` and ``finish_reason``
for the gateway to read at the end.  Canonical chunk streams follow OpenAI's:
a role chunk first, content/reasoning/tool-call deltas, a chunk with
``finish_reason``, then a usage chunk with ``choices: []``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from nexus.wire.usage import Usage, from_openai, to_openai

Obj = dict[str, Any]
Event = tuple[str | None, Obj]

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


class StreamTranslator(Protocol):
    """What the gateway drives for every translated or observed stream."""

    usage: Usage
    finish_reason: str | None

    def feed(self, event: str | None, data: Obj) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


def new_id(prefix: str) -> str:
    """A random identifier such as ``chatcmpl-…``, ``msg_…`` or ``call_…`` (not a secret)."""
    return f"{prefix}{random.getrandbits(96):024x}"


def now() -> int:
    return int(time.time())


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 payload) of a ``data:<type>;base64,<payload>`` URL, else ``None``."""
    if not url.startswith("data:"):
        return None
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[5:-7] or "application/octet-stream", payload


def data_url(media_type: str, b64: str) -> str:
    return f"data:{media_type};base64,{b64}"


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a part list joined."""
    if isinstance(content, str):
        return content
    if not content:
        return ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def reasoning_of(delta: Obj) -> str | None:
    """The reasoning text of a message or delta, under either name providers use."""
    text = delta.get("reasoning_content")
    if text is None:
        text = delta.get("reasoning")
    return text if isinstance(text, str) else None


def parse_arguments(arguments: Any) -> Obj | None:
    """Tool-call arguments (a JSON string) as an object: ``{}`` if empty, ``None`` if not an object."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()


class Chunker:
    """Builds canonical chunks for one stream: shared id, model and created time."""

    __slots__ = ("created", "id", "model")

    def __init__(self, model: str, id: str | None = None) -> None:
        self.id = id or new_id("chatcmpl-")
        self.model = model
        self.created = now()

    def delta(self, delta: Obj, index: int = 0) -> Obj:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}],
        }

    def finish(self, reason: str, index: int = 0, native: str | None = None) -> Obj:
        choice: Obj = {"index": index, "delta": {}, "finish_reason": reason, "logprobs": None}
        if native is not None:
            choice["native_finish_reason"] = native
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def usage(self, usage: Usage) -> Obj:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": to_openai(usage),
        }


def response(id: str, model: str, choices: list[Obj], usage: Usage | None, created: int | None = None) -> Obj:
    """A canonical ``chat.completion`` object."""
    resp: Obj = {
        "id": id,
        "object": "chat.completion",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        resp["usage"] = to_openai(usage)
    return resp


class _Choice:
    __slots__ = ("content", "finish", "native", "reasoning", "refusal", "role", "thinking", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, Obj] = {}
        # Thinking blocks rebuilt from reasoning deltas, closed by a signature.
        self.thinking: list[Obj] = []
        self.finish: str | None = None
        self.native: str | None = None


class Accumulator:
    """Reassembles a canonical chunk stream into the ``chat.completion`` it stands for.

    ``add`` every chunk in order, then ``response()``.  Tool-call fragments are
    joined per ``index`` (id and name from the first fragment that has them);
    reasoning deltas are also rebuilt into ``thinking_blocks`` when signatures or
    redacted blocks were streamed.  Used for caching a streamed answer, for hooks
    that need the whole text, and by the tests.
    """

    def __init__(self) -> None:
        self.id: str | None = None
        self.model = ""
        self.created: int | None = None
        self.usage: Usage | None = None
        self._choices: dict[int, _Choice] = {}

    def add(self, chunk: Obj) -> None:
        if self.id is None:
            self.id = chunk.get("id")
            self.model = chunk.get("model") or ""
            self.created = chunk.get("created")
        u = chunk.get("usage")
        if u:
            self.usage = from_openai(u)
        for c in chunk.get("choices") or ():
            idx = c.get("index", 0)
            st = self._choices.get(idx)
            if st is None:
                st = self._choices[idx] = _Choice()
            delta = c.get("delta") or {}
            self._add_delta(st, delta)
            if c.get("finish_reason"):
                st.finish = c["finish_reason"]
                st.native = c.get("native_finish_reason")

    @staticmethod
    def _add_delta(st: _Choice, delta: Obj) -> None:
        if delta.get("role"):
            st.role = delta["role"]
        if delta.get("content"):
            st.content.append(delta["content"])
        if delta.get("refusal"):
            st.refusal.append(delta["refusal"])
        text = reasoning_of(delta)
        if text:
            st.reasoning.append(text)
            last = st.thinking[-1] if st.thinking else None
            if last is not None and last["type"] == "thinking" and "signature" not in last:
                last["parts"].append(text)
            else:
                st.thinking.append({"type": "thinking", "parts": [text]})
        sig = delta.get("reasoning_signature")
        if sig:
            last = st.thinking[-1] if st.thinking else None
            if last is None or last["type"] != "thinking" or "signature" in last:
                st.thinking.append({"type": "thinking", "parts": []})
            st.thinking[-1]["signature"] = sig
        if delta.get("redacted_thinking"):
            st.thinking.append({"type": "redacted_thinking", "data": delta["redacted_thinking"]})
        for tc in delta.get("tool_calls") or ():
            i = tc.get("index", 0)
            call = st.tools.get(i)
            if call is None:
                call = st.tools[i] = {"id": None, "type": "function", "name": None, "args": [], "extra": None}
            if tc.get("id"):
                call["id"] = tc["id"]
            fn = tc.get("function") or {}
            if fn.get("name"):
                call["name"] = fn["name"]
            if fn.get("arguments"):
                call["args"].append(fn["arguments"])
            if tc.get("extra_content"):
                call["extra"] = tc["extra_content"]

    def response(self) -> Obj:
        choices = []
        for idx in sorted(self._choices):
            st = self._choices[idx]
            msg: Obj = {"role": st.role, "content": "".join(st.content) if st.content else None}
            if st.refusal:
                msg["refusal"] = "".join(st.refusal)
            if st.reasoning:
                msg["reasoning_content"] = "".join(st.reasoning)
            if any(b["type"] == "redacted_thinking" or b.get("signature") for b in st.thinking):
                msg["thinking_blocks"] = [_thinking_block(b) for b in st.thinking]
            if st.tools:
                msg["tool_calls"] = [_tool_call(st.tools[i]) for i in sorted(st.tools)]
            choice: Obj = {"index": idx, "message": msg, "finish_reason": st.finish, "logprobs": None}
            if st.native is not None:
                choice["native_finish_reason"] = st.native
            choices.append(choice)
        return response(self.id or new_id("chatcmpl-"), self.model, choices, self.usage, self.created)


def _thinking_block(b: Obj) -> Obj:
    if b["type"] != "thinking":
        return b
    return {"type": "thinking", "thinking": "".join(b["parts"]), "signature": b.get("signature", "")}


def _tool_call(call: Obj) -> Obj:
    out: Obj = {
        "id": call["id"] or new_id("call_"),
        "type": "function",
        "function": {"name": call["name"] or "", "arguments": "".join(call["args"])},
    }
    if call["extra"]:
        out["extra_content"] = call["extra"]
    return out


def chunks_from_response(resp: Obj) -> list[Obj]:
    """Replays a ``chat.completion`` as the chunk stream that would have produced it (cache hits)."""
    ch = Chunker(resp.get("model") or "", resp.get("id"))
    if resp.get("created"):
        ch.created = resp["created"]
    out: list[Obj] = []
    for choice in resp.get("choices") or ():
        idx = choice.get("index", 0)
        msg = choice.get("message") or {}
        out.append(ch.delta({"role": "assistant", "content": ""}, idx))
        out.extend(ch.delta(d, idx) for d in _message_deltas(msg))
        out.append(ch.finish(choice.get("finish_reason") or "stop", idx, choice.get("native_finish_reason")))
    if resp.get("usage"):
        out.append(ch.usage(from_openai(resp["usage"])))
    return out


def _message_deltas(msg: Obj) -> Iterable[Obj]:
    blocks = msg.get("thinking_blocks")
    if blocks:
        for b in blocks:
            if b.get("type") == "redacted_thinking":
                yield {"redacted_thinking": b.get("data", "")}
            else:
                if b.get("thinking"):
                    yield {"reasoning_content": b["thinking"]}
                if b.get("signature"):
                    yield {"reasoning_signature": b["signature"]}
    else:
        text = reasoning_of(msg)
        if text:
            yield {"reasoning_content": text}
    content = text_of(msg.get("content"))
    if content:
        yield {"content": content}
    if msg.get("refusal"):
        yield {"refusal": msg["refusal"]}
    for i, tc in enumerate(msg.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        d: Obj = {
            "index": i,
            "id": tc.get("id"),
            "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": fn.get("arguments", "")},
        }
        if tc.get("extra_content"):
            d["extra_content"] = tc["extra_content"]
        yield {"tool_calls": [d]}
