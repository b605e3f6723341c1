"""Cache entries and their replay: binary round trip, stream bytes replayed byte for byte, a plain answer from a
recorded stream and a stream from a plain answer, in the caller's dialect."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from nexus.gateway.cache.entry import (
    CacheEntry,
    EntryError,
    StreamRecorder,
    chunks_from_sse,
    decode_entry,
    encode_entry,
)
from nexus.gateway.cache.replay import response_body, stream_pieces
from nexus.gateway.errors import Caller
from nexus.net.sse import SSEParser
from nexus.wire import anthropic, gemini
from nexus.wire.canonical import Accumulator, Chunker, Obj
from nexus.wire.usage import Usage

OPENAI_REQ: Obj = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True}
ANTHROPIC_REQ: Obj = {"model": "claude-test", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
                      "stream": True}


def canonical_stream() -> list[Obj]:
    ch = Chunker("gpt-test", "chatcmpl-abc")
    ch.created = 1_700_000_000
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"a"'}}
    more = {"index": 0, "function": {"arguments": ":1}"}}
    return [ch.delta({"role": "assistant", "content": ""}), ch.delta({"content": "Hel"}), ch.delta({"content": "lo"}),
            ch.delta({"tool_calls": [call]}), ch.delta({"tool_calls": [more]}),
            ch.finish("tool_calls"), ch.usage(Usage(prompt_tokens=12, completion_tokens=7))]


def relayed(caller: Caller, request: Obj, chunks: list[Obj]) -> list[bytes]:
    """What a live stream sent to this caller, as the recorder saw it (one write per event)."""
    return stream_pieces(CacheEntry(chunks=tuple(chunks)), caller, request)


def events(pieces: list[bytes]) -> list[tuple[str | None, Obj]]:
    parser = SSEParser()
    return [(ev.event, orjson.loads(ev.data)) for piece in pieces for ev in parser.feed(piece) if ev.data != "[DONE]"]


def accumulate(chunks: list[Obj]) -> Obj:
    acc = Accumulator()
    for c in chunks:
        acc.add(c)
    return acc.response()


def recorded(caller: Caller, request: Obj) -> CacheEntry:
    chunks = canonical_stream()
    rec = StreamRecorder(caller)
    for c in chunks:
        rec.add_chunk(c)
    for piece in relayed(caller, request, chunks):
        rec.add_raw(piece)
    entry = rec.entry(created=1.0)
    assert entry is not None
    return decode_entry(encode_entry(entry))


def test_binary_round_trip() -> None:
    stream = recorded("anthropic", ANTHROPIC_REQ)
    assert stream.raw_dialect == "anthropic" and stream.raw and stream.chunks
    plain = CacheEntry(response=accumulate(canonical_stream()), created=2.5)
    assert decode_entry(encode_entry(plain)) == plain
    assert decode_entry(encode_entry(stream)) == stream
    assert stream.usage == plain.usage == Usage(prompt_tokens=12, completion_tokens=7)


@pytest.mark.parametrize("data", [
    b"", b"NXC1", b"XXXX" + bytes(8), encode_entry(CacheEntry(response={"a": 1}))[:-1],
    encode_entry(CacheEntry(response={"a": 1})) + b"!",
    b"NXC1\x00\x00\x00\x02\x00\x00\x00\x00{}",  # neither a response nor chunks
    b"NXC1\x00\x00\x00\x02\x00\x00\x00\x01{}\x00\x00\x00\x09ab",  # a raw piece cut short
])
def test_corrupt_entries_are_refused(data: bytes) -> None:
    with pytest.raises(EntryError):
        decode_entry(data)


@pytest.mark.parametrize(("caller", "request_body"), [("anthropic", ANTHROPIC_REQ), ("openai", OPENAI_REQ)])
def test_stream_replays_byte_identical_to_the_same_dialect(caller: Caller, request_body: Obj) -> None:
    entry = recorded(caller, request_body)
    assert stream_pieces(entry, caller, request_body) == list(entry.raw or ())
    assert b"".join(stream_pieces(entry, caller, request_body)) == b"".join(relayed(caller, request_body,
                                                                                  canonical_stream()))


def test_stream_replays_re_encoded_to_another_dialect() -> None:
    entry = recorded("anthropic", ANTHROPIC_REQ)
    pieces = stream_pieces(entry, "openai", {**OPENAI_REQ, "stream_options": {"include_usage": True}})
    assert pieces != list(entry.raw or ()) and pieces[-1] == b"data: [DONE]\n\n"
    assert accumulate([data for _name, data in events(pieces)]) == accumulate(canonical_stream())
    without_usage = events(stream_pieces(entry, "openai", OPENAI_REQ))
    assert all("usage" not in data for _name, data in without_usage)  # the caller did not ask for it


def test_plain_answer_from_a_recorded_stream() -> None:
    entry = recorded("openai", OPENAI_REQ)
    body = orjson.loads(response_body(entry, "openai", OPENAI_REQ))
    assert body == accumulate(canonical_stream())
    msg = body["choices"][0]["message"]
    assert (msg["content"], msg["tool_calls"][0]["function"]["arguments"]) == ("Hello", '{"a":1}')
    assert body["choices"][0]["finish_reason"] == "tool_calls" and body["usage"]["total_tokens"] == 19
    message = orjson.loads(response_body(entry, "anthropic", ANTHROPIC_REQ))
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][1]["input"] == {"a": 1}


def test_stream_from_a_plain_answer() -> None:
    answer = accumulate(canonical_stream())
    entry = decode_entry(encode_entry(CacheEntry(response=answer)))
    pieces = stream_pieces(entry, "openai", {**OPENAI_REQ, "stream_options": {"include_usage": True}})
    assert accumulate([data for _name, data in events(pieces)]) == answer
    anthropic_events = events(stream_pieces(entry, "anthropic", ANTHROPIC_REQ))
    decoder = anthropic.StreamToChat("claude-test")
    chunks = [c for name, data in anthropic_events for _n, c in decoder.feed(name, data)] + \
        [c for _n, c in decoder.finish()]
    again = accumulate(chunks)["choices"][0]
    assert (again["message"]["content"], again["finish_reason"]) == ("Hello", "tool_calls")
    gemini_frames = events(stream_pieces(entry, "gemini", {"contents": []}))
    g = gemini.StreamToChat("gemini-test")
    text = accumulate([c for _n, data in gemini_frames for _m, c in g.feed(None, data)])
    assert text["choices"][0]["message"]["content"] == "Hello"


def test_passthrough_stream_bytes_give_canonical_chunks() -> None:
    raw = relayed("anthropic", ANTHROPIC_REQ, canonical_stream())
    rec = StreamRecorder("anthropic")
    for piece in raw:
        rec.add_raw(piece)
    assert rec.entry(1.0) is None  # no canonical chunks recorded
    entry = rec.entry(1.0, chunks_from_sse("anthropic", rec.raw_pieces, "claude-test"))
    assert entry is not None and stream_pieces(entry, "anthropic", ANTHROPIC_REQ) == raw
    msg = entry.as_response()["choices"][0]["message"]
    assert (msg["content"], msg["tool_calls"][0]["function"]["name"]) == ("Hello", "lookup")
    openai_raw = relayed("openai", {**OPENAI_REQ, "stream_options": {"include_usage": True}}, canonical_stream())
    assert accumulate(chunks_from_sse("openai", openai_raw)) == accumulate(canonical_stream())
    with pytest.raises(ValueError, match="no stream decoder"):
        chunks_from_sse("responses", [])


def test_recorder_stops_at_the_size_cap() -> None:
    rec = StreamRecorder("openai", max_bytes=100)
    rec.add_chunk({"x": 1})
    rec.add_raw(b"a" * 30)
    assert not rec.overflowed
    rec.add_raw(b"b" * 30)
    assert rec.overflowed and rec.raw_pieces == [] and rec.entry(1.0) is None
    rec.add_raw(b"c")
    assert rec.raw_pieces == []


def test_entry_holds_one_form() -> None:
    bad: list[dict[str, Any]] = [{}, {"response": {}, "chunks": ()}, {"response": {}, "raw": (b"x",),
                                                                       "raw_dialect": "openai"},
                                 {"chunks": ({},), "raw": (b"x",)}]
    for fields in bad:
        with pytest.raises(ValueError):
            CacheEntry(**fields)
