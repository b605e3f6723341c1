"""Anthropic codecs: golden translations, coercions, stop reasons, streams checked by the official SDK."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from tests.wire.conftest import assert_golden, drive, load

from nexus.wire import anthropic, canonical
from nexus.wire.errors import WireError


def _frames(name: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(f["event"], f["data"]) for f in load(name)]


def _chunks(name: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(None, c) for c in load(name)]


def _sdk_message(events: list[tuple[str | None, dict[str, Any]]]) -> Any:
    """What the official SDK's stream accumulator makes of our encoded events."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for event, data in events:
        frame = anthropic.encode(event, data)
        head, _, body = frame.partition(b"\ndata: ")
        assert head == b"event: " + data["type"].encode()
        assert frame.endswith(b"\n\n")
        snapshot = accumulate_event(event=orjson.loads(body), current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


# ---------------------------------------------------------------- requests


def test_request_from_chat_golden() -> None:
    req, coerced = anthropic.request_from_chat(load("openai_chat_request.json"), "claude-sonnet-4-5", 4096)
    assert_golden("anthropic_request", [req, coerced])


def test_chat_from_request_golden() -> None:
    assert_golden("chat_from_anthropic_request", anthropic.chat_from_request(load("anthropic_request_caller.json")))


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_max_tokens_precedence_and_coercion() -> None:
    req, coerced = anthropic.request_from_chat(_chat(), "claude", 4096)
    assert (req["max_tokens"], coerced) == (4096, ["max_tokens"])
    req, coerced = anthropic.request_from_chat(_chat(max_tokens=300), "claude", 4096)
    assert (req["max_tokens"], coerced) == (300, [])
    req, coerced = anthropic.request_from_chat(_chat(max_tokens=300, max_completion_tokens=500), "claude", 4096)
    assert (req["max_tokens"], coerced) == (500, [])


def test_temperature_is_clamped_to_anthropic_range() -> None:
    req, coerced = anthropic.request_from_chat(_chat(max_tokens=10, temperature=1.6), "claude", 4096)
    assert req["temperature"] == 1.0
    assert coerced == ["temperature"]


def test_reasoning_effort_becomes_a_budget_below_max_tokens() -> None:
    req, coerced = anthropic.request_from_chat(_chat(reasoning_effort="high"), "claude", 4096)
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert req["max_tokens"] == 16384 + 4096
    assert coerced == ["max_tokens"]

    req, coerced = anthropic.request_from_chat(_chat(reasoning_effort="high", max_tokens=5000), "claude", 4096)
    assert req["thinking"]["budget_tokens"] == 4999
    assert coerced == ["thinking"]

    req, coerced = anthropic.request_from_chat(_chat(reasoning_effort="low", max_tokens=800), "claude", 4096)
    assert "thinking" not in req
    assert coerced == ["thinking"]


def test_thinking_drops_sampling_parameters() -> None:
    req, coerced = anthropic.request_from_chat(
        _chat(max_tokens=8000, reasoning_effort="medium", temperature=0.2, top_p=0.5), "claude", 4096
    )
    assert "temperature" not in req and "top_p" not in req
    assert coerced == ["temperature"]


def test_tool_choice_mapping() -> None:
    tools = load("openai_chat_request.json")["tools"]
    cases = [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"type": "tool", "name": "get_time"}),
    ]
    for choice, expected in cases:
        req, _ = anthropic.request_from_chat(_chat(max_tokens=5, tools=tools, tool_choice=choice), "c", 1)
        assert req["tool_choice"] == expected
    req, _ = anthropic.request_from_chat(_chat(max_tokens=5, tools=tools, parallel_tool_calls=False), "c", 1)
    assert req["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_structured_output_tool_mode_round_trips_to_text() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    req, _ = anthropic.request_from_chat(_chat(max_tokens=50, response_format=fmt), "c", 1, structured_output="tool")
    assert req["tools"] == [
        {"name": anthropic.STRUCTURED_TOOL, "description": "Respond with the city object.", "input_schema": schema}
    ]
    assert req["tool_choice"] == {"type": "tool", "name": anthropic.STRUCTURED_TOOL}
    assert "output_config" not in req

    msg: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": anthropic.STRUCTURED_TOOL, "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }
    resp = anthropic.chat_from_response(msg, "claude")
    choice = resp["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"city": "Oslo"}
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"

    # The same answer streamed: the forced tool's JSON arrives as content.
    frames: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {**msg, "content": [], "stop_reason": None}}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {**msg["content"][0], "input": {}}},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    acc = canonical.Accumulator()
    dec = anthropic.StreamToChat("claude")
    for _, chunk in drive(dec, frames):
        acc.add(chunk)
    out = acc.response()["choices"][0]
    assert orjson.loads(out["message"]["content"]) == {"city": "Oslo"}
    assert out["finish_reason"] == dec.finish_reason == "stop"


