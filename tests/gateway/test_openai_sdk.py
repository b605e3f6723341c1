"""The official openai SDK through the gateway, to each upstream family: content and usage survive."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from tests.gateway.conftest import Stack

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"]},
    },
}
MODELS = ["mock-gpt", "mock-claude", "mock-gemini"]
PROVIDER = {"mock-gpt": "mock-openai", "mock-claude": "mock-anthropic", "mock-gemini": "mock-gemini"}
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201"
    "e221bc330000000049454e44ae426082")).decode()


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key=stack.key, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", MODELS)
def test_chat_non_stream(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "hello gateway"}])
    assert raw.headers["x-nexus-provider"] == PROVIDER[model]
    assert raw.headers["x-nexus-model"] == model
    assert float(raw.headers["x-nexus-overhead-ms"]) >= 0
    assert raw.headers["x-request-id"]
    resp = raw.parse()
    assert "hello gateway" in (resp.choices[0].message.content or "")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_chat_stream(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream me please"}])
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert "stream me please" in text
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_stream_without_usage_request_hides_the_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="mock-gpt", stream=True, messages=[{"role": "user", "content": "no usage please"}]))
    assert chunks and all(c.usage is None for c in chunks)


@pytest.mark.parametrize("model", MODELS)
def test_tools_streamed_deltas_reassemble(client: openai.OpenAI, model: str) -> None:
    with client.chat.completions.stream(
        model=model, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER_TOOL],
        extra_headers={"x-mock-chunks": "6"},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    assert calls[0].id
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", MODELS)
def test_tool_result_round_trip(client: openai.OpenAI, model: str) -> None:
    first = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "weather?"}],
                                           tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    second = client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21C"},
    ])
    assert "sunny and 21C" in (second.choices[0].message.content or "")


@pytest.mark.parametrize("model", MODELS)
def test_image_input(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
    ]}])
    content = resp.choices[0].message.content or ""
    assert "what is in this picture" in content and "[image]" in content
    text_only = client.chat.completions.create(model=model, messages=[
        {"role": "user", "content": "what is in this picture"}])
    assert resp.usage is not None and text_only.usage is not None
    assert resp.usage.prompt_tokens > text_only.usage.prompt_tokens


@pytest.mark.parametrize("model", MODELS)
def test_structured_output_json_schema(client: openai.OpenAI, model: str) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "make a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(resp.choices[0].message.content or "")
    assert isinstance(data["name"], str) and isinstance(data["age"], int) and isinstance(data["tags"], list)


def test_reasoning_tokens(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="mock-o-reasoning", reasoning_effort="high",
                                          messages=[{"role": "user", "content": "think about it"}])
    assert resp.usage is not None and resp.usage.completion_tokens_details is not None
    assert (resp.usage.completion_tokens_details.reasoning_tokens or 0) > 0


def test_reasoning_content_from_anthropic_thinking(client: openai.OpenAI) -> None:
    # Anthropic counts thinking inside output_tokens without a separate figure; the thinking text itself
    # comes back as reasoning_content, as other OpenAI-compatible providers return it.
    resp = client.chat.completions.create(model="mock-claude", reasoning_effort="low",
                                          messages=[{"role": "user", "content": "think about it"}])
    extra = resp.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content")


def test_reasoning_tokens_from_gemini_thoughts(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="mock-gemini", reasoning_effort="medium",
                                          messages=[{"role": "user", "content": "think about it"}])
    assert resp.usage is not None and resp.usage.completion_tokens_details is not None
    assert (resp.usage.completion_tokens_details.reasoning_tokens or 0) > 0


@pytest.mark.parametrize("model", MODELS)
def test_cached_tokens_survive(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x " * 200}],
                                          extra_headers={"x-mock-cached-tokens": "40"})
    assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 40


def test_embeddings(client: openai.OpenAI) -> None:
    texts = ["the quick brown fox jumps over the lazy dog", "the quick brown fox jumped over the lazy dog",
             "quarterly revenue grew by twelve percent"]
    resp = client.embeddings.create(model="mock-embedding", input=texts, dimensions=256)
    assert len(resp.data) == 3 and len(resp.data[0].embedding) == 256

    def cos(i: int, j: int) -> float:
        return sum(x * y for x, y in zip(resp.data[i].embedding, resp.data[j].embedding, strict=True))

    assert cos(0, 1) > 0.8 > 0.5 > cos(0, 2)
    assert resp.usage.prompt_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_responses_non_stream(client: openai.OpenAI, model: str) -> None:
    resp = client.responses.create(model=model, input="respond to this", instructions="be nice")
    assert "respond to this" in resp.output_text
    assert resp.usage is not None and resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_responses_stream(client: openai.OpenAI, model: str) -> None:
    with client.responses.stream(model=model, input="stream a response") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "stream a response" in "".join(deltas)
    assert final.usage is not None and final.usage.output_tokens > 0


def test_models_list_and_get(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"mock-gpt", "mock-claude", "mock-gemini", "mock-embedding"} <= ids
    assert client.models.retrieve("mock-claude").id == "mock-claude"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
