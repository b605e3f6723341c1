"""The planner: rule selection, policies, the key's allowed models, health ordering, retry budgets, smart
choices, and the per-request cost."""

from __future__ import annotations

import timeit
from typing import Any

import orjson

from nexus.gateway.routing.attempts import DEFAULT_RETRY, RetryPolicy
from nexus.gateway.routing.health import AllClosed, BreakerConfig, Health, HealthView
from nexus.gateway.routing.planner import EMPTY_ROUTER, NeedsSmartChoice, Plan, Router
from nexus.gateway.routing.predicate import RouteRequest
from nexus.gateway.routing.strategies import Single
from nexus.net.http1.types import Headers

from .conftest import allow_all, make_catalog, make_rule, router

CATALOG = make_catalog(("openai", "gpt-4o"), ("azure", "gpt-4o"), ("anthropic", "claude"), ("openai", "mini"),
                       ("groq", "llama"), ("voyage", "embed", "embedding"), ("openai", "gpt-4o-mini"))


def plan(r: Router, request: RouteRequest, health: HealthView | None = None, allowed: Any = allow_all) -> Plan:
    result = r.plan(request, CATALOG, health or AllClosed(), allowed)
    assert isinstance(result, Plan)
    return result


def order(p: Plan) -> list[str]:
    return [f"{t.route.provider.name}/{t.route.code}" for t in p.targets]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rule selection -----------------------------------------------------------------------------------

def test_no_rule_means_every_provider_serving_the_model_in_catalog_order() -> None:
    p = plan(EMPTY_ROUTER, RouteRequest("gpt-4o"))
    assert order(p) == ["openai/gpt-4o", "azure/gpt-4o"]
    assert p.rule_id is None and p.targets[0].why == "requested model"
    assert p.trace == ("no routing rule matched: every provider serving gpt-4o",)
    assert all(t.retry == DEFAULT_RETRY and t.retries == 1 for t in p.targets)


def test_first_matching_rule_by_priority_wins() -> None:
    low = make_rule({"model": "llama"}, name="low", priority=1)
    high = make_rule({"model": "claude"}, name="high", priority=5, match_conditions={"model": "gpt-4o"})
    other = make_rule({"model": "mini"}, name="other", priority=9, match_conditions={"model": "nope"})
    r = router(low, other, high)
    assert [x.name for x in r.routes] == ["other", "high", "low"]
    p = plan(r, RouteRequest("gpt-4o"))
    assert order(p) == ["anthropic/claude"] and p.rule_name == "high" and p.rule_id == high.id
    assert order(plan(r, RouteRequest("something-else"))) == ["groq/llama"]


def test_same_priority_orders_by_name_and_disabled_rules_are_ignored() -> None:
    b = make_rule({"model": "llama"}, name="b")
    a = make_rule({"model": "claude"}, name="a")
    off = make_rule({"model": "mini"}, name="0-off", enabled=False)
    r = router(b, off, a)
    assert [x.name for x in r.rules] == ["a", "b"]
    assert plan(r, RouteRequest("x")).rule_name == "a"


def test_org_scoped_rule_applies_to_its_subtree_only() -> None:
    rule = make_rule({"model": "claude"}, org_id="org-emea", org_path="acme/emea")
    r = router(rule)
    assert order(plan(r, RouteRequest("gpt-4o", org_id="o2", org_path="acme/emea/sales"))) == ["anthropic/claude"]
    assert order(plan(r, RouteRequest("gpt-4o", org_id="o3", org_path="acme/apac"))) == [
        "openai/gpt-4o", "azure/gpt-4o"]


def test_rule_retry_policy_reaches_every_target() -> None:
    rule = make_rule({"model": "gpt-4o"}, fallback_chain=[{"model": "claude"}],
                     retry_policy={"max_retries": 3, "backoff_ms": 50, "retry_on": ["timeout"]})
    p = plan(router(rule), RouteRequest("x"))
    assert {t.retry for t in p.targets} == {RetryPolicy(3, 50, 2000, rule.retry_policy.retry_on)}
    assert [t.retries for t in p.targets] == [3, 3, 3]


# --- catalog resolution and filtering -------------------------------------------------------------------