def test_structured_output_native_mode_and_json_object() -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    req, _ = anthropic.request_from_chat(_chat(max_tokens=5, response_format=fmt), "c", 1)
    assert req["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    req, _ = anthropic.request_from_chat(_chat(max_tokens=5, response_format={"type": "json_object"}), "c", 1)
    assert req["tools"][0]["name"] == anthropic.STRUCTURED_TOOL
    assert req["tools"][0]["input_schema"] == {"type": "object"}


def test_unsigned_reasoning_is_not_sent_back() -> None:
    chat = _chat(max_tokens=5)
    chat["messages"] += [
        {
            "role": "assistant",
            "content": "answer",
            "reasoning_content": "from another provider",
            "thinking_blocks": [{"type": "thinking", "thinking": "unsigned", "signature": ""}],
        },
        {"role": "user", "content": "more"},
    ]
    req, _ = anthropic.request_from_chat(chat, "c", 1)
    assert req["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "answer"}]}


@pytest.mark.parametrize(
    ("chat", "param"),
    [
        (_chat(n=2), "n"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, None),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}, None),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}
                ],
            },
            "messages[0].tool_calls",
        ),
        (_chat(tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools"),
    ],
)
def test_untranslatable_requests_raise(chat: dict[str, Any], param: str | None) -> None:
    with pytest.raises(WireError) as info:
        anthropic.request_from_chat(chat, "c", 1)
    assert info.value.kind == "invalid_request"
    assert info.value.status == 400
    assert info.value.param == param


def test_thinking_signatures_round_trip_through_canonical() -> None:
    original = load("anthropic_request_caller.json")
    req, coerced = anthropic.request_from_chat(anthropic.chat_from_request(original), original["model"], 1024)
    assert coerced == []
    assert req["messages"] == original["messages"]
    assert req["system"] == original["system"]
    assert req["tools"] == original["tools"]
    for key in ("max_tokens", "thinking", "tool_choice", "stop_sequences", "metadata", "stream"):
        assert req[key] == original[key], key


# ---------------------------------------------------------------- responses


def test_chat_from_response_golden() -> None:
    msg = load("anthropic_message_tool_use.json")
    assert_golden("chat_from_anthropic_message", anthropic.chat_from_response(msg, "claude-sonnet-4-5"))


def test_response_from_chat_golden_and_sdk_valid() -> None:
    out = anthropic.response_from_chat(load("openai_chat_response.json"))
    assert_golden("anthropic_message_from_chat", out)
    parsed = Message.model_validate(out)
    assert parsed.stop_reason == "tool_use"
    assert parsed.usage.cache_read_input_tokens == 1024


def test_message_round_trip_keeps_stop_sequence_and_blocks() -> None:
    for name in ("anthropic_message_tool_use.json", "anthropic_message_stop_sequence.json"):
        msg = load(name)
        back = anthropic.response_from_chat(anthropic.chat_from_response(msg, msg["model"]))
        assert back["content"] == msg["content"]
        assert back["stop_reason"] == msg["stop_reason"]
        assert back["stop_sequence"] == msg["stop_sequence"]
        for key in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
            assert back["usage"][key] == (msg["usage"][key] or 0)


