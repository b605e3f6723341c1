"""Server-sent events: a framer and an incremental parser (WHATWG HTML, "event stream").

``SSEParser.feed(bytes)`` takes the stream in chunks split anywhere (inside a CRLF,
inside a multi-byte UTF-8 character, inside a field name) and returns the events those
bytes completed.  Lines end at CRLF, LF or CR; a leading BOM is dropped; comment lines
(``:``) and unknown fields are ignored; a block without ``data`` dispatches nothing.
Invalid UTF-8 decodes to U+FFFD, as the spec says.  ``encode_event`` frames one event.

``SSEEvent.id`` and ``SSEEvent.retry`` carry the ``id`` and ``retry`` fields written in
that event's own block (None when absent); the spec's sticky "last event ID" is
``SSEParser.last_event_id``.  A line longer than ``max_line_chars`` raises
``SSEProtocolError`` so an endless line cannot grow memory without bound.  Pure: no I/O.
"""

from __future__ import annotations

import codecs

import attrs

__all__ = ["SSEEvent", "SSEParser", "SSEProtocolError", "encode_event"]


class SSEProtocolError(ValueError):
    pass


@attrs.define(slots=True, eq=True)
class SSEEvent:
    event: str | None
    data: str
    id: str | None = None
    retry: int | None = None


class SSEParser:
    __slots__ = (
        "_data",
        "_decoder",
        "_event",
        "_id",
        "_max_line",
        "_partial",
        "_partial_len",
        "_retry",
        "_skip_lf",
        "_started",
        "last_event_id",
    )

    def __init__(self, *, max_line_chars: int = 16 * 1024 * 1024) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max_line = max_line_chars
        self._partial: list[str] = []
        self._partial_len = 0
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id = ""

    def feed(self, data: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if "\r" in text:
            # A CR that ends this chunk ends a line; an LF opening the next chunk is its pair.
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._hold(text)
            return []
        lines = text.split("\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
            if len(lines[0]) > self._max_line:
                raise SSEProtocolError("event stream line too long")
        self._hold(lines.pop())
        events: list[SSEEvent] = []
        for line in lines:
            if line:
                self._field(line)
            elif self._data:
                events.append(SSEEvent(self._event, "\n".join(self._data), self._id, self._retry))
                self._data = []
                self._event = self._id = self._retry = None
            else:
                self._event = self._id = self._retry = None
        return events

    def _hold(self, text: str) -> None:
        if text:
            self._partial.append(text)
            self._partial_len += len(text)
            if self._partial_len > self._max_line:
                raise SSEProtocolError("event stream line too long")

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if not name:
            return  # a comment
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)


def _lines(data: str) -> list[str]:
    return data.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def encode_event(
    data: bytes | str, event: str | None = None, *, id: str | None = None, retry: int | None = None
) -> bytes:
    """One event, each line of ``data`` in its own ``data:`` field, ended by a blank line."""
    if (
        event is None
        and id is None
        and retry is None
        and isinstance(data, bytes)
        and b"\n" not in data
        and b"\r" not in data
    ):
        return b"data: " + data + b"\n\n"
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    head = ""
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("event name must be a single line")
        head = f"event: {event}\n"
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("event id must be a single line without NUL")
        head += f"id: {id}\n"
    if retry is not None:
        head += f"retry: {int(retry)}\n"
    if "\n" not in text and "\r" not in text:
        return f"{head}data: {text}\n\n".encode()
    body = "".join(f"data: {line}\n" for line in _lines(text))
    return f"{head}{body}\n".encode()
