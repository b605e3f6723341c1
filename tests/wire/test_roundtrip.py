"""Properties: any canonical stream, split anywhere, survives each caller grammar and back.

A random answer (reasoning, text, tool calls with JSON arguments) is cut into
random fragments as a provider would stream it.  Through Anthropic events and
back, and through Gemini frames and back, the reassembled answer is the same;
through Responses events the official SDK's stream state rebuilds it.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai._models import validate_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from nexus.wire import anthropic, canonical, gemini, responses
from nexus.wire.usage import Usage

text = st.text(min_size=1, max_size=40)
arguments = st.dictionaries(
    st.text(min_size=1, max_size=8), st.integers(-(2**53), 2**53) | st.text(max_size=10) | st.booleans(), max_size=3
)
# A union alias, not a class: typed loosely for validate_type.
_STREAM_EVENT: Any = ResponseStreamEvent
names = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    calls = draw(st.lists(st.tuples(names, arguments), max_size=3))
    return {
        "reasoning": draw(st.lists(text, max_size=3)),
        "content": draw(st.lists(text, max_size=4)),
        "calls": [(f"call_{i}", n, a) for i, (n, a) in enumerate(calls)],
        "usage": Usage(draw(st.integers(0, 5000)), draw(st.integers(0, 5000))),
    }


def _split(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts} | {0, len(s)})
    return [s[a:b] for a, b in itertools.pairwise(points) if b > a]


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ans = draw(answers())
    ch = canonical.Chunker("model-x", "chatcmpl-1")
    chunks = [ch.delta({"role": "assistant", "content": ""})]
    chunks += [ch.delta({"reasoning_content": r}) for r in ans["reasoning"]]
    chunks += [ch.delta({"content": c}) for c in ans["content"]]
    for i, (cid, name, args) in enumerate(ans["calls"]):
        chunks.append(
            ch.delta(
                {
                    "tool_calls": [
                        {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
        )
        cuts = draw(st.lists(st.integers(0, 200), max_size=4))
        for piece in _split(orjson.dumps(args).decode(), cuts):
            chunks.append(ch.delta({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    chunks.append(ch.finish("tool_calls" if ans["calls"] else "stop"))
    chunks.append(ch.usage(ans["usage"]))
    return ans, chunks


def _check(ans: dict[str, Any], resp: dict[str, Any]) -> None:
    msg = resp["choices"][0]["message"]
    assert (msg.get("reasoning_content") or "") == "".join(ans["reasoning"])
    assert (msg.get("content") or "") == "".join(ans["content"])
    calls = [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or ()
    ]
    assert calls == ans["calls"]
    assert resp["choices"][0]["finish_reason"] == ("tool_calls" if ans["calls"] else "stop")
    assert (resp["usage"]["prompt_tokens"], resp["usage"]["completion_tokens"]) == (
        ans["usage"].prompt_tokens,
        ans["usage"].completion_tokens,
    )


def _through(encoder: Any, decoder: Any, chunks: list[dict[str, Any]], encode: Any) -> dict[str, Any]:
    acc = canonical.Accumulator()
    frames = []
    for chunk in chunks:
        frames.extend(encoder.feed(None, chunk))
    frames.extend(encoder.finish())
    for event, data in frames:
        # Through the bytes on the wire, as a client would see them.
        wire = encode(event, data)
        parsed = orjson.loads(wire.split(b"data: ", 1)[1])
        for _, out in decoder.feed(event, parsed):
            acc.add(out)
    for _, out in decoder.finish():
        acc.add(out)
    return acc.response()


@settings(max_examples=150, deadline=None)
@given(streams())
def test_canonical_stream_reassembles(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    ans, chunks = case
    acc = canonical.Accumulator()
    for chunk in chunks:
        acc.add(chunk)
    _check(ans, acc.response())


@settings(max_examples=150, deadline=None)
@given(streams())
def test_through_anthropic_grammar(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    ans, chunks = case
    enc = anthropic.StreamFromChat({"model": "model-x"})
    dec = anthropic.StreamToChat("model-x")
    _check(ans, _through(enc, dec, chunks, anthropic.encode))
    assert enc.finish_reason == dec.finish_reason
    assert enc.usage == dec.usage == ans["usage"]


@settings(max_examples=150, deadline=None)
@given(streams())
def test_through_gemini_grammar(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    ans, chunks = case
    enc = gemini.StreamFromChat()
    dec = gemini.StreamToChat("model-x")
    _check(ans, _through(enc, dec, chunks, gemini.encode))
    assert enc.usage == ans["usage"]


@settings(max_examples=100, deadline=None)
@given(streams())
def test_through_responses_grammar(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    ans, chunks = case
    enc = responses.StreamFromChat({"model": "model-x"})
    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for chunk in chunks:
        for event, data in enc.feed(None, chunk):
            wire = responses.encode(event, data).split(b"data: ", 1)[1]
            state.handle_event(validate_type(type_=_STREAM_EVENT, value=orjson.loads(wire)))
    assert enc.finish() == []
    final = state._completed_response
    assert final.output_text == "".join(ans["content"])
    summaries = [s.text for item in final.output if item.type == "reasoning" for s in item.summary]
    assert "".join(summaries) == "".join(ans["reasoning"])
    calls = [(i.call_id, i.name, orjson.loads(i.arguments)) for i in final.output if i.type == "function_call"]
    assert calls == ans["calls"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        ans["usage"].prompt_tokens,
        ans["usage"].completion_tokens,
    )
