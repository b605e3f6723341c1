"""OpenAI chat dialect: SSE framing, the passthrough observer, canonical → upstream bodies."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.wire.conftest import load

from nexus.wire import anthropic, openai
from nexus.wire.errors import WireError


def test_encode_and_done() -> None:
    assert openai.encode(None, {"a": "é"}) == b'data: {"a":"\xc3\xa9"}\n\n'
    assert openai.DONE == b"data: [DONE]\n\n"


def test_observer_strips_the_usage_chunk_it_was_asked_to_hide() -> None:
    chunks = load("openai_stream_tool_calls.json")
    obs = openai.StreamObserver(strip_usage=True)
    forwarded = []
    for chunk in chunks:
        out = obs.feed(None, chunk)
        if out:
            assert out[0][1] is chunk  # unchanged frames are forwarded as their raw bytes
        forwarded.extend(out)
    assert len(forwarded) == len(chunks) - 1
    assert obs.finish() == []
    assert (obs.finish_reason, obs.usage.prompt_tokens, obs.usage.cached_tokens, obs.usage.total) == (
        "tool_calls",
        82,
        64,
        122,
    )


def test_observer_edits_a_chunk_that_carries_usage_and_choices() -> None:
    chunks = load("deepseek_stream_reasoning.json")
    obs = openai.StreamObserver(strip_usage=True)
    last = chunks[-1]
    for chunk in chunks[:-1]:
        obs.feed(None, chunk)
    ((_, edited),) = obs.feed(None, last)
    assert edited is not last
    assert "usage" not in edited and edited["choices"] == last["choices"]
    assert "usage" in last  # the original is not mutated
    assert (obs.usage.reasoning_tokens, obs.finish_reason) == (83, "stop")


def test_observer_keeps_usage_when_the_client_asked() -> None:
    obs = openai.StreamObserver(strip_usage=False)
    chunk = load("openai_stream_tool_calls.json")[-1]
    assert obs.feed(None, chunk) == [(None, chunk)]


def test_observer_reads_groq_usage() -> None:
    obs = openai.StreamObserver(strip_usage=False)
    obs.feed(
        None,
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "x_groq": {"usage": {"prompt_tokens": 7, "completion_tokens": 3}},
        },
    )
    assert obs.usage.total == 10


def test_observer_errors() -> None:
    obs = openai.StreamObserver(strip_usage=False)
    with pytest.raises(WireError) as info:
        obs.feed(None, {"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"}})
    assert info.value.kind == "rate_limited"
    with pytest.raises(WireError):
        openai.StreamObserver(strip_usage=False).finish()


def test_upstream_request_strips_side_fields_without_touching_the_input() -> None:
    chat = anthropic.chat_from_request(load("anthropic_request_caller.json"))
    before = orjson.dumps(chat)
    body = openai.upstream_request(chat, "gpt-4o")
    assert orjson.dumps(chat) == before
    assert body["model"] == "gpt-4o"
    assert body["stream_options"] == {"include_usage": True}
    assert "thinking" not in body and "top_k" not in body
    text = orjson.dumps(body)
    for side in (b"thinking_blocks", b"reasoning_content", b"cache_control", b"extra_content", b"is_error"):
        assert side not in text, side
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert body["max_completion_tokens"] == 16000


def test_upstream_request_legacy_max_tokens_and_no_stream() -> None:
    chat: dict[str, Any] = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 10,
        "top_k": 3,
    }
    body = openai.upstream_request(chat, "deepseek-chat", legacy_max_tokens=True)
    assert body == {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    assert body["messages"][0] is chat["messages"][0]  # untouched messages are shared, not copied
