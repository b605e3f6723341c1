"""The SSE framer and incremental parser in nexus/net/sse.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus.net.sse import SSEEvent, SSEParser, SSEProtocolError, encode_event

STREAM = (
    "\ufeff: keep-alive comment\r\n"
    "event: delta\r\n"
    "id: 41\r\n"
    'data: {"text": "héllo 🌍"}\r\n'
    "\r\n"
    "data:first\rdata: second\r\r"
    "retry: 2500\n"
    "unknown: x\n"
    "data\n"
    "\n"
    "id: only-an-id\n"
    "\n"
    "event: done\n"
    "data: [DONE]\n"
    "\n"
    "data: never finished"
).encode()

EXPECTED = [
    SSEEvent("delta", '{"text": "héllo 🌍"}', "41", None),
    SSEEvent(None, "first\nsecond", None, None),
    SSEEvent(None, "", None, 2500),
    SSEEvent("done", "[DONE]", None, None),
]


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def test_one_chunk() -> None:
    assert parse(STREAM) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_every_split_point(split: int) -> None:
    # Splits fall inside CRLF pairs, field names and multi-byte characters alike.
    assert parse(STREAM[:split], STREAM[split:]) == EXPECTED


def test_byte_by_byte() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_line_endings_are_equivalent(newline: bytes) -> None:
    data = newline.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert parse(data) == [SSEEvent("e", "a\nb"), SSEEvent(None, "c")]


def test_last_event_id_persists_and_nul_ids_are_ignored() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 7\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\n")
    assert [e.id for e in events] == ["7", None, None]
    assert parser.last_event_id == "7"


def test_retry_must_be_digits() -> None:
    assert parse(b"retry: 12a\ndata: x\n\nretry: 30\ndata: y\n\n") == [
        SSEEvent(None, "x"),
        SSEEvent(None, "y", None, 30),
    ]


def test_invalid_utf8_is_replaced() -> None:
    assert parse(b"data: \xff\xfe ok\n\n") == [SSEEvent(None, "\ufffd\ufffd ok")]


def test_endless_line_is_bounded() -> None:
    parser = SSEParser(max_line_chars=100)
    with pytest.raises(SSEProtocolError):
        for _ in range(20):
            parser.feed(b"data: " + b"x" * 10)


def test_encode_event() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event("a\nb\r\nc", "msg") == b"event: msg\ndata: a\ndata: b\ndata: c\n\n"
    assert encode_event("x", id="9", retry=100) == b"id: 9\nretry: 100\ndata: x\n\n"
    with pytest.raises(ValueError):
        encode_event("x", "bad\nname")


line = st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]))


@given(
    st.lists(st.tuples(st.lists(line, min_size=1, max_size=4), st.none() | line), min_size=1, max_size=5),
    st.integers(1, 7),
)
def test_encode_then_parse_round_trips(events: list[tuple[list[str], str | None]], step: int) -> None:
    wire = b"".join(encode_event("\n".join(lines), name) for lines, name in events)
    parsed = parse(*(wire[i : i + step] for i in range(0, len(wire), step)))
    assert parsed == [SSEEvent(name, "\n".join(lines)) for lines, name in events]
