"""The gateway's traffic event: one per generation request, whatever happened to it (success, upstream error,
hook block, quota reject, client disconnect, bad request), built from the request's ``Call`` when the answer
is complete and handed to the emitter (which blocks the response only in ``block`` loss mode, until the event is
durable)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from nexus.audit import capture as captures
from nexus.audit.emitter import Emitter
from nexus.audit.events import Attempt, HookResult, TrafficEvent
from nexus.gateway.compliance import StageDecision
from nexus.gateway.core import ENDPOINTS
from nexus.gateway.quota.policy import usage_cost
from nexus.net.http1.types import Request

if TYPE_CHECKING:
    from nexus.gateway.generate import Call

_ERROR_STATUS = {"invalid_request": 400, "auth_failed": 401, "rate_limited": 429, "timeout": 504,
                 "upstream_error": 502, "endpoint_unsupported": 400, "not_implemented": 501,
                 "no_compatible_provider": 400}


# The compliance engine's five-way decision, in the audit record's three words.
_AUDIT_DECISION = {"abstain": "approve", "approve": "approve", "modify": "redact", "block_soft": "block",
                   "reject_hard": "block"}


def _decision(decision: StageDecision | None) -> str | None:
    return _AUDIT_DECISION[decision.decision.value] if decision is not None else None


def _hooks(decision: StageDecision | None) -> list[HookResult]:
    if decision is None:
        return []
    return [HookResult(hook=h.name, decision=h.decision.value, reason="; ".join(h.reasons) or None,
                       rule_ids=list(h.rule_ids), duration_us=h.elapsed_us) for h in decision.hooks]


def event_for(call: Call, req: Request, policy: captures.CapturePolicy) -> TrafficEvent:
    now = time.perf_counter()
    key = call.key
    route = call.route
    usage = call.usage
    ok = call.status == 200 and call.error_kind is None and not call.client_closed
    event = TrafficEvent(
        source="gateway", request_id=call.request_id,
        org_id=key.org_id if key else None, project_id=key.project_id if key else None,
        user_id=key.owner_user_id if key else None, virtual_key_id=key.id if key else None,
        provider_id=route.provider.id if route else None,
        routing_rule_id=call.plan.rule_id if call.plan else None,
        source_ip=req.client[0] if req.client else None, user_agent=req.headers.get("user-agent"),
        trace_id=req.headers.get("x-nexus-trace-id"),
        method=req.method, host=req.headers.get("host"), path=req.path,
        endpoint_type=call.endpoint or ENDPOINTS[call.caller],
        ingress_format=call.caller, stream=call.stream,
        status_code=call.status or _ERROR_STATUS.get(call.error_kind or "", 500),
        error_code=call.error_kind, error_message=call.error_message,
        requested_model=call.model or None, provider=route.provider.name if route else None,
        model=route.code if route else None,
        attempt_log=[Attempt(provider=a.provider, model=a.model, outcome=a.outcome, status_code=a.status,
                             duration_us=int(a.duration_s * 1_000_000)) for a in call.attempts],
        strategy_trace=list(call.plan.trace) if call.plan and call.plan.trace else None,
        ab_arm=call.plan.ab_arm if call.plan else None,
        total_us=int((now - call.started) * 1_000_000),
        upstream_ttfb_us=int((call.upstream_first_byte - call.upstream_started) * 1_000_000)
        if call.upstream_first_byte else None,
        upstream_total_us=int(((call.upstream_done or now) - call.upstream_started) * 1_000_000)
        if call.upstream_started else None,
        overhead_us=int(call.overhead_ms(now) * 1000),
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
        reasoning_tokens=usage.reasoning_tokens, cached_input_tokens=usage.cached_tokens,
        cache_creation_tokens=usage.cache_write_tokens,
        cost_micro_usd=usage_cost(route.prices, usage) if route and ok else 0,
        cache_status=call.cache_status,
        request_decision=_decision(call.request_decision), response_decision=_decision(call.response_decision),
        decision_reason="; ".join((call.request_decision or call.response_decision).reasons)  # type: ignore[union-attr]
        if (call.request_decision or call.response_decision) else None,
        rule_ids=sorted({*(call.request_decision.rule_ids if call.request_decision else ()),
                         *(call.response_decision.rule_ids if call.response_decision else ())}),
        request_hooks=_hooks(call.request_decision), response_hooks=_hooks(call.response_decision),
        passthrough_flags=list(call.passthrough_flags), kill_switch=call.kill_switch,
    )
    if call.client_closed:
        event.mark_client_closed()
    if call.hook_header == b"block" and event.request_decision is None:
        event.request_decision = "block"
    if event.blocked:
        event.error_code = "blocked"
    sent = orjson.dumps(call.rewritten) if call.rewritten is not None else req.body
    event.attach(captures.capture(policy, "request", sent, content_type="application/json",
                                  redacted=call.rewritten is not None, size_bytes=len(req.body)))
    redacted = bool(call.response_decision and call.response_decision.rewrites)
    if call.stream and call.stream_capture is not None and call.response_body is None:
        for captured in call.stream_capture.finish(redacted=redacted):
            event.attach(captured)
    elif call.response_body is not None:
        event.attach(captures.capture(policy, "response", call.response_body, content_type="application/json",
                                      redacted=redacted))
    return event


def recorder(emitter: Emitter, req: Request, policy: captures.CapturePolicy) -> Callable[[Call], Awaitable[None]]:
    """The ``Call.on_finish`` step that emits the event.

    It runs before the answer is sent (for a stream: before the chunked body's
    end), so with ``[audit] loss_mode = "block"`` the caller gets its answer only
    once the event is durable (``Emitter.emit_wait``: acknowledged by JetStream,
    or fsync'd in the spool), and a gateway killed after answering has lost
    nothing it answered.  In the other modes ``emit_wait`` never waits.
    """
    async def record(done: Call) -> None:
        await emitter.emit_wait(event_for(done, req, policy))

    return record
