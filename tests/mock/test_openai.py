"""The OpenAI dialect of the mock, through the official ``openai`` SDK over a real socket."""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

import jsonschema_rs
import openai
import pydantic
import pytest

from tests.mock.conftest import in_thread

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "note": {"type": "string"},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}


def client(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0, **kw)


async def test_chat_echoes_the_last_user_message_with_plausible_usage(mock_url: str) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    with client(mock_url) as c:
        done = await in_thread(lambda: c.chat.completions.create(model="gpt-4o", messages=messages))
    assert done.object == "chat.completion"
    assert done.model == "gpt-4o"
    assert done.choices[0].message.content == "Echo: What is the capital of France?"
    assert done.choices[0].finish_reason == "stop"
    chars = sum(len(m["content"]) for m in messages)
    assert done.usage is not None
    assert done.usage.prompt_tokens == -(-chars // 4)
    assert done.usage.completion_tokens == -(-len("Echo: What is the capital of France?") // 4)
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.usage.completion_tokens_details is not None
    assert done.usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_max_tokens_truncates_and_reports_length(mock_url: str) -> None:
    with client(mock_url) as c:
        done = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                max_completion_tokens=3,
                messages=[{"role": "user", "content": "one two three four five six"}],
            )
        )
    assert done.choices[0].message.content == "Echo: one two"
    assert done.choices[0].finish_reason == "length"


async def test_chat_stream_is_split_into_the_requested_chunks_with_final_usage(mock_url: str) -> None:
    with client(mock_url, default_headers={"x-mock-chunks": "4"}) as c:

        def run() -> list[Any]:
            stream = c.chat.completions.create(
                model="gpt-4o",
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "stream this answer please"}],
            )
            return list(stream)

        chunks = await in_thread(run)
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(texts) == 4
    assert "".join(texts) == "Echo: stream this answer please"
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(ch.usage is None for ch in chunks[:-1])


async def test_chat_stream_without_include_usage_has_no_usage_chunk(mock_url: str) -> None:
    with client(mock_url) as c:
        chunks = await in_thread(
            lambda: list(
                c.chat.completions.create(model="gpt-4o", stream=True, messages=[{"role": "user", "content": "hi"}])
            )
        )
    assert all(ch.usage is None and ch.choices for ch in chunks)


async def test_reasoning_models_report_reasoning_tokens_and_content(mock_url: str) -> None:
    with client(mock_url) as c:
        plain = await in_thread(
            lambda: c.chat.completions.with_raw_response.create(
                model="o3-mini", messages=[{"role": "user", "content": "think about this"}]
            )
        )
        effort = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-5", reasoning_effort="low", messages=[{"role": "user", "content": "think"}]
            )
        )
        chunks = await in_thread(
            lambda: list(
                c.chat.completions.create(
                    model="my-reasoner",
                    stream=True,
                    stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": "think harder"}],
                )
            )
        )
    body = plain.http_response.json()
    assert body["choices"][0]["message"]["reasoning_content"]
    details = body["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] > 0
    assert body["usage"]["completion_tokens"] > details["reasoning_tokens"]
    assert effort.usage is not None and effort.usage.completion_tokens_details is not None
    assert effort.usage.completion_tokens_details.reasoning_tokens > 0
    reasoning = [getattr(ch.choices[0].delta, "reasoning_content", None) for ch in chunks if ch.choices]
    assert "".join(r for r in reasoning if r).startswith("The user asked: think harder")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens_details is not None
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens > 0


async def test_cached_tokens_knob_is_reported_and_capped(mock_url: str) -> None:
    with client(mock_url) as c:
        some = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x" * 400}],
                extra_headers={"x-mock-cached-tokens": "64"},
            )
        )
        capped = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "short"}],
                extra_headers={"x-mock-cached-tokens": "5000"},
            )
        )
    assert some.usage is not None and some.usage.prompt_tokens_details is not None
    assert some.usage.prompt_tokens_details.cached_tokens == 64
    assert capped.usage is not None and capped.usage.prompt_tokens_details is not None
    assert capped.usage.prompt_tokens_details.cached_tokens == capped.usage.prompt_tokens


async def test_model_and_answer_knobs(mock_url: str) -> None:
    with client(mock_url) as c:
        done = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-mock-model": "gpt-4o-2024-08-06", "x-mock-answer": "Fixed reply."},
            )
        )
    assert done.model == "gpt-4o-2024-08-06"
    assert done.choices[0].message.content == "Fixed reply."


