"""Responses API streams: events from canonical chunks, and a passthrough observer.

Pure.  :class:`StreamFromChat` writes the events the official SDK's stream
state machine accepts (checked by the tests): response.created,
response.in_progress, output_item.added/done, content_part.added/done,
output_text.delta/done, reasoning_summary_part/text for reasoning,
function_call_arguments.delta/done, then response.completed — or
response.incomplete when the output was cut by the token limit or a filter.
:class:`StreamObserver` watches a Responses stream passing through to an
OpenAI upstream.  Both follow ``canonical.StreamTranslator``.

Error handling: an ``error`` object in a canonical chunk, or an upstream
``error`` / ``response.failed`` event, raises ``WireError`` from ``feed``;
``finish`` raises it when the stream ended early.  ``fail`` gives the
``response.failed`` event that ends the client's stream.
"""

from __future__ import annotations

from typing import Any

from nexus.wire.canonical import Event, Obj, new_id, now, reasoning_of
from nexus.wire.errors import Kind, WireError, error_from_stream_event, responses_error_code
from nexus.wire.responses._response import ending, envelope, reasoning_item, text_part
from nexus.wire.usage import Usage, from_openai, from_responses, to_responses

_REASONING, _MESSAGE, _CALL = range(3)


def _joined(block: Obj) -> Obj:
    if block.get("type") != "thinking":
        return block
    return {"type": "thinking", "thinking": "".join(block["thinking"]), "signature": block.get("signature", "")}


class _Item:
    __slots__ = ("blocks", "call_id", "id", "index", "kind", "name", "parts", "signed")

    def __init__(self, kind: int, index: int, id: str) -> None:
        self.kind = kind
        self.index = index
        self.id = id
        self.parts: list[str] = []
        self.blocks: list[Obj] = []
        self.signed = False
        self.call_id = ""
        self.name = ""


