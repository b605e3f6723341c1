"""RESP codec for the Valkey client: command encoding, reply parsing, errors, URLs.

Pure: no sockets, no Trio.  ``encode_command`` and ``encode_pipeline`` turn
arguments into RESP2 arrays of bulk strings; ``ReplyParser`` wraps
``hiredis.Reader`` (fed raw bytes, it hands back complete replies, ``NEED_DATA``
otherwise); ``Script`` precomputes a Lua script's SHA1 and its EVALSHA prefix;
``parse_url`` reads ``redis://``, ``rediss://`` and ``valkey://`` URLs.

Replies stay bytes (no decoding); integers are ``int``, arrays ``list``, nil
``None``.  RESP3 types (maps, sets, doubles, booleans, push) are parsed too, so a
server that answers in RESP3 does not break the reader.

Error handling: a server error reply becomes a ``ValkeyError`` *instance* in the
reply (top level or nested inside an array); the caller decides whether to raise
it.  Bytes that are not RESP make ``ReplyParser.gets`` raise
``ValkeyProtocolError``, after which the parser (and its connection) is
unusable.  ``encode_*`` raise ``TypeError`` for an argument that is not bytes,
str, int or float; ``parse_url`` raises ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import attrs
import hiredis

Arg = bytes | str | int | float

DEFAULT_PORT: Final = 6379


class ValkeyError(Exception):
    """The server answered with an error reply.

    ``message`` is the whole reply text; ``code`` its first word (``ERR``,
    ``WRONGTYPE``, ``NOSCRIPT``, ``WRONGPASS``, ...), which is what callers branch on.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0]


class ValkeyConnectionError(Exception):
    """The server cannot be reached, the connection was lost, or no reply came in time."""


class ValkeyAuthError(ValkeyConnectionError):
    """AUTH was refused, or the server demands a password the URL does not carry.

    A connection error because no command can run; its message carries the
    server's reply so a wrong password reads as one.
    """


