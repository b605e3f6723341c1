"""Anthropic Messages responses ⇄ canonical chat completions (non-streaming).

Pure.  :func:`chat_from_response` reads an upstream message;
:func:`response_from_chat` writes one for an Anthropic caller.  Stop reasons
map through :data:`FINISH` and :data:`STOP`; the upstream's own reason also
travels as ``native_finish_reason`` so an Anthropic caller behind an Anthropic
upstream gets ``stop_sequence``, ``pause_turn`` and the like back unchanged.

Error handling: ``response_from_chat`` raises ``WireError("upstream_error")``
when a tool call's arguments are not a JSON object (Anthropic's ``input`` must
be one); nothing else raises.
"""

from __future__ import annotations

from typing import Final

from nexus.wire import canonical
from nexus.wire.anthropic._request import STRUCTURED_TOOL
from nexus.wire.canonical import Obj, dumps_str, new_id, parse_arguments, reasoning_of, text_of
from nexus.wire.errors import WireError
from nexus.wire.usage import from_anthropic, from_openai, to_anthropic

#: Anthropic stop_reason → OpenAI finish_reason.
FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: OpenAI finish_reason → Anthropic stop_reason.
STOP: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: str | None, tool_calls: bool) -> str:
    """Canonical finish reason; ``tool_use`` with only the structured-output tool is a plain stop."""
    finish = FINISH.get(stop_reason or "", "stop")
    if finish == "tool_calls" and not tool_calls:
        return "stop"
    return finish


def stop_reason(choice: Obj) -> str:
    native = choice.get("native_finish_reason")
    if native in FINISH:
        return native  # type: ignore[no-any-return]
    return STOP.get(choice.get("finish_reason") or "", "end_turn")


def chat_from_response(msg: Obj, model: str) -> Obj:
    """An upstream Anthropic message → canonical ``chat.completion``."""
    texts: list[str] = []
    reasoning: list[str] = []
    blocks: list[Obj] = []
    calls: list[Obj] = []
    for b in msg.get("content") or ():
        t = b.get("type")
        if t == "text":
            texts.append(b.get("text", ""))
        elif t == "thinking":
            reasoning.append(b.get("thinking", ""))
            blocks.append(b)
        elif t == "redacted_thinking":
            blocks.append(b)
        elif t == "tool_use":
            args = dumps_str(b.get("input") or {})
            if b.get("name") == STRUCTURED_TOOL:
                texts.append(args)
            else:
                calls.append(
                    {
                        "id": b.get("id", ""),
                        "type": "function",
                        "function": {"name": b.get("name", ""), "arguments": args},
                    }
                )
    message: Obj = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if blocks:
        message["thinking_blocks"] = blocks
    if calls:
        message["tool_calls"] = calls
    native = msg.get("stop_reason")
    choice: Obj = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(native, bool(calls)),
        "logprobs": None,
        "native_finish_reason": native,
    }
    if msg.get("stop_sequence"):
        choice["stop_sequence"] = msg["stop_sequence"]
    return canonical.response(msg.get("id") or new_id("msg_"), model, [choice], from_anthropic(msg.get("usage")))


def response_from_chat(chat_resp: Obj) -> Obj:
    """A canonical ``chat.completion`` → Anthropic message for an Anthropic caller (first choice)."""
    choices = chat_resp.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    content: list[Obj] = []
    blocks = msg.get("thinking_blocks")
    if blocks:
        content.extend(blocks)
    else:
        reasoning = reasoning_of(msg)
        if reasoning:
            # Unsigned: it came from a provider without signatures.
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = text_of(msg.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    if msg.get("refusal"):
        content.append({"type": "text", "text": msg["refusal"]})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        args = parse_arguments(fn.get("arguments"))
        if args is None:
            raise WireError("upstream_error", "upstream tool call arguments are not a JSON object")
        content.append(
            {
                "type": "tool_use",
                "id": tc.get("id") or new_id("toolu_"),
                "name": fn.get("name", ""),
                "input": args,
            }
        )
    return {
        "id": chat_resp.get("id") or new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": chat_resp.get("model", ""),
        "content": content,
        "stop_reason": stop_reason(choice),
        "stop_sequence": choice.get("stop_sequence"),
        "usage": to_anthropic(from_openai(chat_resp.get("usage"))),
    }
