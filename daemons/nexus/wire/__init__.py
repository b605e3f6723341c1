"""Provider wire formats and the codecs between them.  Pure: no I/O, no Trio.

The canonical shape is the OpenAI Chat Completions request, response and
stream chunk, as plain dicts straight from orjson (``canonical`` documents the
few side fields that carry what OpenAI's shape cannot).  The gateway's flow:

    caller dialect ──chat_from_request──▶ canonical ──request_from_chat──▶ upstream dialect
    caller dialect ◀─response_from_chat── canonical ◀─chat_from_response── upstream dialect
    caller events  ◀──StreamFromChat───── chunks    ◀──StreamToChat──────── upstream events

Same-family traffic skips the codecs: ``rawjson`` rewrites only the top-level
``model`` (and asks OpenAI-chat upstreams for stream usage) in the raw bytes,
and a ``StreamObserver`` reads usage and the finish reason off the stream.

Modules and what other code calls:

``canonical``
    ``Obj``, ``Event = (event_name | None, data)``, ``StreamTranslator``
    (the protocol below), ``Chunker(model, id=None)`` (``.delta``, ``.finish``,
    ``.usage``), ``response(id, model, choices, usage)``, ``Accumulator``
    (``.add(chunk)``, ``.response()``: a stream reassembled, e.g. for the
    cache), ``chunks_from_response(resp)`` (a cached answer replayed as a
    stream), ``new_id(prefix)``, ``parse_data_url(url)``.
``rawjson``
    ``rewrite_model(body, model) -> bytes``,
    ``ensure_stream_usage(body) -> (bytes, added)``,
    ``passthrough(body, model) -> (bytes, added)`` (both in one pass).
``openai``
    ``encode(event, data) -> bytes``, ``DONE``,
    ``StreamObserver(strip_usage=...)``,
    ``upstream_request(chat, model, include_usage=True, legacy_max_tokens=False)``
    (a canonical request from another dialect, as an OpenAI-family body).
``anthropic``
    ``request_from_chat(chat, upstream_model, default_max_tokens,
    structured_output="native"|"tool") -> (body, coerced)``,
    ``chat_from_request(messages_req)``, ``chat_from_response(msg, model)``,
    ``response_from_chat(chat_resp)``, ``StreamToChat(model, include_usage=True)``,
    ``StreamFromChat(request)`` (+ ``.fail(kind, message)``), ``StreamObserver()``,
    ``encode``, tables ``FINISH`` / ``STOP``, ``STRUCTURED_TOOL``.
``gemini``
    ``path(model, stream)``, ``vertex_path(project, location, model, stream)``,
    ``request_from_chat(chat) -> (body, coerced)``,
    ``chat_from_request(model, req, stream)``, ``chat_from_response(resp, model)``,
    ``response_from_chat(chat_resp)``, ``StreamToChat(model, include_usage=True)``,
    ``StreamFromChat()`` (+ ``.fail``), ``StreamObserver()``, ``encode``,
    ``clean_schema(json_schema)``, tables ``FINISH`` / ``STOP``.
``responses``
    ``chat_from_request(req)``, ``response_from_chat(chat_resp, request)``,
    ``StreamFromChat(request)`` (+ ``.fail``), ``StreamObserver()`` (+ ``.fail``),
    ``encode``.
``usage``
    ``Usage`` (prompt, completion, cached, reasoning, cache-write tokens;
    ``.total``), ``from_openai`` / ``from_anthropic`` / ``from_gemini`` /
    ``from_responses`` and the matching ``to_*``.
``errors``
    ``WireError(kind, message, param=None, status=None)``, ``STATUS`` (kind →
    HTTP status), ``openai_error`` / ``anthropic_error`` / ``gemini_error``
    (bodies), ``error_body(dialect, kind, message)``, ``stream_error(dialect,
    kind, message)`` (mid-stream frames), ``parse_upstream_error(dialect,
    status, body) -> (kind, message)``.

Stream translators (``StreamToChat``, ``StreamFromChat``, ``StreamObserver``)
all take ``feed(event_name, data) -> [(event_name, data), ...]`` for each SSE
frame (``data`` parsed by orjson) and ``finish() -> [...]`` at the end, and
expose ``usage`` and ``finish_reason`` (canonical names) for the gateway to
record.  ``encode(event_name, data)`` of the caller's dialect frames each
output.  Errors: ``feed`` raises ``errors.WireError`` when the upstream reports
an error in-stream, ``finish`` when the stream ended early; the gateway then
writes the caller's error frame (``errors.stream_error`` or the encoder's
``fail``) and ends the stream.  Request translators raise ``WireError`` for
what the other side cannot express.  Nothing here mutates its inputs.
"""
