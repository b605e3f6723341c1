"""Gemini codecs: golden translations, schema cleaning, finish reasons, streams both ways."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.wire.conftest import assert_golden, drive, load

from nexus.wire import canonical, gemini
from nexus.wire.errors import WireError


def _frames(name: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(None, f) for f in load(name)]


def test_paths() -> None:
    assert gemini.path("gemini-2.5-flash", False) == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert gemini.path("models/gemini-2.5-pro", True) == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert gemini.path("tunedModels/my-model-7", False) == "/v1beta/tunedModels/my-model-7:generateContent"
    # Nothing in a model name can smuggle a query or another method into the path.
    assert gemini.path("x?key=abc:streamGenerateContent", False) == (
        "/v1beta/models/x%3Fkey%3Dabc%3AstreamGenerateContent:generateContent"
    )
    assert gemini.vertex_path("proj-1", "us-central1", "gemini-2.5-flash", True) == (
        "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-flash"
        ":streamGenerateContent?alt=sse"
    )


# ---------------------------------------------------------------- requests


def test_request_from_chat_golden() -> None:
    req, coerced = gemini.request_from_chat(load("openai_chat_request.json"))
    assert_golden("gemini_request", [req, coerced])


def test_chat_from_request_golden() -> None:
    chat = gemini.chat_from_request("models/gemini-2.5-pro", load("gemini_request_caller.json"), True)
    assert_golden("chat_from_gemini_request", chat)


def test_function_responses_match_their_calls_in_order() -> None:
    chat = gemini.chat_from_request("gemini-2.5-pro", load("gemini_request_caller.json"), False)
    calls = chat["messages"][2]["tool_calls"]
    results = [m for m in chat["messages"] if m["role"] == "tool"]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls]
    assert orjson.loads(results[0]["content"]) == {"flights": [{"id": "JL1", "price": 890}]}
    assert "stream" not in chat


def test_function_response_ids_are_used_when_present() -> None:
    req = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"id": "a1", "name": "f", "args": {}}},
                    {"functionCall": {"id": "b2", "name": "f", "args": {"x": 1}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"id": "b2", "name": "f", "response": {"r": 2}}},
                    {"functionResponse": {"id": "a1", "name": "f", "response": {"r": 1}}},
                ],
            },
        ]
    }
    chat = gemini.chat_from_request("g", req, False)
    assert [(m["tool_call_id"], m["content"]) for m in chat["messages"][2:]] == [("b2", '{"r":2}'), ("a1", '{"r":1}')]


def test_snake_case_fields_are_read() -> None:
    req = {
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"inline_data": {"mime_type": "image/jpeg", "data": "AAA="}}]}],
        "generation_config": {"max_output_tokens": 64, "response_mime_type": "application/json"},
    }
    chat = gemini.chat_from_request("g", req, False)
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA="}}]},
    ]
    assert chat["max_completion_tokens"] == 64
    assert chat["response_format"] == {"type": "json_object"}


def test_round_trip_through_canonical_keeps_the_conversation() -> None:
    original = load("gemini_request_caller.json")
    req, coerced = gemini.request_from_chat(gemini.chat_from_request("gemini-2.5-pro", original, False))
    assert coerced == []
    assert req["systemInstruction"] == original["systemInstruction"]
    user, model, responses, question = original["contents"]
    assert req["contents"][0] == user
    # Thoughts are not sent back; calls keep their signature (the unsigned one gets the placeholder).
    sent_model = req["contents"][1]["parts"]
    assert sent_model[0] == model["parts"][1]
    assert sent_model[1] == model["parts"][2]
    assert sent_model[2] == {"functionCall": model["parts"][3]["functionCall"]}
    # Function responses and the next question share the user turn.
    assert req["contents"][2]["parts"] == responses["parts"] + question["parts"]
    gen = req["generationConfig"]
    for key in ("temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "thinkingConfig"):
        assert gen[key] == original["generationConfig"][key], key
    assert req["toolConfig"] == original["toolConfig"]
    decl = req["tools"][0]["functionDeclarations"][0]
    assert decl["parameters"] == {
        "type": "object",
        "properties": {
            "from": {"type": "string"},
            "to": {"type": "string"},
            "date": {"type": "string", "nullable": True},
        },
        "required": ["from", "to"],
    }


def test_first_unsigned_call_gets_the_placeholder_signature() -> None:
    chat = load("openai_chat_request.json")
    req, _ = gemini.request_from_chat(chat)
    parts = req["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == gemini.PLACEHOLDER_SIGNATURE
    assert "thoughtSignature" not in parts[1]


def test_tool_choice_and_thinking_mapping() -> None:
    base = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": load("openai_chat_request.json")["tools"],
    }
    cases = [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ]
    for choice, expected in cases:
        req, _ = gemini.request_from_chat({**base, "tool_choice": choice})
        assert req["toolConfig"] == {"functionCallingConfig": expected}
    req, _ = gemini.request_from_chat({**base, "reasoning_effort": "low"})
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    req, _ = gemini.request_from_chat({**base, "reasoning_effort": "minimal"})
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    req, _ = gemini.request_from_chat({**base, "thinking": {"type": "enabled", "budget_tokens": 5000}})
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 5000, "includeThoughts": True}


def test_multimodal_parts() -> None:
    chat = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/chart.webp?size=2"}},
                ],
            }
        ],
    }
    req, _ = gemini.request_from_chat(chat)
    assert req["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/chart.webp?size=2"}},
    ]


def test_untranslatable_requests_raise() -> None:
    with pytest.raises(WireError):
        gemini.chat_from_request("g", {"contents": [], "cachedContent": "cachedContents/abc"}, False)
    with pytest.raises(WireError):
        gemini.chat_from_request("g", {"contents": [], "tools": [{"googleSearch": {}}]}, False)
    bad_args = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "nope"}}]}
    with pytest.raises(WireError) as info:
        gemini.request_from_chat({"model": "m", "messages": [bad_args]})
    assert info.value.param == "messages[0].tool_calls"


# ---------------------------------------------------------------- schema cleaning


def test_clean_schema_keeps_only_what_gemini_accepts() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Order",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer", "format": "int64", "exclusiveMinimum": 0},
            "kind": {"const": "order"},
            "status": {"enum": ["open", "closed"], "default": "open"},
            "priority": {"enum": [1, 2, 3], "type": "integer"},
            "note": {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "null"}], "description": "free text"},
            "when": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "either": {"type": ["string", "number"]},
            "extra": {"type": "object", "properties": {}},
            "base": {
                "allOf": [
                    {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "number"}}},
                ],
                "type": "object",
            },
            "child": {"$ref": "#/$defs/node"},
        },
        "required": ["id", "kind", "missing"],
        "$defs": {
            "node": {"type": "object", "properties": {"name": {"type": "string"}, "next": {"$ref": "#/$defs/node"}}}
        },
    }
    out = gemini.clean_schema(schema)
    props = out["properties"]
    assert out["title"] == "Order" and out["required"] == ["id", "kind"]
    assert "additionalProperties" not in out and "$schema" not in out and "$defs" not in out
    assert props["id"] == {"type": "integer", "format": "int64"}
    assert props["kind"] == {"enum": ["order"], "type": "string"}
    assert props["status"] == {"enum": ["open", "closed"]}
    assert props["priority"] == {"type": "integer"}
    assert props["note"] == {"type": "string", "maxLength": 200, "description": "free text", "nullable": True}
    assert props["when"] == {"type": "string", "format": "date-time"}
    assert props["email"] == {"type": "string"}
    assert props["tags"] == {"type": "array", "minItems": 1, "items": {"type": "string"}}
    assert props["either"] == {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert props["extra"] == {"type": "object"}
    assert props["base"] == {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "number"}},
        "required": ["a"],
    }
    # A recursive $ref is inlined until the depth cut.
    node = props["child"]
    depth = 0
    while "next" in node.get("properties", {}):
        node = node["properties"]["next"]
        depth += 1
    assert 4 <= depth <= 8
    assert node == {"type": "object"}


def test_schema_from_gemini() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING", "nullable": True}, "b": {"type": "ARRAY", "items": {"type": "INTEGER"}}},
    }
    assert gemini.schema_from_gemini(schema) == {
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}, "b": {"type": "array", "items": {"type": "integer"}}},
    }


# ---------------------------------------------------------------- responses


def test_chat_from_response_golden() -> None:
    out = gemini.chat_from_response(load("gemini_response_function_call.json"), "gemini-2.5-flash")
    assert_golden("chat_from_gemini_response", out)
    usage = out["usage"]
    # Completion counts thoughts; total matches Gemini's own.
    assert usage["completion_tokens"] == 18 + 166
    assert usage["total_tokens"] == 279


def test_blocked_prompt_is_a_content_filter_stop() -> None:
    out = gemini.chat_from_response(load("gemini_response_blocked.json"), "gemini-2.5-flash")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "finish_reason": "content_filter",
            "logprobs": None,
            "native_finish_reason": "PROHIBITED_CONTENT",
        }
    ]
    assert out["usage"]["prompt_tokens"] == 14


def test_response_from_chat_golden() -> None:
    assert_golden("gemini_response_from_chat", gemini.response_from_chat(load("openai_chat_response.json")))


def test_response_round_trip() -> None:
    resp = load("gemini_response_function_call.json")
    back = gemini.response_from_chat(gemini.chat_from_response(resp, "gemini-2.5-flash"))
    cand, orig = back["candidates"][0], resp["candidates"][0]
    assert cand["finishReason"] == "STOP"
    parts = cand["content"]["parts"]
    assert parts[:2] == orig["content"]["parts"][:2]
    assert parts[2]["functionCall"]["args"] == orig["content"]["parts"][2]["functionCall"]["args"]
    assert parts[2]["thoughtSignature"] == orig["content"]["parts"][2]["thoughtSignature"]
    for key in (
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
    ):
        assert back["usageMetadata"][key] == resp["usageMetadata"][key], key


@pytest.mark.parametrize(
    ("native", "calls", "finish"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("SOMETHING_NEW", False, "stop"),
    ],
)
def test_finish_reason_table(native: str, calls: bool, finish: str) -> None:
    parts: list[dict[str, Any]] = [{"text": "x"}]
    if calls:
        parts.append({"functionCall": {"name": "f", "args": {}}})
    resp = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": native, "index": 0}]}
    assert gemini.chat_from_response(resp, "g")["choices"][0]["finish_reason"] == finish


# ---------------------------------------------------------------- streams


def test_stream_to_chat_golden() -> None:
    dec = gemini.StreamToChat("gemini-2.5-pro")
    out = drive(dec, _frames("gemini_stream_tools.json"))
    assert_golden("chat_chunks_from_gemini_stream", [[e, d] for e, d in out])
    assert dec.finish_reason == "tool_calls"
    u = dec.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens) == (120, 102, 96, 64)


def test_stream_to_chat_reassembles_and_keeps_signatures() -> None:
    acc = canonical.Accumulator()
    for _, chunk in drive(gemini.StreamToChat("g"), _frames("gemini_stream_tools.json")):
        acc.add(chunk)
    msg = acc.response()["choices"][0]["message"]
    assert msg["content"] == "Sure, checking both now."
    assert msg["reasoning_content"].startswith("**Planning the trip lookup**")
    weather, flights = msg["tool_calls"]
    assert orjson.loads(weather["function"]["arguments"]) == {"location": "Tokyo"}
    assert weather["extra_content"]["google"]["thought_signature"].startswith("CtwBAdHtim9vRkHn")
    assert orjson.loads(flights["function"]["arguments"]) == {"from": "SFO", "to": "HND", "passengers": 2}
    assert weather["id"] != flights["id"]


def test_stream_max_tokens() -> None:
    dec = gemini.StreamToChat("g", include_usage=False)
    out = drive(dec, _frames("gemini_stream_max_tokens.json"))
    assert dec.finish_reason == "length"
    assert out[-1][1]["choices"][0]["finish_reason"] == "length"
    assert dec.usage.total == 17


def test_stream_errors() -> None:
    dec = gemini.StreamToChat("g")
    dec.feed(None, load("gemini_stream_max_tokens.json")[0])
    with pytest.raises(WireError) as info:
        dec.feed(None, {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    assert info.value.kind == "upstream_error"
    with pytest.raises(WireError):
        dec.finish()


def test_stream_from_chat_golden() -> None:
    enc = gemini.StreamFromChat()
    out = drive(enc, [(None, c) for c in load("openai_stream_tool_calls.json")])
    assert_golden("gemini_frames_from_openai_stream", [[e, d] for e, d in out])
    assert enc.finish_reason == "tool_calls"


def test_gemini_stream_round_trip_through_canonical() -> None:
    """Gemini upstream → canonical → Gemini caller: same text, thoughts, calls, signatures and usage."""
    frames = load("gemini_stream_tools.json")
    enc = gemini.StreamFromChat()
    out: list[tuple[str | None, Any]] = []
    for _, chunk in drive(gemini.StreamToChat("gemini-2.5-pro"), [(None, f) for f in frames]):
        out.extend(enc.feed(None, chunk))
    out.extend(enc.finish())

    def collect(frames: list[dict[str, Any]]) -> tuple[str, str, list[Any], str | None]:
        text, thoughts, calls, finish = "", "", [], None
        for f in frames:
            for cand in f.get("candidates") or ():
                for p in cand["content"]["parts"]:
                    if "functionCall" in p:
                        calls.append((p["functionCall"]["name"], p["functionCall"]["args"], p.get("thoughtSignature")))
                    elif p.get("thought"):
                        thoughts += p["text"]
                    else:
                        text += p.get("text", "")
                finish = cand.get("finishReason", finish)
        return text, thoughts, calls, finish

    assert collect([d for _, d in out]) == collect(frames)
    last_usage = out[-1][1]["usageMetadata"]
    for key, value in frames[-1]["usageMetadata"].items():
        if isinstance(value, int):
            assert last_usage[key] == value, key


def test_stream_from_chat_rejects_broken_arguments_and_fails_cleanly() -> None:
    ch = canonical.Chunker("m")
    enc = gemini.StreamFromChat()
    enc.feed(None, ch.delta({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a":'}}]}))
    enc.feed(None, ch.finish("length"))
    with pytest.raises(WireError):
        enc.finish()
    assert enc.fail("timeout", "upstream took too long") == [
        (None, {"error": {"code": 504, "message": "upstream took too long", "status": "DEADLINE_EXCEEDED"}})
    ]
    frame = gemini.encode(*enc.fail("timeout", "t")[0])
    assert frame.startswith(b"data: {") and frame.endswith(b"}\n\n")


def test_observer() -> None:
    obs = gemini.StreamObserver()
    for event, data in _frames("gemini_stream_tools.json"):
        out = obs.feed(event, data)
        assert out[0][1] is data
    assert obs.finish() == []
    assert (obs.finish_reason, obs.usage.prompt_tokens, obs.usage.completion_tokens) == ("tool_calls", 120, 102)
    blocked = gemini.StreamObserver()
    blocked.feed(None, load("gemini_response_blocked.json"))
    assert blocked.finish_reason == "content_filter"


def test_caller_response_schema_becomes_json_schema() -> None:
    gen = {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}}},
    }
    chat = gemini.chat_from_request("g", {"contents": [], "generationConfig": gen}, False)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        },
    }
    raw = {"type": "object", "properties": {"x": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "integer"}}}
    chat = gemini.chat_from_request("g", {"contents": [], "generationConfig": {"responseJsonSchema": raw}}, False)
    assert chat["response_format"]["json_schema"]["schema"] is raw
    req, _ = gemini.request_from_chat(chat)
    assert req["generationConfig"]["responseSchema"] == {"type": "object", "properties": {"x": {"type": "integer"}}}
