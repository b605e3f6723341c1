"""Event-script tests of the pure parsers in nexus/net/http1/parser.py: no socket, no loop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nexus.net.http1.parser import (
    BODY,
    END_OF_MESSAGE,
    HEAD,
    IDLE,
    Data,
    Event,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Upgrade,
)


def script(events: list[Event]) -> list[object]:
    """Events in a comparable form, with adjacent body pieces merged (their split is free)."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, Data):
            if out and isinstance(out[-1], bytes):
                out[-1] += ev.data
            else:
                out.append(ev.data)
        elif isinstance(ev, RequestHead):
            out.append(
                (
                    ev.method,
                    ev.target,
                    ev.headers,
                    ev.http_version,
                    ev.keep_alive,
                    ev.expect_continue,
                    ev.content_length,
                    ev.chunked,
                )
            )
        elif isinstance(ev, ResponseHead):
            out.append((ev.status, ev.headers, ev.http_version, ev.keep_alive))
        elif isinstance(ev, ProtocolError):
            out.append(("error", ev.status))
        elif isinstance(ev, Upgrade):
            out.append(("upgrade", ev.trailing))
        else:
            out.append(ev)
    return out


def feed_all(parser: RequestParser | ResponseParser, *chunks: bytes) -> list[object]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return script(events)


