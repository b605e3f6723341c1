"""Anthropic Messages requests ⇄ canonical chat requests.

Pure.  :func:`request_from_chat` builds the upstream body (the gateway adds the
``x-api-key`` and ``anthropic-version: 2023-06-01`` headers);
:func:`chat_from_request` reads an Anthropic caller's body into canonical form.
Both raise ``WireError("invalid_request")`` for what cannot be expressed on the
other side (audio, file ids, Anthropic server tools, ``n`` > 1, tool-call
arguments that are not a JSON object).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any, Final, Literal

from nexus.wire.canonical import Obj, dumps_str, parse_arguments, parse_data_url
from nexus.wire.errors import WireError

#: Name of the forced tool that carries structured output in "tool" mode; the
#: response and stream decoders turn its input back into message text.
STRUCTURED_TOOL: Final = "nexus_structured_output"

#: ``reasoning_effort`` → thinking budget.  1024 is Anthropic's minimum.
EFFORT_BUDGET: Final = {"low": 1024, "medium": 4096, "high": 16384}

_MIN_BUDGET: Final = 1024


def _bad(message: str, param: str | None = None) -> WireError:
    return WireError("invalid_request", message, param=param)


# ---------------------------------------------------------------- canonical → Anthropic


def _with_cache(block: Obj, part: Obj) -> Obj:
    cc = part.get("cache_control")
    if cc is not None:
        block["cache_control"] = cc
    return block


def _image_block(part: Obj) -> Obj:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise _bad("image_url part without a url")
    inline = parse_data_url(url)
    if inline is not None:
        source: Obj = {"type": "base64", "media_type": inline[0], "data": inline[1]}
    else:
        source = {"type": "url", "url": url}
    return _with_cache({"type": "image", "source": source}, part)


def _document_block(part: Obj) -> Obj:
    f = part.get("file") or {}
    inline = parse_data_url(f.get("file_data") or "")
    if inline is None:
        raise _bad("Anthropic needs file parts inline as file_data (a base64 data URL), not a file_id")
    media, b64 = inline
    if media == "application/pdf":
        source: Obj = {"type": "base64", "media_type": media, "data": b64}
    elif media.startswith("text/"):
        try:
            text = base64.b64decode(b64, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _bad("text file part is not valid base64 UTF-8") from None
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        raise _bad(f"Anthropic does not accept {media} documents")
    block: Obj = {"type": "document", "source": source}
    if f.get("filename"):
        block["title"] = f["filename"]
    return _with_cache(block, part)


def _blocks(content: Any) -> list[Obj]:
    """Content (string or parts) as Anthropic blocks; empty text is dropped (Anthropic rejects it)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[Obj] = []
    for part in content or ():
        t = part.get("type")
        if t == "text":
            if part.get("text"):
                out.append(_with_cache({"type": "text", "text": part["text"]}, part))
        elif t == "image_url":
            out.append(_image_block(part))
        elif t == "file":
            out.append(_document_block(part))
        elif t == "refusal":
            if part.get("refusal"):
                out.append({"type": "text", "text": part["refusal"]})
        elif t == "input_audio":
            raise _bad("Anthropic does not accept audio input")
        else:
            raise _bad(f"content part type {t!r} cannot be sent to Anthropic")
    return out


def _assistant_blocks(msg: Obj, i: int) -> list[Obj]:
    out: list[Obj] = []
    # Only signed thinking goes back: Anthropic rejects a thinking block whose
    # signature it did not issue, and reasoning from other providers has none.
    for b in msg.get("thinking_blocks") or ():
        if b.get("type") == "thinking" and b.get("signature"):
            out.append({"type": "thinking", "thinking": b.get("thinking", ""), "signature": b["signature"]})
        elif b.get("type") == "redacted_thinking" and b.get("data"):
            out.append({"type": "redacted_thinking", "data": b["data"]})
    out.extend(_blocks(msg.get("content")))
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        args = parse_arguments(fn.get("arguments"))
        if args is None:
            raise _bad("tool call arguments are not a JSON object", f"messages[{i}].tool_calls")
        out.append({"type": "tool_use", "id": tc.get("id") or "", "name": fn.get("name") or "", "input": args})
    return out


def _tool_result(msg: Obj) -> Obj:
    content = msg.get("content")
    block: Obj = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id") or ""}
    if isinstance(content, str):
        block["content"] = content
    elif content:
        block["content"] = _blocks(content)
    if msg.get("is_error"):
        block["is_error"] = True
    return block


def _messages(msgs: Iterable[Obj]) -> tuple[list[Obj], list[Obj]]:
    """(system blocks, messages); consecutive same-role turns are merged, as Anthropic wants."""
    system: list[Obj] = []
    out: list[Obj] = []
    for i, m in enumerate(msgs):
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_blocks(m.get("content")))
            continue
        if role == "assistant":
            arole, blocks = "assistant", _assistant_blocks(m, i)
        elif role == "tool":
            arole, blocks = "user", [_tool_result(m)]
        elif role == "user":
            arole, blocks = "user", _blocks(m.get("content"))
        else:
            raise _bad(f"message role {role!r} cannot be sent to Anthropic", f"messages[{i}].role")
        if not blocks:
            continue
        if out and out[-1]["role"] == arole:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": arole, "content": blocks})
    return system, out