def test_unknown_models_and_providers_are_filtered_with_reasons() -> None:
    rule = make_rule({"type": "fallback", "targets": [
        {"model": "ghost"}, {"provider": "nobody", "model": "claude"}, {"provider": "openai", "model": "mini"}]})
    p = plan(router(rule), RouteRequest("x"))
    assert order(p) == ["openai/mini"]
    assert [(f.provider, f.model, f.reason) for f in p.filtered] == [
        ("*", "ghost", "model not in the catalog"),
        ("nobody", "claude", "provider unknown, disabled or not serving it")]
    empty = plan(EMPTY_ROUTER, RouteRequest("ghost"))
    assert empty.targets == () and empty.denied is None


def test_duplicates_are_dropped() -> None:
    rule = make_rule({"model": "gpt-4o"}, fallback_chain=[{"provider": "azure", "model": "gpt-4o"},
                                                          {"model": "claude"}])
    assert order(plan(router(rule), RouteRequest("x"))) == ["openai/gpt-4o", "azure/gpt-4o", "anthropic/claude"]


def test_the_keys_allowed_models_filter_candidates() -> None:
    rule = make_rule({"model": "gpt-4o"}, fallback_chain=[{"model": "claude"}, {"model": "mini"}])
    p = plan(router(rule), RouteRequest("x"), allowed=lambda code: code != "gpt-4o")
    assert order(p) == ["anthropic/claude", "openai/mini"]
    assert {(f.provider, f.reason) for f in p.filtered} == {
        ("openai", "the virtual key may not use this model"), ("azure", "the virtual key may not use this model")}
    nothing = plan(router(rule), RouteRequest("x"), allowed=lambda code: False)
    assert nothing.targets == () and nothing.denied is None  # not a policy denial: the caller answers 404


# --- policies -------------------------------------------------------------------------------------------

def policy(name: str, **lists: list[str]) -> Any:
    return make_rule({"type": "policy", **lists}, name=name, stage=0)


def test_policy_deny_wins_over_allow() -> None:
    r = router(policy("allow-gpt", allowModels=["gpt-*"]), policy("no-4o", denyModels=["gpt-4o"]))
    p = plan(r, RouteRequest("gpt-4o"))
    assert p.targets == ()
    assert p.denied == "denied by policy 'no-4o': model gpt-4o is in denyModels"
    assert p.policies == ("allow-gpt", "no-4o")
    one = router(policy("both", allowModels=["gpt-*"], denyModels=["gpt-4o"]))
    assert plan(one, RouteRequest("gpt-4o")).denied == "denied by policy 'both': model gpt-4o is in denyModels"


def test_policy_allows_intersect_and_denies_union() -> None:
    r = router(policy("a", allowModels=["gpt-*", "claude"]), policy("b", allowModels=["gpt-4o*", "llama"]),
               policy("c", denyProviders=["azure"]), policy("d", denyModels=["gpt-4o-mini"]),
               make_rule({"type": "fallback", "targets": [{"model": m} for m in
                                                          ("gpt-4o", "claude", "llama", "gpt-4o-mini", "mini")]}))
    p = plan(r, RouteRequest("x"))
    assert order(p) == ["openai/gpt-4o"]
    reasons = {f"{f.provider}/{f.model}": f.reason for f in p.filtered}
    assert reasons == {
        "azure/gpt-4o": "denied by policy 'c': provider azure is in denyProviders",
        "anthropic/claude": "denied by policy 'b': model claude is not in allowModels",
        "groq/llama": "denied by policy 'a': model llama is not in allowModels",
        "openai/gpt-4o-mini": "denied by policy 'd': model gpt-4o-mini is in denyModels",
        "openai/mini": "denied by policy 'a': model mini is not in allowModels",
    }
    assert p.denied is None  # something is left


