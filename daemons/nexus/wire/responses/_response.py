"""Canonical chat completions → Responses API ``response`` objects, and shared pieces.

Pure.  The ``response`` envelope echoes the caller's request settings, as
OpenAI's does.  Reasoning becomes a ``reasoning`` item with the text as a
summary; Anthropic thinking blocks (with their signatures) ride in its
``encrypted_content`` behind a prefix of ours, opaque to the client, so a
client that sends the item back (as stateless Responses clients do) gets them
to Anthropic again.  Nothing here raises.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import orjson

from nexus.wire.canonical import Obj, new_id, now, reasoning_of, text_of
from nexus.wire.usage import from_openai, to_responses

# Marks encrypted_content we wrote, as opposed to OpenAI's own.
_BLOCKS_PREFIX: Final = "nexus.thinking.v1:"


def encode(event: str | None, data: Obj) -> bytes:
    """``event: <type>\\ndata: <json>\\n\\n``."""
    name = event or data.get("type") or "message"
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def pack_blocks(blocks: list[Obj]) -> str:
    return _BLOCKS_PREFIX + base64.urlsafe_b64encode(orjson.dumps(blocks)).decode()


def unpack_blocks(enc: Any) -> list[Obj] | None:
    if not isinstance(enc, str) or not enc.startswith(_BLOCKS_PREFIX):
        return None
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(enc[len(_BLOCKS_PREFIX) :]))
    except (binascii.Error, ValueError):
        return None
    return blocks if isinstance(blocks, list) else None


def signed(blocks: list[Obj]) -> bool:
    return any(b.get("signature") or b.get("type") == "redacted_thinking" for b in blocks)


def envelope(request: Obj, rid: str, created: int, model: str) -> Obj:
    reasoning = request.get("reasoning") or {}
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def ending(finish: str | None) -> tuple[str, Obj | None]:
    """(status, incomplete_details) for a canonical finish reason."""
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def text_part(text: str) -> Obj:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(rid: str, text: str, blocks: list[Obj] | None) -> Obj:
    item: Obj = {"type": "reasoning", "id": rid, "summary": [{"type": "summary_text", "text": text}] if text else []}
    if blocks and signed(blocks):
        item["encrypted_content"] = pack_blocks(blocks)
    return item


def response_from_chat(chat_resp: Obj, request: Obj) -> Obj:
    """A canonical ``chat.completion`` → Responses ``response`` object (first choice)."""
    choices = chat_resp.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    output: list[Obj] = []
    reasoning = reasoning_of(msg) or ""
    blocks = msg.get("thinking_blocks")
    if reasoning or blocks:
        output.append(reasoning_item(new_id("rs_"), reasoning, blocks))
    status, details = ending(choice.get("finish_reason"))
    text = text_of(msg.get("content"))
    parts: list[Obj] = [text_part(text)] if text else []
    if msg.get("refusal"):
        parts.append({"type": "refusal", "refusal": msg["refusal"]})
    if parts:
        item_status = "incomplete" if status == "incomplete" else "completed"
        output.append(
            {"type": "message", "id": new_id("msg_"), "status": item_status, "role": "assistant", "content": parts}
        )
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": new_id("fc_"),
                "call_id": tc.get("id", ""),
                "name": fn.get("name", ""),
                "arguments": fn.get("arguments", ""),
                "status": "completed",
            }
        )
    rid = new_id("resp_")
    resp = envelope(request, rid, chat_resp.get("created") or now(), chat_resp.get("model") or request.get("model", ""))
    resp.update(
        status=status,
        incomplete_details=details,
        output=output,
        usage=to_responses(from_openai(chat_resp.get("usage"))),
    )
    return resp
