"""Gemini generateContent requests ⇄ canonical chat requests, and upstream URL paths.

Pure.  :func:`request_from_chat` builds the upstream body (the gateway adds
``x-goog-api-key``; the model goes in the path from :func:`path` or
:func:`vertex_path`); :func:`chat_from_request` reads a Gemini caller's body,
accepting the REST API's camelCase and the proto's snake_case field names.

Tool calls: Gemini's ``functionCall`` usually has no id, so ids are made up
(``call_…``) and a ``functionResponse`` is matched back to its call by id when
it has one, else by name in call order.  Going upstream, ids are not sent;
thought signatures ride on the tool call's ``extra_content`` and go back on
the ``functionCall`` part.  A call from another provider has no signature, so
the first call of each model turn gets the placeholder Google documents for
that case (Gemini 3 validates signatures of the current turn).

Error handling: ``WireError("invalid_request")`` for what Gemini cannot take or
canonical form cannot hold (file ids, non-JSON tool arguments, Google search
tools, cached content).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import orjson

from nexus.wire.canonical import Obj, dumps_str, new_id, parse_arguments, parse_data_url, text_of
from nexus.wire.errors import WireError
from nexus.wire.gemini._schema import clean_schema, schema_from_gemini

#: ``reasoning_effort`` → ``thinkingBudget``.
EFFORT_BUDGET: Final = {"minimal": 0, "none": 0, "low": 1024, "medium": 8192, "high": 24576}

#: What Google's docs say to send when a function call has no real signature.
PLACEHOLDER_SIGNATURE: Final = "context_engineering_is_the_way_to_go"

_AUDIO: Final = {"wav": "audio/wav", "mp3": "audio/mp3"}
_IMAGE_EXT: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}


def _bad(message: str, param: str | None = None) -> WireError:
    return WireError("invalid_request", message, param=param)


def _model_segment(model: str) -> str:
    m = model[7:] if model.startswith("models/") else model
    # Tuned models are addressed as "tunedModels/x"; anything else is a base model.
    name = m if "/" in m else f"models/{m}"
    return quote(name, safe="/-._~")


def path(model: str, stream: bool) -> str:
    """``/v1beta/models/{m}:generateContent``, or ``:streamGenerateContent?alt=sse`` when streaming."""
    seg = _model_segment(model)
    if stream:
        return f"/v1beta/{seg}:streamGenerateContent?alt=sse"
    return f"/v1beta/{seg}:generateContent"


def vertex_path(project: str, location: str, model: str, stream: bool) -> str:
    """The same call on Vertex AI (publisher Google models)."""
    m = quote(model[7:] if model.startswith("models/") else model, safe="-._~")
    base = f"/v1/projects/{quote(project, safe='')}/locations/{quote(location, safe='')}/publishers/google/models/{m}"
    return f"{base}:streamGenerateContent?alt=sse" if stream else f"{base}:generateContent"


# ---------------------------------------------------------------- canonical → Gemini


def _media_part(url: str) -> Obj:
    inline = parse_data_url(url)
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    ext = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    return {"fileData": {"mimeType": _IMAGE_EXT.get(ext, "image/jpeg"), "fileUri": url}}


def _parts(content: Any) -> list[Obj]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[Obj] = []
    for p in content or ():
        t = p.get("type")
        if t == "text":
            if p.get("text"):
                out.append({"text": p["text"]})
        elif t == "image_url":
            ref = p.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url:
                raise _bad("image_url part without a url")
            out.append(_media_part(url))
        elif t == "input_audio":
            audio = p.get("input_audio") or {}
            mime = _AUDIO.get(audio.get("format") or "", "audio/wav")
            out.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif t == "file":
            inline = parse_data_url((p.get("file") or {}).get("file_data") or "")
            if inline is None:
                raise _bad("Gemini needs file parts inline as file_data (a base64 data URL), not a file_id")
            out.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
        elif t == "refusal":
            if p.get("refusal"):
                out.append({"text": p["refusal"]})
        else:
            raise _bad(f"content part type {t!r} cannot be sent to Gemini")
    return out


def _function_response(msg: Obj, name: str) -> Obj:
    text = text_of(msg.get("content"))
    try:
        value = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        value = None
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _model_parts(msg: Obj, i: int, names: dict[str, str]) -> list[Obj]:
    out = _parts(msg.get("content"))
    for n, tc in enumerate(msg.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        args = parse_arguments(fn.get("arguments"))
        if args is None:
            raise _bad("tool call arguments are not a JSON object", f"messages[{i}].tool_calls")
        name = fn.get("name") or ""
        if tc.get("id"):
            names[tc["id"]] = name
        part: Obj = {"functionCall": {"name": name, "args": args}}
        sig = ((tc.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if sig:
            part["thoughtSignature"] = sig
        elif n == 0:
            part["thoughtSignature"] = PLACEHOLDER_SIGNATURE
        out.append(part)
    return out


def _contents(msgs: Any) -> tuple[list[Obj], list[Obj]]:
    system: list[Obj] = []
    contents: list[Obj] = []
    names: dict[str, str] = {}
    for i, m in enumerate(msgs or ()):
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(m.get("content")))
            continue
        if role == "assistant":
            grole, parts = "model", _model_parts(m, i, names)
        elif role == "tool":
            name = names.get(m.get("tool_call_id") or "") or m.get("name") or ""
            grole, parts = "user", [_function_response(m, name)]
        elif role == "user":
            grole, parts = "user", _parts(m.get("content"))
        else:
            raise _bad(f"message role {role!r} cannot be sent to Gemini", f"messages[{i}].role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == grole:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": grole, "parts": parts})
    return system, contents


def _declaration(t: Obj) -> Obj:
    if t.get("type") != "function":
        raise _bad(f"tool type {t.get('type')!r} cannot be sent to Gemini", "tools")
    fn = t.get("function") or {}
    decl: Obj = {"name": fn.get("name") or ""}
    if fn.get("description"):
        decl["description"] = fn["description"]
    params = clean_schema(fn.get("parameters"))
    # Gemini rejects an object schema without properties: a tool without
    # parameters simply has none.
    if params.get("properties"):
        decl["parameters"] = params
    return decl


def _tool_config(choice: Any) -> Obj | None:
    if choice is None:
        return None
    if choice == "none":
        cfg: Obj = {"mode": "NONE"}
    elif choice == "required":
        cfg = {"mode": "ANY"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        cfg = {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name", "")]}
    else:
        cfg = {"mode": "AUTO"}
    return {"functionCallingConfig": cfg}


def _thinking_config(chat: Obj) -> Obj | None:
    thinking = chat.get("thinking")
    if isinstance(thinking, dict):
        t = thinking.get("type")
        if t == "enabled":
            return {"thinkingBudget": thinking.get("budget_tokens", 1024), "includeThoughts": True}
        if t == "adaptive":
            return {"thinkingBudget": -1, "includeThoughts": True}
        if t == "disabled":
            return {"thinkingBudget": 0}
        return None
    budget = EFFORT_BUDGET.get(chat.get("reasoning_effort") or "")
    if budget is None:
        return None
    return {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}


_GEN_KEYS: Final = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("n", "candidateCount"),
)


def request_from_chat(chat: Obj) -> tuple[Obj, list[str]]:
    """Canonical request → Gemini generateContent body, and the names of coerced parameters.

    ``parallel_tool_calls: false`` cannot be enforced by Gemini and is reported
    as coerced.  ``reasoning_effort`` (or a ``thinking`` side field) becomes
    ``thinkingConfig`` with thoughts included, so reasoning flows back.
    """
    coerced: list[str] = []
    system, contents = _contents(chat.get("messages"))
    req: Obj = {"contents": contents}
    if system:
        req["systemInstruction"] = {"parts": system}
    gen: Obj = {}
    limit = chat.get("max_completion_tokens")
    if limit is None:
        limit = chat.get("max_tokens")
    if limit is not None:
        gen["maxOutputTokens"] = limit
    for src, dst in _GEN_KEYS:
        if chat.get(src) is not None:
            gen[dst] = chat[src]
    stop = chat.get("stop")
    if stop:
        gen["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = chat.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            gen["responseMimeType"] = "application/json"
            schema = (fmt.get("json_schema") or {}).get("schema")
            if schema:
                gen["responseSchema"] = clean_schema(schema)
        elif fmt.get("type") == "json_object":
            gen["responseMimeType"] = "application/json"
    thinking = _thinking_config(chat)
    if thinking is not None:
        gen["thinkingConfig"] = thinking
    if gen:
        req["generationConfig"] = gen
    tools = chat.get("tools")
    if tools:
        req["tools"] = [{"functionDeclarations": [_declaration(t) for t in tools]}]
        cfg = _tool_config(chat.get("tool_choice"))
        if cfg is not None:
            req["toolConfig"] = cfg
        if chat.get("parallel_tool_calls") is False:
            coerced.append("parallel_tool_calls")
    return req, coerced


# ---------------------------------------------------------------- Gemini → canonical


def _g(d: Obj, camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def _chat_part(p: Obj) -> Obj:
    inline = _g(p, "inlineData", "inline_data")
    if inline is not None:
        mime = _g(inline, "mimeType", "mime_type") or "application/octet-stream"
        data = inline.get("data", "")
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
        if mime in ("audio/wav", "audio/x-wav", "audio/mp3", "audio/mpeg"):
            fmt = "wav" if "wav" in mime else "mp3"
            return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
        return {"type": "file", "file": {"file_data": f"data:{mime};base64,{data}"}}
    file = _g(p, "fileData", "file_data")
    if file is not None:
        mime = _g(file, "mimeType", "mime_type") or ""
        if mime and not mime.startswith("image/"):
            raise _bad(f"fileData of type {mime} cannot be translated")
        return {"type": "image_url", "image_url": {"url": _g(file, "fileUri", "file_uri") or ""}}
    if "text" in p:
        return {"type": "text", "text": p["text"]}
    raise _bad(f"part with keys {sorted(p)} cannot be translated")


def _simplify(parts: list[Obj]) -> str | list[Obj]:
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _user_content(parts: list[Obj], pending: dict[str, list[str]], out: list[Obj]) -> None:
    rest: list[Obj] = []
    for p in parts:
        fr = _g(p, "functionResponse", "function_response")
        if fr is None:
            rest.append(_chat_part(p))
            continue
        name = fr.get("name", "")
        call_id = fr.get("id")
        queue = pending.get(name)
        if not call_id:
            call_id = queue.pop(0) if queue else new_id("call_")
        elif queue and call_id in queue:
            queue.remove(call_id)
        out.append({"role": "tool", "tool_call_id": call_id, "content": dumps_str(fr.get("response") or {})})
    if rest:
        out.append({"role": "user", "content": _simplify(rest)})


def _model_content(parts: list[Obj], pending: dict[str, list[str]], out: list[Obj]) -> None:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Obj] = []
    pending.clear()
    for p in parts:
        fc = _g(p, "functionCall", "function_call")
        if fc is not None:
            call_id = fc.get("id") or new_id("call_")
            name = fc.get("name", "")
            pending.setdefault(name, []).append(call_id)
            call: Obj = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": dumps_str(fc.get("args") or {})},
            }
            sig = _g(p, "thoughtSignature", "thought_signature")
            if sig:
                call["extra_content"] = {"google": {"thought_signature": sig}}
            calls.append(call)
        elif "text" in p:
            (thoughts if p.get("thought") else texts).append(p["text"])
    msg: Obj = {"role": "assistant", "content": "".join(texts) if texts else None}
    if thoughts:
        msg["reasoning_content"] = "".join(thoughts)
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _response_format(gen: Obj) -> Obj | None:
    mime = _g(gen, "responseMimeType", "response_mime_type")
    raw = _g(gen, "responseJsonSchema", "response_json_schema")
    schema = raw if raw is not None else _g(gen, "responseSchema", "response_schema")
    if schema is not None:
        js = raw if raw is not None else schema_from_gemini(schema)
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": js}}
    if mime == "application/json":
        return {"type": "json_object"}
    return None


def _thinking(cfg: Obj) -> Obj | None:
    budget = _g(cfg, "thinkingBudget", "thinking_budget")
    if budget == 0:
        return {"type": "disabled"}
    if isinstance(budget, int) and budget > 0:
        return {"type": "enabled", "budget_tokens": budget}
    if budget == -1 or _g(cfg, "thinkingLevel", "thinking_level") is not None:
        return {"type": "adaptive"}
    return None


_CHAT_GEN_KEYS: Final = (
    ("maxOutputTokens", "max_output_tokens", "max_completion_tokens"),
    ("temperature", "temperature", "temperature"),
    ("topP", "top_p", "top_p"),
    ("topK", "top_k", "top_k"),
    ("seed", "seed", "seed"),
    ("presencePenalty", "presence_penalty", "presence_penalty"),
    ("frequencyPenalty", "frequency_penalty", "frequency_penalty"),
    ("candidateCount", "candidate_count", "n"),
    ("stopSequences", "stop_sequences", "stop"),
)


def _chat_tools(tools: list[Obj]) -> list[Obj]:
    out: list[Obj] = []
    for tool in tools:
        decls = _g(tool, "functionDeclarations", "function_declarations")
        if decls is None:
            raise _bad(f"Gemini tool {sorted(tool)} cannot be translated", "tools")
        for d in decls:
            raw = _g(d, "parametersJsonSchema", "parameters_json_schema")
            params = raw if raw is not None else schema_from_gemini(d.get("parameters") or {"type": "object"})
            fn: Obj = {"name": d.get("name", ""), "parameters": params}
            if d.get("description"):
                fn["description"] = d["description"]
            out.append({"type": "function", "function": fn})
    return out


def _chat_tool_choice(cfg: Obj) -> Any:
    fcc = _g(cfg, "functionCallingConfig", "function_calling_config") or {}
    mode = (fcc.get("mode") or "AUTO").upper()
    allowed = _g(fcc, "allowedFunctionNames", "allowed_function_names") or []
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        if len(allowed) == 1:
            return {"type": "function", "function": {"name": allowed[0]}}
        return "required"
    return "auto"


def chat_from_request(model: str, req: Obj, stream: bool) -> Obj:
    """A Gemini caller's generateContent body (model from the URL) → canonical request."""
    if _g(req, "cachedContent", "cached_content"):
        raise _bad("cachedContent refers to a cache on Google's side and cannot be translated")
    msgs: list[Obj] = []
    system = _g(req, "systemInstruction", "system_instruction")
    if isinstance(system, dict):
        text = "".join(p.get("text", "") for p in system.get("parts") or ())
        if text:
            msgs.append({"role": "system", "content": text})
    elif isinstance(system, str) and system:
        msgs.append({"role": "system", "content": system})
    pending: dict[str, list[str]] = {}
    for content in req.get("contents") or ():
        parts = content.get("parts") or []
        if content.get("role") == "model":
            _model_content(parts, pending, msgs)
        else:
            _user_content(parts, pending, msgs)
    chat: Obj = {"model": model[7:] if model.startswith("models/") else model, "messages": msgs}
    gen = _g(req, "generationConfig", "generation_config") or {}
    for camel, snake, key in _CHAT_GEN_KEYS:
        v = _g(gen, camel, snake)
        if v is not None:
            chat[key] = v
    fmt = _response_format(gen)
    if fmt is not None:
        chat["response_format"] = fmt
    tcfg = _g(gen, "thinkingConfig", "thinking_config")
    if isinstance(tcfg, dict):
        thinking = _thinking(tcfg)
        if thinking is not None:
            chat["thinking"] = thinking
    tools = req.get("tools")
    if tools:
        chat["tools"] = _chat_tools(tools)
        cfg = _g(req, "toolConfig", "tool_config")
        if isinstance(cfg, dict):
            chat["tool_choice"] = _chat_tool_choice(cfg)
    if stream:
        chat["stream"] = True
    return chat
