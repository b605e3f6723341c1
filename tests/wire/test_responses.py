"""Responses API codecs, checked against the official ``openai`` SDK's types and stream state machine."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai import omit
from openai._models import validate_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from tests.wire.conftest import assert_golden, drive, load

from nexus.wire import anthropic, canonical, responses
from nexus.wire.errors import WireError

# A union alias, not a class: typed loosely for validate_type.
_STREAM_EVENT: Any = ResponseStreamEvent


def _sdk_final(events: list[tuple[str | None, dict[str, Any]]]) -> tuple[Any, list[str]]:
    """Our events, framed and parsed strictly, through the SDK's stream state: the final response."""
    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    seen = []
    for i, (event, data) in enumerate(events):
        frame = responses.encode(event, data)
        head, _, body = frame.partition(b"\ndata: ")
        assert head == b"event: " + data["type"].encode()
        parsed = orjson.loads(body)
        assert parsed["sequence_number"] == i
        state.handle_event(validate_type(type_=_STREAM_EVENT, value=parsed))
        seen.append(parsed["type"])
    return state._completed_response, seen


def test_chat_from_request_golden() -> None:
    assert_golden("chat_from_responses_request", responses.chat_from_request(load("responses_request.json")))


def test_plain_string_input_and_options() -> None:
    chat = responses.chat_from_request(
        {
            "model": "gpt-4.1",
            "input": "hello",
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_object"}},
            "safety_identifier": "u-1",
            "temperature": 0.3,
        }
    )
    assert chat == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.3,
        "user": "u-1",
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_object"},
    }


@pytest.mark.parametrize(
    ("req", "kind"),
    [
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "not_implemented"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "not_implemented"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "invalid_request"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "invalid_request",
        ),
    ],
)
def test_untranslatable_requests_raise(req: dict[str, Any], kind: str) -> None:
    with pytest.raises(WireError) as info:
        responses.chat_from_request(req)
    assert info.value.kind == kind


def test_response_from_chat_golden_and_sdk_valid() -> None:
    out = responses.response_from_chat(load("openai_chat_response.json"), load("responses_request.json"))
    assert_golden("responses_response_from_chat", out)
    parsed = Response.model_validate(out)
    assert parsed.output_text == "Checking the forecast for Lisbon."
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 1024


def test_truncated_response_is_incomplete() -> None:
    resp = canonical.response("x", "m", [{"index": 0, "message": {"content": "cut"}, "finish_reason": "length"}], None)
    out = responses.response_from_chat(resp, {"model": "m"})
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete"
    Response.model_validate(out)


def test_stream_golden_and_sdk_state() -> None:
    enc = responses.StreamFromChat({"model": "deepseek-reasoner", "input": "Which is larger, 9.11 or 9.8?"})
    out = drive(enc, [(None, c) for c in load("deepseek_stream_reasoning.json")])
    assert_golden("responses_events_from_deepseek_stream", [[e, d] for e, d in out])
    final, _ = _sdk_final(out)
    assert final.output_text == "9.8 is larger."
    assert final.output[0].summary[0].text == "9.11 vs 9.8: compare tenths, 8 > 1."
    assert (
        final.usage.input_tokens,
        final.usage.output_tokens,
        final.usage.output_tokens_details.reasoning_tokens,
    ) == (18, 97, 83)
    assert enc.finish_reason == "stop"