def test_stop_reason_tables() -> None:
    assert anthropic.FINISH == {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "pause_turn": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    }
    for finish, stop in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ]:
        resp = canonical.response("x", "m", [{"index": 0, "message": {"content": "a"}, "finish_reason": finish}], None)
        assert anthropic.response_from_chat(resp)["stop_reason"] == stop


def test_response_with_broken_tool_arguments_is_an_upstream_error() -> None:
    resp = load("openai_chat_response.json")
    resp["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"location": "Lis'
    with pytest.raises(WireError) as info:
        anthropic.response_from_chat(resp)
    assert (info.value.kind, info.value.status) == ("upstream_error", 502)


# ---------------------------------------------------------------- streams


def test_stream_to_chat_golden() -> None:
    dec = anthropic.StreamToChat("claude-sonnet-4-5")
    out = drive(dec, _frames("anthropic_stream_tools.json"))
    assert_golden("chat_chunks_from_anthropic_stream", [[e, d] for e, d in out])
    assert dec.finish_reason == "tool_calls"
    # prompt = input + cache read + cache creation; cached = cache read.
    assert (dec.usage.prompt_tokens, dec.usage.cached_tokens, dec.usage.cache_write_tokens) == (2640, 2048, 120)
    assert dec.usage.completion_tokens == 189


def test_stream_to_chat_reassembles_tool_calls() -> None:
    acc = canonical.Accumulator()
    for _, chunk in drive(anthropic.StreamToChat("c"), _frames("anthropic_stream_tools.json")):
        acc.add(chunk)
    msg = acc.response()["choices"][0]["message"]
    calls = [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in msg["tool_calls"]]
    assert calls == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris, France", "unit": "celsius"}),
        # A tool without parameters streams no JSON: OpenAI clients still get "{}".
        ("toolu_01AbCdEfGhIjKlMnOpQrStUv", "get_time", {}),
    ]
    assert [b["type"] for b in msg["thinking_blocks"]] == ["thinking", "redacted_thinking"]


def test_stream_usage_chunk_is_optional() -> None:
    out = drive(anthropic.StreamToChat("c", include_usage=False), _frames("anthropic_stream_tools.json"))
    assert all(d["choices"] for _, d in out)
    assert all(e is None for e, _ in out)


def test_stream_error_event_raises_with_kind() -> None:
    dec = anthropic.StreamToChat("c")
    frames = _frames("anthropic_stream_overloaded.json")
    for event, data in frames[:-1]:
        dec.feed(event, data)
    with pytest.raises(WireError) as info:
        dec.feed(*frames[-1])
    assert (info.value.kind, info.value.message) == ("upstream_error", "Overloaded")


def test_truncated_stream_fails_at_finish() -> None:
    dec = anthropic.StreamToChat("c")
    for event, data in _frames("anthropic_stream_tools.json")[:5]:
        dec.feed(event, data)
    with pytest.raises(WireError, match="message_stop"):
        dec.finish()


