"""A cache hit as the caller's bytes: a JSON body or SSE frames, in the caller's dialect.

No I/O.  A stream recorded for a caller of the same dialect is replayed byte
for byte; anything else goes through the same encoders as a live answer
(``gateway.dialects``): canonical chunks → the caller's stream events, or the
canonical answer → the caller's response object.

An OpenAI-chat caller that did not ask for ``stream_options.include_usage``
gets no usage chunk from a re-encoded replay, as from a live stream.

Errors: ``WireError`` when the caller's encoder refuses the answer (the same
cases as a live translation); the gateway then treats the hit as a miss.
"""

from __future__ import annotations

from typing import Any

import orjson

from nexus.gateway import dialects
from nexus.gateway.cache.entry import CacheEntry
from nexus.gateway.errors import Caller
from nexus.wire import openai
from nexus.wire.canonical import Obj


def response_body(entry: CacheEntry, caller: Caller, request: Obj) -> bytes:
    """The JSON body of a plain (non-stream) answer for ``caller``; ``request`` is its parsed body."""
    return orjson.dumps(dialects.response_for_caller(caller, entry.as_response(), request))


def _wants_usage(request: Obj) -> bool:
    opts: Any = request.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def stream_pieces(entry: CacheEntry, caller: Caller, request: Obj) -> list[bytes]:
    """The SSE frames of a streamed answer for ``caller``, ready to send."""
    raw = entry.raw_for(caller)
    if raw is not None:
        return list(raw)
    chunks = entry.as_chunks()
    encode = dialects.ENCODE[caller]
    encoder = dialects.stream_encoder(caller, request)
    if encoder is None:
        keep_usage = _wants_usage(request)
        out = [encode(None, c) for c in chunks if keep_usage or c.get("choices") or not c.get("usage")]
        out.append(openai.DONE)
        return out
    out = []
    for chunk in chunks:
        for name, data in encoder.feed(None, chunk):
            out.append(encode(name, data))
    for name, data in encoder.finish():
        out.append(encode(name, data))
    return out
