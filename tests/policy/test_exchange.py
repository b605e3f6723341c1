"""Text segments out of canonical bodies and chunks, and rewrites back in (nexus/policy/exchange.py)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.policy.exchange import (
    ChunkText,
    Exchange,
    ExchangeError,
    Segment,
    apply_segments,
    chunk_texts,
    request_segments,
    response_segments,
)

REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "stream": True,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
                {"type": "text", "text": ""},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "the user wants a description",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"q": "cat"}'}},
                {"id": "c2", "type": "function", "function": {"name": "noop", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a cat on a mat"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
        {"role": "assistant", "function_call": {"name": "old", "arguments": '{"x": 1}'}},
        "not a message",
    ],
}

RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Here you go.",
                "reasoning_content": "thinking…",
                "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "f", "arguments": '{"a": "b"}'}}],
            },
            "finish_reason": "tool_calls",
        },
        {"index": 1, "message": {"role": "assistant", "content": None, "refusal": "No."}, "finish_reason": "stop"},
        {"index": 2, "message": {"role": "assistant", "content": "alt", "reasoning": "other name"}},
    ],
}


def test_request_segments_cover_text_only() -> None:
    assert request_segments(REQUEST) == (
        Segment(("messages", 0, "content"), "Be brief."),
        Segment(("messages", 1, "content", 0, "text"), "Use metric units."),
        Segment(("messages", 2, "content", 0, "text"), "What is in this picture?"),
        Segment(("messages", 3, "tool_calls", 0, "function", "arguments"), '{"q": "cat"}'),
        Segment(("messages", 4, "content"), "a cat on a mat"),
        Segment(("messages", 5, "content", 0, "refusal"), "I cannot."),
        Segment(("messages", 6, "function_call", "arguments"), '{"x": 1}'),
    )


def test_response_segments() -> None:
    assert response_segments(RESPONSE) == (
        Segment(("choices", 0, "message", "content"), "Here you go."),
        Segment(("choices", 0, "message", "reasoning_content"), "thinking…"),
        Segment(("choices", 0, "message", "tool_calls", 0, "function", "arguments"), '{"a": "b"}'),
        Segment(("choices", 1, "message", "refusal"), "No."),
        Segment(("choices", 2, "message", "content"), "alt"),
        Segment(("choices", 2, "message", "reasoning"), "other name"),
    )


@pytest.mark.parametrize("body", [{}, {"messages": "x"}, {"messages": [None, 3]}, {"choices": [{"message": 5}]}])
def test_malformed_bodies_have_no_segments(body: dict[str, Any]) -> None:
    assert request_segments(body) == ()
    assert response_segments(body) == ()


def test_every_segment_locator_names_its_text() -> None:
    for body, segments in ((REQUEST, request_segments(REQUEST)), (RESPONSE, response_segments(RESPONSE))):
        for seg in segments:
            node: Any = body
            for key in seg.locator:
                node = node[key]
            assert node == seg.text


def test_chunk_texts_use_index_fields_for_channels() -> None:
    chunk = {
        "choices": [
            {
                "index": 3,
                "delta": {
                    "content": "Hel",
                    "reasoning": "hmm",
                    "tool_calls": [{"index": 2, "function": {"arguments": '{"a'}}, {"index": 5, "id": "x"}],
                },
            },
            {"index": 0, "delta": {"refusal": "no", "content": ""}},
            {"index": 1, "delta": None},
        ]
    }
    assert chunk_texts(chunk) == [
        ChunkText(("choices", 3, "message", "content"), ("choices", 0, "delta", "content"), "Hel"),
        ChunkText(("choices", 3, "message", "reasoning_content"), ("choices", 0, "delta", "reasoning"), "hmm"),
        ChunkText(
            ("choices", 3, "message", "tool_calls", 2, "function", "arguments"),
            ("choices", 0, "delta", "tool_calls", 0, "function", "arguments"),
            '{"a',
        ),
        ChunkText(("choices", 0, "message", "refusal"), ("choices", 1, "delta", "refusal"), "no"),
    ]
    assert chunk_texts({"choices": [], "usage": {}}) == []


def test_exchange_constructors_read_the_body() -> None:
    ex = Exchange.for_request(REQUEST, ingress="proxy", org_id="o", body_size=999)
    assert (ex.stage, ex.ingress, ex.model, ex.stream, ex.org_id, ex.body_size) == (
        "request",
        "proxy",
        "gpt-4o",
        True,
        "o",
        999,
    )
    assert ex.segments == request_segments(REQUEST)
    resp = Exchange.for_response(RESPONSE, ingress="agent", model="routed")
    assert (resp.stage, resp.model, resp.segments) == ("response", "routed", response_segments(RESPONSE))


def test_apply_copies_only_the_rewritten_paths() -> None:
    original = copy.deepcopy(REQUEST)
    out = apply_segments(
        REQUEST,
        [
            Segment(("messages", 0, "content"), "Be [X]."),
            Segment(("messages", 2, "content", 0, "text"), "What [Y]?"),
            Segment(("messages", 3, "tool_calls", 0, "function", "arguments"), '{"q": "[Z]"}'),
        ],
    )
    assert original == REQUEST
    assert out["messages"][0]["content"] == "Be [X]."
    assert out["messages"][2]["content"][0]["text"] == "What [Y]?"
    assert out["messages"][2]["content"][1] is REQUEST["messages"][2]["content"][1]
    assert out["messages"][3]["tool_calls"][0]["function"]["arguments"] == '{"q": "[Z]"}'
    assert out["messages"][4] is REQUEST["messages"][4]
    assert out["messages"][2] is not REQUEST["messages"][2]
    assert apply_segments(REQUEST, []) is REQUEST


@pytest.mark.parametrize(
    "locator",
    [
        ("messages", 9, "content"),
        ("messages", 0, "nope"),
        ("messages", 3, "content"),
        ("messages", 0, "content", 0),
        ("model", "x"),
        (),
    ],
)
def test_apply_rejects_locators_that_name_no_string(locator: tuple[Any, ...]) -> None:
    with pytest.raises(ExchangeError):
        apply_segments(REQUEST, [Segment(locator, "x")])


def test_apply_rejects_a_path_through_a_rewritten_string() -> None:
    with pytest.raises(ExchangeError):
        apply_segments(REQUEST, [Segment(("messages", 0, "content"), "a"), Segment(("messages", 0, "content", 1), "b")])


def test_broken_tool_arguments_stay_json() -> None:
    loc = ("messages", 3, "tool_calls", 0, "function", "arguments")
    # A span that swallowed a quote would leave invalid JSON: it is stored as one JSON string instead.
    out = apply_segments(REQUEST, [Segment(loc, '{"q[REDACTED_X]}')])
    args = out["messages"][3]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(args) == '{"q[REDACTED_X]}'
    fine = apply_segments(REQUEST, [Segment(loc, '{"q": "[REDACTED_X]"}')])
    assert fine["messages"][3]["tool_calls"][0]["function"]["arguments"] == '{"q": "[REDACTED_X]"}'
    body = {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "not json"}}]}]}
    raw = apply_segments(body, [Segment(("messages", 0, "tool_calls", 0, "function", "arguments"), "not [X]")])
    assert raw["messages"][0]["tool_calls"][0]["function"]["arguments"] == "not [X]"


_text = st.text(st.characters(codec="utf-8"), max_size=12)
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": _text})}),
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": st.one_of(_text, st.lists(_part))}
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, max_size=6), st.data())
def test_rewriting_segments_changes_exactly_those_texts(messages: list[dict[str, Any]], data: st.DataObject) -> None:
    body = {"model": "m", "messages": messages}
    segments = request_segments(body)
    assert apply_segments(body, segments) == body
    chosen = data.draw(st.lists(st.sampled_from(segments), unique=True) if segments else st.just([]))
    rewrites = [Segment(s.locator, s.text + "⟦x⟧") for s in chosen]
    out = apply_segments(body, rewrites)
    changed = {s.locator for s in rewrites}
    expected = [Segment(s.locator, s.text + "⟦x⟧" if s.locator in changed else s.text) for s in segments]
    assert list(request_segments(out)) == expected
