"""Rule records from their stored JSON: structure, defaults, scope, and errors that name the rule and the place."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.gateway.routing.attempts import DEFAULT_FAILURES, FailureSet, RetryPolicy
from nexus.gateway.routing.predicate import RouteRequest
from nexus.gateway.routing.rules import MAX_DEPTH, RuleError, parse_rule
from nexus.gateway.routing.strategies import (
    ABSplit,
    Conditional,
    Fallback,
    LoadBalance,
    Policy,
    Single,
    Smart,
    Weighted,
)

FULL = {
    "id": "r1", "org_id": None, "org_path": None, "name": "prod", "description": "main route", "stage": 1,
    "priority": 10, "match_conditions": {"model": {"$in": ["gpt-4o", "auto"]}},
    "strategy": {"type": "fallback", "onStatusCodes": [429, 503, "timeout"], "targets": [
        {"type": "loadbalance", "stickyOn": "header:x-session", "stickyTtlMs": 60000, "weightedTargets": [
            {"weight": 3, "node": {"type": "single", "provider": "openai", "model": "gpt-4o"}},
            {"weight": 1, "node": {"provider": "azure", "model": "gpt-4o"}}]},
        {"type": "conditional", "conditions": [{"when": {"endpoint": "chat"}, "then": {"model": "claude"}}],
         "default": {"model": "mini"}},
        {"type": "ab_split", "targets": [{"provider": "a", "model": "x", "weight": 1}, {"model": "y", "weight": 1}]},
        {"type": "smart", "routerProvider": "openai", "routerModel": "mini", "systemPrompt": "pick {catalog}",
         "timeoutMs": 500, "default": {"model": "gpt-4o"}},
    ]},
    "retry_policy": {"max_retries": 2, "backoff_ms": 100, "max_backoff_ms": 1000, "retry_on": [429, "5xx"]},
    "fallback_chain": [{"provider": "anthropic", "model": "claude"}, {"type": "single", "model": "mini"}],
    "enabled": True,
}


def test_full_rule_structures_into_records() -> None:
    rule = parse_rule(FULL)
    assert (rule.id, rule.name, rule.stage, rule.priority, rule.description) == ("r1", "prod", 1, 10, "main route")
    assert rule.match_conditions(RouteRequest("auto")) and not rule.match_conditions(RouteRequest("claude"))
    strategy = rule.strategy
    assert isinstance(strategy, Fallback)
    assert strategy.on_status_codes == FailureSet(frozenset({429, 503}), timeout=True)
    lb, cond, ab, smart = strategy.targets
    assert isinstance(lb, LoadBalance) and lb.sticky_on is not None and lb.sticky_on.spec == "header:x-session"
    assert lb.weighted_targets == (Weighted(3, Single("gpt-4o", "openai")), Weighted(1, Single("gpt-4o", "azure")))
    assert lb.sticky_ttl_ms == 60000
    assert isinstance(cond, Conditional) and cond.default == Single("mini")
    assert cond.conditions[0].when(RouteRequest("m", "chat")) and not cond.conditions[0].when(
        RouteRequest("m", "embeddings"))
    assert isinstance(ab, ABSplit) and [a.describe() for a in ab.targets] == ["a/x", "*/y"]
    assert isinstance(smart, Smart)
    assert (smart.router_provider, smart.router_model, smart.system_prompt, smart.timeout_ms) == (
        "openai", "mini", "pick {catalog}", 500)
    assert rule.retry_policy == RetryPolicy(2, 100, 1000, FailureSet(frozenset({429}), server_errors=True))
    assert rule.fallback_chain == (Single("claude", "anthropic"), Single("mini"))


def test_defaults() -> None:
    rule = parse_rule({"id": "r", "name": "n", "strategy": {"model": "gpt-4o"}})
    assert rule.stage == 1 and rule.priority == 0 and rule.enabled and rule.fallback_chain == ()
    assert rule.retry_policy.max_retries == 1 and rule.retry_policy.retry_on == DEFAULT_FAILURES
    assert rule.match_conditions(RouteRequest("anything"))
    fb = parse_rule({"id": "r", "name": "n", "strategy": {"type": "fallback", "targets": [{"model": "a"}]}})
    assert isinstance(fb.strategy, Fallback) and fb.strategy.on_status_codes == DEFAULT_FAILURES
    smart = parse_rule({"id": "r", "name": "n", "strategy": {"type": "smart", "routerModel": "m",
                                                             "default": {"model": "a"}}})
    assert isinstance(smart.strategy, Smart) and smart.strategy.timeout_ms == 3000


def test_policy_rule() -> None:
    rule = parse_rule({"id": "p", "name": "pol", "stage": 0, "strategy": {
        "type": "policy", "allowModels": ["gpt-*"], "denyProviders": ["azure*"]}})
    assert isinstance(rule.strategy, Policy)
    assert rule.strategy.allow_models == ("gpt-*",) and rule.strategy.deny_models is None


def _nest(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"model": "leaf"}
    for _ in range(levels - 1):
        node = {"type": "fallback", "targets": [node]}
    return node


def test_depth_limit() -> None:
    parse_rule({"id": "r", "name": "deep-ok", "strategy": _nest(MAX_DEPTH)})
    with pytest.raises(RuleError, match=r"routing rule 'too-deep' \(r\): strategy tree is 11 levels deep; at most 10"):
        parse_rule({"id": "r", "name": "too-deep", "strategy": _nest(MAX_DEPTH + 1)})


def test_absurd_json_nesting_is_rejected_without_recursing() -> None:
    when: Any = {"model": "x"}
    for _ in range(5000):
        when = {"$not": when}
    with pytest.raises(RuleError, match="JSON nested deeper than"):
        parse_rule({"id": "r", "name": "n", "strategy": {"model": "a"}, "match_conditions": when})


SMART = {"type": "smart", "routerModel": "m", "default": {"model": "a"}}


@pytest.mark.parametrize(("fields", "message"), [
    ({"strategy": {"type": "single", "model": "x"}, "stage": 0}, "a stage-0 rule must have a policy strategy"),
    ({"strategy": {"type": "policy", "denyModels": ["x"]}, "stage": 0, "fallback_chain": [{"model": "y"}]},
     "a stage-0 \\(policy\\) rule cannot have a fallback chain"),
    ({"strategy": {"type": "policy", "denyModels": ["x"]}}, "a policy strategy belongs in a stage-0 rule"),
    ({"strategy": {"type": "fallback", "targets": [{"type": "policy", "denyModels": ["x"]}]}},
     r"policy strategy is only valid as the whole strategy of a stage-0 rule @ \$\.strategy\.targets\[0\]"),
    ({"strategy": {"type": "policy"}, "stage": 0}, "policy needs at least one of allowModels"),
    ({"strategy": {"model": "x"}, "stage": 2}, "stage must be 0 \\(policy\\) or 1 \\(route\\), got 2"),
    ({"strategy": {"type": "roundrobin"}}, r"unknown strategy type 'roundrobin'.* @ \$\.strategy"),
    ({"strategy": {"provider": "x"}}, r"a strategy node needs a \"type\""),
    ({"strategy": "single"}, "a strategy node must be an object, got str"),
    ({"strategy": {"type": "single", "model": 5}}, r"expected a string, got int 5 @ \$\.strategy\.model"),
    ({"strategy": {"type": "single", "model": ""}}, "model must not be empty"),
    ({"strategy": {"type": "single", "model": "x", "provder": "y"}}, r"extra fields found \(provder\)"),
    ({"strategy": {"type": "fallback", "targets": []}}, "targets must not be empty"),
    ({"strategy": {"type": "fallback", "targets": [{"model": "x"}], "onStatusCodes": [200]}},
     r"200 is not an HTTP error status .* @ \$\.strategy\.onStatusCodes"),
    ({"strategy": {"type": "fallback", "targets": [{"model": "x"}], "onStatusCodes": ["5XX"]}},
     "unknown failure '5XX'"),
    ({"strategy": {"type": "loadbalance", "weightedTargets": [{"weight": "3", "node": {"model": "x"}}]}},
     r"expected an integer, got str '3' @ \$\.strategy\.weightedTargets\[0\]\.weight"),
    ({"strategy": {"type": "loadbalance", "weightedTargets": [{"weight": True, "node": {"model": "x"}}]}},
     "expected an integer, got bool"),
    ({"strategy": {"type": "loadbalance", "weightedTargets": [{"weight": 0, "node": {"model": "x"}}]}},
     "weightedTargets: at least one weight must be > 0"),
    ({"strategy": {"type": "loadbalance", "weightedTargets": [{"weight": -1, "node": {"model": "x"}},
                                                              {"weight": 2, "node": {"model": "y"}}]}},
     "weights must be >= 0"),
    ({"strategy": {"type": "loadbalance", "stickyOn": "cookie", "weightedTargets": [
        {"weight": 1, "node": {"model": "x"}}]}}, "stickyOn must be 'header:<name>', 'key' or 'user'"),
    ({"strategy": {"type": "ab_split", "targets": "x"}}, r"expected an array, got str @ \$\.strategy\.targets"),
    ({"strategy": {"type": "ab_split", "targets": [{"model": "x"}]}}, r"required field missing @ .*weight"),
    ({"strategy": {"type": "conditional"}}, "conditional needs conditions or a default"),
    ({"strategy": {"type": "conditional", "conditions": [{"when": {"colour": "red"}, "then": {"model": "x"}}]}},
     r"unknown field 'colour'.* @ \$\.strategy\.conditions\[0\]\.when"),
    ({"strategy": {"type": "smart", "routerModel": "m"}}, r"required field missing @ \$\.strategy\.default"),
    ({"strategy": {**SMART, "timeoutMs": 0}}, "'timeoutMs' must be >= 1"),
    ({"strategy": {"type": "fallback", "targets": [SMART, SMART]}}, "at most one smart node per strategy tree"),
    ({"strategy": {"model": "x"}, "match_conditions": {"model": {"$regex": "("}}},
     r"invalid regular expression .* @ \$\.match_conditions"),
    ({"strategy": {"model": "x"}, "retry_policy": {"max_retries": 11}}, "'max_retries' must be <= 10"),
    ({"strategy": {"model": "x"}, "retry_policy": {"backoff_ms": 500, "max_backoff_ms": 100}},
     r"max_backoff_ms \(100\) is below backoff_ms \(500\)"),
    ({"strategy": {"model": "x"}, "retry_policy": {"retry_on": "5xx"}}, "expected an array of statuses"),
    ({"strategy": {"model": "x"}, "fallback_chain": [{"type": "smart", "routerModel": "m",
                                                      "default": {"model": "y"}}]},
     r"extra fields found .* @ \$\.fallback_chain\[0\]"),
    ({"strategy": {"model": "x"}, "priority": 1.5}, "expected an integer, got float"),
    ({"strategy": {"model": "x"}, "surprise": 1}, r"extra fields found \(surprise\)"),
])
def test_invalid_rules_name_the_rule_and_the_place(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=r"^routing rule 'bad-one' \(id-7\): .*" + message):
        parse_rule({"id": "id-7", "name": "bad-one", **fields})


def test_scope() -> None:
    glob = parse_rule({"id": "g", "name": "g", "strategy": {"model": "x"}})
    org = parse_rule({"id": "o", "name": "o", "org_id": "org-emea", "org_path": "acme/emea",
                      "strategy": {"model": "x"}})
    assert glob.applies(RouteRequest("m")) and glob.applies(RouteRequest("m", org_id="any"))
    assert org.applies(RouteRequest("m", org_id="org-emea"))
    assert org.applies(RouteRequest("m", org_id="org-sales", org_path="acme/emea/sales"))
    assert org.applies(RouteRequest("m", org_id="org-x", org_path="acme/emea"))
    assert not org.applies(RouteRequest("m", org_id="org-emeax", org_path="acme/emeax"))
    assert not org.applies(RouteRequest("m", org_id="org-acme", org_path="acme"))
    assert not org.applies(RouteRequest("m"))
    matched = parse_rule({"id": "o", "name": "o", "org_id": "org-emea", "strategy": {"model": "x"},
                          "match_conditions": {"model": "gpt"}})
    assert matched.applies(RouteRequest("gpt", org_id="org-emea"))
    assert not matched.applies(RouteRequest("claude", org_id="org-emea"))
    assert not matched.applies(RouteRequest("gpt", org_id="other"))