def test_policy_provider_globs_and_its_own_conditions() -> None:
    only_openai = make_rule({"type": "policy", "allowProviders": ["open*"]}, stage=0,
                            match_conditions={"headers.x-region": "eu"})
    r = router(only_openai)
    eu = RouteRequest("gpt-4o", headers=Headers([(b"x-region", b"eu")]))
    assert order(plan(r, eu)) == ["openai/gpt-4o"]
    assert order(plan(r, RouteRequest("gpt-4o"))) == ["openai/gpt-4o", "azure/gpt-4o"]  # policy does not apply
    scoped = router(make_rule({"type": "policy", "denyModels": ["*"]}, stage=0, org_id="org-x"))
    assert plan(scoped, RouteRequest("gpt-4o", org_id="org-x")).denied is not None
    assert order(plan(scoped, RouteRequest("gpt-4o", org_id="org-y"))) == ["openai/gpt-4o", "azure/gpt-4o"]


# --- health ---------------------------------------------------------------------------------------------

def test_open_circuit_goes_last_and_is_never_dropped() -> None:
    clock = Clock()
    health = Health(BreakerConfig(failure_threshold=2, cooldown_s=10, probe_interval_s=3), clock)
    rule = make_rule({"model": "gpt-4o"}, fallback_chain=[{"model": "claude"}])
    for _ in range(2):
        health.record("id-openai", False, "server_error")
    p = plan(router(rule), RouteRequest("x"), health)
    assert order(p) == ["azure/gpt-4o", "anthropic/claude", "openai/gpt-4o"]
    assert p.targets[-1].health == "open" and p.targets[-1].why.endswith("(circuit open: moved last)")
    assert "circuit open, moved last: openai" in p.trace
    for _ in range(2):
        health.record("id-azure", False, "timeout")
        health.record("id-anthropic", False, "connect")
    everything_open = plan(router(rule), RouteRequest("x"), health)
    assert order(everything_open) == ["openai/gpt-4o", "azure/gpt-4o", "anthropic/claude"]  # all kept, in order
    assert {t.health for t in everything_open.targets} == {"open"}


def test_half_open_probe_after_cooldown_takes_its_place_again() -> None:
    clock = Clock()
    health = Health(BreakerConfig(failure_threshold=1, cooldown_s=10, probe_interval_s=3), clock)
    health.record("id-openai", False, "server_error")
    r = router(make_rule({"model": "gpt-4o"}))
    assert order(plan(r, RouteRequest("x"), health))[0] == "azure/gpt-4o"
    clock.now += 10
    probe = plan(r, RouteRequest("x"), health)
    assert order(probe)[0] == "openai/gpt-4o" and probe.targets[0].health == "half_open"
    health.begin("id-openai")  # the attempt loop claims the probe
    assert order(plan(r, RouteRequest("x"), health))[0] == "azure/gpt-4o"
    health.record("id-openai", True, "ok", 0.2)
    closed = plan(r, RouteRequest("x"), health)
    assert order(closed)[0] == "openai/gpt-4o" and closed.targets[0].health == "closed"


# --- smart ----------------------------------------------------------------------------------------------

SMART = {"type": "smart", "routerProvider": "openai", "routerModel": "mini", "timeoutMs": 750,
         "default": {"provider": "anthropic", "model": "claude"}}
CONVERSATION = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "prove Fermat"},
                {"role": "assistant", "content": [{"type": "text", "text": "which one?"}]},
                {"role": "user", "content": [{"type": "text", "text": "the last"}, {"type": "image_url"}]}]


def smart_choice(rule_extra: dict[str, Any] | None = None, allowed: Any = allow_all,
                 *extra_rules: Any) -> NeedsSmartChoice:
    r = router(make_rule({**SMART, **(rule_extra or {})}, name="s", fallback_chain=[{"model": "llama"}]),
               *extra_rules)
    result = r.plan(RouteRequest("auto", messages=CONVERSATION), CATALOG, AllClosed(), allowed)
    assert isinstance(result, NeedsSmartChoice)
    return result


