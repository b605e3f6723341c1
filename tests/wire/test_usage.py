"""Usage numbers from every dialect mean the same thing, and survive a trip through each."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.wire.conftest import load

from nexus.wire import usage
from nexus.wire.usage import Usage


def test_openai_with_details() -> None:
    u = usage.from_openai(load("openai_stream_tool_calls.json")[-1]["usage"])
    assert u == Usage(prompt_tokens=82, completion_tokens=40, cached_tokens=64, reasoning_tokens=0)
    assert u.total == 122


def test_openai_compatible_variants() -> None:
    deepseek = {
        "prompt_tokens": 18,
        "completion_tokens": 97,
        "prompt_cache_hit_tokens": 12,
        "prompt_cache_miss_tokens": 6,
    }
    assert usage.from_openai(deepseek).cached_tokens == 12
    moonshot = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35, "cached_tokens": 20}
    assert usage.from_openai(moonshot).cached_tokens == 20
    assert usage.from_openai(None) == Usage()
    assert usage.from_openai({"prompt_tokens": None, "prompt_tokens_details": None}) == Usage()


def test_anthropic_prompt_includes_cache_reads_and_writes() -> None:
    u = usage.from_anthropic(load("anthropic_message_tool_use.json")["usage"])
    assert u == Usage(prompt_tokens=1021 + 3200, completion_tokens=158, cached_tokens=3200, cache_write_tokens=0)
    nulls = usage.from_anthropic(load("anthropic_message_stop_sequence.json")["usage"])
    assert (nulls.prompt_tokens, nulls.cached_tokens) == (25, 0)
    thinking = usage.from_anthropic(
        {"input_tokens": 10, "output_tokens": 50, "output_tokens_details": {"thinking_tokens": 30}}
    )
    assert thinking.reasoning_tokens == 30


def test_gemini_thoughts_count_as_completion() -> None:
    u = usage.from_gemini(load("gemini_response_function_call.json")["usageMetadata"])
    assert u == Usage(prompt_tokens=95, completion_tokens=18 + 166, cached_tokens=32, reasoning_tokens=166)
    assert u.total == 279
    assert (
        usage.from_gemini(
            {"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 2}
        ).prompt_tokens
        == 15
    )


def test_responses() -> None:
    u = usage.from_responses(
        {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 40},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 8},
            "total_tokens": 120,
        }
    )
    assert u == Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=40, reasoning_tokens=8)


counts = st.integers(min_value=0, max_value=10**7)


@st.composite
def consistent_usage(draw: st.DrawFn) -> Usage:
    prompt = draw(counts)
    cached = draw(st.integers(min_value=0, max_value=prompt))
    write = draw(st.integers(min_value=0, max_value=prompt - cached))
    completion = draw(counts)
    reasoning = draw(st.integers(min_value=0, max_value=completion))
    return Usage(prompt, completion, cached, reasoning, write)


@given(consistent_usage())
def test_round_trips(u: Usage) -> None:
    assert usage.from_openai(usage.to_openai(u)) == u
    assert usage.from_responses(usage.to_responses(u)) == u
    assert usage.from_gemini(usage.to_gemini(u)) == Usage(
        u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens
    )
    # Anthropic's counts have no reasoning split in the message usage we write.
    back = usage.from_anthropic(usage.to_anthropic(u))
    assert back == Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens, 0, u.cache_write_tokens)
