"""The sans-IO NATS codec: every frame type, every chunk split, the encoders and the limits."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.net.nats.errors import NatsPayloadTooLarge, NatsProtocolError
from nexus.net.nats.protocol import (
    PING,
    PONG,
    Err,
    Event,
    Info,
    Msg,
    Ok,
    Parser,
    Ping,
    Pong,
    encode_connect,
    encode_headers,
    encode_pub,
    encode_sub,
    encode_unsub,
    parse_headers,
)

# One of every frame the server sends, in the spec's own syntax.
STREAM = (
    b'INFO {"server_id":"S1","version":"2.9.10","headers":true,"max_payload":1048576}\r\n'
    b"PING\r\n"
    b"PONG\r\n"
    b"+OK\r\n"
    b"MSG foo.bar 9 5\r\nhello\r\n"
    b"MSG foo.bar 9 _INBOX.r.1 0\r\n\r\n"
    b"MSG bin 10 6\r\n\r\n\x00\xff\r\n\r\n"
    b"HMSG hdr.x 11 32 34\r\nNATS/1.0\r\nA: 1\r\nB: two words\r\n\r\nhi\r\n"
    b"HMSG hdr.y 12 _INBOX.r.2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    b"HMSG hdr.z 13 32 32\r\nNATS/1.0 408 Request Timeout\r\n\r\n\r\n"
    b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n"
)

EXPECTED: list[Event] = [
    Info({"server_id": "S1", "version": "2.9.10", "headers": True, "max_payload": 1048576}),
    Ping(),
    Pong(),
    Ok(),
    Msg("foo.bar", None, None, b"hello", 9),
    Msg("foo.bar", "_INBOX.r.1", None, b"", 9),
    Msg("bin", None, None, b"\r\n\x00\xff\r\n", 10),
    Msg("hdr.x", None, {"A": "1", "B": "two words"}, b"hi", 11),
    Msg("hdr.y", "_INBOX.r.2", {}, b"", 12, 503, ""),
    Msg("hdr.z", None, {}, b"", 13, 408, "Request Timeout"),
    Err('Permissions Violation for Publish to "x"'),
]


def _feed_all(chunks: list[bytes]) -> list[Event]:
    parser = Parser()
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def test_every_frame_type_in_one_chunk() -> None:
    assert _feed_all([STREAM]) == EXPECTED


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        assert _feed_all([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_one_byte_at_a_time() -> None:
    assert _feed_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_split_anywhere(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    assert _feed_all([STREAM[a:b] for a, b in itertools.pairwise(points)]) == EXPECTED


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
_subject = st.lists(_token, min_size=1, max_size=4).map(".".join)
_headers = st.dictionaries(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10),
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), max_size=20),
    max_size=4,
)
_message = st.tuples(
    _subject, st.integers(1, 10**6), st.none() | _subject, st.none() | _headers, st.binary(max_size=64)
)


def _server_frame(
    subject: str, sid: int, reply: str | None, headers: dict[str, str] | None, data: bytes
) -> bytes:
    # Built by hand from the protocol description, independently of the encoders.
    fields = f"{subject} {sid}" + (f" {reply}" if reply else "")
    if headers is None:
        return f"MSG {fields} {len(data)}\r\n".encode() + data + b"\r\n"
    block = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    return f"HMSG {fields} {len(block)} {len(block) + len(data)}\r\n".encode() + block + data + b"\r\n"


@settings(max_examples=200)
@given(st.lists(_message, min_size=1, max_size=8), st.lists(st.integers(0, 4000), max_size=12))
def test_messages_survive_any_chunking(
    messages: list[tuple[str, int, str | None, dict[str, str] | None, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(_server_frame(*m) for m in messages)
    points = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
    events = _feed_all([stream[a:b] for a, b in itertools.pairwise(points)])
    want = [
        Msg(subject, reply, None if hdrs is None else {k: v.strip() for k, v in hdrs.items()}, data, sid)
        for subject, sid, reply, hdrs, data in messages
    ]
    assert events == want


def test_ops_are_case_insensitive_and_buffer_is_consumed() -> None:
    parser = Parser()
    events = parser.feed(b"ping\r\npong\r\n+ok\r\nmsg a 1 1\r\nx\r\n")
    assert events == [Ping(), Pong(), Ok(), Msg("a", None, None, b"x", 1)]
    assert parser.feed(b"") == []
    assert parser._buf == bytearray()


def test_large_payload_across_many_chunks() -> None:
    payload = bytes(range(256)) * 4096
    frame = b"MSG big 1 %d\r\n" % len(payload) + payload + b"\r\n"
    chunks = [frame[i : i + 65536] for i in range(0, len(frame), 65536)]
    assert _feed_all(chunks) == [Msg("big", None, None, payload, 1)]


@pytest.mark.parametrize(
    "frame",
    [
        b"BOGUS 1\r\n",
        b"\r\n",
        b"MSG a 1\r\n",
        b"MSG a 1 b c 2\r\n",
        b"MSG a x 2\r\nab\r\n",
        b"MSG a 1 -2\r\n",
        b"MSG a 1 2\r\nabcd\r\n",
        b"HMSG a 1 10 5\r\n",
        b"HMSG a 1 2 2\r\nXX\r\n",
        b"INFO not-json\r\n",
        b"INFO [1]\r\n",
    ],
)
def test_framing_errors_raise(frame: bytes) -> None:
    with pytest.raises(NatsProtocolError):
        Parser().feed(frame)


def test_limits() -> None:
    with pytest.raises(NatsProtocolError):
        Parser(max_payload=10).feed(b"MSG a 1 11\r\n")
    with pytest.raises(NatsProtocolError):
        Parser(max_payload=10).feed(b"HMSG a 1 4 11\r\n")
    parser = Parser(max_control_line=64)
    assert parser.feed(b"PING" + b" " * 50) == []
    with pytest.raises(NatsProtocolError):
        parser.feed(b" " * 20)
    with pytest.raises(NatsProtocolError):
        Parser(max_control_line=64).feed(b"MSG " + b"a" * 80 + b" 1 0\r\n\r\n")


def test_parse_headers() -> None:
    assert parse_headers(b"NATS/1.0\r\n\r\n") == (None, "", {})
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == (503, "", {})
    assert parse_headers(b"NATS/1.0 409 Exceeded MaxWaiting\r\nNats-Pending-Messages: 1\r\n\r\n") == (
        409, "Exceeded MaxWaiting", {"Nats-Pending-Messages": "1"},
    )
    # Repeated names join like HTTP; a value keeps its colons; junk lines are skipped.
    block = b"NATS/1.0\r\nX: a\r\nX: b\r\nUrl: http://h:1/p\r\nno colon here\r\n: empty name\r\n\r\n"
    assert parse_headers(block) == (None, "", {"X": "a, b", "Url": "http://h:1/p"})
    with pytest.raises(NatsProtocolError):
        parse_headers(b"HTTP/1.1 200 OK\r\n\r\n")


def test_malformed_header_content_does_not_break_framing() -> None:
    block = b"NATS/1.0\r\n\xff\xfe garbage\r\nK: \xffv\r\n\r\n"
    frame = b"HMSG s 1 %d %d\r\n" % (len(block), len(block) + 2) + block + b"ok\r\nPING\r\n"
    events = Parser().feed(frame)
    assert events == [Msg("s", None, {"K": "\ufffdv"}, b"ok", 1), Ping()]


def test_encoders() -> None:
    assert PING == b"PING\r\n" and PONG == b"PONG\r\n"
    assert encode_pub("a.b", b"hello") == b"PUB a.b 5\r\nhello\r\n"
    assert encode_pub("a.b", b"", reply="_INBOX.x") == b"PUB a.b _INBOX.x 0\r\n\r\n"
    block = b"NATS/1.0\r\nNats-Msg-Id: 42\r\n\r\n"
    assert encode_headers({"Nats-Msg-Id": "42"}) == block
    assert encode_pub("a", b"xy", headers={"Nats-Msg-Id": "42"}) == (
        b"HPUB a %d %d\r\n" % (len(block), len(block) + 2) + block + b"xy\r\n"
    )
    assert encode_pub("a", b"xy", "r", {}) == b"HPUB a r 12 14\r\nNATS/1.0\r\n\r\nxy\r\n"
    assert encode_sub("a.>", 7) == b"SUB a.> 7\r\n"
    assert encode_sub("a.*", 8, "workers") == b"SUB a.* workers 8\r\n"
    assert encode_unsub(7) == b"UNSUB 7\r\n"
    assert encode_unsub(7, 3) == b"UNSUB 7 3\r\n"
    connect = encode_connect({"verbose": False, "name": "n x"})
    assert connect.startswith(b"CONNECT ") and connect.endswith(b"\r\n")
    assert json.loads(connect[8:]) == {"verbose": False, "name": "n x"}


def test_encoded_headers_parse_back() -> None:
    headers = {"Nats-Msg-Id": "abc-1", "Content-Type": "application/json; charset=utf-8", "Empty": ""}
    assert parse_headers(encode_headers(headers)) == (None, "", headers)


@pytest.mark.parametrize("subject", ["", "a b", "a\tb", "a\r\nPUB x 1", "a\x00", "a\x7f"])
def test_subjects_that_would_break_framing_are_refused(subject: str) -> None:
    with pytest.raises(ValueError, match="invalid NATS"):
        encode_pub(subject, b"")
    with pytest.raises(ValueError, match="invalid NATS"):
        encode_pub("ok", b"", reply=subject)
    with pytest.raises(ValueError, match="invalid NATS"):
        encode_sub(subject, 1)
    with pytest.raises(ValueError, match="invalid NATS"):
        encode_sub("ok", 1, queue=subject)


@pytest.mark.parametrize(
    ("name", "value"), [("", "v"), ("a b", "v"), ("a:b", "v"), ("ok", "v\r\nX: y"), ("ok", "\n")]
)
def test_headers_that_would_break_framing_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="header"):
        encode_pub("s", b"", headers={name: value})


def test_payload_over_max_payload_is_refused() -> None:
    assert encode_pub("s", b"x" * 10, max_payload=10)
    with pytest.raises(NatsPayloadTooLarge):
        encode_pub("s", b"x" * 11, max_payload=10)
    with pytest.raises(NatsPayloadTooLarge):
        encode_pub("s", b"x" * 5, headers={"K": "v"}, max_payload=10)


def test_pure_modules_do_not_load_trio() -> None:
    code = (
        "import sys, nexus.net.nats.protocol, nexus.net.nats.errors; "
        "sys.exit(1 if 'trio' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
