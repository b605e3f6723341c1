"""The Anthropic dialect of the mock, through the official ``anthropic`` SDK over a real socket."""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import jsonschema_rs
import pytest

from tests.mock.conftest import in_thread

TOOL = {
    "name": "book_flight",
    "description": "Book a flight",
    "input_schema": {
        "type": "object",
        "properties": {
            "origin": {"type": "string", "minLength": 3, "maxLength": 3},
            "destination": {"type": "string"},
            "passengers": {"type": "integer", "minimum": 1},
            "date": {"type": "string", "format": "date"},
            "cabin": {"enum": ["economy", "business"]},
            "extras": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["origin", "destination", "passengers", "date", "cabin"],
    },
}


def client(url: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0, **kw)


async def test_messages_echo_with_usage(mock_url: str) -> None:
    with client(mock_url) as c:
        msg = await in_thread(
            lambda: c.messages.create(
                model="claude-test",
                max_tokens=256,
                system="Be kind.",
                messages=[{"role": "user", "content": "Hello Claude"}],
            )
        )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text == "Echo: Hello Claude"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == -(-len("Be kind.Hello Claude") // 4)
    assert msg.usage.output_tokens == -(-len("Echo: Hello Claude") // 4)


async def test_stream_helper_collects_text_and_all_event_types(mock_url: str) -> None:
    with client(mock_url, default_headers={"x-mock-chunks": "3"}) as c:

        def run() -> tuple[list[str], str, Any]:
            with c.messages.stream(
                model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "stream it"}]
            ) as stream:
                kinds = [ev.type for ev in stream]
                return kinds, stream.get_final_text(), stream.get_final_message()

        kinds, text, final = await in_thread(run)
    assert text == "Echo: stream it"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 1
    raw = [k for k in kinds if k not in ("text",)]
    assert raw == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_raw_stream_carries_ping(mock_url: str) -> None:
    import httpx

    body = {"model": "claude", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(base_url=mock_url) as http:
        resp = await http.post("/v1/messages", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [line[len("event: ") :] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]


async def test_thinking_gives_a_signed_thinking_block_streamed_and_not(mock_url: str) -> None:
    kw: Any = {
        "model": "claude-test",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "ponder this"}],
    }
    with client(mock_url) as c:
        plain = await in_thread(lambda: c.messages.create(**kw))

        def run() -> tuple[set[str], Any]:
            with c.messages.stream(**kw) as stream:
                deltas = {ev.delta.type for ev in stream if ev.type == "content_block_delta"}
                return deltas, stream.get_final_message()

        deltas, final = await in_thread(run)
    for msg in (plain, final):
        assert [b.type for b in msg.content] == ["thinking", "text"]
        assert msg.content[0].thinking.startswith("The user asked: ponder this")
        assert len(base64.b64decode(msg.content[0].signature)) == 48
        assert msg.content[1].text == "Echo: ponder this"
    assert deltas == {"thinking_delta", "signature_delta", "text_delta"}
    assert final.usage.output_tokens == plain.usage.output_tokens > -(-len("Echo: ponder this") // 4)


async def test_streamed_tool_use_is_reassembled_and_valid(mock_url: str) -> None:
    with client(mock_url, default_headers={"x-mock-chunks": "6"}) as c:

        def run() -> tuple[int, Any]:
            with c.messages.stream(
                model="claude-test",
                max_tokens=500,
                tools=[TOOL],  # type: ignore[list-item]
                messages=[{"role": "user", "content": "book me a flight"}],
            ) as stream:
                pieces = sum(
                    1 for ev in stream if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta"
                )
                return pieces, stream.get_final_message()

        pieces, final = await in_thread(run)
    assert pieces == 6
    assert final.stop_reason == "tool_use"
    use = final.content[0]
    assert use.type == "tool_use" and use.name == "book_flight" and use.id.startswith("toolu_")
    jsonschema_rs.validate(TOOL["input_schema"], use.input)


async def test_tool_choice_and_tool_result_round_trip(mock_url: str) -> None:
    other = {"name": "noop", "input_schema": {"type": "object"}}
    with client(mock_url) as c:
        forced = await in_thread(
            lambda: c.messages.create(
                model="claude",
                max_tokens=100,
                tools=[other, TOOL],  # type: ignore[list-item]
                tool_choice={"type": "tool", "name": "book_flight"},
                messages=[{"role": "user", "content": "go"}],
            )
        )
        none = await in_thread(
            lambda: c.messages.create(
                model="claude",
                max_tokens=100,
                tools=[TOOL],  # type: ignore[list-item]
                tool_choice={"type": "none"},
                messages=[{"role": "user", "content": "go"}],
            )
        )
        answered = await in_thread(
            lambda: c.messages.create(
                model="claude",
                max_tokens=100,
                tools=[TOOL],  # type: ignore[list-item]
                messages=[
                    {"role": "user", "content": "book it"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "toolu_1", "name": "book_flight", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "booked: PNR X7Y8Z9"}],
                    },
                ],
            )
        )
    assert forced.content[0].type == "tool_use" and forced.content[0].name == "book_flight"
    assert none.content[0].type == "text"
    assert answered.stop_reason == "end_turn"
    assert answered.content[0].type == "text" and "booked: PNR X7Y8Z9" in answered.content[0].text


async def test_image_blocks_count_and_echo(mock_url: str) -> None:
    data = base64.b64encode(b"fake-png").decode()
    with client(mock_url) as c:
        msg = await in_thread(
            lambda: c.messages.create(
                model="claude",
                max_tokens=100,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                            {"type": "text", "text": "describe"},
                        ],
                    }
                ],
            )
        )
        counted = await in_thread(
            lambda: c.messages.count_tokens(
                model="claude",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                            {"type": "text", "text": "describe"},
                        ],
                    }
                ],
            )
        )
    assert msg.content[0].text == "Echo: [image] describe"  # type: ignore[union-attr]
    assert msg.usage.input_tokens == 2 + 85
    assert counted.input_tokens == 2 + 85


async def test_cached_tokens_are_cache_reads_outside_input_tokens(mock_url: str) -> None:
    with client(mock_url) as c:
        msg = await in_thread(
            lambda: c.messages.create(
                model="claude",
                max_tokens=100,
                messages=[{"role": "user", "content": "y" * 400}],
                extra_headers={"x-mock-cached-tokens": "60"},
            )
        )
    assert msg.usage.cache_read_input_tokens == 60
    assert msg.usage.input_tokens == 100 - 60


async def test_structured_output_config(mock_url: str) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "rating": {"type": "integer", "maximum": 5}},
        "required": ["title", "rating"],
        "additionalProperties": False,
    }
    import httpx

    body = {
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "review"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    async with httpx.AsyncClient(base_url=mock_url) as http:
        resp = await http.post("/v1/messages", json=body)
    text = resp.json()["content"][0]["text"]
    jsonschema_rs.validate(schema, __import__("json").loads(text))


async def test_malformed_requests_get_anthropic_400s(mock_url: str) -> None:
    with client(mock_url) as c:
        with pytest.raises(anthropic.BadRequestError) as err:
            await in_thread(
                lambda: c.messages.create(
                    model="claude",
                    max_tokens=0,
                    messages=[{"role": "user", "content": "x"}],
                )
            )
        with pytest.raises(anthropic.BadRequestError):
            await in_thread(
                lambda: c.messages.create(
                    model="claude",
                    max_tokens=10,
                    messages=[{"role": "system", "content": "x"}],  # type: ignore[misc,list-item]
                )
            )
    assert err.value.body["type"] == "error"  # type: ignore[index]
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
