"""What of a request or response body goes into the traffic event: the capture decision.

Three levels, set per daemon (``[audit] capture``) and narrowed per route:

- ``off``: no body and nothing derived from one; the event itself is still emitted.
- ``metadata``: a :class:`~nexus.audit.events.PayloadDigest` (size, content type,
  SHA-256) so a disputed body can be matched later without keeping it.
- ``full``: the body itself, cut at ``body_max`` (then ``truncated``).  Up to
  ``inline_max`` it travels in the event and is stored inline; beyond, the
  emitter moves it to the spill store before publishing (:meth:`CapturePolicy.spills`).

A streamed response is captured by :class:`StreamCapture` as two payloads: the
assembled text (kind ``response``) and the raw SSE bytes as they came (kind
``response_stream``), the latter bounded by ``stream_raw_max``.  Both keep the
full size seen in ``size_bytes``.

Pure: no I/O, no Trio.  Bodies are kept by reference when not cut, so capture
costs no copy of an already-complete body.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import attrs

from nexus.audit.events import Payload, PayloadDigest, PayloadKind
from nexus.config.schema import AuditConfig

__all__ = ["CaptureLevel", "CapturePolicy", "StreamCapture", "capture"]

CaptureLevel = Literal["off", "metadata", "full"]
_LEVELS: Final = ("off", "metadata", "full")
TEXT_PLAIN: Final = "text/plain; charset=utf-8"
EVENT_STREAM: Final = "text/event-stream"


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen(slots=True)
class CapturePolicy:
    """The capture settings of one route (built from ``AuditConfig``, then narrowed)."""

    level: CaptureLevel = "full"
    inline_max: int = attrs.field(default=256 * 1024, validator=_positive)
    body_max: int = attrs.field(default=32 * 1024 * 1024, validator=_positive)
    stream_raw_max: int = attrs.field(default=1024 * 1024, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.level not in _LEVELS:
            raise ValueError(f"capture level must be one of {'|'.join(_LEVELS)}, got {self.level!r}")

    @classmethod
    def from_config(cls, config: AuditConfig) -> CapturePolicy:
        return cls(level=config.capture, inline_max=config.inline_max, body_max=config.body_max,
                   stream_raw_max=config.stream_raw_max)

    def narrowed(self, level: CaptureLevel) -> CapturePolicy:
        """This policy at ``level`` or below (a route can capture less than the daemon, never more)."""
        if _LEVELS.index(level) >= _LEVELS.index(self.level):
            return self
        return attrs.evolve(self, level=level)

    def spills(self, payload: Payload) -> bool:
        """Whether the emitter must move this body to the spill store before publishing."""
        return payload.body is not None and len(payload.body) > self.inline_max


def capture(
    policy: CapturePolicy,
    kind: PayloadKind,
    body: bytes,
    *,
    content_type: str | None = None,
    redacted: bool = False,
    size_bytes: int | None = None,
) -> Payload | PayloadDigest | None:
    """Keep what ``policy`` allows of ``body``; attach the result with ``TrafficEvent.attach``.

    ``body`` is what to store: the redacted text when a hook redacted
    (``redacted=True``).  ``size_bytes`` is the size seen on the wire when it
    differs from ``len(body)`` (the body was already cut upstream of us).
    """
    size = len(body) if size_bytes is None else size_bytes
    if policy.level == "off":
        return None
    if policy.level == "metadata":
        return PayloadDigest(kind=kind, size_bytes=size, sha256=hashlib.sha256(body).hexdigest(),
                             content_type=content_type)
    kept = body if len(body) <= policy.body_max else body[: policy.body_max]
    return Payload(kind=kind, size_bytes=size, body=bytes(kept), content_type=content_type,
                   truncated=len(kept) < size, redacted=redacted)


class StreamCapture:
    """Collects a streamed response as it passes: assembled text and raw SSE bytes, both bounded.

    Feed ``raw`` with every chunk sent to the client and ``text`` with each
    content delta the codec extracted; ``finish`` returns what to attach.  Past
    the bounds, bytes are only counted, so memory stays bounded whatever the
    stream's length.
    """

    __slots__ = ("_level", "_policy", "_raw", "_raw_seen", "_sha_raw", "_sha_text", "_text", "_text_seen")

    def __init__(self, policy: CapturePolicy) -> None:
        self._policy = policy
        self._level = policy.level
        self._raw = bytearray()
        self._text = bytearray()
        self._raw_seen = 0
        self._text_seen = 0
        # metadata keeps digests of the whole stream, so it hashes as it goes instead of buffering.
        self._sha_raw = hashlib.sha256() if policy.level == "metadata" else None
        self._sha_text = hashlib.sha256() if policy.level == "metadata" else None

    def raw(self, chunk: bytes) -> None:
        self._raw_seen += len(chunk)
        if self._level == "full":
            room = self._policy.stream_raw_max - len(self._raw)
            if room > 0:
                self._raw += chunk[:room] if len(chunk) > room else chunk
        elif self._sha_raw is not None:
            self._sha_raw.update(chunk)

    def text(self, delta: str | bytes) -> None:
        data = delta.encode() if isinstance(delta, str) else delta
        self._text_seen += len(data)
        if self._level == "full":
            room = self._policy.body_max - len(self._text)
            if room > 0:
                self._text += data[:room] if len(data) > room else data
        elif self._sha_text is not None:
            self._sha_text.update(data)

    def finish(self, *, redacted: bool = False) -> list[Payload | PayloadDigest]:
        """The ``response`` (assembled text) and ``response_stream`` (raw SSE) captures."""
        if self._level == "off":
            return []
        if self._sha_text is not None and self._sha_raw is not None:
            return [
                PayloadDigest(kind="response", size_bytes=self._text_seen, sha256=self._sha_text.hexdigest(),
                              content_type=TEXT_PLAIN),
                PayloadDigest(kind="response_stream", size_bytes=self._raw_seen, sha256=self._sha_raw.hexdigest(),
                              content_type=EVENT_STREAM),
            ]
        return [
            Payload(kind="response", size_bytes=self._text_seen, body=bytes(self._text), content_type=TEXT_PLAIN,
                    truncated=len(self._text) < self._text_seen, redacted=redacted),
            Payload(kind="response_stream", size_bytes=self._raw_seen, body=bytes(self._raw),
                    content_type=EVENT_STREAM, truncated=len(self._raw) < self._raw_seen),
        ]
