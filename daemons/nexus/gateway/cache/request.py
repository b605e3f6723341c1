"""The gateway's use of the exact cache for one generation request.

Non-streaming requests take a single-flight turn: a hit is answered from the
entry in the caller's dialect; a miss becomes the leader (or a follower that
waits for the leader's entry) and, when the answer completes, stores the
canonical response unless the poison guard refuses it (errors, blocked or
redacted exchanges, truncated answers).  Streaming requests are answered from
an entry as a stream when one exists; a streamed miss is not recorded yet.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nexus.gateway.cache import key as cache_keys
from nexus.gateway.cache import replay
from nexus.gateway.cache.entry import CacheEntry
from nexus.gateway.cache.exact import ExactCache
from nexus.gateway.cache.policy import finish_reasons, lookup_reason, no_cache_requested, poison_reason
from nexus.gateway.catalog import ModelRoute
from nexus.gateway.errors import JSON
from nexus.gateway.keys.store import VirtualKey
from nexus.net.http1.types import Request, Response

if TYPE_CHECKING:
    from nexus.gateway.generate import Call

HIT = (b"x-nexus-cache", b"hit")
MISS = (b"x-nexus-cache", b"miss")
BYPASS = (b"x-nexus-cache", b"bypass")
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def _pieces(pieces: list[bytes]) -> Any:
    for piece in pieces:
        yield piece


async def serve(cache: ExactCache | None, call: Call, key: VirtualKey, route: ModelRoute, req: Request,
                parsed: dict[str, Any]) -> tuple[Response | None, tuple[bytes, bytes] | None]:
    """(an answer from the cache, or None to call upstream; the X-Nexus-Cache header)."""
    if cache is None:
        return None, None
    chat = call.canonical(parsed)
    no_cache = call.bypass_cache or no_cache_requested(req.headers.get("x-nexus-no-cache"))
    if lookup_reason(cache.policy, "chat", chat, no_cache=no_cache):
        call.cache_status = "bypass"
        return None, BYPASS
    scope = cache_keys.scope_tag(cache.policy.scope, key_id=key.id, project_id=key.project_id, org_id=key.org_id)
    try:
        cache_key = cache_keys.cache_key(route.provider.name, route.upstream_model, chat, scope)
    except TypeError:
        return None, BYPASS
    if call.stream:
        entry = await cache.get(cache_key)
        if entry is None:
            call.cache_status = "miss"
            return None, MISS
        return _answer(call, entry, parsed), HIT
    flight = await cache.begin(cache_key)
    if flight.entry is not None:
        await cache.finish(flight, None)
        return _answer(call, flight.entry, parsed), HIT
    if flight.status == "bypass":
        await cache.finish(flight, None)
        call.cache_status = "bypass"
        return None, BYPASS
    call.keep_response = True
    call.cache_status = "miss"

    async def store(done: Call) -> None:
        await cache.finish(flight, _entry(done))

    call.on_finish.append(store)
    return None, MISS


def _entry(done: Call) -> CacheEntry | None:
    resp = done.chat_response
    if resp is None:
        return None
    redacted = done.rewritten is not None or bool(done.response_decision and done.response_decision.rewrites)
    if poison_reason(status=done.status, error=done.error_kind, finish=finish_reasons(resp), blocked=False,
                     redacted=redacted):
        return None
    return CacheEntry(response=resp, created=time.time())


def _answer(call: Call, entry: CacheEntry, parsed: dict[str, Any]) -> Response:
    call.status = 200
    call.cache_status = "hit"
    headers = [*call.headers(time.perf_counter()), HIT]
    if call.stream:
        pieces = replay.stream_pieces(entry, call.caller, parsed)
        call.response_body = b"".join(pieces)
        return Response(200, [*SSE, *headers], _pieces(pieces))
    call.response_body = replay.response_body(entry, call.caller, parsed)
    return Response(200, [JSON, *headers], call.response_body)

