"""The NATS client protocol, sans-IO: server bytes in, frame records out; commands in, bytes out.

:class:`Parser` turns the server's byte stream into ``Info``, ``Msg``, ``Ping``,
``Pong``, ``Ok`` and ``Err`` records.  It keeps whatever a chunk leaves
incomplete (half a control line, half a payload) for the next ``feed``, so the
records do not depend on where the transport split the stream.  The ``encode_*``
functions build CONNECT, PUB/HPUB, SUB and UNSUB; ``encode_headers`` and
``parse_headers`` handle the ``NATS/1.0`` header block, whose status line carries
the server's status codes (503 no responders, 404/408/409 on JetStream pulls).

Nothing here touches a socket or imports Trio.

Error handling: a framing error (unknown operation, malformed control line,
payload not followed by CRLF, a size over the limits) raises
:class:`~nexus.net.nats.errors.NatsProtocolError`; after that the stream cannot
be resynchronised and the caller drops the connection.  A malformed header
*content* is not a framing error: any publisher can send one, so a bad header
line is skipped instead of tearing down the connection that carries everyone
else's messages.  The encoders raise ``ValueError`` for a subject, queue group or
header that would break the framing (whitespace, CR/LF, control characters),
and ``NatsPayloadTooLarge`` (also a ``ValueError``) for a frame over ``max_payload``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from nexus.net.nats.errors import NatsPayloadTooLarge, NatsProtocolError

CRLF = b"\r\n"
PING = b"PING\r\n"
PONG = b"PONG\r\n"
_HEADER_VERSION = b"NATS/1.0"
_HEADER_END = b"\r\n\r\n"

# Control lines from the server are short except INFO, which lists cluster URLs.
DEFAULT_MAX_CONTROL_LINE = 1 << 20
# The server's own ceiling for max_payload is 64 MiB.
DEFAULT_MAX_PAYLOAD = 64 << 20

# The server splits control lines on whitespace; anything at or below space
# (and DEL) in a subject would shift the fields of the frame.
_BAD_TOKEN = re.compile(r"[\x00-\x20\x7f]")
_BAD_HEADER_NAME = re.compile(r"[\x00-\x20\x7f:]")
_BAD_HEADER_VALUE = re.compile(r"[\r\n]")


@attrs.define(slots=True)
class Msg:
    """A message delivered by MSG or HMSG.

    ``headers`` is None for a plain MSG and a dict (possibly empty) for HMSG.
    ``status`` and ``description`` come from the header block's status line
    (``NATS/1.0 503``): None and "" for an ordinary message.
    """

    subject: str
    reply: str | None
    headers: Mapping[str, str] | None
    data: bytes
    sid: int = 0
    status: int | None = None
    description: str = ""


@attrs.frozen(slots=True)
class Info:
    """The server's INFO object, sent on connect and again when the cluster changes."""

    info: Mapping[str, Any]


@attrs.frozen(slots=True)
class Ping:
    pass


@attrs.frozen(slots=True)
class Pong:
    pass


@attrs.frozen(slots=True)
class Ok:
    pass


@attrs.frozen(slots=True)
class Err:
    """``-ERR``: the server's message without its quotes."""

    message: str


Event = Msg | Info | Ping | Pong | Ok | Err

_PING_EVENT = Ping()
_PONG_EVENT = Pong()
_OK_EVENT = Ok()


def _size(raw: bytes) -> int:
    if not raw.isdigit():
        raise NatsProtocolError(f"bad size field {raw!r}")
    return int(raw)


