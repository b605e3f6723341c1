"""One generation request, from resolved model to the caller's answer, streaming or not.

The caller's dialect and the upstream family decide the path (``dialects``): a
same-family request is forwarded as its own bytes with ``model`` rewritten;
anything else is translated to the canonical chat shape and out again.  A
streamed answer is translated event by event as the bytes arrive.

Before the first byte goes to the client, everything can still become a clean
HTTP error in the caller's shape: an upstream error status, a connection
failure, or an error frame arriving first after a 200 (the stream is primed:
its first event is read before the response head is sent).  After that, a
failure ends the stream with the dialect's error frame.  If the client goes
away, the server cancels this task and the upstream stream is closed with it.

Every failure before the first byte is an ``AttemptFailed`` carrying its
routing ``Outcome``; ``generate`` walks the routing plan's targets, asking each
target whether to retry it (after a jittered backoff), move on to the next, or
answer the client with the failure.  Every attempt is recorded on the ``Call``
and in ``X-Nexus-Attempts``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import orjson
import trio

from nexus.audit.capture import StreamCapture
from nexus.gateway import dialects
from nexus.gateway.cache.entry import StreamRecorder
from nexus.gateway.catalog import Family, ModelRoute
from nexus.gateway.compliance import Blocked, Compliance, StageDecision, StreamGuard, blocked_message, finish_guard
from nexus.gateway.errors import JSON, Caller, GatewayError
from nexus.gateway.keys.store import VirtualKey
from nexus.gateway.providers.upstream import UpstreamCall, generate_call
from nexus.gateway.routing import attempts as routing_attempts
from nexus.gateway.routing.attempts import CONNECT, ERROR_FRAME, TIMEOUT, Attempt, Outcome
from nexus.gateway.routing.health import Health
from nexus.gateway.routing.planner import Plan
from nexus.net.http1 import client as http
from nexus.net.http1.types import Request, Response, Timeouts
from nexus.net.sse import SSEParser
from nexus.wire import errors as wire_errors
from nexus.wire import openai
from nexus.wire.canonical import Obj
from nexus.wire.errors import WireError
from nexus.wire.usage import Usage

log = logging.getLogger("nexus.gateway")

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


@attrs.define(slots=True)
class Call:
    """What happened to one request: the audit event is built from it."""

    request_id: str
    caller: Caller
    started: float
    # The audit event's endpoint type when it is not the caller's generation endpoint (e.g. embeddings).
    endpoint: str | None = None
    key: VirtualKey | None = None
    model: str = ""
    stream: bool = False
    route: ModelRoute | None = None
    coerced: list[str] = attrs.Factory(list)
    upstream_started: float = 0.0
    upstream_first_byte: float = 0.0
    upstream_done: float = 0.0
    usage: Usage = attrs.Factory(Usage)
    finish_reason: str | None = None
    status: int = 0
    error_kind: str | None = None
    attempts: list[Attempt] = attrs.Factory(list)
    plan: Plan | None = None
    # Run once when the answer is complete (for a stream: when the relay ends), shielded from cancellation:
    # quota reconciliation, cache store, the audit event.
    on_finish: list[Callable[[Call], Awaitable[None]]] = attrs.Factory(list)
    finished: bool = False
    # Compliance: the request hooks' decision, the redacted request they produced, and what the response
    # stage needs (None when no hooks run: none configured, or passthrough says bypass).
    hook_header: bytes | None = None
    request_decision: StageDecision | None = None
    response_decision: StageDecision | None = None
    rewritten: Obj | None = None
    compliance: Compliance | None = None
    compliance_meta: dict[str, Any] = attrs.Factory(dict)
    # The caller's request in canonical form, translated at most once and only when something needs it.
    chat: Obj | None = None
    # The canonical answer, kept when the exact cache will store it.
    keep_response: bool = False
    chat_response: Obj | None = None
    cache_status: str | None = None
    # A streamed answer the exact cache will store: what the client received, and the canonical chunks.
    stream_recorder: StreamRecorder | None = None
    # Emergency passthrough settings in force for this request (labels for the audit event).
    passthrough_flags: tuple[str, ...] = ()
    bypass_cache: bool = False
    kill_switch: bool = False
    # For the audit event.
    client_closed: bool = False
    error_message: str | None = None
    response_body: bytes | None = None
    stream_capture: StreamCapture | None = None

    async def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        with trio.CancelScope(shield=True):
            for step in self.on_finish:
                try:
                    await step(self)
                except Exception:
                    log.exception("finishing request %s failed", self.request_id)

    def canonical(self, parsed: Obj) -> Obj:
        """The request as it goes upstream in canonical form: the hooks' redaction when they rewrote it."""
        if self.rewritten is not None:
            return self.rewritten
        if self.chat is None:
            try:
                self.chat = parsed if self.caller == "openai" else dialects.to_chat(
                    self.caller, parsed, self.model, self.stream)
            except WireError as exc:
                raise _wire_error(exc) from None
        return self.chat

    def overhead_ms(self, now: float) -> float:
        upstream = (self.upstream_done or now) - self.upstream_started if self.upstream_started else 0.0
        return max(0.0, (now - self.started - upstream) * 1000)

    def headers(self, now: float, *, with_attempts: bool = True) -> list[tuple[bytes, bytes]]:
        out = [(b"x-request-id", self.request_id.encode()),
               (b"x-nexus-overhead-ms", f"{self.overhead_ms(now):.3f}".encode())]
        if self.route is not None:
            out.append((b"x-nexus-provider", self.route.provider.name.encode()))
            out.append((b"x-nexus-model", self.route.code.encode()))
        if self.coerced:
            out.append((b"x-nexus-coerced", ",".join(self.coerced).encode()))
        if self.hook_header is not None:
            out.append((b"x-nexus-hook", self.hook_header))
        if with_attempts and self.attempts:
            out.append((b"x-nexus-attempts", routing_attempts.attempts_header(self.attempts)))
        return out