async def test_images_are_counted_and_mentioned(mock_url: str) -> None:
    pixel = base64.b64encode(b"\x89PNG fake").decode()
    with client(mock_url) as c:
        done = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is in"},
                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                        ],
                    }
                ],
            )
        )
    assert done.choices[0].message.content == "Echo: what is in [image] [image]"
    assert done.usage is not None
    assert done.usage.prompt_tokens == -(-len("what is in") // 4) + 2 * 85


async def test_streamed_tool_call_is_reassembled_by_the_sdk(mock_url: str) -> None:
    with client(mock_url, default_headers={"x-mock-chunks": "5"}) as c:

        def run() -> tuple[Any, int]:
            with c.chat.completions.stream(
                model="gpt-4o",
                messages=[{"role": "user", "content": "weather in Paris?"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
            ) as stream:
                deltas = sum(
                    1 for ev in stream if ev.type == "tool_calls.function.arguments.delta" and ev.arguments_delta
                )
                return stream.get_final_completion(), deltas

        final, deltas = await in_thread(run)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert deltas == 5
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = call.function.parsed_arguments or __import__("json").loads(call.function.arguments)
    jsonschema_rs.validate(WEATHER_TOOL["function"]["parameters"], args)  # type: ignore[index]
    assert set(args) == {"city", "unit", "days"}


async def test_named_tool_choice_and_none(mock_url: str) -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with client(mock_url) as c:
        named = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}],
                tools=[other, WEATHER_TOOL],  # type: ignore[list-item]
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
        )
        none = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
                tool_choice="none",
            )
        )
        missing = c.chat.completions.create
        with pytest.raises(openai.BadRequestError):
            await in_thread(
                lambda: missing(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "x"}],
                    tools=[other],  # type: ignore[list-item]
                    tool_choice={"type": "function", "function": {"name": "get_weather"}},
                )
            )
    assert named.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index,union-attr]
    assert none.choices[0].message.content == "Echo: x"
    assert none.choices[0].message.tool_calls is None


async def test_after_a_tool_result_the_answer_includes_it(mock_url: str) -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    with client(mock_url) as c:
        done = await in_thread(
            lambda: c.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
        )
    assert done.choices[0].finish_reason == "stop"
    assert "18 C and sunny" in (done.choices[0].message.content or "")


class Address(pydantic.BaseModel):
    street: str
    city: str
    postcode: str


class Person(pydantic.BaseModel):
    name: str
    age: int
    email: str
    role: Literal["admin", "user", "guest"]
    tags: list[str]
    address: Address
    score: float
    active: bool
    nickname: str | None


async def test_structured_output_parses_into_the_pydantic_model(mock_url: str) -> None:
    with client(mock_url) as c:
        done = await in_thread(
            lambda: c.chat.completions.parse(
                model="gpt-4o", messages=[{"role": "user", "content": "make a person"}], response_format=Person
            )
        )
    person = done.choices[0].message.parsed
    assert isinstance(person, Person)
    assert person.role == "admin"
    assert person.tags and isinstance(person.address, Address)


SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "minItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "minLength": 12},
                    "qty": {"type": "integer", "minimum": 50, "maximum": 60},
                    "kind": {"enum": ["a", "b"]},
                },
                "required": ["sku", "qty", "kind"],
            },
        },
        "total": {"type": "number", "exclusiveMinimum": 100},
        "when": {"type": "string", "format": "date-time"},
        "meta": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/meta"}]},
    },
    "required": ["items", "total", "when", "meta"],
    "additionalProperties": False,
    "$defs": {"meta": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}},
}


async def test_json_schema_and_json_object_response_formats(mock_url: str) -> None:
    with client(mock_url) as c:
        schema_done = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "order"}],
                response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": SCHEMA}},
            )
        )
        json_done = await in_thread(
            lambda: c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "as json"}],
                response_format={"type": "json_object"},
            )
        )
    value = __import__("json").loads(schema_done.choices[0].message.content or "")
    jsonschema_rs.validate(SCHEMA, value)
    assert len(value["items"]) == 2
    assert __import__("json").loads(json_done.choices[0].message.content or "") == {"echo": "as json"}


