"""Trio shell of the ``smart`` strategy: ask the router model, within its timeout, and finish the plan.

``ask(route, messages, timeout_s)`` is the gateway's own non-streaming chat
call to the router model (through the normal provider layer), returning the
reply's text or ``None``.  ``run_smart`` bounds it by the strategy's
``timeoutMs`` whatever ``ask`` does with its ``timeout_s``, and turns every
failure (timeout, an exception, ``None``, an answer that names no candidate)
into the strategy's default: routing never fails because the router model did.

Resource handling: ``ask`` owns its upstream call; cancelling it at the
deadline is how the call is abandoned, so ``ask`` must be cancel-safe (the
HTTP client is).  Error handling: exceptions from ``ask`` are logged and
absorbed; cancellation of the caller propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from nexus.gateway.routing.planner import NeedsSmartChoice, Plan

if TYPE_CHECKING:
    from nexus.gateway.catalog import ModelRoute

log = logging.getLogger("nexus.gateway.routing.smart")

Ask = Callable[["ModelRoute", list[dict[str, str]], float], Awaitable[str | None]]


async def run_smart(choice: NeedsSmartChoice, ask: Ask) -> Plan:
    answer: str | None = None
    with trio.move_on_after(choice.timeout_s) as scope:
        try:
            reply = await ask(choice.router, choice.messages, choice.timeout_s)
            answer = reply if isinstance(reply, str) else None
        except Exception as exc:
            log.warning("smart router %s/%s failed, using the default: %s", choice.router.provider.name,
                        choice.router.code, exc)
    if scope.cancelled_caught:
        log.warning("smart router %s/%s timed out after %.3f s, using the default", choice.router.provider.name,
                    choice.router.code, choice.timeout_s)
    return choice.resolve(answer)
