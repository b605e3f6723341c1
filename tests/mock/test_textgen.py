"""The dialect-neutral core: splitting, answer planning, and robustness of every parser."""

from __future__ import annotations

import contextlib
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from nexus.mock import anthropic, gemini, openai
from nexus.mock.knobs import Knobs
from nexus.mock.textgen import MalformedRequest, Prompt, Tool, plan, split


def test_split_gives_the_requested_pieces_that_join_back() -> None:
    assert split("abcdefghij", 3) == ["abcd", "efg", "hij"]
    assert split("ab", 5) == ["a", "b"]
    assert split("", 4) == [""]
    assert split("whole", 1) == ["whole"]


def test_plan_picks_tool_then_result_then_schema_then_echo() -> None:
    tool = Tool("lookup", {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    knobs = Knobs()
    called = plan(Prompt(model="m", last_user="find", tools=[tool]), knobs)
    assert called.finish == "tool" and called.tool_args == {"q": "example q"}
    assert called.tool_args_json == '{"q":"example q"}'
    answered = plan(Prompt(model="m", last_user="find", tools=[tool], tool_result="42 found"), knobs)
    assert answered.tool is None and answered.text == "Tool result: 42 found"
    shaped = plan(Prompt(model="m", schema={"type": "object", "properties": {"n": {"type": "integer"}}}), knobs)
    assert shaped.text == '{"n":42}'
    echoed = plan(Prompt(model="m", last_user="hello", chars=5, images=1), Knobs(cached_tokens=1000, model="x"))
    assert (echoed.text, echoed.model) == ("Echo: hello", "x")
    assert echoed.prompt_tokens == 2 + 85 and echoed.cached_tokens == 87


def test_reasoning_adds_thinking_and_its_tokens() -> None:
    answer = plan(Prompt(model="m", last_user="why", reasoning=True), Knobs())
    assert answer.thinking and answer.reasoning_tokens == -(-len(answer.thinking) // 4)
    assert answer.total_tokens == answer.prompt_tokens + answer.output_tokens + answer.reasoning_tokens


# Request-shaped junk: the field names the parsers look at, holding either the expected
# shape or a wrong-typed leaf, nested the way real bodies are.
leaf = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4) | st.just({}) | st.just([])


def fields(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: v | leaf for k, v in strategies.items()})


schemas: st.SearchStrategy[Any] = st.deferred(
    lambda: fields(
        type=st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null", "OBJECT"]),
        properties=st.dictionaries(st.text(max_size=3), schemas, max_size=3),
        required=st.lists(st.text(max_size=3), max_size=3),
        items=schemas,
        enum=st.lists(leaf, max_size=2),
        anyOf=st.lists(schemas, max_size=2),
        allOf=st.lists(schemas, max_size=2),
        minItems=leaf,
        minimum=leaf,
        maxLength=leaf,
        multipleOf=leaf,
        **{"$ref": st.sampled_from(["#/x", "#", "#/properties"])},
    )
)
parts: st.SearchStrategy[Any] = st.deferred(
    lambda: fields(
        type=st.sampled_from(["text", "image_url", "input_image", "image", "tool_result", "tool_use", "thinking"]),
        text=leaf,
        image_url=fields(url=leaf),
        source=fields(type=st.sampled_from(["base64", "url"])),
        content=st.lists(parts, max_size=2),
        inlineData=fields(mimeType=leaf),
        functionCall=leaf,
        functionResponse=fields(response=leaf),
        output=leaf,
    )
)
messages = fields(
    role=st.sampled_from(["user", "assistant", "system", "tool", "model"]),
    content=st.lists(parts, max_size=3),
    parts=st.lists(parts, max_size=3),
    tool_calls=st.lists(fields(function=fields(name=leaf, arguments=leaf)), max_size=2),
    type=st.sampled_from(["message", "function_call_output", "function_call"]),
)
tools = fields(
    type=st.just("function"),
    function=fields(name=leaf, parameters=schemas),
    name=st.just("t"),
    parameters=schemas,
    input_schema=schemas,
    functionDeclarations=st.lists(fields(name=st.just("t"), parameters=schemas), max_size=2),
)
optional_fields = fields(
    messages=st.lists(messages, max_size=3),
    input=st.lists(messages, max_size=3),
    contents=st.lists(messages, max_size=3),
    tools=st.lists(tools, max_size=2),
    tool_choice=st.sampled_from(["auto", "none", "required"]) | fields(type=leaf, name=leaf),
    response_format=fields(type=st.sampled_from(["json_schema", "json_object"]), json_schema=fields(schema=schemas)),
    text=fields(format=fields(type=st.just("json_schema"), schema=schemas)),
    system=st.lists(parts, max_size=2),
    thinking=fields(type=st.just("enabled")),
    generationConfig=fields(responseSchema=schemas, thinkingConfig=fields(includeThoughts=leaf)),
    toolConfig=fields(functionCallingConfig=fields(mode=leaf, allowedFunctionNames=leaf)),
    content=fields(parts=st.lists(parts, max_size=2)),
    requests=st.lists(fields(content=fields(parts=st.lists(parts, max_size=2))), max_size=2),
)


# model and max_tokens are always right, so most bodies get past the first checks.
bodies = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"model": st.just("gpt-4o"), "max_tokens": st.integers(1, 5)}),
    optional_fields,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies)
def test_parsers_reject_junk_only_with_malformed_request(body: Any) -> None:
    def responses() -> bytes:
        prompt, echo = openai.parse_responses(body)
        openai.stream_responses(plan(prompt, Knobs()), echo)
        return openai.render_responses(plan(prompt, Knobs()), echo)

    def gemini_generate() -> bytes:
        prompt = gemini.parse(body, "g")
        gemini.stream(plan(prompt, Knobs()), prompt, sse=False)
        return gemini.render(plan(prompt, Knobs()), prompt)

    def chat() -> bytes:
        prompt = openai.parse_chat(body)
        openai.stream_chat(plan(prompt, Knobs()), prompt)
        return openai.render_chat(plan(prompt, Knobs()))

    def messages() -> bytes:
        anthropic.stream(plan(anthropic.parse(body), Knobs()))
        return anthropic.render(plan(anthropic.parse(body), Knobs()))

    for render in (
        chat,
        responses,
        messages,
        gemini_generate,
        lambda: openai.embed(body, ""),
        lambda: anthropic.count_tokens(body),
        lambda: gemini.embed_content(body, "g"),
        lambda: gemini.batch_embed_contents(body, "g"),
    ):
        with contextlib.suppress(MalformedRequest):
            assert isinstance(render(), bytes)
