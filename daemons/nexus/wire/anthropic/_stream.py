"""Anthropic Messages streams: decoder to canonical chunks, encoder from them, observer.

Pure.  All three follow ``canonical.StreamTranslator``: ``feed(event, data)``
per SSE frame, ``finish()`` at the end, ``usage`` and ``finish_reason``.

- :class:`StreamToChat` turns an upstream's events (message_start,
  content_block_start/delta/stop with text_delta, thinking_delta,
  signature_delta, input_json_delta, message_delta, message_stop, ping, error)
  into canonical chunks.  Usage is Anthropic's running totals: message_start
  carries input and cache counts, each message_delta overwrites whichever
  counts it includes.
- :class:`StreamFromChat` turns canonical chunks into an Anthropic caller's
  events.  Blocks never overlap: a new kind of content closes the open block.
  ``message_delta`` (stop reason and usage) and ``message_stop`` go out once
  both the finish reason and the usage chunk arrived, or at ``finish()``.
- :class:`StreamObserver` watches a passthrough stream for usage and stop reason.

Error handling: an upstream ``error`` event (or a canonical chunk carrying an
``error`` object) raises ``WireError`` from ``feed``; ``finish`` raises it when
the stream ended before its terminal event.  ``StreamFromChat.fail`` gives the
``event: error`` frame that ends a failing stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from nexus.wire.anthropic._request import STRUCTURED_TOOL
from nexus.wire.anthropic._response import finish_reason, stop_reason
from nexus.wire.canonical import Chunker, Event, Obj, dumps_str, new_id, reasoning_of
from nexus.wire.errors import Kind, WireError, error_from_stream_event, error_object
from nexus.wire.usage import Usage, from_anthropic, from_openai, to_anthropic


def encode(event: str | None, data: Obj) -> bytes:
    """``event: <name>\\ndata: <json>\\n\\n``; the name defaults to the data's ``type``."""
    name = event or data.get("type") or "message"
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_TEXT, _THINKING, _TOOL, _STRUCTURED, _OTHER = range(5)


class StreamToChat:
    """Upstream Anthropic events → canonical chunks.

    ``include_usage`` says whether the usage chunk is emitted at the end (the
    caller asked for it); usage is tracked either way.
    """

    def __init__(self, model: str, *, include_usage: bool = True) -> None:
        self._ch = Chunker(model)
        self._include_usage = include_usage
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._raw: dict[str, Any] = {}
        self._kinds: dict[int, int] = {}
        self._tool_index: dict[int, int] = {}
        self._tools = 0
        self._empty_args: set[int] = set()
        self._done = False

    def _delta(self, delta: Obj) -> list[Event]:
        return [(None, self._ch.delta(delta))]

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        t = data.get("type") or event
        if t == "content_block_delta":
            d = data.get("delta") or {}
            dt = d.get("type")
            if dt == "text_delta":
                return self._delta({"content": d.get("text", "")})
            if dt == "thinking_delta":
                return self._delta({"reasoning_content": d.get("thinking", "")})
            if dt == "input_json_delta":
                return self._json_delta(data.get("index", 0), d.get("partial_json", ""))
            if dt == "signature_delta":
                return self._delta({"reasoning_signature": d.get("signature", "")})
            return []
        if t == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if t == "content_block_stop":
            idx = data.get("index", 0)
            if idx in self._empty_args:
                # A tool without parameters streams no JSON; OpenAI clients expect "{}".
                self._empty_args.discard(idx)
                return self._delta({"tool_calls": [{"index": self._tool_index[idx], "function": {"arguments": "{}"}}]})
            return []
        if t == "message_start":
            msg = data.get("message") or {}
            if msg.get("id"):
                self._ch.id = msg["id"]
            self._raw = dict(msg.get("usage") or {})
            self.usage = from_anthropic(self._raw)
            return self._delta({"role": "assistant", "content": ""})
        if t == "message_delta":
            return self._message_delta(data)
        if t == "message_stop":
            self._done = True
            return [(None, self._ch.usage(self.usage))] if self._include_usage else []
        if t == "error":
            raise error_from_stream_event("anthropic", data.get("error"))
        return []

    def _json_delta(self, idx: int, partial: str) -> list[Event]:
        if not partial:
            return []
        kind = self._kinds.get(idx)
        if kind == _STRUCTURED:
            return self._delta({"content": partial})
        if kind != _TOOL:
            return []
        self._empty_args.discard(idx)
        return self._delta({"tool_calls": [{"index": self._tool_index[idx], "function": {"arguments": partial}}]})

    def _block_start(self, idx: int, block: Obj) -> list[Event]:
        bt = block.get("type")
        if bt == "text":
            self._kinds[idx] = _TEXT
            return self._delta({"content": block["text"]}) if block.get("text") else []
        if bt == "thinking":
            self._kinds[idx] = _THINKING
            return self._delta({"reasoning_content": block["thinking"]}) if block.get("thinking") else []
        if bt == "redacted_thinking":
            self._kinds[idx] = _OTHER
            return self._delta({"redacted_thinking": block.get("data", "")})
        if bt == "tool_use":
            if block.get("name") == STRUCTURED_TOOL:
                self._kinds[idx] = _STRUCTURED
                return []
            self._kinds[idx] = _TOOL
            ti = self._tool_index[idx] = self._tools
            self._tools += 1
            args = dumps_str(block["input"]) if block.get("input") else ""
            if not args:
                self._empty_args.add(idx)
            call = {
                "index": ti,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": args},
            }
            return self._delta({"tool_calls": [call]})
        self._kinds[idx] = _OTHER
        return []

    def _message_delta(self, data: Obj) -> list[Event]:
        for k, v in (data.get("usage") or {}).items():
            if v is not None:
                self._raw[k] = v
        self.usage = from_anthropic(self._raw)
        d = data.get("delta") or {}
        native = d.get("stop_reason")
        if not native:
            return []
        self.finish_reason = finish_reason(native, self._tools > 0)
        chunk = self._ch.finish(self.finish_reason, native=native)
        if d.get("stop_sequence"):
            chunk["choices"][0]["stop_sequence"] = d["stop_sequence"]
        return [(None, chunk)]

    def finish(self) -> list[Event]:
        if not self._done:
            raise WireError("upstream_error", "Anthropic stream ended before message_stop")
        return []


