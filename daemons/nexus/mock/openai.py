"""OpenAI wire format: chat completions, responses, embeddings, models, errors.

Parsers turn a decoded request body into a ``Prompt`` and raise
``MalformedRequest`` where OpenAI answers 400.  Renderers turn an ``Answer``
into the exact bytes OpenAI would send: a JSON body, or ``Frames`` of SSE
events for a stream (chat: ``data:`` chunks ending in ``data: [DONE]``, with
``reasoning_content`` deltas for reasoning models and an extra usage chunk when
``stream_options.include_usage``; responses: the typed event sequence the
official SDK accumulates, ``response.created`` … ``response.completed``).

Pure and synchronous.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from nexus.mock import embeddings
from nexus.mock.textgen import (
    Answer,
    Chunks,
    Frames,
    MalformedRequest,
    Prompt,
    Tool,
    is_reasoning_model,
    new_id,
    split,
    tokens,
)

_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}

_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_denied", None, "You are not allowed to use this model."),
    404: ("invalid_request_error", "not_found", "The requested resource does not exist."),
    408: ("timeout", None, "Request timed out."),
    409: ("conflict", None, "Conflict."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", "service_unavailable", "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}


def error_body(status: int, message: str | None = None) -> bytes:
    kind, code, default = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None, ""))
    text = message or default or f"Error {status}."
    return orjson.dumps({"error": {"message": text, "type": kind, "param": None, "code": code}})


def _chat_error_frame(_sent: int) -> bytes:
    return b"data: " + error_body(500, "The server had an error while processing your request.") + b"\n\n"


# ---------------------------------------------------------------------------------------------- parsing


def _need_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MalformedRequest("The request body must be a JSON object.")
    return body


def _need_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MalformedRequest("you must provide a model parameter")
    return model


def _content_text(content: Any, counts: list[int]) -> str:
    """Text of a message's content (parts joined, images as ``[image]``); counts = [chars, images]."""
    if isinstance(content, str):
        counts[0] += len(content)
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise MalformedRequest("Invalid type for 'content': expected a string or an array of content parts.")
    pieces = []
    for part in content:
        if not isinstance(part, dict):
            raise MalformedRequest("Invalid content part: expected an object.")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text", "refusal"):
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise MalformedRequest(f"Invalid content part: '{kind}' needs a string 'text'.")
            counts[0] += len(text)
            pieces.append(text)
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) and "file_id" not in part:
                raise MalformedRequest("Invalid image part: 'image_url' needs a 'url'.")
            counts[1] += 1
            pieces.append("[image]")
        elif kind in ("input_audio", "file", "input_file"):
            pieces.append("[file]")
        else:
            raise MalformedRequest(f"Invalid content part type: {kind!r}.")
    return " ".join(pieces)


def _schema_of(fmt: Any, *, nested: bool) -> tuple[Any, bool]:
    """(schema, json_mode) from ``response_format`` (chat, nested) or ``text.format`` (responses)."""
    if not isinstance(fmt, dict):
        return None, False
    kind = fmt.get("type")
    if kind == "json_schema":
        holder = fmt.get("json_schema") if nested else fmt
        schema = holder.get("schema") if isinstance(holder, dict) else None
        if not isinstance(schema, dict):
            raise MalformedRequest("response_format json_schema needs a 'schema' object.")
        return schema, False
    if kind == "json_object":
        return None, True
    if kind in ("text", None):
        return None, False
    raise MalformedRequest(f"Invalid response format type: {kind!r}.")


