"""Gemini wire format: generateContent, streamGenerateContent, embeddings, errors.

``parse`` turns a ``GenerateContentRequest`` body (camelCase, or the
snake_case spelling the REST API also accepts) into a ``Prompt``, raising
``MalformedRequest`` where Gemini answers 400 INVALID_ARGUMENT.  ``render``
gives one ``GenerateContentResponse``; ``stream`` gives the same cut into
pieces, framed as SSE (``?alt=sse``: ``data: {…}`` events) or as the JSON
array Gemini streams without ``alt=sse``.  Thoughts (``thinkingConfig.
includeThoughts``) come as ``thought: true`` parts and ``thoughtsTokenCount``;
tool calls as one ``functionCall`` part.

Pure and synchronous.
"""

from __future__ import annotations

from typing import Any

import orjson

from nexus.mock import embeddings
from nexus.mock.textgen import (
    IMAGE_TOKENS,
    Answer,
    Frames,
    MalformedRequest,
    Prompt,
    Tool,
    new_id,
    split,
    tokens,
)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    401: "API key not valid. Please pass a valid API key.",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred.",
    503: "The model is overloaded. Please try again later.",
}


def _error(status: int, message: str | None) -> dict[str, Any]:
    return {
        "code": status,
        "message": message or _MESSAGES.get(status, f"Error {status}."),
        "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
    }


def error_body(status: int, message: str | None = None) -> bytes:
    return orjson.dumps({"error": _error(status, message)})


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedRequest(f"Invalid value at '{field}': expected a list.")
    return value


def _parts_text(parts: Any, counts: list[int]) -> tuple[str, str | None]:
    """(text with images as ``[image]``, function response if any) of a ``parts`` list."""
    if not isinstance(parts, list):
        raise MalformedRequest("Invalid value at 'contents.parts': expected a list of parts.")
    pieces = []
    result: str | None = None
    for part in parts:
        if not isinstance(part, dict):
            raise MalformedRequest("Invalid value at 'contents.parts': each part must be an object.")
        text = part.get("text")
        if isinstance(text, str):
            if not part.get("thought"):
                counts[0] += len(text)
                pieces.append(text)
            continue
        blob = _get(part, "inlineData", "inline_data") or _get(part, "fileData", "file_data")
        if isinstance(blob, dict):
            mime = _get(blob, "mimeType", "mime_type")
            if not isinstance(mime, str):
                raise MalformedRequest("Invalid value at 'inline_data.mime_type': a MIME type is required.")
            if mime.startswith("image/"):
                counts[1] += 1
                pieces.append("[image]")
            else:
                pieces.append("[file]")
            continue
        call = _get(part, "functionCall", "function_call")
        if isinstance(call, dict):
            counts[0] += len(orjson.dumps(call))
            continue
        response = _get(part, "functionResponse", "function_response")
        if isinstance(response, dict):
            result = orjson.dumps(response.get("response", {})).decode()
            counts[0] += len(result)
            continue
        raise MalformedRequest("Invalid part: expected text, inlineData, fileData, functionCall or functionResponse.")
    return " ".join(pieces), result


def parse(raw: Any, model: str) -> Prompt:
    if not isinstance(raw, dict):
        raise MalformedRequest("Invalid JSON payload received: expected an object.")
    contents = raw.get("contents")
    if not isinstance(contents, list) or not contents:
        raise MalformedRequest("* GenerateContentRequest.contents: contents is not specified")
    counts = [0, 0]
    system = _get(raw, "systemInstruction", "system_instruction")
    if isinstance(system, dict):
        _parts_text(system.get("parts", []), counts)
    last_user = ""
    result: str | None = None
    for content in contents:
        if not isinstance(content, dict):
            raise MalformedRequest("Invalid value at 'contents': each content must be an object.")
        role = content.get("role", "user")
        if role not in ("user", "model", "function", "tool"):
            raise MalformedRequest(f"Please use a valid role: user, model. Got {role!r}.")
        text, result = _parts_text(content.get("parts"), counts)
        if role == "user" and result is None:
            last_user = text
    tools: list[Tool] = []
    for group in _list(raw.get("tools"), "tools"):
        declarations = _get(group, "functionDeclarations", "function_declarations") if isinstance(group, dict) else None
        for decl in _list(declarations, "functionDeclarations"):
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                raise MalformedRequest("* FunctionDeclaration.name: name is required")
            schema = decl.get("parameters") or _get(decl, "parametersJsonSchema", "parameters_json_schema")
            tools.append(Tool(decl["name"], schema))
    choice, forced = "auto", None
    tool_config = _get(raw, "toolConfig", "tool_config")
    calling = (
        _get(tool_config, "functionCallingConfig", "function_calling_config") if isinstance(tool_config, dict) else None
    )
    if isinstance(calling, dict):
        mode = str(calling.get("mode", "AUTO")).upper()
        allowed = _get(calling, "allowedFunctionNames", "allowed_function_names")
        if mode == "NONE":
            choice = "none"
        elif mode in ("ANY", "VALIDATED"):
            choice = "required"
            if isinstance(allowed, list) and allowed and isinstance(allowed[0], str):
                forced = allowed[0]
    config = _get(raw, "generationConfig", "generation_config")
    config = config if isinstance(config, dict) else {}
    schema = _get(config, "responseJsonSchema", "response_json_schema") or _get(
        config, "responseSchema", "response_schema"
    )
    mime = _get(config, "responseMimeType", "response_mime_type")
    thinking = _get(config, "thinkingConfig", "thinking_config")
    limit = _get(config, "maxOutputTokens", "max_output_tokens")
    return Prompt(
        model=model,
        chars=counts[0],
        images=counts[1],
        last_user=last_user,
        tool_result=result,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        schema=schema if isinstance(schema, dict) else None,
        json_mode=mime == "application/json",
        reasoning=isinstance(thinking, dict) and _get(thinking, "includeThoughts", "include_thoughts") is True,
        max_tokens=limit if isinstance(limit, int) else None,
    )


