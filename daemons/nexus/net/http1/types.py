"""Records shared by the HTTP/1.1 server, client and their callers.

``Request`` and ``Response`` are what a server handler sees and returns; ``Headers`` is the
read-only view both sides use over the raw ``(lower-cased name, value)`` byte pairs;
``Limits`` and ``Timeouts`` configure the server and client shells; ``ClientResponse`` is
a fully read client response.  Pure: no I/O, no Trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterator

import attrs

__all__ = [
    "ClientResponse",
    "Handler",
    "Headers",
    "Limits",
    "Request",
    "Response",
    "Timeouts",
    "header_key",
]

# Callers look headers up by the same handful of str names thousands of times a second;
# caching the lower-cased latin-1 bytes saves an encode and a lower per lookup.  Bounded so
# that names taken from untrusted input cannot grow it without end.
_KEY_CACHE: dict[str | bytes, bytes] = {}
_KEY_CACHE_MAX = 512


def header_key(name: str | bytes) -> bytes:
    """The lower-cased bytes form in which header names are stored."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[name] = key
    return key


class Headers:
    """Immutable view over ``list[tuple[bytes, bytes]]`` whose names are already lower-case.

    The list is shared, not copied: the parser built it for this message alone.  Lookups
    are linear, which beats building a dict for the dozen headers a request carries.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str | bytes, default: str | None = None) -> str | None:
        """First value of ``name`` (case-insensitive), latin-1 decoded, else ``default``."""
        key = header_key(name)
        for k, v in self._raw:
            if k == key:
                return v.decode("latin-1")
        return default

    def get_bytes(self, name: str | bytes, default: bytes | None = None) -> bytes | None:
        """First raw value of ``name``, for callers that forward it without decoding."""
        key = header_key(name)
        for k, v in self._raw:
            if k == key:
                return v
        return default

    def get_all(self, name: str | bytes) -> list[str]:
        key = header_key(name)
        return [v.decode("latin-1") for k, v in self._raw if k == key]

    def raw(self) -> list[tuple[bytes, bytes]]:
        return self._raw

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        key = header_key(name)
        return any(k == key for k, _ in self._raw)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and other._raw == self._raw

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._raw!r})"


@attrs.define(slots=True, eq=False)
class Request:
    """One parsed request as a handler sees it; the body is complete."""

    method: str
    target: bytes
    path: str
    query: str
    headers: Headers
    body: bytes
    client: tuple[str, int] | None
    http_version: str
    # False when the client asked to close, or spoke HTTP/1.0 without keep-alive.
    keep_alive: bool = True


@attrs.define(slots=True, eq=False)
class Response:
    """What a handler returns.

    Framing is the server's job: ``content-length`` and ``transfer-encoding`` given here are
    dropped (except ``content-length`` on a HEAD answer, which describes the GET body), and
    ``connection: close`` makes the server close after this response.  A ``bytes`` body is
    sent with Content-Length; an async iterable is sent chunked, each item flushed as it
    comes.
    """

    status: int
    headers: list[tuple[bytes, bytes]] = attrs.Factory(list)
    body: bytes | AsyncIterable[bytes] = b""


Handler = Callable[[Request], Awaitable[Response]]


@attrs.frozen
class Limits:
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    # The whole request head must arrive within this (slowloris defence): 408, then close.
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 75.0
    # Past this many requests inside handlers, answer 429 without calling the handler.
    max_inflight: int = 10_000
    max_connections: int = 50_000
    # A client that accepts no response bytes for this long is dropped.
    write_timeout: float = 60.0


@attrs.frozen
class Timeouts:
    connect: float = 5.0
    # From the request sent to the response head.
    first_byte: float = 60.0
    # Between body chunks.
    read: float = 60.0
    pool_acquire: float = 10.0


@attrs.define(slots=True, eq=False)
class ClientResponse:
    """A client response whose body has been read in full."""

    status: int
    headers: Headers
    body: bytes
    http_version: str