def _choice(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise MalformedRequest(f"Invalid tool_choice: {value!r}.")
        return value, None
    if isinstance(value, dict):
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else value.get("name")
        if isinstance(name, str):
            return "required", name
        if value.get("type") in ("auto", "none", "required"):
            return str(value["type"]), None
    raise MalformedRequest("Invalid tool_choice.")


def parse_chat(raw: Any) -> Prompt:
    body = _need_object(raw)
    model = _need_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedRequest("'messages' must be a non-empty array.")
    counts = [0, 0]
    last_user = ""
    text = ""
    role = ""
    for message in messages:
        if not isinstance(message, dict):
            raise MalformedRequest("Each message must be an object.")
        role = message.get("role", "")
        if not isinstance(role, str) or role not in _ROLES:
            raise MalformedRequest(f"Invalid value for 'role': {role!r}.")
        text = _content_text(message.get("content"), counts)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    counts[0] += len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))
        if role == "user":
            last_user = text
    tools: list[Tool] = []
    offered = body.get("tools")
    if offered is not None:
        if not isinstance(offered, list):
            raise MalformedRequest("'tools' must be an array.")
        for tool in offered:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise MalformedRequest("Each tool needs a 'function' with a 'name'.")
            tools.append(Tool(fn["name"], fn.get("parameters")))
    choice, forced = _choice(body.get("tool_choice"))
    schema, json_mode = _schema_of(body.get("response_format"), nested=True)
    effort = body.get("reasoning_effort")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    options = body.get("stream_options")
    return Prompt(
        model=model,
        chars=counts[0],
        images=counts[1],
        last_user=last_user,
        tool_result=text if role in ("tool", "function") else None,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        schema=schema,
        json_mode=json_mode,
        reasoning=(effort is not None and effort != "none") or is_reasoning_model(model),
        max_tokens=limit if isinstance(limit, int) else None,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


# ---------------------------------------------------------------------------------------------- chat


def _chat_usage(answer: Answer) -> dict[str, Any]:
    output = answer.output_tokens + answer.reasoning_tokens
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": output,
        "total_tokens": answer.prompt_tokens + output,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": answer.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def render_chat(answer: Answer) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text or None,
        "refusal": None,
        "annotations": [],
    }
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    if answer.tool is not None:
        message["tool_calls"] = [
            {
                "id": new_id("call_"),
                "type": "function",
                "function": {"name": answer.tool.name, "arguments": answer.tool_args_json},
            }
        ]
    return orjson.dumps(
        {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH[answer.finish]}],
            "usage": _chat_usage(answer),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
    )


