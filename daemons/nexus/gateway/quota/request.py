"""The gateway's one seam to quotas for a generation request.

``reserve`` runs before the upstream call, with the routing plan:

- a hard limit answers 429 naming the axis, with ``Retry-After`` (the time
  until enough of the window frees up);
- a hard limit whose policy says ``hard_action = 'downgrade'`` instead moves
  the request to the cheapest model the key may use whose reservation fits
  (cheaper than the routed one at this request's estimate, same modality,
  through the routing rules again, at most ``DOWNGRADE_TRIES`` candidates);
  the answer carries ``X-Nexus-Downgraded-From`` and the traffic event's
  strategy trace says why.  A 429 only when none fits;
- counters that cannot be reached under a fail-closed policy answer 503;
- the request that first reaches a soft limit in its window (decided once
  across every gateway by the reserve script) raises one ``quota.soft_limit``
  alert through the audit emitter; every request past it gets
  ``X-Nexus-Quota-Warning``.

When the answer is complete the reservation is reconciled with the real usage
and cost (failures are refunded).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import attrs

from nexus.audit.alerts import KIND_ALERT, Alert, encode_alert
from nexus.audit.emitter import QueueFull
from nexus.gateway.catalog import ModelRoute
from nexus.gateway.errors import Caller, GatewayError
from nexus.gateway.keys.store import VirtualKey
from nexus.gateway.quota.engine import NO_QUOTA, QuotaExceeded, QuotaUnavailable, Reservation, SoftCrossing
from nexus.gateway.quota.policy import Estimate, estimate_chat, subject_for, usage_cost
from nexus.gateway.routing.planner import Plan
from nexus.net.http1.types import Request

if TYPE_CHECKING:
    from nexus.gateway.core import Gateway
    from nexus.gateway.generate import Call

log = logging.getLogger("nexus.gateway.quota")

CHARS_PER_TOKEN_OF_BODY = 4  # non-OpenAI dialects: estimate from the body size rather than parse their shapes
# Each candidate costs a routing pass and a reserve round trip.
DOWNGRADE_TRIES: Final = 3
SOFT_LIMIT_ALERT: Final = "quota.soft_limit"

Headers = list[tuple[bytes, bytes]]


def _estimate(caller: Caller, parsed: dict[str, Any], body_len: int, route: ModelRoute) -> Estimate:
    if caller == "openai":
        return estimate_chat(parsed, route)
    return estimate_chat({"max_tokens": parsed.get("max_tokens") or parsed.get("max_output_tokens")}, route,
                         input_tokens=body_len // CHARS_PER_TOKEN_OF_BODY)


async def reserve(gw: Gateway, call: Call, key: VirtualKey, req: Request, plan: Plan, caller: Caller,
                  parsed: dict[str, Any]) -> tuple[Plan, Headers]:
    """Reserve for the plan's first target; returns the plan to serve (another one after a downgrade) and the
    quota response headers.  Raises ``GatewayError`` (429 or 503)."""
    engine = gw.quota
    if engine is None:
        return plan, []
    route = plan.targets[0].route
    headers: Headers = []
    try:
        reservation = await engine.reserve(subject_for(key, route), _estimate(caller, parsed, len(req.body), route))
    except QuotaExceeded as exc:
        if exc.action != "downgrade":
            raise exc.gateway_error() from None
        plan, reservation = await _downgrade(gw, call, key, req, plan, caller, parsed, exc)
        headers.append((b"x-nexus-downgraded-from", route.code.encode()))
        route = plan.targets[0].route
    except QuotaUnavailable as exc:
        raise exc.gateway_error() from None
    if reservation is NO_QUOTA:
        return plan, headers
    for crossing in reservation.crossings:
        _alert(gw, crossing, key, call.request_id)

    async def reconcile(done: Call) -> None:
        ok = done.status == 200 and done.error_kind is None
        route_now = done.route or route
        cost = usage_cost(route_now.prices, done.usage) if ok else 0
        await engine.reconcile(reservation, done.usage if ok else None, cost)

    call.on_finish.append(reconcile)
    return plan, [*reservation.headers(), *headers]


async def _downgrade(gw: Gateway, call: Call, key: VirtualKey, req: Request, plan: Plan, caller: Caller,
                     parsed: dict[str, Any], exceeded: QuotaExceeded) -> tuple[Plan, Reservation]:
    engine = gw.quota
    assert engine is not None
    route = plan.targets[0].route
    body_len = len(req.body)
    ceiling = _estimate(caller, parsed, body_len, route).cost_micro
    catalog = gw.catalog.current
    cheaper: list[tuple[int, str]] = []
    for code in catalog.codes():
        candidate = catalog.resolve(code)
        if (candidate is None or candidate.code != code or code == route.code or candidate.modality != route.modality
                or not key.allows(code)):
            continue  # aliases are tried under their model's code
        cost = _estimate(caller, parsed, body_len, candidate).cost_micro
        if cost < ceiling:
            cheaper.append((cost, code))
    for _cost, code in sorted(cheaper)[:DOWNGRADE_TRIES]:
        try:
            alternative = await gw.plan(key, req, caller, code, call.request_id, parsed)
        except GatewayError:
            continue  # denied by a routing policy, or nothing serves it now
        target = alternative.targets[0].route
        try:
            reservation = await engine.reserve(subject_for(key, target),
                                               _estimate(caller, parsed, body_len, target))
        except QuotaExceeded as again:
            if again.action != "downgrade":
                raise again.gateway_error() from None
            continue
        except QuotaUnavailable as exc:
            raise exc.gateway_error() from None
        why = (f"quota: policy {exceeded.policy!r} on axis {exceeded.axis} exhausted for {route.code}; "
               f"downgraded to {target.code}")
        log.info("%s", why)
        downgraded = attrs.evolve(alternative, trace=(why, *alternative.trace))
        call.plan = downgraded  # a cached answer never reaches generate(), which sets it too
        return downgraded, reservation
    raise exceeded.gateway_error() from None


def _alert(gw: Gateway, crossing: SoftCrossing, key: VirtualKey, request_id: str) -> None:
    log.warning("soft quota limit reached", extra={"policy": crossing.policy, "axis": crossing.axis,
                                                   "used": crossing.used, "soft_limit": crossing.soft})
    emitter = gw.emitter
    if emitter is None:
        return
    org = crossing.subject if crossing.axis == "organization" else key.org_id
    alert = Alert(
        kind=SOFT_LIMIT_ALERT, severity="warning", dedup_key=crossing.dedup_key,
        title=f"Soft quota limit reached: {crossing.policy}",
        message=(f"policy {crossing.policy!r} on axis {crossing.axis} ({crossing.subject}): {crossing.used} of "
                 f"{crossing.soft} {crossing.unit} in window {crossing.window}"),
        org_id=org, at=time.time(),
        details={"policy_id": crossing.policy_id, "policy": crossing.policy, "axis": crossing.axis,
                 "subject": crossing.subject, "unit": crossing.unit, "window": crossing.window,
                 "used": crossing.used, "soft_limit": crossing.soft, "virtual_key_id": key.id,
                 "request_id": request_id},
    )
    try:
        emitter.emit_message(KIND_ALERT, alert.event_id, encode_alert(alert))
    except QueueFull:
        log.error("soft quota alert not queued (audit queue full): %s", crossing.dedup_key)
