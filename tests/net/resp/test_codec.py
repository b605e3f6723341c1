"""The pure RESP codec: encoding, hiredis parsing fed in pieces, errors, scripts, URLs. No sockets."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus.net.resp.codec import (
    NEED_DATA,
    Endpoint,
    ReplyParser,
    Script,
    ValkeyConnectionError,
    ValkeyError,
    ValkeyProtocolError,
    encode_command,
    encode_pipeline,
    parse_url,
)


def _as_bytes(arg: bytes | str | int | float) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int):
        return str(arg).encode()
    return repr(arg).encode()


def _parse_all(data: bytes) -> list[Any]:
    parser = ReplyParser()
    parser.feed(data)
    return list(parser.replies())


def test_encode_command_exact_bytes() -> None:
    assert encode_command((b"SET", "kéy", 42)) == b"*3\r\n$3\r\nSET\r\n$4\r\nk\xc3\xa9y\r\n$2\r\n42\r\n"
    assert encode_command((b"INCRBYFLOAT", b"k", 1.5)) == (
        b"*3\r\n$11\r\nINCRBYFLOAT\r\n$1\r\nk\r\n$3\r\n1.5\r\n"
    )
    assert encode_command((b"SET", b"", -7)) == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$2\r\n-7\r\n"


def test_encode_sizes_past_the_header_tables() -> None:
    big = b"x" * 1000
    many = [b"RPUSH", b"k", *(b"%d" % i for i in range(40))]
    assert encode_command((b"SET", b"k", big)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + big + b"\r\n"
    assert _parse_all(encode_command(many)) == [many]


def test_encode_rejects_what_valkey_cannot_take() -> None:
    with pytest.raises(TypeError, match="bool"):
        encode_command((b"SET", b"k", True))
    with pytest.raises(TypeError, match="NoneType"):
        encode_command((b"SET", b"k", None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        encode_command(())
    with pytest.raises(ValueError, match="name"):
        encode_pipeline([(b"PING",), ()])


def test_encode_takes_subclasses() -> None:
    import enum

    class Kind(enum.StrEnum):
        A = "alpha"

    class Level(enum.IntEnum):
        HIGH = 3

    class Key(bytes):
        pass

    assert _parse_all(encode_command((b"SET", Kind.A, Level.HIGH, Key(b"kk")))) == [
        [b"SET", b"alpha", b"3", b"kk"]
    ]


args_strategy = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=50),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=40,
)


@given(st.lists(args_strategy, min_size=1, max_size=5))
def test_encoding_round_trips_through_hiredis(commands: list[list[Any]]) -> None:
    # A request is itself valid RESP (an array of bulk strings), so hiredis reads it back.
    expected = [[_as_bytes(a) for a in args] for args in commands]
    assert _parse_all(encode_pipeline(commands)) == expected
    assert b"".join(encode_command(args) for args in commands) == encode_pipeline(commands)


# What a server may send, and what the parser must hand back for it.
REPLY_STREAM = (
    b"+OK\r\n"
    b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    b":-12\r\n"
    b"$5\r\nhe\r\no\r\n"
    b"$-1\r\n"
    b"*-1\r\n"
    b"*0\r\n"
    b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n-ERR inner\r\n$0\r\n\r\n"
    # RESP3 types, in case a server answers in RESP3 without HELLO from us.
    b"%1\r\n+k\r\n:2\r\n"
    b"~2\r\n:1\r\n:2\r\n"
    b",2.5\r\n"
    b"#f\r\n"
    b"_\r\n"
)


def _check_replies(replies: list[Any]) -> None:
    assert len(replies) == 13
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ValkeyError)
    assert replies[1].code == "WRONGTYPE"
    assert replies[1].message == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert replies[2:7] == [-12, b"he\r\no", None, None, []]
    assert replies[7][0] == 1
    assert replies[7][1][0] == b"a"
    assert isinstance(replies[7][1][1], ValkeyError)
    assert replies[7][1][1].code == "ERR"
    assert replies[7][2] == b""
    assert replies[8:] == [{b"k": 2}, [1, 2], 2.5, False, None]
    # RESP3 false must not be mistaken for "need more data".
    assert replies[11] is False


def test_parser_whole_stream() -> None:
    _check_replies(_parse_all(REPLY_STREAM))


def test_parser_fed_one_byte_at_a_time() -> None:
    parser = ReplyParser()
    replies: list[Any] = []
    for i in range(len(REPLY_STREAM)):
        parser.feed(REPLY_STREAM[i : i + 1])
        replies.extend(parser.replies())
    _check_replies(replies)
    assert parser.gets() is NEED_DATA


@given(st.lists(st.integers(min_value=0, max_value=len(REPLY_STREAM)), max_size=20))
def test_parser_fed_at_any_split_points(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(REPLY_STREAM)]
    parser = ReplyParser()
    replies: list[Any] = []
    for start, end in itertools.pairwise(bounds):
        parser.feed(REPLY_STREAM[start:end])
        replies.extend(parser.replies())
    _check_replies(replies)


def test_parser_incomplete_bulk_waits_for_its_end() -> None:
    parser = ReplyParser()
    parser.feed(b"$10\r\n01234")
    assert parser.gets() is NEED_DATA
    parser.feed(b"56789\r")
    assert parser.gets() is NEED_DATA
    parser.feed(b"\n:7\r")
    assert parser.gets() == b"0123456789"
    assert parser.gets() is NEED_DATA
    parser.feed(b"\n")
    assert parser.gets() == 7


def test_parser_garbage_is_a_protocol_error() -> None:
    parser = ReplyParser()
    parser.feed(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(ValkeyProtocolError) as info:
        parser.gets()
    # Callers that handle "connection unusable" catch it as a connection error.
    assert isinstance(info.value, ValkeyConnectionError)


def test_error_code_of_a_one_word_error() -> None:
    assert _parse_all(b"-NOSCRIPT\r\n")[0].code == "NOSCRIPT"


def test_script_precomputes_sha_and_commands() -> None:
    source = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    script = Script(source)
    assert script.source == source.encode()
    assert script.sha == hashlib.sha1(source.encode()).hexdigest()
    assert Script(source.encode()) == script
    assert script.encode_evalsha([b"k1", "k2"], [5, 1.5]) == encode_command(
        (b"EVALSHA", script.sha, 2, b"k1", b"k2", 5, 1.5)
    )
    assert script.encode_evalsha([], []) == encode_command((b"EVALSHA", script.sha, 0))
    assert script.load_command == encode_command((b"SCRIPT", b"LOAD", source))


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("redis://127.0.0.1:6379/0", Endpoint("127.0.0.1", 6379, 0)),
        ("redis://cache.internal", Endpoint("cache.internal", 6379, 0)),
        ("valkey://h:7000/3", Endpoint("h", 7000, 3)),
        ("rediss://h/1", Endpoint("h", 6379, 1, tls=True)),
        ("valkeys://h", Endpoint("h", 6379, 0, tls=True)),
        ("redis://:s3cr%40t@h:1/", Endpoint("h", 1, 0, password="s3cr@t")),
        ("redis://app%2Fuser:pw@[::1]:6380/2", Endpoint("::1", 6380, 2, username="app/user", password="pw")),
    ],
)
def test_parse_url(url: str, endpoint: Endpoint) -> None:
    assert parse_url(url) == endpoint


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:6379", "scheme"),
        ("redis://:6379/0", "no host"),
        ("redis://h:port/0", "port"),
        ("redis://h/zero", "database must be a number"),
        ("redis://h/-1", "negative"),
        ("redis://alice@h", "no password"),
    ],
)
def test_parse_url_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_endpoint_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(parse_url("redis://u:hunter2@h/0"))


def test_handshake_commands() -> None:
    assert parse_url("redis://h").handshake() == [(b"PING",)]
    assert parse_url("redis://:pw@h/4").handshake() == [(b"AUTH", b"pw"), (b"SELECT", b"4"), (b"PING",)]
    assert parse_url("redis://al:pw@h").handshake() == [(b"AUTH", b"al", b"pw"), (b"PING",)]


def test_codec_does_not_load_trio() -> None:
    code = "import sys, nexus.net.resp.codec; sys.exit('trio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