def _tool(t: Obj) -> Obj:
    if t.get("type") != "function":
        raise _bad(f"tool type {t.get('type')!r} cannot be sent to Anthropic", "tools")
    fn = t.get("function") or {}
    out: Obj = {
        "name": fn.get("name") or "",
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("strict") is not None:
        out["strict"] = fn["strict"]
    return _with_cache(out, t)


def _tool_choice(choice: Any) -> Obj | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return {"type": "auto"}


def _structured(req: Obj, fmt: Obj, mode: str) -> None:
    t = fmt.get("type")
    if t == "json_schema" and mode == "native":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        req["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    if t == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        description = spec.get("description") or f"Respond with the {spec.get('name') or 'result'} object."
    elif t == "json_object":
        # No native JSON mode without a schema: an open object through the tool.
        schema, description = {"type": "object"}, "Respond with a JSON object."
    else:
        return
    if schema.get("type") != "object":
        raise _bad("structured output through a tool needs an object schema", "response_format")
    tools = req.setdefault("tools", [])
    had_tools = bool(tools)
    tools.append({"name": STRUCTURED_TOOL, "description": description, "input_schema": schema})
    if "tool_choice" not in req:
        req["tool_choice"] = {"type": "any"} if had_tools else {"type": "tool", "name": STRUCTURED_TOOL}


def _thinking(req: Obj, chat: Obj, defaulted: bool, default_max_tokens: int, coerced: list[str]) -> None:
    thinking = chat.get("thinking")
    if thinking is not None:
        req["thinking"] = thinking
    else:
        budget = EFFORT_BUDGET.get(chat.get("reasoning_effort") or "")
        if budget is None:
            return
        max_tokens = req["max_tokens"]
        if budget >= max_tokens:
            if defaulted:
                req["max_tokens"] = budget + default_max_tokens
            elif max_tokens - 1 >= _MIN_BUDGET:
                budget = max_tokens - 1
                coerced.append("thinking")
            else:
                coerced.append("thinking")
                return
        req["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if req["thinking"].get("type") in ("enabled", "adaptive"):
        # Anthropic refuses sampling parameters alongside thinking.
        dropped = [k for k in ("temperature", "top_k", "top_p") if req.pop(k, None) is not None]
        if dropped:
            coerced.append("temperature")


def request_from_chat(
    chat: Obj,
    upstream_model: str,
    default_max_tokens: int,
    *,
    structured_output: Literal["native", "tool"] = "native",
) -> tuple[Obj, list[str]]:
    """Canonical request → Anthropic Messages body, and the names of coerced parameters.

    ``max_tokens`` is required upstream: ``max_completion_tokens``, else
    ``max_tokens``, else ``default_max_tokens`` (then "max_tokens" is coerced).
    ``temperature`` above Anthropic's 1.0 is clamped ("temperature"); so are
    sampling parameters dropped when thinking is on.  ``reasoning_effort``
    becomes a thinking budget (:data:`EFFORT_BUDGET`) that must stay below
    ``max_tokens`` ("thinking" when it had to shrink or go).

    Structured output: ``json_schema`` goes as ``output_config.format`` in
    "native" mode (models with structured outputs); "tool" mode (older models)
    forces the :data:`STRUCTURED_TOOL` tool whose input the decoders return as
    text.  ``json_object`` always uses the tool, Anthropic having no schemaless
    JSON mode.  A forced tool cannot be combined with thinking upstream.
    """
    coerced: list[str] = []
    system, messages = _messages(chat.get("messages") or ())
    limit = chat.get("max_completion_tokens")
    if limit is None:
        limit = chat.get("max_tokens")
    defaulted = limit is None
    if defaulted:
        coerced.append("max_tokens")
    req: Obj = {
        "model": upstream_model,
        "max_tokens": default_max_tokens if defaulted else limit,
        "messages": messages,
    }
    if system:
        if len(system) == 1 and "cache_control" not in system[0]:
            req["system"] = system[0]["text"]
        else:
            req["system"] = system
    n = chat.get("n")
    if n is not None and n != 1:
        raise _bad("Anthropic returns a single choice: n must be 1", "n")
    stop = chat.get("stop")
    if stop:
        req["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = chat.get("temperature")
    if temperature is not None:
        if temperature > 1:
            temperature = 1.0
            coerced.append("temperature")
        req["temperature"] = temperature
    for key in ("top_p", "top_k"):
        if chat.get(key) is not None:
            req[key] = chat[key]
    if chat.get("stream"):
        req["stream"] = True
    if chat.get("user"):
        req["metadata"] = {"user_id": chat["user"]}
    tools = chat.get("tools")
    if tools:
        req["tools"] = [_tool(t) for t in tools]
        choice = _tool_choice(chat.get("tool_choice"))
        if chat.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice is not None:
            req["tool_choice"] = choice
    fmt = chat.get("response_format")
    if isinstance(fmt, dict):
        _structured(req, fmt, structured_output)
    _thinking(req, chat, defaulted, default_max_tokens, coerced)
    return req, coerced


# ---------------------------------------------------------------- Anthropic → canonical


def _part(block: Obj) -> Obj:
    t = block.get("type")
    if t == "text":
        part: Obj = {"type": "text", "text": block.get("text", "")}
    elif t == "image":
        src = block.get("source") or {}
        if src.get("type") == "base64":
            url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
        elif src.get("type") == "url":
            url = src.get("url", "")
        else:
            raise _bad(f"image source {src.get('type')!r} cannot be translated")
        part = {"type": "image_url", "image_url": {"url": url}}
    elif t == "document":
        src = block.get("source") or {}
        if src.get("type") == "base64":
            f = {"file_data": f"data:{src.get('media_type', 'application/pdf')};base64,{src.get('data', '')}"}
            f["filename"] = block.get("title") or "document.pdf"
            part = {"type": "file", "file": f}
        elif src.get("type") == "text":
            part = {"type": "text", "text": src.get("data", "")}
        else:
            raise _bad(f"document source {src.get('type')!r} cannot be translated")
    else:
        raise _bad(f"content block {t!r} cannot be translated")
    cc = block.get("cache_control")
    if cc is not None:
        part["cache_control"] = cc
    return part


def _user_turn(content: Any, out: list[Obj]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[Obj] = []
    for block in content or ():
        if block.get("type") == "tool_result":
            msg: Obj = {"role": "tool", "tool_call_id": block.get("tool_use_id", "")}
            inner = block.get("content")
            msg["content"] = inner if isinstance(inner, str) else [_part(b) for b in inner or ()]
            if block.get("is_error"):
                msg["is_error"] = True
            out.append(msg)
        else:
            parts.append(_part(block))
    if parts:
        out.append({"role": "user", "content": parts})


def _assistant_turn(content: Any, out: list[Obj]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    texts: list[str] = []
    reasoning: list[str] = []
    blocks: list[Obj] = []
    calls: list[Obj] = []
    for block in content or ():
        t = block.get("type")
        if t == "text":
            texts.append(block.get("text", ""))
        elif t == "thinking":
            reasoning.append(block.get("thinking", ""))
            blocks.append(block)
        elif t == "redacted_thinking":
            blocks.append(block)
        elif t == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": dumps_str(block.get("input") or {}),
                    },
                }
            )
        else:
            raise _bad(f"assistant content block {t!r} cannot be translated")
    msg: Obj = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        msg["reasoning_content"] = "".join(reasoning)
    if blocks:
        msg["thinking_blocks"] = blocks
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _chat_tool(t: Obj) -> Obj:
    if t.get("type") not in (None, "custom"):
        raise _bad(f"Anthropic server tool {t.get('type')!r} cannot be translated", "tools")
    fn: Obj = {
        "name": t.get("name", ""),
        "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
    }
    if t.get("description"):
        fn["description"] = t["description"]
    if t.get("strict") is not None:
        fn["strict"] = t["strict"]
    out: Obj = {"type": "function", "function": fn}
    if t.get("cache_control") is not None:
        out["cache_control"] = t["cache_control"]
    return out


def chat_from_request(messages_req: Obj) -> Obj:
    """An Anthropic caller's Messages body → canonical request.

    Tool results become ``tool`` messages placed before the rest of their user
    turn; thinking blocks become ``reasoning_content`` plus ``thinking_blocks``
    (signatures kept); ``thinking``, ``top_k`` and ``cache_control`` ride in side
    fields; ``output_config.format`` becomes ``response_format``.
    """
    msgs: list[Obj] = []
    system = messages_req.get("system")
    if isinstance(system, str):
        if system:
            msgs.append({"role": "system", "content": system})
    elif system:
        msgs.append({"role": "system", "content": [_part(b) for b in system]})
    for m in messages_req.get("messages") or ():
        if m.get("role") == "assistant":
            _assistant_turn(m.get("content"), msgs)
        else:
            _user_turn(m.get("content"), msgs)
    chat: Obj = {"model": messages_req.get("model", ""), "messages": msgs}
    if messages_req.get("max_tokens") is not None:
        chat["max_completion_tokens"] = messages_req["max_tokens"]
    if messages_req.get("stop_sequences"):
        chat["stop"] = messages_req["stop_sequences"]
    for key in ("temperature", "top_p", "top_k", "thinking"):
        if messages_req.get(key) is not None:
            chat[key] = messages_req[key]
    if messages_req.get("stream"):
        chat["stream"] = True
    user = (messages_req.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    tools = messages_req.get("tools")
    if tools:
        chat["tools"] = [_chat_tool(t) for t in tools]
    choice = messages_req.get("tool_choice")
    if isinstance(choice, dict):
        t = choice.get("type")
        if t == "any":
            chat["tool_choice"] = "required"
        elif t == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        elif t in ("auto", "none"):
            chat["tool_choice"] = t
        if choice.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    fmt = (messages_req.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.get("schema") or {}, "strict": True},
        }
    return chat
