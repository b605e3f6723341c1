"""Responses API requests → canonical chat requests.

Pure.  Input items become chat messages: consecutive output items of one turn
(reasoning, message, function calls) join one assistant message, function
call outputs become ``tool`` messages.  A reasoning item's
``encrypted_content`` written by us (see ``_response``) gives back the
Anthropic thinking blocks it carried.

Error handling: ``previous_response_id``, ``conversation`` and
``item_reference`` raise ``WireError("not_implemented")`` (the gateway stores no
responses); built-in tools and file ids raise ``WireError("invalid_request")``.
"""

from __future__ import annotations

from typing import Any

from nexus.wire.canonical import Obj
from nexus.wire.errors import WireError
from nexus.wire.responses._response import unpack_blocks


def _bad(message: str, param: str | None = None) -> WireError:
    return WireError("invalid_request", message, param=param)


def _input_part(p: Obj) -> Obj:
    t = p.get("type")
    if t in ("input_text", "output_text", "text"):
        return {"type": "text", "text": p.get("text", "")}
    if t == "input_image":
        url = p.get("image_url")
        if not url:
            raise _bad("input_image by file_id cannot be translated; send image_url")
        ref: Obj = {"url": url}
        if p.get("detail") and p["detail"] != "auto":
            ref["detail"] = p["detail"]
        return {"type": "image_url", "image_url": ref}
    if t == "input_file":
        if not p.get("file_data"):
            raise _bad("input_file by file_id or URL cannot be translated; send file_data")
        f: Obj = {"file_data": p["file_data"]}
        if p.get("filename"):
            f["filename"] = p["filename"]
        return {"type": "file", "file": f}
    if t == "refusal":
        return {"type": "text", "text": p.get("refusal", "")}
    raise _bad(f"input content type {t!r} cannot be translated")


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = [_input_part(p) for p in content or ()]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _open_assistant(msgs: list[Obj], *, for_calls: bool = False) -> Obj:
    """The assistant message an output item joins: the last one if it can take it, else a new one."""
    last = msgs[-1] if msgs else None
    if (
        last is not None
        and last["role"] == "assistant"
        and (for_calls or (not last.get("tool_calls") and last.get("content") is None))
    ):
        return last
    msg: Obj = {"role": "assistant", "content": None}
    msgs.append(msg)
    return msg


def _item(item: Obj, msgs: list[Obj]) -> None:
    t = item.get("type") or ("message" if "role" in item else None)
    if t == "message":
        role = item.get("role")
        if role == "assistant":
            content = item.get("content")
            msg = _open_assistant(msgs)
            if isinstance(content, str):
                msg["content"] = content
            else:
                text = "".join(p.get("text", "") for p in content or () if p.get("type") in ("output_text", "text"))
                refusal = "".join(p.get("refusal", "") for p in content or () if p.get("type") == "refusal")
                msg["content"] = text or None
                if refusal:
                    msg["refusal"] = refusal
        elif role in ("user", "system", "developer"):
            msgs.append({"role": role, "content": _content(item.get("content"))})
        else:
            raise _bad(f"message role {role!r} cannot be translated", "input")
    elif t == "function_call":
        msg = _open_assistant(msgs, for_calls=True)
        call = {
            "id": item.get("call_id", ""),
            "type": "function",
            "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
        }
        msg.setdefault("tool_calls", []).append(call)
    elif t == "function_call_output":
        output = item.get("output")
        msgs.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": _content(output)})
    elif t == "reasoning":
        texts = [s.get("text", "") for s in item.get("summary") or ()]
        texts += [c.get("text", "") for c in item.get("content") or ()]
        msg = _open_assistant(msgs)
        text = "\n\n".join(x for x in texts if x)
        if text:
            msg["reasoning_content"] = text
        blocks = unpack_blocks(item.get("encrypted_content"))
        if blocks:
            msg["thinking_blocks"] = blocks
    elif t == "item_reference":
        raise WireError("not_implemented", "the gateway stores no items: item_reference cannot be resolved")
    else:
        raise _bad(f"input item type {t!r} cannot be translated", "input")


def _tool(t: Obj) -> Obj:
    if t.get("type") != "function":
        raise _bad(f"built-in tool {t.get('type')!r} is only served by OpenAI itself", "tools")
    fn: Obj = {"name": t.get("name", ""), "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
    if t.get("description"):
        fn["description"] = t["description"]
    if t.get("strict") is not None:
        fn["strict"] = t["strict"]
    return {"type": "function", "function": fn}


def chat_from_request(req: Obj) -> Obj:
    """A Responses API body → canonical request."""
    if req.get("previous_response_id") or req.get("conversation"):
        raise WireError("not_implemented", "the gateway stores no responses: send the whole input")
    msgs: list[Obj] = []
    if req.get("instructions"):
        msgs.append({"role": "system", "content": req["instructions"]})
    inp = req.get("input")
    if isinstance(inp, str):
        msgs.append({"role": "user", "content": inp})
    else:
        for item in inp or ():
            _item(item, msgs)
    chat: Obj = {"model": req.get("model", ""), "messages": msgs}
    if req.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = req["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls"):
        if req.get(key) is not None:
            chat[key] = req[key]
    if req.get("stream"):
        chat["stream"] = True
    user = req.get("user") or req.get("safety_identifier")
    if user:
        chat["user"] = user
    tools = req.get("tools")
    if tools:
        chat["tools"] = [_tool(t) for t in tools]
    choice = req.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    fmt = (req.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    effort = (req.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    return chat