class StreamFromChat:
    """Canonical chunks → Responses API events (first choice only).

    Reasoning and message items close as soon as other content starts;
    function-call items stay open until the finish reason, because some
    providers interleave fragments of parallel calls.  ``response.completed``
    (or ``response.incomplete``) goes out once both the finish reason and the
    usage chunk arrived, or at ``finish()``.
    """

    def __init__(self, request: Obj) -> None:
        self._request = request
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._id = new_id("resp_")
        self._created = now()
        self._base: Obj = {}
        self._seq = 0
        self._next_index = 0
        self._current: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._done: list[tuple[int, Obj]] = []
        self._usage_seen = False
        self._ended = False

    def _ev(self, etype: str, data: Obj) -> Event:
        data["type"] = etype
        data["sequence_number"] = self._seq
        self._seq += 1
        return (etype, data)

    def _snapshot(self, status: str, **extra: Any) -> Obj:
        return {**self._base, "status": status, **extra}

    def _start(self, chunk: Obj, out: list[Event]) -> None:
        model = chunk.get("model") or self._request.get("model", "")
        self._base = envelope(self._request, self._id, self._created, model)
        out.append(self._ev("response.created", {"response": self._snapshot("in_progress")}))
        out.append(self._ev("response.in_progress", {"response": self._snapshot("in_progress")}))

    def _new(self, kind: int, prefix: str) -> _Item:
        item = _Item(kind, self._next_index, new_id(prefix))
        self._next_index += 1
        return item

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        if "error" in data:
            raise error_from_stream_event("openai", data["error"])
        out: list[Event] = []
        if not self._base:
            self._start(data, out)
        for choice in data.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice, out)
        u = data.get("usage")
        if u:
            self.usage = from_openai(u)
            self._usage_seen = True
        if self.finish_reason is not None and self._usage_seen and not self._ended:
            self._end(out)
        return out

    def _choice(self, choice: Obj, out: list[Event]) -> None:
        d = choice.get("delta") or {}
        text = reasoning_of(d)
        sig = d.get("reasoning_signature")
        redacted = d.get("redacted_thinking")
        if text or sig or redacted:
            item = self._reasoning(out)
            if text:
                item.parts.append(text)
                self._block_text(item, text)
                out.append(
                    self._ev(
                        "response.reasoning_summary_text.delta",
                        {"item_id": item.id, "output_index": item.index, "summary_index": 0, "delta": text},
                    )
                )
            if sig:
                self._block_text(item, None)
                item.blocks[-1]["signature"] = sig
                item.signed = True
            if redacted:
                item.blocks.append({"type": "redacted_thinking", "data": redacted})
                item.signed = True
        content = d.get("content")
        if content:
            item = self._message(out)
            item.parts.append(content)
            out.append(
                self._ev(
                    "response.output_text.delta",
                    {
                        "item_id": item.id,
                        "output_index": item.index,
                        "content_index": 0,
                        "delta": content,
                        "logprobs": [],
                    },
                )
            )
        for tc in d.get("tool_calls") or ():
            self._call_delta(tc, out)
        fr = choice.get("finish_reason")
        if fr:
            self.finish_reason = fr
            self._close_current(out)
            for ti in sorted(self._calls):
                self._close_call(self._calls[ti], out)
            self._calls.clear()

    @staticmethod
    def _block_text(item: _Item, text: str | None) -> None:
        # Thinking text is kept per block as a list of pieces, joined at close.
        last = item.blocks[-1] if item.blocks else None
        if last is None or last.get("type") != "thinking" or "signature" in last:
            last = {"type": "thinking", "thinking": []}
            item.blocks.append(last)
        if text:
            last["thinking"].append(text)

    def _reasoning(self, out: list[Event]) -> _Item:
        cur = self._current
        if cur is not None and cur.kind == _REASONING:
            return cur
        self._close_current(out)
        item = self._current = self._new(_REASONING, "rs_")
        out.append(
            self._ev(
                "response.output_item.added",
                {"output_index": item.index, "item": {"type": "reasoning", "id": item.id, "summary": []}},
            )
        )
        part = {"type": "summary_text", "text": ""}
        out.append(
            self._ev(
                "response.reasoning_summary_part.added",
                {"item_id": item.id, "output_index": item.index, "summary_index": 0, "part": part},
            )
        )
        return item

    def _message(self, out: list[Event]) -> _Item:
        cur = self._current
        if cur is not None and cur.kind == _MESSAGE:
            return cur
        self._close_current(out)
        item = self._current = self._new(_MESSAGE, "msg_")
        added = {"id": item.id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        out.append(self._ev("response.output_item.added", {"output_index": item.index, "item": added}))
        out.append(
            self._ev(
                "response.content_part.added",
                {"item_id": item.id, "output_index": item.index, "content_index": 0, "part": text_part("")},
            )
        )
        return item

    def _call_delta(self, tc: Obj, out: list[Event]) -> None:
        ti = tc.get("index", 0)
        fn = tc.get("function") or {}
        item = self._calls.get(ti)
        if item is None:
            self._close_current(out)
            item = self._calls[ti] = self._new(_CALL, "fc_")
            item.call_id = tc.get("id") or new_id("call_")
            item.name = fn.get("name") or ""
            added = {
                "type": "function_call",
                "id": item.id,
                "call_id": item.call_id,
                "name": item.name,
                "arguments": "",
                "status": "in_progress",
            }
            out.append(self._ev("response.output_item.added", {"output_index": item.index, "item": added}))
        args = fn.get("arguments")
        if args:
            item.parts.append(args)
            out.append(
                self._ev(
                    "response.function_call_arguments.delta",
                    {"item_id": item.id, "output_index": item.index, "delta": args},
                )
            )

    def _item_status(self) -> str:
        return "incomplete" if ending(self.finish_reason)[0] == "incomplete" else "completed"

    def _close_current(self, out: list[Event]) -> None:
        item = self._current
        if item is None:
            return
        self._current = None
        text = "".join(item.parts)
        idx = item.index
        if item.kind == _REASONING:
            part = {"type": "summary_text", "text": text}
            base = {"item_id": item.id, "output_index": idx, "summary_index": 0}
            out.append(self._ev("response.reasoning_summary_text.done", {**base, "text": text}))
            out.append(self._ev("response.reasoning_summary_part.done", {**base, "part": part}))
            blocks = [_joined(b) for b in item.blocks] if item.signed else None
            done = reasoning_item(item.id, text, blocks)
        else:
            part = text_part(text)
            base = {"item_id": item.id, "output_index": idx, "content_index": 0}
            out.append(self._ev("response.output_text.done", {**base, "text": text, "logprobs": []}))
            out.append(self._ev("response.content_part.done", {**base, "part": part}))
            status = self._item_status()
            done = {"id": item.id, "type": "message", "status": status, "role": "assistant", "content": [part]}
        self._finish_item(idx, done, out)

    def _close_call(self, item: _Item, out: list[Event]) -> None:
        args = "".join(item.parts)
        out.append(
            self._ev(
                "response.function_call_arguments.done",
                {"item_id": item.id, "output_index": item.index, "arguments": args},
            )
        )
        done = {
            "type": "function_call",
            "id": item.id,
            "call_id": item.call_id,
            "name": item.name,
            "arguments": args,
            "status": "completed",
        }
        self._finish_item(item.index, done, out)

    def _finish_item(self, index: int, item: Obj, out: list[Event]) -> None:
        self._done.append((index, item))
        out.append(self._ev("response.output_item.done", {"output_index": index, "item": item}))

    def _output(self) -> list[Obj]:
        return [item for _, item in sorted(self._done, key=lambda p: p[0])]

    def _end(self, out: list[Event]) -> None:
        self._ended = True
        status, details = ending(self.finish_reason)
        snap = self._snapshot(status, incomplete_details=details, output=self._output(), usage=to_responses(self.usage))
        etype = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._ev(etype, {"response": snap}))

    def finish(self) -> list[Event]:
        if self._ended:
            return []
        if self.finish_reason is None:
            raise WireError("upstream_error", "upstream stream ended before a finish reason")
        out: list[Event] = []
        self._end(out)
        return out

    def fail(self, kind: Kind, message: str) -> list[Event]:
        """The ``response.failed`` event that ends this stream (a created event first if none went out)."""
        out: list[Event] = []
        if not self._base:
            self._start({}, out)
        error = {"code": responses_error_code(kind), "message": message}
        out.append(
            self._ev("response.failed", {"response": self._snapshot("failed", error=error, output=self._output())})
        )
        self._ended = True
        return out


