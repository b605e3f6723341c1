"""The official anthropic SDK through the gateway, to Anthropic, OpenAI-family and Gemini-family models."""

from __future__ import annotations

import anthropic
import pytest

from tests.gateway.conftest import Stack

MODELS = ["mock-claude", "mock-gpt", "mock-gemini"]


@pytest.fixture(scope="module")
def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.gateway, api_key=stack.key, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", MODELS)
def test_messages_non_stream(client: anthropic.Anthropic, model: str) -> None:
    msg = client.messages.create(model=model, max_tokens=200, system="be brief",
                                 messages=[{"role": "user", "content": "hello from claude sdk"}])
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert "hello from claude sdk" in text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=200,
                                messages=[{"role": "user", "content": "stream from claude sdk"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "stream from claude sdk" in text
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_streamed(client: anthropic.Anthropic, model: str) -> None:
    tools = [{"name": "lookup", "description": "look up a customer",
              "input_schema": {"type": "object", "properties": {"customer_id": {"type": "string"}},
                               "required": ["customer_id"]}}]
    with client.messages.stream(model=model, max_tokens=300, tools=tools,  # type: ignore[arg-type]
                                messages=[{"role": "user", "content": "find customer 42"}],
                                extra_headers={"x-mock-chunks": "5"}) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "lookup" and isinstance(uses[0].input["customer_id"], str)  # type: ignore[index]
    assert final.stop_reason == "tool_use"


def test_thinking_round_trip_to_anthropic(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="mock-claude", max_tokens=2000, thinking={"type": "enabled",
                                                                                 "budget_tokens": 1024},
                                 messages=[{"role": "user", "content": "think"}])
    thinking = [b for b in msg.content if b.type == "thinking"]
    assert thinking and thinking[0].signature


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens(client: anthropic.Anthropic, model: str) -> None:
    count = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "count these words"}])
    assert count.input_tokens > 0