class AttemptFailed(Exception):
    """One upstream attempt failed before any byte reached the client."""

    def __init__(self, error: GatewayError, outcome: Outcome) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome


def upstream_failure(exc: http.HttpClientError) -> GatewayError:
    if isinstance(exc, http.HttpTimeout):
        return GatewayError("timeout", f"upstream timed out ({type(exc).__name__})")
    return GatewayError("upstream_error", f"upstream unreachable or broken: {exc}")


def _failed(exc: http.HttpClientError) -> AttemptFailed:
    # A pool or connect timeout means no connection was made: a connection failure, not a slow answer.
    slow = isinstance(exc, http.FirstByteTimeout | http.ReadTimeout)
    return AttemptFailed(upstream_failure(exc), TIMEOUT if slow else CONNECT)


def from_upstream_status(family: Family, status: int, body: bytes, retry_after: bytes | None) -> GatewayError:
    kind, message = wire_errors.parse_upstream_error(family, status, body)
    if kind == "auth_failed":
        # The caller's key was fine; ours was refused upstream: that is the gateway's problem, not theirs.
        return GatewayError("upstream_error", f"upstream refused the gateway's credentials: {message}", status=502)
    headers = ((b"retry-after", retry_after),) if retry_after and kind == "rate_limited" else ()
    return GatewayError(kind, message, headers=headers)


def _wire_error(err: WireError) -> GatewayError:
    return GatewayError(err.kind, err.message, status=err.status, param=err.param)