def test_smart_asks_with_a_compact_catalog_of_allowed_chat_models() -> None:
    choice = smart_choice({}, lambda code: code != "llama",
                          make_rule({"type": "policy", "denyModels": ["gpt-4o-mini"]}, stage=0))
    assert (choice.router.provider.name, choice.router.code) == ("openai", "mini")
    assert choice.timeout_s == 0.75
    assert choice.candidates == ("claude", "gpt-4o", "mini")  # no embeddings, nothing denied or disallowed
    assert choice.default == Single("claude", "anthropic")
    system, *turns = choice.messages
    assert system["role"] == "system"
    lines = [orjson.loads(line) for line in system["content"].splitlines() if line.startswith("{\"m\"")]
    assert [line["m"] for line in lines] == ["claude", "gpt-4o", "mini"]
    assert all({"in", "out", "ctx"} <= set(line) for line in lines)
    assert turns == [{"role": "user", "content": "prove Fermat"}, {"role": "assistant", "content": "which one?"},
                     {"role": "user", "content": "the last"}]


def test_smart_custom_prompt_gets_the_catalog() -> None:
    choice = smart_choice({"systemPrompt": "Choose.\n{catalog}\nJSON please"})
    content = choice.messages[0]["content"]
    assert content.startswith("Choose.\n{\"m\":\"claude\"") and content.endswith("\nJSON please")


def test_smart_resolves_a_valid_answer() -> None:
    choice = smart_choice()
    for answer in ('{"model": "gpt-4o"}', '```json\n{"model":"gpt-4o","reason":"hard"}\n```', "gpt-4o",
                   '"gpt-4o"', 'I pick {"modelId": "gpt-4o"} because'):
        p = choice.resolve(answer)
        assert order(p) == ["openai/gpt-4o", "azure/gpt-4o", "groq/llama"], answer
        assert p.targets[0].why == "rule s > smart choice"
        assert "smart: router chose gpt-4o" in p.trace


def test_smart_uses_the_default_on_failure_or_garbage() -> None:
    choice = smart_choice()
    for answer in (None, "", "no idea", '{"model": "gpt-5"}', '{"model": "embed"}', "[1, 2]", '{"model": 3}'):
        p = choice.resolve(answer)
        assert order(p) == ["anthropic/claude", "groq/llama"], answer
        assert p.targets[0].why == "rule s > smart default"
        assert any(line.startswith("smart: default used (") for line in p.trace)


def test_smart_without_its_router_model_in_the_catalog_plans_the_default_at_once() -> None:
    r = router(make_rule({**SMART, "routerModel": "ghost"}))
    p = r.plan(RouteRequest("auto"), CATALOG, AllClosed(), allow_all)
    assert isinstance(p, Plan) and order(p) == ["anthropic/claude"]
    assert "smart: default used (router model ghost is not in the catalog)" in p.trace


# --- cost -------------------------------------------------------------------------------------------------

def test_planning_is_cheap_with_twenty_rules() -> None:
    # 18 rules that do not match (each an $and of three conditions), one policy, and a sticky load balance
    # over two providers each with a fallback chain: the typical shape, measured as the best of 20 batches.
    rules = [make_rule({"provider": "openai", "model": "mini"}, priority=100 - i, match_conditions={"$and": [
        {"model": f"x{i}"}, {"headers.x-team": {"$in": ["a", "b"]}}, {"org_path": {"$prefix": "acme/emea"}}]})
        for i in range(18)]
    rules.append(make_rule({"type": "policy", "denyModels": ["bad-*"]}, stage=0))
    rules.append(make_rule({"type": "loadbalance", "stickyOn": "user", "weightedTargets": [
        {"weight": 3, "node": {"provider": "openai", "model": "gpt-4o"}},
        {"weight": 1, "node": {"provider": "azure", "model": "gpt-4o"}}]},
        match_conditions={"model": {"$regex": "^gpt"}}, fallback_chain=[{"model": "claude"}]))
    r = router(*rules)
    headers = Headers([(b"content-type", b"application/json"), (b"authorization", b"Bearer x"), (b"x-team", b"c")])
    request = RouteRequest("gpt-4o", request_id="abc", user_id="u1", org_path="acme/emea/x", headers=headers)
    health = Health()
    assert len(plan(r, request, health).targets) == 3
    per_call = min(timeit.repeat(lambda: r.plan(request, CATALOG, health, allow_all), number=500, repeat=20)) / 500
    # About 14 µs on the 2-core reference box; 40 µs leaves room for a loaded machine and still catches a
    # regression to per-request parsing or regex compilation (hundreds of µs).
    assert per_call < 40e-6, f"{per_call * 1e6:.1f} µs per plan"