class Parser:
    """Incremental parser of the server-to-client byte stream.

    ``feed`` returns every record that the bytes received so far complete; bytes
    of an incomplete frame are kept.  ``max_control_line`` bounds how much is
    buffered while looking for a CRLF, ``max_payload`` the size a MSG may
    announce; either limit exceeded raises ``NatsProtocolError``.
    """

    def __init__(
        self, *, max_control_line: int = DEFAULT_MAX_CONTROL_LINE, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        self.max_control_line = max_control_line
        self.max_payload = max_payload
        self._buf = bytearray()
        # A MSG/HMSG whose control line was parsed but whose payload has not all
        # arrived: (subject, sid, reply, header_len, total_len).
        self._pending: tuple[str, int, str | None, int, int] | None = None

    def feed(self, data: bytes | bytearray) -> list[Event]:
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        end_all = len(buf)
        # One view for the whole pass: slices of it copy once, and it is released
        # before the consumed prefix is deleted (a live view would pin the buffer).
        with memoryview(buf) as view:
            while True:
                pending = self._pending
                if pending is not None:
                    subject, sid, reply, hlen, total = pending
                    end = pos + total
                    if end_all < end + 2:
                        break
                    if view[end : end + 2] != CRLF:
                        raise NatsProtocolError("message payload not followed by CRLF")
                    if hlen < 0:
                        events.append(Msg(subject, reply, None, bytes(view[pos:end]), sid))
                    else:
                        status, description, headers = parse_headers(bytes(view[pos : pos + hlen]))
                        payload = bytes(view[pos + hlen : end])
                        events.append(Msg(subject, reply, headers, payload, sid, status, description))
                    self._pending = None
                    pos = end + 2
                    continue
                nl = buf.find(CRLF, pos)
                if nl < 0:
                    if end_all - pos > self.max_control_line:
                        raise NatsProtocolError("control line exceeds the limit")
                    break
                if nl - pos > self.max_control_line:
                    raise NatsProtocolError("control line exceeds the limit")
                line = bytes(view[pos:nl])
                pos = nl + 2
                event = self._control(line)
                if event is not None:
                    events.append(event)
        del buf[:pos]
        return events

    def _control(self, line: bytes) -> Event | None:
        """Parse one control line; a MSG/HMSG only sets the pending payload and returns None."""
        if line.startswith(b"MSG "):
            self._msg(line.split())
            return None
        if line.startswith(b"HMSG "):
            self._hmsg(line.split())
            return None
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op == b"PING":
            return _PING_EVENT
        if op == b"PONG":
            return _PONG_EVENT
        if op == b"+OK":
            return _OK_EVENT
        if op == b"-ERR":
            return Err(rest.strip().strip(b"'").decode("utf-8", "replace"))
        if op == b"INFO":
            try:
                info = json.loads(rest)
            except ValueError as exc:
                raise NatsProtocolError(f"INFO is not JSON: {exc}") from None
            if not isinstance(info, dict):
                raise NatsProtocolError("INFO is not a JSON object")
            return Info(info)
        if op == b"MSG":
            self._msg(line.split())
            return None
        if op == b"HMSG":
            self._hmsg(line.split())
            return None
        raise NatsProtocolError(f"unknown operation {line[:32]!r}")

    def _msg(self, parts: list[bytes]) -> None:
        # MSG <subject> <sid> [reply-to] <#bytes>
        if len(parts) not in (4, 5):
            raise NatsProtocolError(f"malformed MSG line {b' '.join(parts)[:200]!r}")
        total = _size(parts[-1])
        if total > self.max_payload:
            raise NatsProtocolError(f"MSG of {total} bytes exceeds the limit")
        reply = parts[3].decode() if len(parts) == 5 else None
        self._pending = (parts[1].decode(), _size(parts[2]), reply, -1, total)

    def _hmsg(self, parts: list[bytes]) -> None:
        # HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        if len(parts) not in (5, 6):
            raise NatsProtocolError(f"malformed HMSG line {b' '.join(parts)[:200]!r}")
        hlen = _size(parts[-2])
        total = _size(parts[-1])
        if hlen > total or total > self.max_payload:
            raise NatsProtocolError(f"HMSG sizes {hlen}/{total} are inconsistent or over the limit")
        reply = parts[3].decode() if len(parts) == 6 else None
        self._pending = (parts[1].decode(), _size(parts[2]), reply, hlen, total)


def parse_headers(block: bytes) -> tuple[int | None, str, dict[str, str]]:
    """Parse a ``NATS/1.0`` header block into (status, description, headers).

    A header name repeated in the block keeps its values joined by ", ", as
    HTTP does; lines without a colon are skipped (see the module docstring).
    """
    if not block.startswith(_HEADER_VERSION):
        raise NatsProtocolError(f"header block does not start with NATS/1.0: {block[:32]!r}")
    text = block.decode("utf-8", "replace")
    lines = text.split("\r\n")
    status: int | None = None
    description = ""
    status_line = lines[0][len(_HEADER_VERSION) :].strip()
    if status_line:
        code, _, description = status_line.partition(" ")
        if len(code) == 3 and code.isdigit():
            status = int(code)
            description = description.strip()
        else:
            description = status_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name:
            continue
        value = value.strip()
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return status, description, headers


def encode_headers(headers: Mapping[str, str]) -> bytes:
    parts = [_HEADER_VERSION, CRLF]
    for name, value in headers.items():
        if not name or _BAD_HEADER_NAME.search(name):
            raise ValueError(f"invalid NATS header name {name!r}")
        if _BAD_HEADER_VALUE.search(value):
            raise ValueError(f"NATS header {name!r} has CR or LF in its value")
        parts.append(f"{name}: {value}\r\n".encode())
    parts.append(CRLF)
    return b"".join(parts)


def check_subject(subject: str, what: str = "subject") -> bytes:
    """Return the subject as bytes, or raise ``ValueError`` if it would break a frame."""
    if not subject or _BAD_TOKEN.search(subject):
        raise ValueError(f"invalid NATS {what} {subject!r}")
    return subject.encode()


def encode_connect(options: Mapping[str, Any]) -> bytes:
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + CRLF


def encode_pub(
    subject: str,
    payload: bytes,
    reply: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> bytes:
    """PUB, or HPUB when ``headers`` is given (an empty mapping still sends a header block).

    ``max_payload`` is the server's limit on header block plus payload: a frame
    over it raises ``NatsPayloadTooLarge`` here, because the server would answer
    it by closing the connection.
    """
    subj = check_subject(subject)
    if headers is None:
        if len(payload) > max_payload:
            raise NatsPayloadTooLarge(f"payload of {len(payload)} bytes exceeds max_payload {max_payload}")
        if reply is None:
            head = b"PUB %s %d\r\n" % (subj, len(payload))
        else:
            head = b"PUB %s %s %d\r\n" % (subj, check_subject(reply, "reply subject"), len(payload))
        return b"".join((head, payload, CRLF))
    block = encode_headers(headers)
    hlen = len(block)
    if hlen + len(payload) > max_payload:
        raise NatsPayloadTooLarge(f"headers and payload of {hlen + len(payload)} bytes exceed {max_payload}")
    total = hlen + len(payload)
    if reply is None:
        head = b"HPUB %s %d %d\r\n" % (subj, hlen, total)
    else:
        head = b"HPUB %s %s %d %d\r\n" % (subj, check_subject(reply, "reply subject"), hlen, total)
    return b"".join((head, block, payload, CRLF))


def encode_sub(subject: str, sid: int, queue: str | None = None) -> bytes:
    subj = check_subject(subject)
    if queue is None:
        return b"SUB %s %d\r\n" % (subj, sid)
    return b"SUB %s %s %d\r\n" % (subj, check_subject(queue, "queue group"), sid)


def encode_unsub(sid: int, max_msgs: int | None = None) -> bytes:
    if max_msgs is None:
        return b"UNSUB %d\r\n" % sid
    return b"UNSUB %d %d\r\n" % (sid, max_msgs)