async def generate(
    client: http.HttpClient, timeouts: Timeouts, req: Request, call: Call, parsed: Obj, plan: Plan, health: Health,
    forward: tuple[bytes, ...] = (),
) -> Response:
    """Answer from the first target of ``plan`` that works; raise the last failure as a ``GatewayError``."""
    call.plan = plan
    last: GatewayError | None = None
    for target in plan.targets:
        retries = 0
        while True:
            route = target.route
            call.route = route
            started = time.perf_counter()
            health.begin(route.provider.id)
            try:
                response = await _attempt(client, timeouts, req, call, parsed, route, forward)
            except AttemptFailed as failed:
                elapsed = time.perf_counter() - started
                health.record(route.provider.id, False, failed.outcome.health_kind, elapsed)
                outcome = failed.outcome
                call.attempts.append(Attempt(route.provider.name, route.code, outcome.kind, outcome.status, elapsed))
                last = failed.error
                verdict = target.decide(failed.outcome, retries)
                if verdict == "retry":
                    await trio.sleep(routing_attempts.backoff_s(target.retry, retries, random.random(),
                                                                failed.outcome.retry_after_s))
                    retries += 1
                    continue
                if verdict == "next":
                    break
                raise failed.error from None
            elapsed = time.perf_counter() - started
            health.record(route.provider.id, True, "ok", elapsed)
            call.attempts.append(Attempt(route.provider.name, route.code, "ok", 200, elapsed))
            response.headers.append((b"x-nexus-attempts", routing_attempts.attempts_header(call.attempts)))
            return response
    if last is not None:
        raise last
    raise GatewayError("no_compatible_provider", f"no provider can serve model {call.model!r} for this request")


async def _attempt(
    client: http.HttpClient, timeouts: Timeouts, req: Request, call: Call, parsed: Obj, route: ModelRoute,
    forward: tuple[bytes, ...],
) -> Response:
    family = route.provider.family
    if family is None:
        raise AttemptFailed(GatewayError("not_implemented", f"provider adapter {route.provider.adapter!r} is not "
                                         "supported yet"), Outcome.from_status(501))
    caller = call.caller
    # A request the hooks rewrote goes out re-encoded from the redacted canonical form.
    passthrough = dialects.SAME_FAMILY[caller] == family and call.rewritten is None
    strip_usage = False
    try:
        if passthrough:
            body, strip_usage = dialects.passthrough_body(family, req.body, route)
        else:
            body, call.coerced = dialects.upstream_body(family, call.canonical(parsed), route)
    except GatewayError as err:  # the caller's request itself cannot be made canonical: no target can take it
        raise AttemptFailed(err, Outcome.from_status(err.status or 400)) from None
    except WireError as exc:
        # The request cannot be expressed for this target's family (it may be for the next one).
        raise AttemptFailed(_wire_error(exc), Outcome.from_status(exc.status or 400)) from None
    upstream = generate_call(route, body, call.stream, req.headers, forward)
    limit = route.provider.timeout_s
    if limit < timeouts.first_byte or limit < timeouts.read:
        # The provider row's own timeout, when tighter: a fallback should not wait out the global default.
        timeouts = Timeouts(connect=timeouts.connect, first_byte=min(timeouts.first_byte, limit),
                            read=min(timeouts.read, limit), pool_acquire=timeouts.pool_acquire)
    if call.stream:
        return await _stream(client, timeouts, call, parsed, family, upstream, passthrough, strip_usage)
    return await _complete(client, timeouts, call, parsed, family, upstream, passthrough)


async def _complete(
    client: http.HttpClient, timeouts: Timeouts, call: Call, parsed: Obj, family: Family,
    upstream: UpstreamCall, passthrough: bool,
) -> Response:
    call.upstream_started = time.perf_counter()
    try:
        resp = await client.request("POST", upstream.url, upstream.headers, upstream.body, timeouts)
    except http.HttpClientError as exc:
        raise _failed(exc) from None
    finally:
        call.upstream_done = call.upstream_first_byte = time.perf_counter()
    if resp.status >= 400:
        retry_after = resp.headers.get_bytes("retry-after")
        raise AttemptFailed(from_upstream_status(family, resp.status, resp.body, retry_after),
                            Outcome.from_status(resp.status, retry_after))
    try:
        data = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        raise AttemptFailed(GatewayError("upstream_error", "upstream answered with a body that is not JSON"),
                            ERROR_FRAME) from None
    error = dialects.upstream_error_in_body(family, data)
    if error is not None:
        raise AttemptFailed(_wire_error(wire_errors.error_from_stream_event(family, error)), ERROR_FRAME)
    call.usage = dialects.USAGE_OF[family](data)
    try:
        if passthrough and call.compliance is None and not call.keep_response:
            out = resp.body
        else:
            chat_resp = dialects.chat_from_upstream(family, data, call.model)
            rewritten = None
            if call.compliance is not None:
                try:
                    call.response_decision, rewritten = await call.compliance.check_response(
                        chat_resp, call.compliance_meta)
                except Blocked as blocked:
                    call.response_decision = blocked.decision
                    raise AttemptFailed(blocked, Outcome.from_status(403)) from None
            if call.keep_response:
                call.chat_response = rewritten if rewritten is not None else chat_resp
            if rewritten is not None:
                out = orjson.dumps(dialects.response_for_caller(call.caller, rewritten, parsed))
            elif passthrough:
                out = resp.body
            else:
                out = orjson.dumps(dialects.response_for_caller(call.caller, chat_resp, parsed))
    except WireError as exc:
        raise AttemptFailed(_wire_error(exc), ERROR_FRAME) from None
    call.status = 200
    call.response_body = out
    return Response(200, [JSON, *call.headers(time.perf_counter(), with_attempts=False)], out)