PIPELINE = (
    b"POST /v1/chat?stream=1 HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    b"GET /health HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\r\n"
    b"PUT /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc"
)
PIPELINE_SCRIPT = [
    (
        "POST",
        b"/v1/chat?stream=1",
        [(b"host", b"gw"), (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "1.1",
        True,
        False,
        None,
        True,
    ),
    b"hello, world",
    END_OF_MESSAGE,
    ("GET", b"/health", [(b"host", b"gw"), (b"expect", b"100-continue")], "1.1", True, True, None, False),
    END_OF_MESSAGE,
    ("PUT", b"/x", [(b"host", b"gw"), (b"content-length", b"3")], "1.1", True, False, 3, False),
    b"abc",
    END_OF_MESSAGE,
]


def test_pipelined_requests_in_one_chunk() -> None:
    assert feed_all(RequestParser(), PIPELINE) == PIPELINE_SCRIPT


@pytest.mark.parametrize("split", range(1, len(PIPELINE)))
def test_every_split_point_gives_the_same_events(split: int) -> None:
    assert feed_all(RequestParser(), PIPELINE[:split], PIPELINE[split:]) == PIPELINE_SCRIPT


def test_byte_by_byte() -> None:
    parser = RequestParser()
    assert feed_all(parser, *(PIPELINE[i : i + 1] for i in range(len(PIPELINE)))) == PIPELINE_SCRIPT
    assert parser.phase == IDLE
    assert parser.message_count == 3


def test_phases_and_message_count() -> None:
    parser = RequestParser()
    assert parser.phase == IDLE
    parser.feed(b"POST / HTTP/1.1\r\nContent-")
    assert (parser.phase, parser.message_count) == (HEAD, 1)
    parser.feed(b"Length: 4\r\n\r\nab")
    assert parser.phase == BODY
    parser.feed(b"cd")
    assert parser.phase == IDLE


@pytest.mark.parametrize(
    ("request_bytes", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
def test_keep_alive(request_bytes: bytes, keep_alive: bool) -> None:
    head = RequestParser().feed(request_bytes)[0]
    assert isinstance(head, RequestHead)
    assert head.keep_alive is keep_alive


def test_expect_continue_only_counts_for_http11() -> None:
    head = RequestParser().feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert not head.expect_continue


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", 400),
        (b"G@T / HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_malformed_requests_are_protocol_errors(request_bytes: bytes, status: int) -> None:
    parser = RequestParser()
    events = script(parser.feed(request_bytes))
    assert events[-1] == ("error", status)
    assert parser.feed(b"GET / HTTP/1.1\r\n\r\n") == []


def test_events_before_an_error_survive() -> None:
    events = script(RequestParser().feed(b"GET /a HTTP/1.1\r\n\r\nBROKEN\r\n\r\n"))
    assert events[1] is END_OF_MESSAGE
    assert events[-1] == ("error", 400)


def test_http10_data_after_close_is_an_error_after_the_request() -> None:
    events = script(RequestParser().feed(b"GET / HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"))
    assert events[1] is END_OF_MESSAGE
    assert events[-1] == ("error", 400)


def test_header_limit() -> None:
    parser = RequestParser(max_header_bytes=100)
    assert script(parser.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n"))[-1] == ("error", 431)
    many = b"".join(b"X-%d: v\r\n" % i for i in range(20))
    assert script(RequestParser(max_header_bytes=100).feed(b"GET / HTTP/1.1\r\n" + many))[-1] == ("error", 431)


def test_header_limit_holds_for_one_endless_line_fed_in_pieces() -> None:
    # httptools buffers a header line until it ends; the stall guard bounds that buffer.
    parser = RequestParser(max_header_bytes=100)
    events = parser.feed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(10):
        events += parser.feed(b"a" * 30)
    assert script(events) == [("error", 431)]


def test_target_limit() -> None:
    parser = RequestParser(max_header_bytes=100)
    assert script(parser.feed(b"GET /" + b"a" * 200))[-1] == ("error", 414)


def test_body_limits() -> None:
    declared = RequestParser(max_body_bytes=10).feed(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    assert script(declared) == [("error", 413)]
    chunked = RequestParser(max_body_bytes=10)
    events = chunked.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    events += chunked.feed(b"6\r\nabcdef\r\n0\r\n\r\n")
    assert script(events)[-1] == ("error", 413)
    exact = RequestParser(max_body_bytes=10).feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")
    assert script(exact)[-1] is END_OF_MESSAGE


def test_trailers_count_against_the_header_limit() -> None:
    parser = RequestParser(max_header_bytes=80)
    events = parser.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    events += parser.feed(b"X-T: " + b"t" * 80 + b"\r\n\r\n")
    assert script(events)[-1] == ("error", 431)


def test_ignored_upgrade_keeps_the_body_and_the_stream() -> None:
    data = (
        b"POST /u HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /next HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"POST /c HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
    )
    expected = feed_all(RequestParser(), data)
    assert [e for e in expected if isinstance(e, bytes)] == [b"abc", b"hi"]
    assert expected.count(END_OF_MESSAGE) == 3
    for split in range(1, len(data)):
        assert feed_all(RequestParser(), data[:split], data[split:]) == expected


def test_connect_ends_http_with_the_tunnel_bytes() -> None:
    parser = RequestParser()
    events = script(parser.feed(b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n\x16\x03\x01"))
    assert events[0][0] == "CONNECT"  # type: ignore[index]
    assert events[0][4] is False  # type: ignore[index]
    assert events[1:] == [END_OF_MESSAGE, ("upgrade", b"\x16\x03\x01")]
    assert parser.feed(b"more") == []


RESPONSES = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nT: x\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
)
RESPONSES_SCRIPT = [
    (200, [(b"content-length", b"5")], "1.1", True),
    b"hello",
    END_OF_MESSAGE,
    (200, [(b"transfer-encoding", b"chunked")], "1.1", True),
    b"abcde",
    END_OF_MESSAGE,
    (204, [], "1.1", True),
    END_OF_MESSAGE,
    (304, [(b"content-length", b"99")], "1.1", True),
    END_OF_MESSAGE,
]


@pytest.mark.parametrize("split", range(1, len(RESPONSES)))
def test_response_every_split_point(split: int) -> None:
    assert feed_all(ResponseParser(), RESPONSES[:split], RESPONSES[split:]) == RESPONSES_SCRIPT


def test_close_delimited_response() -> None:
    parser = ResponseParser()
    events = parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart1")
    events += parser.feed(b"part2")
    events += parser.feed_eof()
    assert script(events) == [(200, [], "1.1", False), b"part1part2", END_OF_MESSAGE]


def test_truncated_response_is_an_error_at_eof() -> None:
    parser = ResponseParser()
    events = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert script(events + parser.feed_eof())[-1] == ("error", 502)
    chunked = ResponseParser()
    chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert script(chunked.feed_eof()) == [("error", 502)]


def test_eof_between_responses_is_not_an_error() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert parser.feed_eof() == []


def test_head_response_has_no_body_and_the_parser_continues() -> None:
    parser = ResponseParser()
    parser.start(head=True)
    events = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert script(events) == [(200, [(b"content-length", b"1000")], "1.1", True), END_OF_MESSAGE]
    parser.start()
    assert script(parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))[1:] == [b"ok", END_OF_MESSAGE]


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTZ/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_malformed_responses(response: bytes) -> None:
    assert script(ResponseParser().feed(response))[-1] == ("error", 502)


def test_response_header_limit() -> None:
    parser = ResponseParser(max_header_bytes=64)
    events = parser.feed(b"HTTP/1.1 200 OK\r\nX: ")
    for _ in range(5):
        events += parser.feed(b"v" * 20)
    assert script(events) == [("error", 502)]


def test_pure_modules_do_not_import_trio() -> None:
    code = (
        "import sys, nexus.net.http1.parser, nexus.net.http1.types, nexus.net.sse; "
        "sys.exit(1 if 'trio' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
