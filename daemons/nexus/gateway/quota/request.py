"""The gateway's use of quotas for one generation request: reserve before the upstream call (a hard limit
answers 429 naming the axis), reconcile with the real usage and cost when the answer is complete."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nexus.gateway.catalog import ModelRoute
from nexus.gateway.errors import Caller
from nexus.gateway.keys.store import VirtualKey
from nexus.gateway.quota.engine import NO_QUOTA, QuotaExceeded, QuotaUnavailable
from nexus.gateway.quota.policy import estimate_chat, subject_for, usage_cost

if TYPE_CHECKING:
    from nexus.gateway.core import Gateway
    from nexus.gateway.generate import Call

log = logging.getLogger("nexus.gateway.quota")

CHARS_PER_TOKEN_OF_BODY = 4  # non-OpenAI dialects: estimate from the body size rather than parse their shapes


async def reserve(gw: Gateway, call: Call, key: VirtualKey, route: ModelRoute, caller: Caller,
                  parsed: dict[str, Any], body_len: int) -> list[tuple[bytes, bytes]]:
    engine = gw.quota
    if engine is None:
        return []
    if caller == "openai":
        estimate = estimate_chat(parsed, route)
    else:
        estimate = estimate_chat({"max_tokens": parsed.get("max_tokens") or parsed.get("max_output_tokens")}, route,
                                 input_tokens=body_len // CHARS_PER_TOKEN_OF_BODY)
    try:
        reservation = await engine.reserve(subject_for(key, route), estimate)
    except (QuotaExceeded, QuotaUnavailable) as exc:
        raise exc.gateway_error() from None
    if reservation is NO_QUOTA:
        return []
    for crossing in reservation.crossings:
        log.warning("soft quota limit reached", extra={"policy": crossing.policy, "axis": crossing.axis,
                                                       "used": crossing.used, "soft_limit": crossing.soft})

    async def reconcile(done: Call) -> None:
        ok = done.status == 200 and done.error_kind is None
        route_now = done.route or route
        cost = usage_cost(route_now.prices, done.usage) if ok else 0
        await engine.reconcile(reservation, done.usage if ok else None, cost)

    call.on_finish.append(reconcile)
    return reservation.headers()
