"""Gemini generateContent responses ⇄ canonical chat completions (non-streaming).

Pure.  Each candidate is a choice.  Parts with ``thought: true`` are
reasoning; ``functionCall`` parts are tool calls (ids made up when Gemini gives
none, thought signatures kept in ``extra_content``).  Gemini reports ``STOP``
even when it called functions, so a candidate with calls finishes with
``tool_calls``.  A prompt blocked outright (no candidates, a
``promptFeedback.blockReason``) becomes one empty ``content_filter`` choice.

Error handling: ``response_from_chat`` raises ``WireError("upstream_error")``
when tool-call arguments are not a JSON object (``args`` must be one).
"""

from __future__ import annotations

from typing import Any, Final

from nexus.wire import canonical
from nexus.wire.canonical import Obj, dumps_str, new_id, parse_arguments, reasoning_of, text_of
from nexus.wire.errors import WireError
from nexus.wire.usage import from_gemini, from_openai, to_gemini

#: Gemini finishReason → OpenAI finish_reason (unlisted values: "stop").
FINISH: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
}

#: OpenAI finish_reason → Gemini finishReason.
STOP: Final = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "content_filter": "SAFETY",
}


def finish_reason(native: str | None, tool_calls: bool) -> str:
    finish = FINISH.get(native or "", "stop")
    return "tool_calls" if tool_calls and finish == "stop" else finish


def tool_call(part: Obj, fc: Obj) -> Obj:
    """A ``functionCall`` part as a canonical tool call (without the stream ``index``)."""
    call: Obj = {
        "id": fc.get("id") or new_id("call_"),
        "type": "function",
        "function": {"name": fc.get("name", ""), "arguments": dumps_str(fc.get("args") or {})},
    }
    sig = part.get("thoughtSignature")
    if sig:
        call["extra_content"] = {"google": {"thought_signature": sig}}
    return call


def _choice(i: int, cand: Obj) -> Obj:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Obj] = []
    for p in (cand.get("content") or {}).get("parts") or ():
        fc = p.get("functionCall")
        if fc is not None:
            calls.append(tool_call(p, fc))
        elif "text" in p:
            (thoughts if p.get("thought") else texts).append(p["text"])
    msg: Obj = {"role": "assistant", "content": "".join(texts) if texts else None}
    if thoughts:
        msg["reasoning_content"] = "".join(thoughts)
    if calls:
        msg["tool_calls"] = calls
    native = cand.get("finishReason")
    return {
        "index": cand.get("index", i),
        "message": msg,
        "finish_reason": finish_reason(native, bool(calls)),
        "logprobs": None,
        "native_finish_reason": native,
    }


def chat_from_response(resp: Obj, model: str) -> Obj:
    """An upstream Gemini response → canonical ``chat.completion``."""
    choices = [_choice(i, c) for i, c in enumerate(resp.get("candidates") or ())]
    if not choices:
        block = (resp.get("promptFeedback") or {}).get("blockReason")
        choices = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "content_filter",
                "logprobs": None,
                "native_finish_reason": block,
            }
        ]
    rid = resp.get("responseId") or new_id("chatcmpl-")
    return canonical.response(rid, model, choices, from_gemini(resp.get("usageMetadata")))


def function_call_part(tc: Obj, args: Any) -> Obj:
    """A canonical tool call as a ``functionCall`` part, signature included."""
    fn = tc.get("function") or {}
    fc: Obj = {"name": fn.get("name", ""), "args": args}
    if tc.get("id"):
        fc["id"] = tc["id"]
    part: Obj = {"functionCall": fc}
    sig = ((tc.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if sig:
        part["thoughtSignature"] = sig
    return part


def response_from_chat(chat_resp: Obj) -> Obj:
    """A canonical ``chat.completion`` → Gemini response for a Gemini caller."""
    candidates = []
    for i, choice in enumerate(chat_resp.get("choices") or ()):
        msg = choice.get("message") or {}
        parts: list[Obj] = []
        reasoning = reasoning_of(msg)
        if reasoning:
            parts.append({"text": reasoning, "thought": True})
        text = text_of(msg.get("content"))
        if text:
            parts.append({"text": text})
        for tc in msg.get("tool_calls") or ():
            args = parse_arguments((tc.get("function") or {}).get("arguments"))
            if args is None:
                raise WireError("upstream_error", "upstream tool call arguments are not a JSON object")
            parts.append(function_call_part(tc, args))
        candidates.append(
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": STOP.get(choice.get("finish_reason") or "", "STOP"),
                "index": choice.get("index", i),
            }
        )
    return {
        "candidates": candidates,
        "usageMetadata": to_gemini(from_openai(chat_resp.get("usage"))),
        "modelVersion": chat_resp.get("model", ""),
        "responseId": chat_resp.get("id") or new_id(""),
    }
