"""The gateway's use of the exact and semantic caches for one generation request.

Every cacheable request, streamed or not, takes a single-flight turn on its
exact key (``ExactCache.begin``): a hit is answered from the entry in the
caller's dialect (a recorded stream byte for byte to a caller of the same
dialect, re-encoded otherwise; a plain answer as a synthesised stream).  A
miss leads (or is a follower whose wait ran out) and, when the semantic cache
is on for the request, asks it next: a semantic hit is answered the same way
(``X-Nexus-Cache: semantic``, ``X-Nexus-Cache-Similarity``) and handed to
local followers without being stored under this key.

Otherwise the request goes upstream and its answer is stored when it
completes, unless the poison guard refuses it (errors, blocked or redacted
exchanges, truncated answers): a plain answer as its canonical response; a
streamed one as what the client received (``StreamRecorder``: the SSE bytes
and the canonical chunks, bounded by the entry size cap, abandoned when the
client goes away or the stream ends in an error frame).  Followers — in this
process or, through the Valkey lock, in others — wait for that store and
replay it, so identical concurrent requests reach the upstream once, streams
included.  A stored answer is then indexed for similar prompts when the
semantic lookup produced a vector and the stricter semantic guard agrees.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from nexus.gateway import dialects
from nexus.gateway.cache import key as cache_keys
from nexus.gateway.cache import replay
from nexus.gateway.cache.entry import CacheEntry, StreamRecorder, chunks_from_sse
from nexus.gateway.cache.exact import ExactCache
from nexus.gateway.cache.policy import (
    finish_reasons,
    lookup_reason,
    no_cache_requested,
    poison_reason,
    semantic_header,
    semantic_wanted,
)
from nexus.gateway.cache.semantic import SemanticCache, SemanticLookup
from nexus.gateway.catalog import ModelRoute
from nexus.gateway.errors import JSON, GatewayError
from nexus.gateway.keys.store import VirtualKey
from nexus.net.http1.types import Request, Response
from nexus.wire.errors import WireError

if TYPE_CHECKING:
    from nexus.gateway.generate import Call

log = logging.getLogger("nexus.gateway.cache")

HIT = (b"x-nexus-cache", b"hit")
MISS = (b"x-nexus-cache", b"miss")
BYPASS = (b"x-nexus-cache", b"bypass")
SEMANTIC = (b"x-nexus-cache", b"semantic")
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
# Hook decisions that leave an exchange as it was.
_CLEAN = frozenset({"approve", "abstain"})


async def _pieces(pieces: list[bytes]) -> Any:
    for piece in pieces:
        yield piece


def _semantic_on(semantic: SemanticCache | None, req: Request, call: Call, key: VirtualKey) -> bool:
    if semantic is None:
        return False
    try:
        header = semantic_header(req.headers.get("x-nexus-semantic-cache"))
    except ValueError as exc:
        raise GatewayError("invalid_request", str(exc), status=400) from None
    return semantic_wanted(semantic.policy, header=header, model=call.model, key_id=key.id)


async def serve(cache: ExactCache | None, call: Call, key: VirtualKey, route: ModelRoute, req: Request,
                parsed: dict[str, Any], semantic: SemanticCache | None = None,
                ) -> tuple[Response | None, tuple[bytes, bytes] | None]:
    """(an answer from the cache, or None to call upstream; the X-Nexus-Cache header)."""
    if cache is None:
        return None, None
    chat = call.canonical(parsed)
    no_cache = call.bypass_cache or no_cache_requested(req.headers.get("x-nexus-no-cache"))
    if lookup_reason(cache.policy, "chat", chat, no_cache=no_cache):
        call.cache_status = "bypass"
        return None, BYPASS
    scope = cache_keys.scope_tag(cache.policy.scope, key_id=key.id, project_id=key.project_id, org_id=key.org_id)
    # An answer is cached as the response hooks left it: a hook added or changed since then, or an answer
    # produced while inspection was bypassed, must not be replayed under the new policy.
    scope += "|policy=" + (call.compliance.version if call.compliance is not None else "unchecked")
    try:
        cache_key = cache_keys.cache_key(route.provider.name, route.upstream_model, chat, scope)
    except TypeError:
        return None, BYPASS
    use_semantic = _semantic_on(semantic, req, call, key)
    flight = await cache.begin(cache_key)
    if flight.entry is not None:
        await cache.finish(flight, None)
        return _replayed(call, flight.entry, parsed, HIT)
    if flight.status == "bypass":
        await cache.finish(flight, None)
        call.cache_status = "bypass"
        return None, BYPASS
    look: SemanticLookup | None = None
    if use_semantic and semantic is not None:
        try:
            look = await semantic.lookup(route.provider.name, route.upstream_model, scope, chat)
        except BaseException:
            await cache.finish(flight, None)
            raise
        if look is not None and look.entry is not None and look.neighbour is not None:
            # Identical requests waiting here get the same answer; it is not stored under this key.
            await cache.finish(flight, look.entry, store=False)
            similarity = (b"x-nexus-cache-similarity", f"{look.neighbour.similarity:.4f}".encode())
            return _replayed(call, look.entry, parsed, SEMANTIC, similarity)
    call.cache_status = "miss"
    recorder: StreamRecorder | None = None
    if call.stream:
        recorder = call.stream_recorder = StreamRecorder(call.caller, cache.policy.max_entry_bytes)
    else:
        call.keep_response = True

    async def store(done: Call) -> None:
        entry = _stream_entry(done, recorder) if recorder is not None else _entry(done)
        stored = await cache.finish(flight, entry)
        if stored and entry is not None and look is not None and semantic is not None:
            await semantic.remember(look, cache_key, entry, cache.policy.ttl_seconds, flagged=_flagged(done))

    call.on_finish.append(store)
    return None, MISS


def _redacted(done: Call) -> bool:
    """The hooks changed the request or the answer (a redacted answer is never stored)."""
    if done.rewritten is not None:
        return True
    decision = done.response_decision
    return decision is not None and (bool(decision.rewrites) or (decision.enforced and
                                                                decision.decision.value == "modify"))


def _flagged(done: Call) -> bool:
    """A hook reported anything but approve, enforced or only observed (kept out of the semantic cache)."""
    return any(d is not None and d.decision.value not in _CLEAN
               for d in (done.request_decision, done.response_decision))


def _entry(done: Call) -> CacheEntry | None:
    resp = done.chat_response
    if resp is None:
        return None
    if poison_reason(status=done.status, error=done.error_kind, finish=finish_reasons(resp), blocked=False,
                     redacted=_redacted(done)):
        return None
    return CacheEntry(response=resp, created=time.time())


def _stream_entry(done: Call, recorder: StreamRecorder) -> CacheEntry | None:
    """What the client of a streamed miss received, as an entry; None when it must not be stored."""
    if done.client_closed or recorder.overflowed or done.status != 200 or done.error_kind is not None:
        return None
    chunks = None
    if not recorder.has_chunks:
        # A same-family Anthropic or Gemini stream passed through untranslated: derive the canonical chunks.
        try:
            chunks = chunks_from_sse(dialects.WIRE[done.caller], recorder.raw_pieces, done.model)
        except (WireError, ValueError, orjson.JSONDecodeError) as exc:
            log.debug("streamed answer not cached: %s", exc)
            return None
    entry = recorder.entry(time.time(), chunks)
    if entry is None:
        return None
    reason = poison_reason(status=done.status, error=done.error_kind, finish=finish_reasons(entry.as_response()),
                           redacted=_redacted(done))
    return None if reason else entry


def _replayed(call: Call, entry: CacheEntry, parsed: dict[str, Any], kind: tuple[bytes, bytes],
              *extra: tuple[bytes, bytes]) -> tuple[Response | None, tuple[bytes, bytes]]:
    try:
        return _answer(call, entry, parsed, kind, *extra), kind
    except WireError as exc:
        # The caller's dialect cannot express this answer (as a live translation would fail): go upstream.
        log.info("cached answer not replayable to a %s caller: %s", call.caller, exc.message)
        call.cache_status = "miss"
        return None, MISS


def _answer(call: Call, entry: CacheEntry, parsed: dict[str, Any], *headers: tuple[bytes, bytes]) -> Response:
    call.status = 200
    call.cache_status = "semantic" if SEMANTIC in headers else "hit"
    out = [*call.headers(time.perf_counter()), *headers]
    if call.stream:
        pieces = replay.stream_pieces(entry, call.caller, parsed)
        call.response_body = b"".join(pieces)
        return Response(200, [*SSE, *out], _pieces(pieces))
    call.response_body = replay.response_body(entry, call.caller, parsed)
    return Response(200, [JSON, *out], call.response_body)