async def test_responses_non_stream_text_and_reasoning(mock_url: str) -> None:
    with client(mock_url) as c:
        done = await in_thread(
            lambda: c.responses.create(
                model="gpt-4.1",
                instructions="Be brief.",
                input=[{"role": "user", "content": [{"type": "input_text", "text": "hello responses"}]}],
            )
        )
        thought = await in_thread(
            lambda: c.responses.create(model="o4-mini", input="why?", reasoning={"effort": "high"})
        )
    assert done.status == "completed"
    assert done.output_text == "Echo: hello responses"
    assert done.usage is not None
    assert done.usage.input_tokens == -(-len("Be brief.hello responses") // 4)
    assert done.usage.output_tokens_details.reasoning_tokens == 0
    assert [o.type for o in thought.output] == ["reasoning", "message"]
    assert thought.usage is not None and thought.usage.output_tokens_details.reasoning_tokens > 0


async def test_responses_stream_events_accumulate_in_the_sdk(mock_url: str) -> None:
    with client(mock_url, default_headers={"x-mock-chunks": "3"}) as c:

        def run() -> tuple[list[str], Any]:
            with c.responses.stream(model="gpt-4.1", input="stream me") as stream:
                kinds = [ev.type for ev in stream]
                return kinds, stream.get_final_response()

        kinds, final = await in_thread(run)
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "Echo: stream me"
    assert final.usage is not None and final.usage.total_tokens > 0


async def test_responses_stream_function_call_and_structured_output(mock_url: str) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}  # type: ignore[index]
    with client(mock_url) as c:

        def run() -> Any:
            with c.responses.stream(model="gpt-4.1", input="weather?", tools=[tool]) as stream:  # type: ignore[list-item]
                for _ in stream:
                    pass
                return stream.get_final_response()

        final = await in_thread(run)
        parsed = await in_thread(lambda: c.responses.parse(model="gpt-4.1", input="make a person", text_format=Person))
        after_tool = await in_thread(
            lambda: c.responses.create(
                model="gpt-4.1",
                input=[
                    {"role": "user", "content": "weather?"},
                    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "rainy, 9 C"},
                ],
                tools=[tool],  # type: ignore[list-item]
            )
        )
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema_rs.validate(tool["parameters"], __import__("json").loads(call.arguments))
    assert isinstance(parsed.output_parsed, Person)
    assert "rainy, 9 C" in after_tool.output_text


async def test_embeddings_float_base64_dimensions_and_batches(mock_url: str) -> None:
    with client(mock_url) as c:
        single = await in_thread(
            lambda: c.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
        )
        sdk_default = await in_thread(
            lambda: c.embeddings.create(model="text-embedding-3-small", input=["hello", "world"], dimensions=256)
        )
        raw = await in_thread(
            lambda: c.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input=["hello"], dimensions=8, encoding_format="base64"
            )
        )
        large = await in_thread(lambda: c.embeddings.create(model="text-embedding-3-large", input="x"))
    assert len(single.data) == 1 and len(single.data[0].embedding) == 1536
    assert [d.index for d in sdk_default.data] == [0, 1]
    assert all(len(d.embedding) == 256 for d in sdk_default.data)
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    floats = struct.unpack("<8f", base64.b64decode(encoded))
    assert abs(sum(x * x for x in floats) - 1.0) < 1e-5
    assert len(large.data[0].embedding) == 3072
    assert single.usage.prompt_tokens == 2


async def test_models_list(mock_url: str) -> None:
    with client(mock_url) as c:
        models = await in_thread(lambda: list(c.models.list()))
        one = await in_thread(lambda: c.models.retrieve("gpt-4o"))
    assert "gpt-4o" in {m.id for m in models}
    assert one.id == "gpt-4o"


async def test_malformed_requests_get_openai_400s(mock_url: str) -> None:
    with client(mock_url) as c:
        for kwargs in (
            {"model": "gpt-4o", "messages": []},
            {"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]},
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        ):
            with pytest.raises(openai.BadRequestError) as err:
                await in_thread(lambda kw=kwargs: c.chat.completions.create(**kw))  # type: ignore[misc]
            assert err.value.body["type"] == "invalid_request_error"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            await in_thread(lambda: c.embeddings.create(model="text-embedding-3-small", input=""))


async def test_responses_stream_with_reasoning_and_truncation(mock_url: str) -> None:
    with client(mock_url) as c:

        def run() -> Any:
            with c.responses.stream(model="o3", input="deep question") as stream:
                kinds = [ev.type for ev in stream]
                return kinds, stream.get_final_response()

        kinds, final = await in_thread(run)
        cut = await in_thread(
            lambda: list(c.responses.create(model="gpt-4.1", input="a b c d e f", max_output_tokens=2, stream=True))
        )
    assert kinds[2:4] == ["response.output_item.added", "response.output_item.done"]
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output_text == "Echo: deep question"
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens > 0
    assert cut[-1].type == "response.incomplete"
    assert cut[-1].response.incomplete_details.reason == "max_output_tokens"
    assert [ev.sequence_number for ev in cut] == list(range(len(cut)))


async def test_responses_error_frame_sequence_number_follows_the_sent_events(mock_url: str) -> None:
    with client(mock_url, default_headers={"x-mock-error-after": "1", "x-mock-chunks": "3"}) as c:
        events = await in_thread(lambda: list(c.responses.create(model="o3", input="x", stream=True)))
    assert [ev.sequence_number for ev in events] == list(range(len(events)))
    assert events[-1].type == "error"
    kinds = [ev.type for ev in events]
    # The reasoning item and the message's opening events ride with the first delta.
    assert kinds.count("response.output_text.delta") == 1
    assert kinds.count("response.output_item.added") == 2