def _block_delta(index: int, delta: Obj) -> Event:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


class StreamFromChat:
    """Canonical chunks → events for an Anthropic caller (first choice only)."""

    def __init__(self, request: Obj) -> None:
        self._model = request.get("model") or ""
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._started = False
        self._ended = False
        self._index = -1
        self._open: int | None = None
        self._signed = False
        self._tool_blocks: dict[int, int] = {}
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._usage_seen = False

    def _start(self, chunk: Obj) -> list[Event]:
        self._started = True
        message: Obj = {
            "id": chunk.get("id") or new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": chunk.get("model") or self._model,
            "stop_reason": None,
            "stop_sequence": None,
            # The canonical stream reports usage at its end: message_delta carries it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self, out: list[Event]) -> None:
        if self._open is not None:
            self._open = None
            out.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))

    def _open_block(self, out: list[Event], kind: int, block: Obj) -> None:
        self._close(out)
        self._index += 1
        self._open = kind
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )

    def _thinking(self, out: list[Event]) -> None:
        if self._open != _THINKING or self._signed:
            self._open_block(out, _THINKING, {"type": "thinking", "thinking": "", "signature": ""})
            self._signed = False

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        if "error" in data:
            raise error_from_stream_event("openai", data["error"])
        out: list[Event] = [] if self._started else self._start(data)
        for choice in data.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice, out)
        u = data.get("usage")
        if u:
            self.usage = from_openai(u)
            self._usage_seen = True
        if self._stop is not None and self._usage_seen and not self._ended:
            self._end(out)
        return out

    def _choice(self, choice: Obj, out: list[Event]) -> None:
        d = choice.get("delta") or {}
        text = reasoning_of(d)
        if text:
            self._thinking(out)
            out.append(_block_delta(self._index, {"type": "thinking_delta", "thinking": text}))
        sig = d.get("reasoning_signature")
        if sig:
            self._thinking(out)
            out.append(_block_delta(self._index, {"type": "signature_delta", "signature": sig}))
            self._signed = True
        redacted = d.get("redacted_thinking")
        if redacted:
            self._open_block(out, _OTHER, {"type": "redacted_thinking", "data": redacted})
            self._close(out)
        content = d.get("content")
        if content:
            if self._open != _TEXT:
                self._open_block(out, _TEXT, {"type": "text", "text": ""})
            out.append(_block_delta(self._index, {"type": "text_delta", "text": content}))
        for tc in d.get("tool_calls") or ():
            self._tool_delta(tc, out)
        fr = choice.get("finish_reason")
        if fr:
            self._close(out)
            self.finish_reason = fr
            self._stop = stop_reason(choice)
            self._stop_sequence = choice.get("stop_sequence")

    def _tool_delta(self, tc: Obj, out: list[Event]) -> None:
        ti = tc.get("index", 0)
        fn = tc.get("function") or {}
        block = self._tool_blocks.get(ti)
        if block is None:
            tool: Obj = {
                "type": "tool_use",
                "id": tc.get("id") or new_id("toolu_"),
                "name": fn.get("name") or "",
                "input": {},
            }
            self._open_block(out, _TOOL, tool)
            block = self._tool_blocks[ti] = self._index
        args = fn.get("arguments")
        if args:
            # A provider interleaving parallel calls sends a fragment for an
            # earlier call after a later one started; it keeps that call's index.
            out.append(_block_delta(block, {"type": "input_json_delta", "partial_json": args}))

    def _end(self, out: list[Event]) -> None:
        self._ended = True
        delta = {"stop_reason": self._stop, "stop_sequence": self._stop_sequence}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": to_anthropic(self.usage)}))
        out.append(("message_stop", {"type": "message_stop"}))

    def finish(self) -> list[Event]:
        if self._ended:
            return []
        if self._stop is None:
            raise WireError("upstream_error", "upstream stream ended before a finish reason")
        out: list[Event] = []
        self._end(out)
        return out

    def fail(self, kind: Kind, message: str) -> list[Event]:
        """The ``event: error`` frame that ends this stream."""
        return [("error", error_object("anthropic", kind, message))]


class StreamObserver:
    """Watches an Anthropic stream that passes through untouched; ``feed`` returns the frame as given."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._raw: dict[str, Any] = {}
        self._tools = False
        self._done = False

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        t = data.get("type") or event
        if t == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name") != STRUCTURED_TOOL:
                self._tools = True
        elif t == "message_start":
            self._raw = dict((data.get("message") or {}).get("usage") or {})
            self.usage = from_anthropic(self._raw)
        elif t == "message_delta":
            for k, v in (data.get("usage") or {}).items():
                if v is not None:
                    self._raw[k] = v
            self.usage = from_anthropic(self._raw)
            native = (data.get("delta") or {}).get("stop_reason")
            if native:
                self.finish_reason = finish_reason(native, self._tools)
        elif t == "message_stop":
            self._done = True
        elif t == "error":
            raise error_from_stream_event("anthropic", data.get("error"))
        return [(event, data)]

    def finish(self) -> list[Event]:
        if not self._done:
            raise WireError("upstream_error", "Anthropic stream ended before message_stop")
        return []