def test_stream_tool_calls_and_thinking_round_trip() -> None:
    """Anthropic upstream → canonical → Responses caller → back into a request → Anthropic again."""
    request = load("responses_request.json")
    enc = responses.StreamFromChat(request)
    out: list[tuple[str | None, dict[str, Any]]] = []
    frames = [(f["event"], f["data"]) for f in load("anthropic_stream_tools.json")]
    for _, chunk in drive(anthropic.StreamToChat("claude-sonnet-4-5"), frames):
        out.extend(enc.feed(None, chunk))
    out.extend(enc.finish())
    final, seen = _sdk_final(out)
    assert seen.count("response.output_item.added") == seen.count("response.output_item.done") == 4
    assert seen[-1] == "response.completed"
    kinds = [item.type for item in final.output]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    calls = [(i.call_id, i.name, orjson.loads(i.arguments)) for i in final.output[2:]]
    assert calls == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris, France", "unit": "celsius"}),
        ("toolu_01AbCdEfGhIjKlMnOpQrStUv", "get_time", {}),
    ]
    assert final.usage.input_tokens == 2640 and final.usage.input_tokens_details.cached_tokens == 2048

    # The client sends the output back as input (stateless); the signed thinking reaches Anthropic again.
    follow_up = {
        "model": "claude-sonnet-4-5",
        "input": [
            {"role": "user", "content": "weather and time in Paris?"},
            *[item.model_dump(exclude_none=True) for item in final.output],
            {"type": "function_call_output", "call_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "output": "18C"},
            {"type": "function_call_output", "call_id": "toolu_01AbCdEfGhIjKlMnOpQrStUv", "output": "14:05"},
        ],
    }
    chat = responses.chat_from_request(follow_up)
    req, _ = anthropic.request_from_chat(chat, "claude-sonnet-4-5", 1024)
    assistant = req["messages"][1]["content"]
    assert [b["type"] for b in assistant] == ["thinking", "redacted_thinking", "text", "tool_use", "tool_use"]
    original = [f["data"] for f in load("anthropic_stream_tools.json")]
    signature = next(d["delta"]["signature"] for d in original if d.get("delta", {}).get("type") == "signature_delta")
    assert assistant[0]["signature"] == signature
    assert [b["type"] for b in req["messages"][2]["content"]] == ["tool_result", "tool_result"]


def test_stream_incomplete_on_length() -> None:
    ch = canonical.Chunker("m")
    chunks = [ch.delta({"role": "assistant", "content": ""}), ch.delta({"content": "The Roman"}), ch.finish("length")]
    enc = responses.StreamFromChat({"model": "m"})
    out = drive(enc, [(None, c) for c in chunks])
    assert out[-1][0] == "response.incomplete"
    assert out[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    _, seen = _sdk_final(out)
    assert seen[-1] == "response.incomplete"


def test_stream_fail_emits_response_failed() -> None:
    enc = responses.StreamFromChat({"model": "m"})
    enc.feed(None, canonical.Chunker("m").delta({"content": "partial"}))
    out = enc.fail("rate_limited", "slow down")
    assert [e for e, _ in out] == ["response.failed"]
    failed = out[0][1]
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    validate_type(type_=_STREAM_EVENT, value=failed)
    with pytest.raises(WireError):
        responses.StreamFromChat({"model": "m"}).finish()


def test_fail_before_any_output_still_opens_the_stream() -> None:
    out = responses.StreamFromChat({"model": "m"}).fail("timeout", "took too long")
    assert [e for e, _ in out] == ["response.created", "response.in_progress", "response.failed"]
    assert out[-1][1]["response"]["error"]["code"] == "server_error"


def test_observer_reads_usage_and_fails_in_grammar() -> None:
    enc = responses.StreamFromChat({"model": "m"})
    upstream = drive(enc, [(None, c) for c in load("openai_stream_tool_calls.json")])
    obs = responses.StreamObserver()
    for event, data in upstream:
        assert obs.feed(event, data)[0][1] is data
    assert obs.finish() == []
    assert (obs.finish_reason, obs.usage.prompt_tokens, obs.usage.cached_tokens) == ("tool_calls", 82, 64)

    cut = responses.StreamObserver()
    for event, data in upstream[:5]:
        cut.feed(event, data)
    with pytest.raises(WireError):
        cut.finish()
    failed = cut.fail("upstream_error", "connection reset")
    assert failed[0][1]["sequence_number"] == 5
    assert failed[0][1]["response"]["id"] == upstream[0][1]["response"]["id"]
    validate_type(type_=_STREAM_EVENT, value=failed[0][1])

    with pytest.raises(WireError) as info:
        responses.StreamObserver().feed("response.failed", failed[0][1])
    assert info.value.kind == "upstream_error"