class StreamObserver:
    """Watches a Responses stream that passes through untouched; ``feed`` returns the frame as given."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._response: Obj | None = None
        self._seq = 0
        self._done = False

    def feed(self, event: str | None, data: Obj) -> list[Event]:
        t = data.get("type") or event
        seq = data.get("sequence_number")
        if isinstance(seq, int):
            self._seq = seq + 1
        if t == "response.created":
            self._response = data.get("response")
        elif t in ("response.completed", "response.incomplete"):
            resp = data.get("response") or {}
            self._done = True
            self.usage = from_responses(resp.get("usage"))
            if t == "response.incomplete":
                reason = (resp.get("incomplete_details") or {}).get("reason")
                self.finish_reason = "content_filter" if reason == "content_filter" else "length"
            elif any(i.get("type") == "function_call" for i in resp.get("output") or ()):
                self.finish_reason = "tool_calls"
            else:
                self.finish_reason = "stop"
        elif t == "response.failed":
            error = (data.get("response") or {}).get("error") or {}
            code = error.get("code")
            kind: Kind = "rate_limited" if code == "rate_limit_exceeded" else "upstream_error"
            raise WireError(kind, error.get("message") or "upstream response failed")
        elif t == "error":
            raise error_from_stream_event("openai", data)
        return [(event, data)]

    def finish(self) -> list[Event]:
        if not self._done:
            raise WireError("upstream_error", "Responses stream ended before response.completed")
        return []

    def fail(self, kind: Kind, message: str) -> list[Event]:
        """The ``response.failed`` event that ends the client's stream."""
        base = self._response or {"id": new_id("resp_"), "object": "response", "created_at": now(), "output": []}
        error = {"code": responses_error_code(kind), "message": message}
        data = {"response": {**base, "status": "failed", "error": error}, "sequence_number": self._seq}
        data["type"] = "response.failed"
        self._seq += 1
        return [("response.failed", data)]