def _usage(answer: Answer, prompt: Prompt) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": answer.output_tokens,
        "totalTokenCount": answer.total_tokens,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": answer.prompt_tokens - IMAGE_TOKENS * prompt.images}
        ],
    }
    if prompt.images:
        usage["promptTokensDetails"].append({"modality": "IMAGE", "tokenCount": IMAGE_TOKENS * prompt.images})
    if answer.cached_tokens:
        usage["cachedContentTokenCount"] = answer.cached_tokens
    if answer.reasoning_tokens:
        usage["thoughtsTokenCount"] = answer.reasoning_tokens
    return usage


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return candidate


def _finish(answer: Answer) -> str:
    return "MAX_TOKENS" if answer.finish == "length" else "STOP"


def render(answer: Answer, prompt: Prompt) -> bytes:
    parts: list[dict[str, Any]] = []
    if answer.thinking:
        parts.append({"text": answer.thinking, "thought": True})
    if answer.tool is not None:
        parts.append({"functionCall": {"name": answer.tool.name, "args": answer.tool_args}})
    else:
        parts.append({"text": answer.text})
    return orjson.dumps(
        {
            "candidates": [_candidate(parts, _finish(answer))],
            "usageMetadata": _usage(answer, prompt),
            "modelVersion": answer.model,
            "responseId": new_id("mock-"),
        }
    )


def stream(answer: Answer, prompt: Prompt, *, sse: bool) -> Frames:
    response_id = new_id("mock-")

    def chunk(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "candidates": [_candidate(parts, _finish(answer) if last else None)],
            "modelVersion": answer.model,
            "responseId": response_id,
        }
        if last:
            data["usageMetadata"] = _usage(answer, prompt)
        return data

    bodies = (
        [chunk([{"text": piece, "thought": True}], False) for piece in split(answer.thinking, answer.chunks)]
        if answer.thinking
        else []
    )
    if answer.tool is not None:
        final = chunk([{"functionCall": {"name": answer.tool.name, "args": answer.tool_args}}], True)
    else:
        bodies.extend(chunk([{"text": piece}], False) for piece in split(answer.text, answer.chunks))
        final = chunk([{"text": ""}], True)
    if sse:
        content = [b"data: " + orjson.dumps(b) + b"\r\n\r\n" for b in bodies]
        tail = [b"data: " + orjson.dumps(final) + b"\r\n\r\n"]

        def sse_error(_sent: int) -> bytes:
            return b"data: " + orjson.dumps({"error": _error(500, None)}) + b"\r\n\r\n"

        return Frames([], content, tail, sse_error)
    content = [(b",\r\n" if i else b"[") + orjson.dumps(b) for i, b in enumerate(bodies)]
    tail = [(b",\r\n" if bodies else b"[") + orjson.dumps(final) + b"]"]

    def array_error(sent: int) -> bytes:
        return (b",\r\n" if sent > 0 else b"[") + orjson.dumps({"error": _error(500, None)}) + b"]"

    return Frames([], content, tail, array_error, json_array=True)


# ---------------------------------------------------------------------------------------------- embeddings


def _embed_one(request: Any, model: str) -> tuple[dict[str, Any], int]:
    if not isinstance(request, dict) or not isinstance(request.get("content"), dict):
        raise MalformedRequest("* EmbedContentRequest.content: content is not specified")
    text, _ = _parts_text(request["content"].get("parts"), [0, 0])
    if not text:
        raise MalformedRequest("* EmbedContentRequest.content: contents must not be empty")
    dimensions = _get(request, "outputDimensionality", "output_dimensionality")
    if dimensions is None:
        dimensions = 3072 if model.startswith("gemini-embedding") else 768
    elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 8192:
        raise MalformedRequest("* outputDimensionality must be between 1 and 8192")
    return {"values": embeddings.embed(text, dimensions)}, tokens(len(text))


def embed_content(raw: Any, model: str) -> bytes:
    embedding, _ = _embed_one(raw, model)
    return orjson.dumps({"embedding": embedding})


def batch_embed_contents(raw: Any, model: str) -> bytes:
    requests = raw.get("requests") if isinstance(raw, dict) else None
    if not isinstance(requests, list) or not requests:
        raise MalformedRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
    return orjson.dumps({"embeddings": [_embed_one(r, model)[0] for r in requests]})
