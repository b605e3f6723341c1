"""Each strategy through the planner: which targets, in which order, and the statistics of the weighted ones.

Weighted picks are checked with Pearson's chi-square over 10,000 picks against the configured weights, at the
0.1 % level (critical values for 1, 2 and 3 degrees of freedom below).  The random sources are seeded, so the
tests are deterministic; each also checks that the same statistic rejects the wrong (uniform) weights, so the
bound would catch a strategy that ignored its weights.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from nexus.gateway.routing.attempts import DEFAULT_FAILURES, FailureSet
from nexus.gateway.routing.health import AllClosed
from nexus.gateway.routing.planner import Plan, Router
from nexus.gateway.routing.predicate import RouteRequest

from .conftest import allow_all, make_catalog, make_rule, router

CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266}
N = 10_000

CATALOG = make_catalog(("openai", "gpt-4o"), ("azure", "gpt-4o"), ("anthropic", "claude"), ("openai", "mini"),
                       ("groq", "llama"), ("mistral", "large"))


def plan(r: Router, request: RouteRequest, rng: Any = None) -> Plan:
    result = r.plan(request, CATALOG, AllClosed(), allow_all, **({"rng": rng} if rng else {}))
    assert isinstance(result, Plan)
    return result


def order(p: Plan) -> list[str]:
    return [f"{t.route.provider.name}/{t.route.code}" for t in p.targets]


def chi_square(counts: Counter[str], weights: dict[str, int]) -> float:
    total, wsum = sum(counts.values()), sum(weights.values())
    return sum((counts[k] - total * w / wsum) ** 2 / (total * w / wsum) for k, w in weights.items())


def assert_follows(counts: Counter[str], weights: dict[str, int]) -> None:
    assert set(counts) <= set(weights)
    df = len(weights) - 1
    assert chi_square(counts, weights) < CHI2_999[df], (counts, weights)
    uniform = dict.fromkeys(weights, 1)
    assert chi_square(counts, uniform) > CHI2_999[df], "the test cannot tell these weights from uniform"


def lb(weights: Sequence[tuple[int, str, str]], **extra: Any) -> dict[str, Any]:
    return {"type": "loadbalance", **extra,
            "weightedTargets": [{"weight": w, "node": {"provider": p, "model": m}} for w, p, m in weights]}


LB = [(5, "openai", "gpt-4o"), (3, "anthropic", "claude"), (2, "groq", "llama")]
LB_WEIGHTS = {"openai/gpt-4o": 5, "anthropic/claude": 3, "groq/llama": 2}


# --- single ------------------------------------------------------------------------------------------

def test_single_named_provider() -> None:
    p = plan(router(make_rule({"type": "single", "provider": "azure", "model": "gpt-4o"}, name="one")),
             RouteRequest("anything"))
    assert order(p) == ["azure/gpt-4o"]
    assert p.targets[0].why == "rule one" and p.rule_name == "one"


def test_single_provider_by_id_and_without_provider() -> None:
    by_id = plan(router(make_rule({"model": "gpt-4o", "provider": "id-azure"})), RouteRequest("x"))
    assert order(by_id) == ["azure/gpt-4o"]
    every = plan(router(make_rule({"model": "gpt-4o"})), RouteRequest("x"))
    assert order(every) == ["openai/gpt-4o", "azure/gpt-4o"]  # catalog order


# --- fallback -----------------------------------------------------------------------------------------

def test_fallback_order_and_status_codes() -> None:
    rule = make_rule({"type": "fallback", "onStatusCodes": [429, 503], "targets": [
        {"provider": "anthropic", "model": "claude"}, {"provider": "openai", "model": "gpt-4o"},
        {"type": "fallback", "targets": [{"model": "llama"}], "onStatusCodes": ["timeout"]}]},
        name="fb", fallback_chain=[{"model": "large"}])
    p = plan(router(rule), RouteRequest("x"))
    assert order(p) == ["anthropic/claude", "openai/gpt-4o", "groq/llama", "mistral/large"]
    assert [t.why for t in p.targets] == ["rule fb > fallback #1", "rule fb > fallback #2",
                                          "rule fb > fallback #3 > fallback #1", "rule fb > fallback chain #1"]
    assert p.targets[0].fallback_on == p.targets[1].fallback_on == FailureSet(frozenset({429, 503}))
    assert p.targets[2].fallback_on == FailureSet(timeout=True)  # the nearest fallback's codes
    assert p.targets[3].fallback_on == DEFAULT_FAILURES


def test_fallback_default_status_codes() -> None:
    p = plan(router(make_rule({"type": "fallback", "targets": [{"model": "claude"}, {"model": "mini"}]})),
             RouteRequest("x"))
    assert all(t.fallback_on == DEFAULT_FAILURES for t in p.targets)
    assert DEFAULT_FAILURES.describe() == [429, "5xx", "timeout", "connect", "error_frame"]


# --- loadbalance --------------------------------------------------------------------------------------

def test_loadbalance_weights() -> None:
    r = router(make_rule(lb(LB)))
    rng = random.Random(1234).random
    picks = Counter(order(plan(r, RouteRequest("x"), rng))[0] for _ in range(N))
    assert_follows(picks, LB_WEIGHTS)


def test_loadbalance_lists_alternates_after_the_pick() -> None:
    r = router(make_rule(lb([*LB, (0, "mistral", "large")]), name="lb"))
    p = plan(r, RouteRequest("x"), random.Random(7).random)
    assert sorted(order(p)) == sorted(LB_WEIGHTS)  # every live target, weight 0 never
    assert p.targets[0].why.startswith("rule lb > loadbalance pick (weight ")
    assert [t.why for t in p.targets[1:]] == ["rule lb > loadbalance alternate #1",
                                             "rule lb > loadbalance alternate #2"]
    assert p.trace[-1].startswith("loadbalance picked ")


@pytest.mark.parametrize(("sticky", "field"), [("user", "user_id"), ("key", "virtual_key_id"),
                                               ("header:X-Session", "headers")])
def test_sticky_same_value_same_target(sticky: str, field: str) -> None:
    r = router(make_rule(lb(LB, stickyOn=sticky)))
    for value in ("alice", "bob", "carol", "dave"):
        kwargs: dict[str, Any] = {field: {"x-session": value} if field == "headers" else value}
        seen = {tuple(order(plan(r, RouteRequest("x", **kwargs), random.Random(seed).random)))
                for seed in range(30)}
        assert len(seen) == 1, f"{value} moved between targets: {seen}"
        assert "sticky on " + sticky in plan(r, RouteRequest("x", **kwargs)).targets[0].why


def test_sticky_distribution_across_values_follows_weights() -> None:
    r = router(make_rule(lb(LB, stickyOn="user")))
    picks = Counter(order(plan(r, RouteRequest("x", user_id=f"user-{i}")))[0] for i in range(N))
    assert_follows(picks, LB_WEIGHTS)


def test_sticky_removing_a_target_moves_only_its_values() -> None:
    before = router(make_rule(lb(LB, stickyOn="user")))
    after = router(make_rule(lb(LB[:2], stickyOn="user")))
    moved = 0
    for i in range(2000):
        request = RouteRequest("x", user_id=f"u{i}")
        was, now = order(plan(before, request))[0], order(plan(after, request))[0]
        if was != "groq/llama":
            assert now == was
        else:
            moved += 1
    assert 300 < moved < 500  # about a fifth of the values were on the removed target


def test_sticky_without_a_value_is_random() -> None:
    r = router(make_rule(lb(LB, stickyOn="header:x-session")))
    firsts = {order(plan(r, RouteRequest("x"), random.Random(seed).random))[0] for seed in range(40)}
    assert firsts == set(LB_WEIGHTS)
    assert "sticky" not in plan(r, RouteRequest("x")).targets[0].why


# --- conditional --------------------------------------------------------------------------------------

COND = {"type": "conditional", "conditions": [
    {"when": {"endpoint": "embeddings"}, "then": {"model": "llama"}},
    {"when": {"metadata.tier": "gold"}, "then": {"model": "gpt-4o", "provider": "openai"}},
    {"when": {"metadata.tier": {"$exists": True}}, "then": {"model": "claude"}}]}


def test_conditional_first_matching_branch_then_default() -> None:
    r = router(make_rule({**COND, "default": {"model": "mini"}}, name="c"))
    gold = plan(r, RouteRequest("x", metadata={"tier": "gold"}))
    assert order(gold) == ["openai/gpt-4o"] and gold.targets[0].why == "rule c > condition #2"
    assert "conditional: condition #2 matched" in gold.trace
    assert order(plan(r, RouteRequest("x", metadata={"tier": "silver"}))) == ["anthropic/claude"]
    assert order(plan(r, RouteRequest("x", "embeddings", metadata={"tier": "gold"}))) == ["groq/llama"]
    fallthrough = plan(r, RouteRequest("x"))
    assert order(fallthrough) == ["openai/mini"] and fallthrough.targets[0].why == "rule c > conditional default"


def test_conditional_without_default_yields_nothing() -> None:
    p = plan(router(make_rule(COND)), RouteRequest("x"))
    assert p.targets == () and p.denied is None
    assert "conditional: no condition matched and there is no default" in p.trace


# --- ab_split ----------------------------------------------------------------------------------------

AB = {"type": "ab_split", "targets": [{"provider": "openai", "model": "gpt-4o", "weight": 70},
                                      {"provider": "anthropic", "model": "claude", "weight": 30}]}


def test_ab_split_is_deterministic_by_request_id_and_recorded() -> None:
    r = router(make_rule(AB, fallback_chain=[{"model": "mini"}]))
    for rid in ("req-a", "req-b", "req-c", "req-d", "req-e"):
        plans = [plan(r, RouteRequest("x", request_id=rid), random.Random(seed).random) for seed in range(20)]
        arms = {p.ab_arm for p in plans}
        assert len(arms) == 1
        arm = arms.pop()
        assert arm in ("openai/gpt-4o", "anthropic/claude")
        p = plans[0]
        assert order(p) == [arm, "openai/mini"]  # one arm (no silent switch to the other), then the chain
        assert p.targets[0].why.endswith(f"ab_split arm {arm}")
        assert any(line.startswith(f"ab_split arm {arm}") and "by request id" in line for line in p.trace)


def test_ab_split_distribution_follows_weights() -> None:
    r = router(make_rule(AB))
    arms = Counter(plan(r, RouteRequest("x", request_id=f"r-{i:05d}")).ab_arm or "" for i in range(N))
    assert_follows(arms, {"openai/gpt-4o": 70, "anthropic/claude": 30})


def test_ab_split_sticky_value_wins_over_request_id() -> None:
    r = router(make_rule({**AB, "stickyOn": "user"}))
    arms = {plan(r, RouteRequest("x", request_id=f"r{i}", user_id="u-1")).ab_arm for i in range(50)}
    assert len(arms) == 1
    assert "by sticky on user" in plan(r, RouteRequest("x", user_id="u-1")).trace[-1]


def test_ab_split_records_the_first_arm_on_the_walk() -> None:
    nested = {"type": "fallback", "targets": [
        AB, {"type": "ab_split", "targets": [{"model": "llama", "weight": 1}, {"model": "large", "weight": 1}]}]}
    for i in range(20):
        p = plan(router(make_rule(nested)), RouteRequest("x", request_id=f"q{i}"))
        assert p.ab_arm == order(p)[0]  # the experiment's arm, not the later split's
        assert order(p)[1] in ("groq/llama", "mistral/large")
