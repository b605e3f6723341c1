"""Anthropic wire format: messages (plain and streamed), count_tokens, errors.

``parse`` turns a Messages API body into a ``Prompt`` (raising
``MalformedRequest`` where Anthropic answers 400, e.g. a missing
``max_tokens``); ``render`` and ``stream`` turn an ``Answer`` into a message
object or the SSE event sequence ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` (``thinking_delta``, ``signature_delta``,
``text_delta``, ``input_json_delta``), ``content_block_stop``,
``message_delta``, ``message_stop``.  Usage follows Anthropic's split: cached
prompt tokens are reported as ``cache_read_input_tokens`` and left out of
``input_tokens``; thinking counts as output.

Pure and synchronous.
"""

from __future__ import annotations

from typing import Any

import orjson

from nexus.mock.textgen import (
    IMAGE_TOKENS,
    Answer,
    Chunks,
    Frames,
    MalformedRequest,
    Prompt,
    Tool,
    new_id,
    split,
    tokens,
)

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}

_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(status: int, message: str | None = None) -> bytes:
    kind, default = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}."))
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": message or default},
            "request_id": new_id("req_"),
        }
    )


def _error_frame(_sent: int) -> bytes:
    data = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    return b"event: error\ndata: " + data + b"\n\n"


def _blocks_text(content: Any, counts: list[int]) -> str:
    if isinstance(content, str):
        counts[0] += len(content)
        return content
    if not isinstance(content, list):
        raise MalformedRequest("content: expected a string or an array of content blocks")
    pieces = []
    for block in content:
        if not isinstance(block, dict):
            raise MalformedRequest("content: each block must be an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise MalformedRequest("content.text: Field required")
            counts[0] += len(text)
            pieces.append(text)
        elif kind == "image":
            source = block.get("source")
            if not isinstance(source, dict) or source.get("type") not in ("base64", "url", "file"):
                raise MalformedRequest("content.image.source: expected a base64, url or file source")
            counts[1] += 1
            pieces.append("[image]")
        elif kind == "document":
            pieces.append("[document]")
        elif kind == "tool_use":
            counts[0] += len(str(block.get("name", ""))) + len(orjson.dumps(block.get("input", {})))
        elif kind == "tool_result":
            pieces.append(_blocks_text(block.get("content", ""), counts))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise MalformedRequest(f"content: unknown block type {kind!r}")
    return " ".join(pieces)


def _tool_choice(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    if not isinstance(value, dict):
        raise MalformedRequest("tool_choice: expected an object")
    kind = value.get("type")
    if kind == "auto":
        return "auto", None
    if kind == "any":
        return "required", None
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(value.get("name"), str):
        return "required", value["name"]
    raise MalformedRequest("tool_choice: expected type auto, any, tool (with name) or none")


def _counted(body: Any) -> tuple[dict[str, Any], str, list[int], str, str | None]:
    """Checks shared with count_tokens: (body, model, [chars, images], last user text, tool result)."""
    if not isinstance(body, dict):
        raise MalformedRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MalformedRequest("model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedRequest("messages: at least one message is required")
    counts = [0, 0]
    system = body.get("system")
    if system is not None:
        _blocks_text(system, counts)
    last_user = ""
    tool_result: str | None = None
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise MalformedRequest("messages: each message needs role 'user' or 'assistant'")
        content = message.get("content")
        tool_result = None
        if message["role"] == "user" and isinstance(content, list):
            results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                tool_result = " ".join(_blocks_text(b.get("content", ""), [0, 0]) for b in results)
        text = _blocks_text(content, counts)
        if message["role"] == "user" and tool_result is None:
            last_user = text
    return body, model, counts, last_user, tool_result


def parse(raw: Any) -> Prompt:
    body, model, counts, last_user, tool_result = _counted(raw)
    limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise MalformedRequest("max_tokens: Field required")
    tools: list[Tool] = []
    offered = body.get("tools")
    if offered is not None:
        if not isinstance(offered, list):
            raise MalformedRequest("tools: expected an array")
        for tool in offered:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise MalformedRequest("tools: each tool needs a name")
            # Server tools (web search, code execution…) carry no input_schema; the mock never calls them.
            if "input_schema" in tool:
                tools.append(Tool(tool["name"], tool["input_schema"]))
    choice, forced = _tool_choice(body.get("tool_choice"))
    thinking = body.get("thinking")
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
    schema = fmt.get("schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    return Prompt(
        model=model,
        chars=counts[0],
        images=counts[1],
        last_user=last_user,
        tool_result=tool_result,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        schema=schema,
        reasoning=isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"),
        max_tokens=limit,
        stream=body.get("stream") is True,
    )


def count_tokens(raw: Any) -> bytes:
    _body, _model, counts, _last, _result = _counted(raw)
    return orjson.dumps({"input_tokens": tokens(counts[0]) + IMAGE_TOKENS * counts[1]})


def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens - answer.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def render(answer: Answer) -> bytes:
    content: list[dict[str, Any]] = []
    if answer.thinking:
        content.append({"type": "thinking", "thinking": answer.thinking, "signature": answer.signature})
    if answer.tool is not None:
        content.append(
            {"type": "tool_use", "id": new_id("toolu_"), "name": answer.tool.name, "input": answer.tool_args}
        )
    else:
        content.append({"type": "text", "text": answer.text})
    return orjson.dumps(
        {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": content,
            "stop_reason": _STOP[answer.finish],
            "stop_sequence": None,
            "usage": _usage(answer, answer.output_tokens + answer.reasoning_tokens),
        }
    )


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event("content_block_delta", {"index": index, "delta": delta})


def stream(answer: Answer) -> Frames:
    message: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(answer, 1),
    }
    blocks: list[tuple[dict[str, Any], list[bytes]]] = []
    if answer.thinking:
        deltas = [
            _delta(len(blocks), {"type": "thinking_delta", "thinking": p})
            for p in split(answer.thinking, answer.chunks)
        ]
        deltas.append(_delta(len(blocks), {"type": "signature_delta", "signature": answer.signature}))
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if answer.tool is not None:
        start = {"type": "tool_use", "id": new_id("toolu_"), "name": answer.tool.name, "input": {}}
        pieces = split(answer.tool_args_json, answer.chunks)
        blocks.append((start, [_delta(len(blocks), {"type": "input_json_delta", "partial_json": p}) for p in pieces]))
    else:
        pieces = split(answer.text, answer.chunks)
        blocks.append(
            (
                {"type": "text", "text": ""},
                [_delta(len(blocks), {"type": "text_delta", "text": p}) for p in pieces],
            )
        )
    head = [_event("message_start", {"message": message})]
    content = Chunks()
    for index, (start_block, deltas) in enumerate(blocks):
        opening = _event("content_block_start", {"index": index, "content_block": start_block})
        if index == 0:
            head.extend((opening, _event("ping", {})))
        else:
            content.opening(_event("content_block_stop", {"index": index - 1}))
            content.opening(opening)
        for delta in deltas:
            content.add(delta)
    tail = [
        _event("content_block_stop", {"index": len(blocks) - 1}),
        _event(
            "message_delta",
            {
                "delta": {"stop_reason": _STOP[answer.finish], "stop_sequence": None},
                "usage": {"output_tokens": answer.output_tokens + answer.reasoning_tokens},
            },
        ),
        _event("message_stop", {}),
    ]
    return Frames(head, content.frames, tail, _error_frame)
