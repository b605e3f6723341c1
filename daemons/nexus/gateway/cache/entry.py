"""Cache entries: a canonical answer or a recorded stream, and their compact binary form.

Pure.  An entry holds exactly one of:

- ``response``: a canonical ``chat.completion`` (or, for embeddings, the
  embeddings response object), stored from a plain request;
- ``chunks``: the canonical chunk sequence of a streamed answer, plus — when
  the gateway recorded them — ``raw``, the SSE bytes exactly as that caller
  received them, and ``raw_dialect``, that caller's dialect.

Either replays either way: ``as_response`` reassembles chunks with
``wire.canonical.Accumulator``; ``as_chunks`` replays a response with
``wire.canonical.chunks_from_response``; ``raw_for(dialect)`` gives the
original bytes back, byte for byte, to a caller of the same dialect.

``StreamRecorder`` collects a stream while it is relayed, bounded by the size
cap (past it, it drops what it holds and records nothing more).  For a
same-family passthrough stream, where the gateway never builds canonical
chunks, ``chunks_from_sse`` derives them from the recorded bytes once the
stream has ended.

Binary form (``encode_entry`` / ``decode_entry``)::

    "NXC1" | u32 meta length | u32 raw piece count | meta JSON | (u32 length | bytes) per raw piece

meta = ``{"r": response, "c": chunks, "d": raw dialect, "t": created}``; raw
pieces stay bytes (no base64).  ``decode_entry`` raises :class:`EntryError`
for anything else; callers treat that as a miss.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

import attrs
import orjson

from nexus.gateway.cache.policy import MAX_ENTRY_BYTES
from nexus.net.sse import SSEParser
from nexus.wire import anthropic, gemini
from nexus.wire.canonical import Accumulator, Obj, StreamTranslator, chunks_from_response
from nexus.wire.usage import Usage, from_openai

MAGIC: Final = b"NXC1"
_HEAD: Final = struct.Struct("!4sII")
_LEN: Final = struct.Struct("!I")
# A canonical chunk never serialises below this; it bounds how many chunks a capped entry can hold.
_MIN_CHUNK_BYTES: Final = 64


class EntryError(ValueError):
    """Bytes that are not an entry of this version (corrupt, truncated, or written by another format)."""


def _check(inst: CacheEntry, _attr: attrs.Attribute[Any], _value: Any) -> None:
    if (inst.response is None) == (inst.chunks is None):
        raise ValueError("a cache entry holds either a response or a chunk sequence")
    if (inst.raw is None) != (inst.raw_dialect is None) or (inst.raw is not None and inst.chunks is None):
        raise ValueError("raw stream bytes need their dialect and the canonical chunks")


@attrs.frozen(slots=True)
class CacheEntry:
    response: Obj | None = attrs.field(default=None, validator=_check)
    chunks: tuple[Obj, ...] | None = None
    raw: tuple[bytes, ...] | None = None
    raw_dialect: str | None = None
    created: float = 0.0

    def as_response(self) -> Obj:
        """The canonical answer (reassembled from the chunks of a streamed one)."""
        if self.response is not None:
            return self.response
        acc = Accumulator()
        for chunk in self.chunks or ():
            acc.add(chunk)
        return acc.response()

    def as_chunks(self) -> list[Obj]:
        """The canonical chunk sequence (replayed from a plain answer)."""
        if self.chunks is not None:
            return list(self.chunks)
        return chunks_from_response(self.response or {})

    def raw_for(self, dialect: str) -> tuple[bytes, ...] | None:
        """The original stream bytes when ``dialect`` is the one they were recorded for."""
        return self.raw if dialect == self.raw_dialect else None

    @property
    def usage(self) -> Usage:
        """What the original answer cost upstream (for savings accounting)."""
        if self.response is not None:
            return from_openai(self.response.get("usage"))
        for chunk in reversed(self.chunks or ()):
            if chunk.get("usage"):
                return from_openai(chunk["usage"])
        return Usage()


def encode_entry(entry: CacheEntry) -> bytes:
    meta = orjson.dumps({"r": entry.response, "c": entry.chunks, "d": entry.raw_dialect, "t": entry.created})
    raw = entry.raw or ()
    parts = [_HEAD.pack(MAGIC, len(meta), len(raw)), meta]
    for piece in raw:
        parts.append(_LEN.pack(len(piece)))
        parts.append(piece)
    return b"".join(parts)


def decode_entry(data: bytes) -> CacheEntry:
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise EntryError("cache entry too short")
    magic, meta_len, count = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise EntryError(f"not a cache entry of this version (magic {bytes(magic)!r})")
    pos = _HEAD.size + meta_len
    if pos > len(view):
        raise EntryError("cache entry truncated in its metadata")
    try:
        meta = orjson.loads(view[_HEAD.size:pos])
    except orjson.JSONDecodeError as exc:
        raise EntryError(f"cache entry metadata is not JSON: {exc}") from None
    raw: list[bytes] = []
    for _ in range(count):
        if pos + _LEN.size > len(view):
            raise EntryError("cache entry truncated in its stream bytes")
        (size,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if pos + size > len(view):
            raise EntryError("cache entry truncated in its stream bytes")
        raw.append(bytes(view[pos:pos + size]))
        pos += size
    if pos != len(view) or not isinstance(meta, dict):
        raise EntryError("cache entry has trailing or malformed data")
    chunks = meta.get("c")
    try:
        return CacheEntry(meta.get("r"), tuple(chunks) if chunks is not None else None,
                          tuple(raw) if meta.get("d") is not None else None, meta.get("d"), meta.get("t") or 0.0)
    except ValueError as exc:
        raise EntryError(f"malformed cache entry: {exc}") from None


class StreamRecorder:
    """Collects a streamed answer for the cache while it is relayed; bounded by ``max_bytes``.

    ``add_chunk`` each canonical chunk (when the gateway has them) and
    ``add_raw`` each piece of bytes sent to the caller (for byte-identical
    replay); ``entry`` builds the entry at the end, or None when the cap was
    passed or no chunk was seen.  Holds references, copies nothing.
    """

    __slots__ = ("_chunks", "_raw", "_size", "dialect", "max_bytes", "overflowed")

    def __init__(self, dialect: str | None = None, max_bytes: int = MAX_ENTRY_BYTES) -> None:
        self.dialect = dialect
        self.max_bytes = max_bytes
        self.overflowed = False
        self._chunks: list[Obj] = []
        self._raw: list[bytes] = []
        self._size = 0

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > self.max_bytes:
            self.overflowed = True
            self._chunks, self._raw = [], []

    def restart(self) -> None:
        """Forget everything: a new upstream attempt starts the stream over."""
        self.overflowed = False
        self._chunks, self._raw, self._size = [], [], 0

    @property
    def has_chunks(self) -> bool:
        return bool(self._chunks)

    def add_chunk(self, chunk: Obj) -> None:
        if not self.overflowed:
            self._chunks.append(chunk)
            self._grow(_MIN_CHUNK_BYTES)

    def add_raw(self, data: bytes) -> None:
        if not self.overflowed:
            self._raw.append(data)
            self._grow(len(data))

    def entry(self, created: float, chunks: list[Obj] | None = None) -> CacheEntry | None:
        """The entry; ``chunks`` replaces the recorded ones (``chunks_from_sse`` for a passthrough stream)."""
        if self.overflowed:
            return None
        canonical = chunks if chunks is not None else self._chunks
        if not canonical:
            return None
        raw = tuple(self._raw) if self.dialect is not None and self._raw else None
        return CacheEntry(chunks=tuple(canonical), raw=raw, raw_dialect=self.dialect if raw else None,
                          created=created)

    @property
    def raw_pieces(self) -> list[bytes]:
        return self._raw


def chunks_from_sse(dialect: str, pieces: Iterable[bytes], model: str = "") -> list[Obj]:
    """Canonical chunks of a finished OpenAI-chat, Anthropic or Gemini SSE stream.

    Raises ``ValueError`` for another dialect, ``WireError`` for a stream that
    did not end properly (such a stream must not be stored anyway) and
    ``orjson.JSONDecodeError`` for a frame that is not JSON.
    """
    decoder: StreamTranslator | None
    if dialect == "openai":
        decoder = None
    elif dialect == "anthropic":
        decoder = anthropic.StreamToChat(model)
    elif dialect == "gemini":
        decoder = gemini.StreamToChat(model)
    else:
        raise ValueError(f"no stream decoder for dialect {dialect!r}")
    parser = SSEParser()
    out: list[Obj] = []
    for piece in pieces:
        for ev in parser.feed(piece):
            if ev.data == "[DONE]":
                continue
            data = orjson.loads(ev.data)
            if decoder is None:
                out.append(data)
            else:
                out.extend(chunk for _name, chunk in decoder.feed(ev.event, data))
    if decoder is not None:
        out.extend(chunk for _name, chunk in decoder.finish())
    return out
