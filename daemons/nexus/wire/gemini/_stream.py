"""Gemini streamGenerateContent (``alt=sse``) streams: decoder, encoder, observer.

Pure.  Each SSE frame is a whole ``GenerateContentResponse`` holding the new
parts; ``usageMetadata`` is cumulative (the last one wins) and the last frame
carries ``finishReason``.  All three classes follow
``canonical.StreamTranslator``.

- :class:`StreamToChat`: upstream frames → canonical chunks.  Function calls
  arrive whole, so each becomes one complete tool-call delta.  The usage chunk
  goes out at ``finish()``, when the usage is final.
- :class:`StreamFromChat`: canonical chunks → frames for a Gemini caller.  Text
  and thoughts go out as they come; tool-call fragments are joined and sent as
  whole ``functionCall`` parts with the finishing frame, which waits for the
  usage chunk (or ``finish()``) so it can carry ``usageMetadata``.
- :class:`StreamObserver`: passthrough, usage and finish reason only.

Error handling: an ``error`` object in a frame raises ``WireError`` from
``feed``; ``finish`` raises it when no finish reason came.  ``StreamFromChat``
raises ``WireError("upstream_error")`` when joined tool arguments are not a
JSON object.  ``fail`` gives the ``data: {"error":…}`` frame.
"""

from __future__ import annotations

import orjson

from nexus.wire.canonical import Chunker, Event, Obj, parse_arguments, reasoning_of
from nexus.wire.errors import Kind, WireError, error_from_stream_event, error_object
from nexus.wire.gemini._response import STOP, finish_reason, function_call_part, tool_call
from nexus.wire.usage import Usage, from_gemini, from_openai, to_gemini


def encode(event: str | None, data: Obj) -> bytes:
    """``data: <json>\\n\\n`` (Gemini frames carry no event name)."""
    del event
    return b"data: " + orjson.dumps(data) + b"\n\n"


class StreamToChat:
    """Upstream Gemini frames → canonical chunks."""

    def __init__(self, model: str, *, include_usage: bool = True) -> None:
        self._ch = Chunker(model)
        self._include_usage = include_usage
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._started = False
        self._tools: dict[int, int] = {}

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        if "error" in data:
            raise error_from_stream_event("gemini", data["error"])
        out: list[Event] = []
        ch = self._ch
        if not self._started:
            self._started = True
            if data.get("responseId"):
                ch.id = data["responseId"]
            out.append((None, ch.delta({"role": "assistant", "content": ""})))
        meta = data.get("usageMetadata")
        if meta:
            self.usage = from_gemini(meta)
        candidates = data.get("candidates")
        if not candidates:
            block = (data.get("promptFeedback") or {}).get("blockReason")
            if block:
                self.finish_reason = "content_filter"
                out.append((None, ch.finish("content_filter", native=block)))
            return out
        for cand in candidates:
            idx = cand.get("index", 0)
            for p in (cand.get("content") or {}).get("parts") or ():
                fc = p.get("functionCall")
                if fc is not None:
                    ti = self._tools.get(idx, 0)
                    self._tools[idx] = ti + 1
                    call = tool_call(p, fc)
                    call["index"] = ti
                    out.append((None, ch.delta({"tool_calls": [call]}, idx)))
                elif p.get("text"):
                    key = "reasoning_content" if p.get("thought") else "content"
                    out.append((None, ch.delta({key: p["text"]}, idx)))
            native = cand.get("finishReason")
            if native:
                self.finish_reason = finish_reason(native, idx in self._tools)
                out.append((None, ch.finish(self.finish_reason, idx, native)))
        return out

    def finish(self) -> list[Event]:
        if self.finish_reason is None:
            raise WireError("upstream_error", "Gemini stream ended before a finish reason")
        return [(None, self._ch.usage(self.usage))] if self._include_usage else []


