"""Sans-IO HTTP/1.1 message parsing on httptools (llhttp), h11-style.

``RequestParser`` (server side) and ``ResponseParser`` (client side) own an httptools
callback parser whose callbacks append event records to a list; ``feed(data)`` returns
the events that ``data`` completed, in wire order:

    RequestHead | ResponseHead, then Data*, then END_OF_MESSAGE, repeated per message;
    ProtocolError as the last event when the bytes are malformed or break a limit;
    Upgrade as the last event after a CONNECT request (the rest is tunnel bytes).

Errors are events rather than exceptions so that the messages completed earlier in the
same chunk (pipelining) are not lost.  After ProtocolError or Upgrade the parser is dead
and every later ``feed`` returns ``[]``.  No I/O and no Trio here; the shells in
``server.py`` and ``client.py`` drive these objects.

Strictness is llhttp's (Content-Length with Transfer-Encoding, duplicate Content-Length,
bad chunk syntax, obs-fold, bare LF are all rejected) plus ours: a request
Transfer-Encoding other than plain ``chunked`` is answered 501, since we do not decode
content codings.  Header bytes are bounded by ``max_header_bytes`` (request line,
header lines and trailers together), request bodies by ``max_body_bytes``.  Upgrade
requests other than CONNECT are treated as plain requests (RFC 9110 §7.8 lets a server
ignore Upgrade), body included.
"""

from __future__ import annotations

import attrs
import httptools

__all__ = [
    "BODY",
    "END_OF_MESSAGE",
    "HEAD",
    "IDLE",
    "Data",
    "EndOfMessage",
    "Event",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "Upgrade",
]

# Parser phases: between messages, inside a message head, inside a message body.
IDLE = 0
HEAD = 1
BODY = 2


@attrs.define(slots=True, eq=False)
class RequestHead:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    http_version: str
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    chunked: bool


@attrs.define(slots=True, eq=False)
class ResponseHead:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    http_version: str
    keep_alive: bool


@attrs.define(slots=True, eq=False)
class Data:
    data: bytes


class EndOfMessage:
    """The current message is complete; use the ``END_OF_MESSAGE`` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


END_OF_MESSAGE = EndOfMessage()


@attrs.define(slots=True, eq=False)
class ProtocolError:
    """The input is unusable; ``status`` is the HTTP status a server should answer with."""

    status: int
    reason: str


@attrs.define(slots=True, eq=False)
class Upgrade:
    """A CONNECT request ended the HTTP part of the stream; ``trailing`` already followed it."""

    trailing: bytes


Event = RequestHead | ResponseHead | Data | EndOfMessage | ProtocolError | Upgrade


class _Reject(Exception):
    """Raised inside a callback to stop llhttp; becomes a ProtocolError event."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _StopAfterHead(Exception):
    """Raised inside a callback after the head of a response to HEAD: no body follows."""


_METHODS: dict[bytes, str] = {}


def _method(raw: bytes) -> str:
    method = _METHODS.get(raw)
    if method is None:
        # llhttp only returns names from its fixed method table, so this stays small.
        method = _METHODS[raw] = raw.decode("ascii")
    return method