class ValkeyProtocolError(ValkeyConnectionError):
    """The server sent bytes that are not RESP; the connection must be dropped."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


# A private sentinel rather than hiredis' default ``False``, which is also a
# legitimate RESP3 boolean reply.
NEED_DATA: Final = _NeedData()


class ReplyParser:
    """hiredis.Reader configured for our errors and sentinel.

    ``feed(data)`` appends received bytes; ``gets()`` returns the next complete
    reply or ``NEED_DATA``.  Both are the reader's own bound methods, so the hot
    path pays no extra Python call.
    """

    __slots__ = ("feed", "gets")

    feed: Callable[[bytes | bytearray], None]
    gets: Callable[[], Any]

    def __init__(self) -> None:
        reader = hiredis.Reader(
            protocolError=ValkeyProtocolError, replyError=ValkeyError, notEnoughData=NEED_DATA
        )
        # hiredis reads any buffer (Trio streams may return bytearray); its stub says str | bytes.
        self.feed = reader.feed  # type: ignore[assignment]
        self.gets = reader.gets

    def replies(self) -> Iterator[Any]:
        """Yield every reply that is complete in the bytes fed so far."""
        gets = self.gets
        reply = gets()
        while reply is not NEED_DATA:
            yield reply
            reply = gets()


_CRLF: Final = b"\r\n"
_ARRAY_HEADERS: Final = tuple(b"*%d\r\n" % n for n in range(32))
_BULK_HEADERS: Final = tuple(b"$%d\r\n" % n for n in range(128))


def _arg_bytes(arg: object) -> bytes:
    # Fallback for what the inline fast path in _append_args does not take:
    # floats and subclasses (str enums, IntEnum).
    if isinstance(arg, bool):
        raise TypeError("a bool is not a Valkey argument; send 0/1 or b'true'/b'false' explicitly")
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytes):
        return bytes(arg)
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    raise TypeError(f"Valkey arguments are bytes, str, int or float, not {type(arg).__name__}")


def _append_args(out: list[bytes], args: Sequence[Any]) -> None:
    # Exact type checks, not isinstance: the common types take one comparison.
    append = out.append
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        else:
            data = _arg_bytes(arg)
        size = len(data)
        append(_BULK_HEADERS[size] if size < 128 else b"$%d\r\n" % size)
        append(data)
        append(_CRLF)


def _array_header(count: int) -> bytes:
    return _ARRAY_HEADERS[count] if count < 32 else b"*%d\r\n" % count


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    if not args:
        raise ValueError("a Valkey command needs at least its name")
    out = [_array_header(len(args))]
    _append_args(out, args)
    return b"".join(out)


def encode_pipeline(commands: Sequence[Sequence[Arg]]) -> bytes:
    """Several commands back to back, for one write."""
    out: list[bytes] = []
    for args in commands:
        if not args:
            raise ValueError("a Valkey command needs at least its name")
        out.append(_array_header(len(args)))
        _append_args(out, args)
    return b"".join(out)


def _script_sha(self: Script) -> str:
    return hashlib.sha1(self.source, usedforsecurity=False).hexdigest()


def _script_prefix(self: Script) -> bytes:
    return b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + _CRLF


def _script_load(self: Script) -> bytes:
    return encode_command((b"SCRIPT", b"LOAD", self.source))


def _to_bytes(source: str | bytes) -> bytes:
    return source.encode() if isinstance(source, str) else source


@attrs.frozen
class Script:
    """A Lua script, its SHA1 and the encoded forms the client sends, computed once."""

    source: bytes = attrs.field(converter=_to_bytes)
    sha: str = attrs.field(init=False, default=attrs.Factory(_script_sha, takes_self=True))
    _evalsha_prefix: bytes = attrs.field(
        init=False, repr=False, default=attrs.Factory(_script_prefix, takes_self=True)
    )
    load_command: bytes = attrs.field(
        init=False, repr=False, default=attrs.Factory(_script_load, takes_self=True)
    )

    def encode_evalsha(self, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
        """``EVALSHA sha numkeys key... arg...`` as RESP."""
        nkeys = len(keys)
        out = [_array_header(3 + nkeys + len(args)), self._evalsha_prefix]
        _append_args(out, (nkeys,))
        _append_args(out, keys)
        _append_args(out, args)
        return b"".join(out)


@attrs.frozen
class Endpoint:
    """Where and how to connect, as read from a URL."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False

    def handshake(self) -> list[tuple[bytes, ...]]:
        """Commands every new connection sends first: AUTH and SELECT when needed, then PING.

        The PING makes a server that wants a password say so (NOAUTH) at
        connect time instead of on the first real command.
        """
        commands: list[tuple[bytes, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append((b"AUTH", self.username.encode(), self.password.encode()))
            else:
                commands.append((b"AUTH", self.password.encode()))
        if self.db:
            commands.append((b"SELECT", b"%d" % self.db))
        commands.append((b"PING",))
        return commands


_SCHEMES: Final = {"redis": False, "valkey": False, "rediss": True, "valkeys": True}


def parse_url(url: str) -> Endpoint:
    """``redis://[user:password@]host[:port][/db]``; ``rediss://`` is TLS, ``valkey(s)://`` aliases."""
    parts = urlsplit(url)
    tls = _SCHEMES.get(parts.scheme)
    if tls is None:
        raise ValueError(f"Valkey URL scheme must be one of {sorted(_SCHEMES)}, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"Valkey URL has no host: {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"Valkey URL has a bad port: {exc}") from None
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"Valkey URL database must be a number, got {path!r}") from None
    if db < 0:
        raise ValueError(f"Valkey URL database must not be negative, got {db}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:
        raise ValueError("Valkey URL names a user but no password (redis://user:password@host)")
    return Endpoint(host=parts.hostname, port=port, db=db, username=username, password=password, tls=tls)