class _Pump:
    """Upstream SSE bytes → the caller's SSE bytes, one event at a time."""

    def __init__(self, call: Call, parsed: Obj, family: Family, passthrough: bool, strip_usage: bool,
                 guard: StreamGuard | None = None) -> None:
        self.call = call
        self.family = family
        self.parser = SSEParser()
        self.encode = dialects.ENCODE[call.caller]
        self.passthrough = passthrough
        self.guard = guard
        if passthrough and (guard is None or family == "openai"):
            # Same family: watch the stream (OpenAI's observer also yields the canonical chunks a guard reads).
            self.decoder: Any = dialects.stream_observer(family, strip_usage)
            self.encoder: Any = None
        else:
            self.decoder = dialects.stream_decoder(family, call.model)
            self.encoder = dialects.stream_encoder(call.caller, parsed)
        self.openai_out = call.caller == "openai"
        # Canonical chunks reach _emit unless a non-OpenAI stream passes through untranslated.
        self.canonical = not (passthrough and family != "openai")
        self.recorder = call.stream_recorder
        if self.recorder is not None:
            self.recorder.restart()  # this attempt's stream, not a failed earlier one's

    def _emit(self, events: list[tuple[str | None, Obj]], out: list[bytes]) -> None:
        capture = self.call.stream_capture
        guard = self.guard
        if guard is not None:
            released: list[tuple[str | None, Obj]] = []
            for name, chunk in events:
                step = guard.feed(chunk)
                released.extend((name, c) for c in step.release)
                if step.decision is not None:
                    self.call.response_decision = step.decision
                    raise WireError("invalid_request", blocked_message(step.decision), status=403)
            events = released
        if self.recorder is not None and self.canonical:
            for _name, chunk in events:
                self.recorder.add_chunk(chunk)
        if capture is not None and self.canonical:
            for _name, chunk in events:
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str):
                        capture.text(content)
        encode = self.encode
        if self.encoder is None:
            for name, data in events:
                out.append(encode(name, data))
            return
        for _name, chunk in events:
            for name, data in self.encoder.feed(None, chunk):
                out.append(encode(name, data))

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for ev in self.parser.feed(data):
            if ev.data == "[DONE]":
                continue
            try:
                obj = orjson.loads(ev.data)
            except orjson.JSONDecodeError:
                raise WireError("upstream_error", "upstream sent an event that is not JSON") from None
            self._emit(self.decoder.feed(ev.event, obj), out)
        return out

    def finish(self) -> list[bytes]:
        out: list[bytes] = []
        self._emit(self.decoder.finish(), out)
        guard = self.guard
        if guard is not None:
            decision = finish_guard(guard)
            self.call.response_decision = decision
            if decision.blocked:
                raise WireError("invalid_request", blocked_message(decision), status=403)
            self.guard = None  # what it still holds leaves now, unguarded
            self._emit([(None, c) for c in guard.release(decision)], out)
        if self.encoder is not None:
            encode = self.encode
            for name, data in self.encoder.finish():
                out.append(encode(name, data))
        if self.openai_out:
            out.append(openai.DONE)
        self._record()
        return out

    def fail(self, kind: wire_errors.Kind, message: str) -> bytes:
        self._record()
        self.call.error_kind = kind
        if self.encoder is not None and hasattr(self.encoder, "fail"):
            return b"".join(self.encode(name, data) for name, data in self.encoder.fail(kind, message))
        return wire_errors.stream_error(dialects.WIRE[self.call.caller], kind, message)

    def _record(self) -> None:
        self.call.usage = self.decoder.usage
        self.call.finish_reason = self.decoder.finish_reason