class RequestParser:
    """Parses a stream of requests.  See the module docstring for the event grammar."""

    __slots__ = (
        "_body_bytes",
        "_connect",
        "_content_length",
        "_dead",
        "_events",
        "_expect",
        "_head_bytes",
        "_headers",
        "_max_body",
        "_max_header",
        "_p",
        "_progress",
        "_resume_body",
        "_stall",
        "_synthetic",
        "_te",
        "_trailers",
        "_url",
        "message_count",
        "phase",
    )

    def __init__(self, *, max_header_bytes: int = 64 * 1024, max_body_bytes: int = 32 * 1024 * 1024) -> None:
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._events: list[Event] = []
        self._dead = False
        self._progress = False
        self._stall = 0
        self._synthetic = False
        self._resume_body = False
        self._connect = False
        self.phase = IDLE
        # Incremented as each message begins, so a shell can restart a per-head timer.
        self.message_count = 0
        self._reset_message()
        self._p = httptools.HttpRequestParser(self)

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._content_length: int | None = None
        self._te: bytes | None = None
        self._expect = False
        self._body_bytes = 0
        self._trailers = False

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._progress = True
        if self._synthetic:
            return
        self.phase = HEAD
        self.message_count += 1
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._progress = True
        if self._synthetic:
            return
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_header:
            raise _Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        if self._synthetic:
            return
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_header:
            raise _Reject(431, "request header fields too large")
        if self._trailers:
            return
        name = name.lower()
        self._headers.append((name, value))
        if name == b"content-length":
            # llhttp has checked the digits and rejected duplicates.
            self._content_length = int(value)
        elif name == b"transfer-encoding":
            self._te = value
        elif name == b"expect":
            self._expect = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self._progress = True
        if self._synthetic:
            self._synthetic = False
            return
        p = self._p
        te = self._te
        if te is not None and te.strip().lower() != b"chunked":
            raise _Reject(501, "unsupported transfer-encoding")
        length = self._content_length
        if length is not None and length > self._max_body:
            raise _Reject(413, "request body too large")
        self._trailers = True
        self.phase = BODY
        method = _method(p.get_method())
        version = p.get_http_version()
        keep_alive = p.should_keep_alive()
        if p.should_upgrade():
            if method == "CONNECT":
                self._connect = True
                keep_alive = False
            elif te is not None or length:
                # llhttp will skip this body as upgraded bytes; feed() re-frames it.
                self._resume_body = True
        self._events.append(
            RequestHead(
                method,
                self._url,
                self._headers,
                version,
                keep_alive,
                self._expect and version == "1.1",
                length,
                te is not None,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise _Reject(413, "request body too large")
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._progress = True
        if self._resume_body:
            return
        self.phase = IDLE
        self._events.append(END_OF_MESSAGE)

    # -- public ----------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse ``data``; return the events it completed (possibly none)."""
        if self._dead:
            return []
        self._progress = False
        try:
            self._feed(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Reject):
                raise
            self._fail(cause.status, cause.reason)
        except httptools.HttpParserError as exc:
            self._fail(400, str(exc) or "malformed request")
        else:
            if self.phase != IDLE and not self._dead:
                self._guard_stall(len(data))
        events = self._events
        self._events = []
        return events

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        while True:
            try:
                self._p.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                rest = data[exc.args[0] :]
            if self._connect:
                self._events.append(Upgrade(bytes(rest)))
                self._dead = True
                return
            if self._resume_body:
                # Frame the skipped body exactly as the client declared it, on a fresh
                # llhttp whose synthetic head produces no events.
                self._resume_body = False
                self._synthetic = True
                self._p = httptools.HttpRequestParser(self)
                if self._te is not None:
                    self._p.feed_data(b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n")
                else:
                    length = self._content_length or 0
                    self._p.feed_data(b"PUT / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % length)
            data = rest

    def _guard_stall(self, n: int) -> None:
        # httptools buffers a header or trailer line until it ends, out of our callbacks'
        # sight; count bytes that made no visible progress so that buffer stays bounded.
        if self._progress:
            self._stall = 0
            return
        self._stall += n
        if self._stall > self._max_header:
            self._fail(431, "request header fields too large")

    def _fail(self, status: int, reason: str) -> None:
        self._dead = True
        self._events.append(ProtocolError(status, reason))


class ResponseParser:
    """Parses the responses on one client connection.

    Call ``start(head=...)`` before each response so that the answer to a HEAD request is
    known to have no body; ``feed_eof()`` when the peer closes, which completes a body
    delimited by the connection close.  Informational (1xx) responses are skipped.
    """

    __slots__ = (
        "_content_length",
        "_dead",
        "_events",
        "_head_bytes",
        "_head_request",
        "_headers",
        "_informational",
        "_max_header",
        "_p",
        "_progress",
        "_stall",
        "_te",
        "_trailers",
        "_until_eof",
        "phase",
    )

    def __init__(self, *, max_header_bytes: int = 256 * 1024) -> None:
        self._max_header = max_header_bytes
        self._events: list[Event] = []
        self._dead = False
        self._progress = False
        self._stall = 0
        self._head_request = False
        self._informational = False
        self._until_eof = False
        self.phase = IDLE
        self._reset_message()
        self._p = httptools.HttpResponseParser(self)

    def _reset_message(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._content_length: int | None = None
        self._te = False
        self._trailers = False

    def start(self, *, head: bool = False) -> None:
        """Announce the next response; ``head`` when it answers a HEAD request."""
        self._head_request = head

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._progress = True
        self.phase = HEAD
        self._reset_message()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_header:
            raise _Reject(502, "response header fields too large")
        if self._trailers:
            return
        name = name.lower()
        self._headers.append((name, value))
        if name == b"content-length":
            self._content_length = int(value)
        elif name == b"transfer-encoding":
            self._te = True

    def on_headers_complete(self) -> None:
        self._progress = True
        p = self._p
        status = p.get_status_code()
        if status < 200:
            if status == 101:
                raise _Reject(502, "unexpected protocol switch")
            self._informational = True
            return
        self._trailers = True
        self.phase = BODY
        self._events.append(ResponseHead(status, self._headers, p.get_http_version(), p.should_keep_alive()))
        if self._head_request:
            raise _StopAfterHead
        self._until_eof = not self._te and self._content_length is None and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._progress = True
        if self._informational:
            self._informational = False
            self.phase = IDLE
            return
        self.phase = IDLE
        self._events.append(END_OF_MESSAGE)

    # -- public ----------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse ``data``; return the events it completed (possibly none)."""
        if self._dead:
            return []
        self._progress = False
        try:
            self._p.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopAfterHead):
                # llhttp would wait for a body that never comes; a fresh parser takes the
                # next response.  Bytes after this head in the same chunk would be a
                # server bug (a body on a HEAD answer) and are dropped.
                self._events.append(END_OF_MESSAGE)
                self.phase = IDLE
                self._head_request = False
                self._p = httptools.HttpResponseParser(self)
            elif isinstance(cause, _Reject):
                self._fail(cause.status, cause.reason)
            else:
                raise
        except httptools.HttpParserError as exc:
            self._fail(502, str(exc) or "malformed response")
        except httptools.HttpParserUpgrade:
            self._fail(502, "unexpected protocol upgrade")
        else:
            if self.phase != IDLE:
                if self._progress:
                    self._stall = 0
                else:
                    self._stall += len(data)
                    if self._stall > self._max_header:
                        self._fail(502, "response header fields too large")
        events = self._events
        self._events = []
        return events

    def feed_eof(self) -> list[Event]:
        """The peer closed: complete a close-delimited body, or report the truncation."""
        if self._dead or self.phase == IDLE:
            return []
        self._dead = True
        if self.phase == BODY and self._until_eof:
            self.phase = IDLE
            return [END_OF_MESSAGE]
        return [ProtocolError(502, "connection closed mid-response")]

    def _fail(self, status: int, reason: str) -> None:
        self._dead = True
        self._events.append(ProtocolError(status, reason))
