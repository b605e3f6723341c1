"""The smart strategy's shell: the router model's answer within its timeout, the default on anything else.

``ask`` here is a test double of the LLM call the gateway makes (not of our storage); time is Trio's
autojump clock, so a router that hangs for a minute costs nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from nexus.gateway.catalog import ModelRoute
from nexus.gateway.routing.health import AllClosed
from nexus.gateway.routing.planner import NeedsSmartChoice, Plan
from nexus.gateway.routing.predicate import RouteRequest
from nexus.gateway.routing.smart import run_smart

from .conftest import allow_all, make_catalog, make_rule, router

CATALOG = make_catalog(("openai", "mini"), ("openai", "gpt-4o"), ("anthropic", "claude"))
RULE = make_rule({"type": "smart", "routerProvider": "openai", "routerModel": "mini", "timeoutMs": 800,
                  "default": {"model": "claude"}})


def choice() -> NeedsSmartChoice:
    result = router(RULE).plan(RouteRequest("auto", messages=[{"role": "user", "content": "hello"}]), CATALOG,
                               AllClosed(), allow_all)
    assert isinstance(result, NeedsSmartChoice)
    return result


def first(p: Plan) -> str:
    return p.targets[0].route.code


async def test_valid_answer_is_used_and_ask_gets_what_it_needs() -> None:
    calls: list[tuple[str, list[dict[str, str]], float]] = []

    async def ask(route: ModelRoute, messages: list[dict[str, str]], timeout_s: float) -> str | None:
        calls.append((route.code, messages, timeout_s))
        await trio.sleep(0.1)
        return '{"model": "gpt-4o"}'

    plan = await run_smart(choice(), ask)
    assert first(plan) == "gpt-4o"
    ((code, messages, timeout_s),) = calls
    assert code == "mini" and timeout_s == 0.8
    assert messages[0]["role"] == "system" and messages[1:] == [{"role": "user", "content": "hello"}]


async def test_timeout_uses_the_default_on_time(autojump_clock: trio.testing.MockClock) -> None:
    cancelled = trio.Event()

    async def ask(route: ModelRoute, messages: list[dict[str, str]], timeout_s: float) -> str | None:
        try:
            await trio.sleep(60)
        finally:
            cancelled.set()
        return '{"model": "gpt-4o"}'

    start = trio.current_time()
    plan = await run_smart(choice(), ask)
    assert trio.current_time() - start == pytest.approx(0.8)
    assert cancelled.is_set()  # the router call was abandoned, not left running
    assert first(plan) == "claude"
    assert "smart: default used (router model failed or timed out)" in plan.trace


@pytest.mark.parametrize("reply", [None, "", "I think GPT would be good", '{"model": "gpt-9"}', "{]"])
async def test_garbage_or_nothing_uses_the_default(reply: str | None) -> None:
    async def ask(route: ModelRoute, messages: list[dict[str, str]], timeout_s: float) -> str | None:
        return reply

    plan = await run_smart(choice(), ask)
    assert first(plan) == "claude"


async def test_a_failing_router_call_uses_the_default(caplog: pytest.LogCaptureFixture) -> None:
    async def ask(route: ModelRoute, messages: list[dict[str, str]], timeout_s: float) -> Any:
        raise ConnectionResetError("router upstream went away")

    plan = await run_smart(choice(), ask)
    assert first(plan) == "claude"
    assert "router upstream went away" in caplog.text


async def test_cancelling_the_caller_propagates() -> None:
    async def ask(route: ModelRoute, messages: list[dict[str, str]], timeout_s: float) -> str | None:
        await trio.sleep_forever()
        return None  # pragma: no cover

    with trio.move_on_after(0.05) as scope:
        await run_smart(choice(), ask)
    assert scope.cancelled_caught