def stream_chat(answer: Answer, prompt: Prompt) -> Frames:
    prefix = b"".join(
        (
            b'data: {"id":"',
            new_id("chatcmpl-").encode(),
            b'","object":"chat.completion.chunk","created":',
            str(int(time.time())).encode(),
            b',"model":',
            orjson.dumps(answer.model),
            b',"service_tier":"default","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":',
        )
    )
    usage_null = b',"usage":null' if prompt.include_usage else b""
    suffix = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"

    def chunk(delta: dict[str, Any]) -> bytes:
        return prefix + orjson.dumps(delta) + suffix

    head = [chunk({"role": "assistant", "content": "", "refusal": None})]
    content = Chunks()
    for piece in split(answer.thinking, answer.chunks) if answer.thinking else ():
        content.add(chunk({"reasoning_content": piece}))
    if answer.tool is not None:
        call = {
            "index": 0,
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": answer.tool.name, "arguments": ""},
        }
        content.opening(chunk({"tool_calls": [call]}))
        for piece in split(answer.tool_args_json, answer.chunks):
            content.add(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        for piece in split(answer.text, answer.chunks):
            content.add(chunk({"content": piece}))
    finish = orjson.dumps(_FINISH[answer.finish])
    tail = [prefix + b'{},"logprobs":null,"finish_reason":' + finish + b"}]" + usage_null + b"}\n\n"]
    if prompt.include_usage:
        # The usage chunk has no choices; cut the prefix just before them.
        head_part = prefix[: prefix.rindex(b'"choices"')]
        tail.append(head_part + b'"choices":[],"usage":' + orjson.dumps(_chat_usage(answer)) + b"}\n\n")
    tail.append(b"data: [DONE]\n\n")
    return Frames(head, content.frames, tail, _chat_error_frame)


# ---------------------------------------------------------------------------------------------- responses


def parse_responses(raw: Any) -> tuple[Prompt, dict[str, Any]]:
    """The prompt, plus the request fields a Response object echoes back."""
    body = _need_object(raw)
    model = _need_model(body)
    counts = [0, 0]
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        counts[0] += len(instructions)
    items = body.get("input")
    last_user = ""
    tool_result: str | None = None
    if isinstance(items, str):
        counts[0] += len(items)
        last_user = items
    elif isinstance(items, list) and items:
        for item in items:
            if not isinstance(item, dict):
                raise MalformedRequest("Each input item must be an object.")
            kind = item.get("type", "message")
            tool_result = None
            if kind == "message":
                role = item.get("role")
                if not isinstance(role, str) or role not in _ROLES:
                    raise MalformedRequest(f"Invalid value for 'role': {role!r}.")
                text = _content_text(item.get("content"), counts)
                if role == "user":
                    last_user = text
            elif kind == "function_call_output":
                output = item.get("output")
                tool_result = output if isinstance(output, str) else orjson.dumps(output).decode()
                counts[0] += len(tool_result)
            elif kind == "function_call":
                counts[0] += len(str(item.get("name", ""))) + len(str(item.get("arguments", "")))
    else:
        raise MalformedRequest("'input' must be a string or a non-empty array of items.")
    tools: list[Tool] = []
    offered = body.get("tools") or []
    if not isinstance(offered, list):
        raise MalformedRequest("'tools' must be an array.")
    for tool in offered:
        if not isinstance(tool, dict):
            raise MalformedRequest("Each tool must be an object.")
        if tool.get("type") == "function":
            if not isinstance(tool.get("name"), str):
                raise MalformedRequest("A function tool needs a 'name'.")
            tools.append(Tool(tool["name"], tool.get("parameters")))
    choice, forced = _choice(body.get("tool_choice"))
    text_opts = body.get("text")
    fmt = text_opts.get("format") if isinstance(text_opts, dict) else None
    schema, json_mode = _schema_of(fmt, nested=False)
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    limit = body.get("max_output_tokens")
    prompt = Prompt(
        model=model,
        chars=counts[0],
        images=counts[1],
        last_user=last_user,
        tool_result=tool_result,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        schema=schema,
        json_mode=json_mode,
        reasoning=(effort is not None and effort != "none") or is_reasoning_model(model),
        max_tokens=limit if isinstance(limit, int) else None,
        stream=body.get("stream") is True,
    )
    echo = {
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": limit if isinstance(limit, int) else None,
        "reasoning": {"effort": effort, "summary": None},
        "text": {"format": fmt if isinstance(fmt, dict) else {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": offered,
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
    }
    return prompt, echo


def _responses_usage(answer: Answer) -> dict[str, Any]:
    output = answer.output_tokens + answer.reasoning_tokens
    return {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": answer.cached_tokens},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
        "total_tokens": answer.prompt_tokens + output,
    }


class _ResponseIds:
    __slots__ = ("call", "function", "message", "reasoning", "response")

    def __init__(self) -> None:
        self.response = new_id("resp_")
        self.reasoning = new_id("rs_")
        self.message = new_id("msg_")
        self.function = new_id("fc_")
        self.call = new_id("call_")


def _response_object(
    answer: Answer, echo: dict[str, Any], ids: _ResponseIds, status: str, output: list[Any], usage: bool
) -> dict[str, Any]:
    return {
        "id": ids.response,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": answer.model,
        "output": output,
        "parallel_tool_calls": True,
        "service_tier": "default",
        "truncation": "disabled",
        "usage": _responses_usage(answer) if usage else None,
        "user": None,
        **echo,
    }


def _output_items(answer: Answer, ids: _ResponseIds) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if answer.thinking:
        items.append({"id": ids.reasoning, "type": "reasoning", "summary": []})
    if answer.tool is not None:
        items.append(
            {
                "id": ids.function,
                "type": "function_call",
                "status": "completed",
                "arguments": answer.tool_args_json,
                "call_id": ids.call,
                "name": answer.tool.name,
            }
        )
    else:
        items.append(
            {
                "id": ids.message,
                "type": "message",
                "status": "completed" if answer.finish != "length" else "incomplete",
                "role": "assistant",
                "content": [_text_part(answer.text)],
            }
        )
    return items


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def render_responses(answer: Answer, echo: dict[str, Any]) -> bytes:
    ids = _ResponseIds()
    status = "incomplete" if answer.finish == "length" else "completed"
    return orjson.dumps(_response_object(answer, echo, ids, status, _output_items(answer, ids), True))


def stream_responses(answer: Answer, echo: dict[str, Any]) -> Frames:
    ids = _ResponseIds()
    seq = 0

    def event(kind: str, data: dict[str, Any]) -> bytes:
        nonlocal seq
        seq += 1
        framed = {"type": kind, **data, "sequence_number": seq - 1}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(framed) + b"\n\n"

    head = [
        event("response.created", {"response": _response_object(answer, echo, ids, "in_progress", [], False)}),
        event(
            "response.in_progress",
            {"response": _response_object(answer, echo, ids, "in_progress", [], False)},
        ),
    ]
    done = _output_items(answer, ids)
    content = Chunks()
    # starts[k]: the sequence number an error frame gets after content element k - 1.
    starts = [seq]
    index = 0
    if answer.thinking:
        content.opening(event("response.output_item.added", {"output_index": 0, "item": done[0]}))
        content.opening(event("response.output_item.done", {"output_index": 0, "item": done[0]}))
        index = 1
    if answer.tool is not None:
        item = dict(done[index], status="in_progress", arguments="")
        where = {"item_id": ids.function, "output_index": index}
        content.opening(event("response.output_item.added", {"output_index": index, "item": item}))
        for piece in split(answer.tool_args_json, answer.chunks):
            content.add(event("response.function_call_arguments.delta", {**where, "delta": piece}))
            starts.append(seq)
        done_args = {**where, "name": answer.tool.name, "arguments": answer.tool_args_json}
        tail = [event("response.function_call_arguments.done", done_args)]
    else:
        where = {"item_id": ids.message, "output_index": index, "content_index": 0}
        item = dict(done[index], status="in_progress", content=[])
        content.opening(event("response.output_item.added", {"output_index": index, "item": item}))
        content.opening(event("response.content_part.added", {**where, "part": _text_part("")}))
        for piece in split(answer.text, answer.chunks):
            content.add(event("response.output_text.delta", {**where, "delta": piece, "logprobs": []}))
            starts.append(seq)
        tail = [
            event("response.output_text.done", {**where, "text": answer.text, "logprobs": []}),
            event("response.content_part.done", {**where, "part": _text_part(answer.text)}),
        ]
    tail.append(event("response.output_item.done", {"output_index": index, "item": done[index]}))
    status = "incomplete" if answer.finish == "length" else "completed"
    final = _response_object(answer, echo, ids, status, done, True)
    tail.append(event(f"response.{status}", {"response": final}))

    def error(sent: int) -> bytes:
        data = {
            "type": "error",
            "code": "server_error",
            "message": "The server had an error while processing your request.",
            "param": None,
            "sequence_number": starts[sent] if sent >= 0 else 0,
        }
        return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"

    return Frames(head, content.frames, tail, error)


# ---------------------------------------------------------------------------------------------- embeddings

_DEFAULT_DIMENSIONS = {"text-embedding-3-large": 3072}


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise MalformedRequest("'input' must be a string, an array of strings, or an array of token arrays.")


def embed(raw: Any, model_override: str) -> bytes:
    body = _need_object(raw)
    model = _need_model(body)
    texts = _inputs(body.get("input"))
    if any(not t for t in texts):
        raise MalformedRequest("'input' cannot contain an empty string.")
    dimensions = body.get("dimensions")
    if dimensions is None:
        dimensions = _DEFAULT_DIMENSIONS.get(model, 1536)
    elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 8192:
        raise MalformedRequest("'dimensions' must be an integer between 1 and 8192.")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise MalformedRequest("'encoding_format' must be 'float' or 'base64'.")
    data = []
    for i, text in enumerate(texts):
        vector = embeddings.embed(text, dimensions)
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": embeddings.to_base64(vector) if encoding == "base64" else vector,
            }
        )
    used = sum(tokens(len(t)) for t in texts)
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model_override or model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
    )


# ---------------------------------------------------------------------------------------------- models

_MODEL_IDS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
)

MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "nexus-mock"} for m in _MODEL_IDS],
    }
)


def model_body(model_id: str) -> bytes:
    return orjson.dumps({"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "nexus-mock"})