async def _stream(
    client: http.HttpClient, timeouts: Timeouts, call: Call, parsed: Obj, family: Family,
    upstream: UpstreamCall, passthrough: bool, strip_usage: bool,
) -> Response:
    call.upstream_started = time.perf_counter()
    ctx = client.stream("POST", upstream.url, upstream.headers, upstream.body, timeouts)
    try:
        resp = await ctx.__aenter__()
    except http.HttpClientError as exc:
        raise _failed(exc) from None
    call.upstream_first_byte = time.perf_counter()
    guard = call.compliance.stream_guard(call.compliance_meta, call.model) if call.compliance is not None else None
    pump = _Pump(call, parsed, family, passthrough, strip_usage, guard)
    chunks = resp.iter_bytes()
    primed: list[bytes] = []
    try:
        if resp.status >= 400:
            body = await resp.read()
            retry_after = resp.headers.get_bytes("retry-after")
            raise AttemptFailed(from_upstream_status(family, resp.status, body, retry_after),
                                Outcome.from_status(resp.status, retry_after))
        # Read until the first output (or the end) so an error frame right after the 200 is still an HTTP error.
        ended = False
        while not primed:
            try:
                data = await chunks.__anext__()
            except StopAsyncIteration:
                primed.extend(pump.finish())
                ended = True
                break
            primed.extend(pump.feed(data))
    except WireError as exc:
        await ctx.__aexit__(None, None, None)
        # A compliance block before the first byte is a 403 to the caller, never a reason to try another target.
        outcome = Outcome.from_status(403) if exc.status == 403 else ERROR_FRAME
        raise AttemptFailed(_wire_error(exc), outcome) from None
    except http.HttpClientError as exc:
        await ctx.__aexit__(None, None, None)
        raise _failed(exc) from None
    except BaseException:
        await ctx.__aexit__(None, None, None)
        raise
    call.status = 200
    headers = [*SSE_HEADERS, *call.headers(time.perf_counter(), with_attempts=False)]
    return Response(200, headers, _relay(ctx, chunks, pump, primed, ended))


async def _relay(
    ctx: Any, chunks: AsyncIterator[bytes], pump: _Pump, primed: list[bytes], ended: bool
) -> AsyncIterator[bytes]:
    capture = pump.call.stream_capture
    recorder = pump.recorder
    try:
        first = b"".join(primed)
        if capture is not None:
            capture.raw(first)
        if recorder is not None:
            recorder.add_raw(first)
        yield first
        if ended:
            return
        try:
            async for data in chunks:
                out = pump.feed(data)
                if out:
                    piece = out[0] if len(out) == 1 else b"".join(out)
                    if capture is not None:
                        capture.raw(piece)
                    if recorder is not None:
                        recorder.add_raw(piece)
                    yield piece
            tail = pump.finish()
        except WireError as exc:
            tail = [pump.fail(exc.kind, exc.message)]
        except http.HttpTimeout:
            tail = [pump.fail("timeout", "upstream stopped sending")]
        except http.HttpClientError as exc:
            tail = [pump.fail("upstream_error", f"upstream stream broke: {exc}")]
        last = b"".join(tail)
        if capture is not None:
            capture.raw(last)
        if recorder is not None:
            recorder.add_raw(last)
        yield last
    except trio.Cancelled:
        pump.call.client_closed = True
        raise
    except GeneratorExit:
        # The server closed the body early: the client went away.
        pump.call.client_closed = True
        raise
    finally:
        pump.call.upstream_done = time.perf_counter()
        with trio.CancelScope(shield=True):
            await ctx.__aexit__(None, None, None)
        await pump.call.finish()