class StreamFromChat:
    """Canonical chunks → ``GenerateContentResponse`` frames for a Gemini caller."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._id = ""
        self._model = ""
        self._calls: dict[int, dict[int, Obj]] = {}
        self._finishes: dict[int, str] = {}
        self._usage_seen = False
        self._ended = False

    def _frame(self, candidates: list[Obj]) -> Obj:
        return {"candidates": candidates, "modelVersion": self._model, "responseId": self._id}

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        if "error" in data:
            raise error_from_stream_event("openai", data["error"])
        if not self._id:
            self._id = data.get("id") or ""
            self._model = data.get("model") or ""
        out: list[Event] = []
        for choice in data.get("choices") or ():
            idx = choice.get("index", 0)
            d = choice.get("delta") or {}
            parts: list[Obj] = []
            reasoning = reasoning_of(d)
            if reasoning:
                parts.append({"text": reasoning, "thought": True})
            if d.get("content"):
                parts.append({"text": d["content"]})
            for tc in d.get("tool_calls") or ():
                self._collect(idx, tc)
            if parts:
                out.append((None, self._frame([{"content": {"role": "model", "parts": parts}, "index": idx}])))
            fr = choice.get("finish_reason")
            if fr:
                self._finishes[idx] = fr
                if idx == 0:
                    self.finish_reason = fr
        u = data.get("usage")
        if u:
            self.usage = from_openai(u)
            self._usage_seen = True
        if self._finishes and self._usage_seen and not self._ended:
            out.append(self._final())
        return out

    def _collect(self, idx: int, tc: Obj) -> None:
        calls = self._calls.setdefault(idx, {})
        ti = tc.get("index", 0)
        call = calls.get(ti)
        fn = tc.get("function") or {}
        if call is None:
            call = calls[ti] = {"id": tc.get("id"), "function": {"name": fn.get("name") or ""}, "args": []}
        if tc.get("extra_content"):
            call["extra_content"] = tc["extra_content"]
        if fn.get("arguments"):
            call["args"].append(fn["arguments"])

    def _final(self) -> Event:
        self._ended = True
        candidates = []
        for idx, fr in sorted(self._finishes.items()):
            parts: list[Obj] = []
            for _, call in sorted(self._calls.get(idx, {}).items()):
                args = parse_arguments("".join(call["args"]))
                if args is None:
                    raise WireError("upstream_error", "upstream tool call arguments are not a JSON object")
                parts.append(function_call_part(call, args))
            content = {"role": "model", "parts": parts or [{"text": ""}]}
            candidates.append({"content": content, "finishReason": STOP.get(fr, "STOP"), "index": idx})
        frame = self._frame(candidates)
        frame["usageMetadata"] = to_gemini(self.usage)
        return (None, frame)

    def finish(self) -> list[Event]:
        if self._ended:
            return []
        if not self._finishes:
            raise WireError("upstream_error", "upstream stream ended before a finish reason")
        return [self._final()]

    def fail(self, kind: Kind, message: str) -> list[Event]:
        """The ``data: {"error":…}`` frame that ends this stream."""
        return [(None, error_object("gemini", kind, message))]


class StreamObserver:
    """Watches a Gemini stream that passes through untouched; ``feed`` returns the frame as given."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._tools = False

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        if "error" in data:
            raise error_from_stream_event("gemini", data["error"])
        meta = data.get("usageMetadata")
        if meta:
            self.usage = from_gemini(meta)
        candidates = data.get("candidates")
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            self.finish_reason = "content_filter"
        for cand in candidates or ():
            parts = (cand.get("content") or {}).get("parts") or ()
            if any("functionCall" in p for p in parts):
                self._tools = True
            native = cand.get("finishReason")
            if native:
                self.finish_reason = finish_reason(native, self._tools)
        return [(event, data)]

    def finish(self) -> list[Event]:
        if self.finish_reason is None:
            raise WireError("upstream_error", "Gemini stream ended before a finish reason")
        return []
