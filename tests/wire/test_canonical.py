"""Canonical helpers: chunk building, reassembly, replay, small parsers; checked against the OpenAI SDK types."""

from __future__ import annotations

import orjson
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tests.wire.conftest import load

from nexus.wire import canonical
from nexus.wire.usage import Usage


def test_chunker_shapes_parse_as_openai_chunks() -> None:
    ch = canonical.Chunker("gpt-4o", "chatcmpl-1")
    for chunk in (
        ch.delta({"role": "assistant", "content": ""}),
        ch.delta(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            }
        ),
        ch.finish("tool_calls", native="tool_use"),
        ch.usage(Usage(10, 5, 2, 1)),
    ):
        parsed = ChatCompletionChunk.model_validate(chunk)
        assert parsed.id == "chatcmpl-1" and parsed.model == "gpt-4o"
    usage = ChatCompletionChunk.model_validate(ch.usage(Usage(10, 5, 2, 1))).usage
    assert usage is not None and usage.total_tokens == 15


def test_accumulator_reassembles_openai_tool_call_fragments() -> None:
    acc = canonical.Accumulator()
    for chunk in load("openai_stream_tool_calls.json"):
        acc.add(chunk)
    resp = acc.response()
    ChatCompletion.model_validate(resp)
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
        for c in choice["message"]["tool_calls"]
    ] == [
        ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", {"location": "Paris"}),
        ("call_NvIPx4kLw2NXfZKQbVxT3q6m", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert resp["usage"]["prompt_tokens_details"] == {"cached_tokens": 64}
    assert (resp["id"], resp["created"]) == ("chatcmpl-AZ7qK1uR2sB3", 1733140000)


def test_accumulator_keeps_reasoning_under_either_name() -> None:
    acc = canonical.Accumulator()
    for chunk in load("deepseek_stream_reasoning.json"):
        acc.add(chunk)
    msg = acc.response()["choices"][0]["message"]
    assert msg["reasoning_content"] == "9.11 vs 9.8: compare tenths, 8 > 1."
    assert msg["content"] == "9.8 is larger."
    assert "thinking_blocks" not in msg  # nothing signed: plain reasoning only

    ch = canonical.Chunker("m")
    acc = canonical.Accumulator()
    acc.add(ch.delta({"reasoning": "groq-style"}))
    assert acc.response()["choices"][0]["message"]["reasoning_content"] == "groq-style"


def test_accumulator_rebuilds_signed_thinking_blocks() -> None:
    ch = canonical.Chunker("m")
    acc = canonical.Accumulator()
    for delta in (
        {"reasoning_content": "a"},
        {"reasoning_content": "b"},
        {"reasoning_signature": "s1"},
        {"redacted_thinking": "opaque"},
        {"reasoning_content": "c"},
        {"reasoning_signature": "s2"},
    ):
        acc.add(ch.delta(delta))
    assert acc.response()["choices"][0]["message"]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "ab", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "c", "signature": "s2"},
    ]


def test_chunks_from_response_replays_the_same_response() -> None:
    resp = load("openai_chat_response.json")
    acc = canonical.Accumulator()
    for chunk in canonical.chunks_from_response(resp):
        ChatCompletionChunk.model_validate(chunk)
        acc.add(chunk)
    again = acc.response()
    assert again["choices"][0]["message"] == resp["choices"][0]["message"]
    assert again["choices"][0]["finish_reason"] == "tool_calls"
    assert again["usage"]["prompt_tokens"] == resp["usage"]["prompt_tokens"]
    assert again["usage"]["completion_tokens_details"] == resp["usage"]["completion_tokens_details"]


def test_data_urls_and_text() -> None:
    assert canonical.parse_data_url("data:image/png;base64,iVBOR") == ("image/png", "iVBOR")
    assert canonical.parse_data_url("data:;base64,AA") == ("application/octet-stream", "AA")
    assert canonical.parse_data_url("data:text/plain,hello") is None
    assert canonical.parse_data_url("https://x/y.png") is None
    assert (
        canonical.text_of([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]) == "ab"
    )
    assert canonical.text_of(None) == ""
    assert canonical.parse_arguments("") == {}
    assert canonical.parse_arguments('{"a": 1}') == {"a": 1}
    assert canonical.parse_arguments("[1]") is None
    assert canonical.parse_arguments("{broken") is None


def test_ids_are_distinct_and_prefixed() -> None:
    ids = {canonical.new_id("call_") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("call_") and len(i) == 29 for i in ids)