def test_stream_from_chat_golden_and_sdk_accumulates() -> None:
    enc = anthropic.StreamFromChat({"model": "gpt-4o"})
    out = drive(enc, _chunks("openai_stream_tool_calls.json"))
    assert_golden("anthropic_events_from_openai_stream", [[e, d] for e, d in out])
    msg = _sdk_message(out)
    assert [(b.type, b.name, b.input) for b in msg.content] == [
        ("tool_use", "get_weather", {"location": "Paris"}),
        ("tool_use", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (18, 64, 40)
    assert (enc.finish_reason, enc.usage.prompt_tokens) == ("tool_calls", 82)


def test_anthropic_stream_round_trip_through_canonical() -> None:
    """Anthropic upstream → canonical → Anthropic caller keeps blocks, signatures, stop reason and usage."""
    frames = _frames("anthropic_stream_tools.json")
    original = _sdk_message([(e, d) for e, d in frames if d["type"] != "ping"])
    enc = anthropic.StreamFromChat({"model": "claude-sonnet-4-5"})
    out: list[tuple[str | None, dict[str, Any]]] = []
    for _, chunk in drive(anthropic.StreamToChat("claude-sonnet-4-5-20250929"), frames):
        out.extend(enc.feed(None, chunk))
    out.extend(enc.finish())
    again = _sdk_message(out)
    assert [b.model_dump() for b in again.content] == [b.model_dump() for b in original.content]
    assert (again.stop_reason, again.id) == (original.stop_reason, original.id)
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert getattr(again.usage, key) == getattr(original.usage, key), key


def test_stream_from_chat_reasoning_text_and_stop_sequence() -> None:
    ch = canonical.Chunker("claude")
    finish = ch.finish("stop", native="stop_sequence")
    finish["choices"][0]["stop_sequence"] = "4."
    chunks = [
        ch.delta({"role": "assistant", "content": ""}),
        ch.delta({"reasoning_content": "think"}),
        ch.delta({"reasoning_signature": "sig1"}),
        ch.delta({"reasoning_content": "again"}),
        ch.delta({"content": "1. Mercury"}),
        finish,
    ]
    enc = anthropic.StreamFromChat({"model": "claude"})
    out = drive(enc, [(None, c) for c in chunks])
    msg = _sdk_message(out)
    assert [b.model_dump() for b in msg.content] == [
        {"type": "thinking", "thinking": "think", "signature": "sig1"},
        {"type": "thinking", "thinking": "again", "signature": ""},
        {"type": "text", "text": "1. Mercury", "citations": None},
    ]
    # Without a usage chunk, message_delta/message_stop wait for finish().
    assert out[-2][0] == "message_delta" and out[-1][0] == "message_stop"
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "4.")


def test_stream_from_chat_needs_a_finish_reason() -> None:
    enc = anthropic.StreamFromChat({"model": "m"})
    enc.feed(None, canonical.Chunker("m").delta({"content": "partial"}))
    with pytest.raises(WireError):
        enc.finish()
    assert enc.fail("rate_limited", "slow down") == [
        ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    ]


def test_stream_from_chat_raises_on_upstream_error_chunk() -> None:
    enc = anthropic.StreamFromChat({"model": "m"})
    with pytest.raises(WireError) as info:
        enc.feed(None, {"error": {"message": "quota", "type": "tokens", "code": "rate_limit_exceeded"}})
    assert info.value.kind == "rate_limited"


def test_observer_passes_frames_through_and_reads_usage() -> None:
    obs = anthropic.StreamObserver()
    for event, data in _frames("anthropic_stream_tools.json"):
        out = obs.feed(event, data)
        assert out == [(event, data)]
        assert out[0][1] is data
    assert obs.finish() == []
    assert (obs.finish_reason, obs.usage.prompt_tokens, obs.usage.completion_tokens) == ("tool_calls", 2640, 189)
    with pytest.raises(WireError):
        anthropic.StreamObserver().finish()


def test_caller_tool_choice_and_output_config() -> None:
    base: dict[str, Any] = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ]
    for choice, expected in cases:
        chat = anthropic.chat_from_request({**base, "tool_choice": choice})
        assert chat["tool_choice"] == expected
        assert "parallel_tool_calls" not in chat
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    chat = anthropic.chat_from_request({**base, "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    req, _ = anthropic.request_from_chat(chat, "c", 1)
    assert req["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_caller_documents_and_server_tools() -> None:
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    chat = anthropic.chat_from_request(
        {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [pdf]}]}
    )
    part = chat["messages"][0]["content"][0]
    assert part == {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "document.pdf"},
    }
    req, _ = anthropic.request_from_chat(chat, "c", 1)
    assert req["messages"][0]["content"][0] == {**pdf, "title": "document.pdf"}
    with pytest.raises(WireError):
        anthropic.chat_from_request(
            {
                "model": "c",
                "max_tokens": 5,
                "messages": [],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            }
        )
