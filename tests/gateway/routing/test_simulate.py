"""Simulation: the explanation of a plan, and the service-token-protected handler that serves it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from nexus.gateway.routing.health import AllClosed, BreakerConfig, Health
from nexus.gateway.routing.simulate import SimulationError, simulate, simulate_handler
from nexus.net.http1.types import Headers, Request

from .conftest import make_catalog, make_rule, router

CATALOG = make_catalog(("openai", "gpt-4o"), ("azure", "gpt-4o"), ("anthropic", "claude"), ("openai", "mini"),
                       ("groq", "llama"))
ROUTER = router(
    make_rule({"type": "policy", "denyProviders": ["groq"]}, name="no-groq", stage=0),
    make_rule({"type": "policy", "denyModels": ["*"]}, name="emea-lockdown", stage=0, org_id="org-emea"),
    make_rule({"type": "policy", "allowModels": ["mini"]}, name="cheap-only", stage=0,
              match_conditions={"metadata.tier": "free"}),
    make_rule({"type": "conditional", "conditions": [{"when": {"headers.x-team": "ml"}, "then": {"model": "claude"}}],
               "default": {"model": "gpt-4o"}}, name="by-team", priority=10, match_conditions={"model": "auto"},
              fallback_chain=[{"model": "llama"}, {"model": "mini"}], retry_policy={"max_retries": 2}),
    make_rule({"model": "mini"}, name="catch-auto", priority=1, match_conditions={"model": "auto"}),
    make_rule({"model": "mini"}, name="embeddings", priority=50, match_conditions={"endpoint": "embeddings"}),
)


def test_explains_rules_trace_targets_and_filtered() -> None:
    health = Health(BreakerConfig(failure_threshold=1))
    health.record("id-anthropic", False, "server_error")
    out = simulate(ROUTER, CATALOG, health, {"model": "auto", "headers": {"X-Team": "ml"}, "request_id": "r1",
                                             "org_id": "org-apac"})
    assert [(r["name"], r["verdict"]) for r in out["rules"]] == [
        ("cheap-only", "did not match"), ("emea-lockdown", "out of scope"), ("no-groq", "applied"),
        ("embeddings", "did not match"), ("by-team", "selected"),
        ("catch-auto", "matched, shadowed by a higher-priority rule")]
    assert out["rule"]["name"] == "by-team" and out["policies"] == ["no-groq"] and out["denied"] is None
    assert out["trace"] == ["rule 'by-team' matched (priority 10)", "conditional: condition #1 matched",
                            "circuit open, moved last: anthropic"]
    assert [(t["order"], t["provider"], t["model"], t["health"]) for t in out["targets"]] == [
        (1, "openai", "mini", "closed"), (2, "anthropic", "claude", "open")]
    mini, claude = out["targets"]
    assert mini["why"] == "rule by-team > fallback chain #2"
    assert claude["why"] == "rule by-team > condition #1 (circuit open: moved last)"
    assert mini["retries"] == 2 and mini["retry_on"] == [429, "5xx", "timeout", "connect", "error_frame"]
    assert mini["upstream_model"] == "mini@openai" and mini["fallback_on"] == mini["retry_on"]
    assert out["filtered"] == [{"provider": "groq", "model": "llama",
                                "reason": "denied by policy 'no-groq': provider groq is in denyProviders"}]
    assert out["request"]["model"] == "auto" and out["smart"] is None
    orjson.dumps(out)  # it is what the handler sends


def test_denied_and_allowed_models() -> None:
    denied = simulate(ROUTER, CATALOG, AllClosed(), {"model": "gpt-4o", "org_id": "org-emea"})
    assert denied["targets"] == [] and denied["denied"].startswith("denied by policy 'emea-lockdown'")
    narrowed = simulate(ROUTER, CATALOG, AllClosed(), {"model": "auto", "allowed_models": ["gpt-*"]})
    assert [t["model"] for t in narrowed["targets"]] == ["gpt-4o", "gpt-4o"]
    assert {"provider": "openai", "model": "mini", "reason": "the virtual key may not use this model"} in narrowed[
        "filtered"]


def test_smart_step_is_shown() -> None:
    rules = [{"name": "s", "strategy": {"type": "smart", "routerModel": "mini", "default": {"model": "claude"}}},
             {"name": "broken", "strategy": {"type": "single"}}]
    without = simulate(ROUTER, CATALOG, AllClosed(), {"model": "x", "rules": rules,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert without["smart"]["router"] == "openai/mini" and without["smart"]["answer"] is None
    assert without["smart"]["candidates"] == ["claude", "gpt-4o", "llama", "mini"]
    assert without["smart"]["messages"][-1] == {"role": "user", "content": "hi"}
    assert [t["model"] for t in without["targets"]] == ["claude"]
    assert without["skipped_rules"] == [
        "routing rule 'broken' (draft-1): required field missing @ $.strategy.model"]
    assert [r["name"] for r in without["rules"]] == ["s"]  # the drafts replace the live rules
    answered = simulate(ROUTER, CATALOG, AllClosed(), {"model": "x", "rules": rules, "smart_answer": "llama"})
    assert [t["model"] for t in answered["targets"]] == ["llama"]


def test_same_input_same_explanation() -> None:
    rules = [{"name": "lb", "strategy": {"type": "loadbalance", "weightedTargets": [
        {"weight": 1, "node": {"model": "claude"}}, {"weight": 1, "node": {"model": "llama"}}]}}]
    runs = {tuple(t["model"] for t in simulate(ROUTER, CATALOG, AllClosed(), {
        "model": "x", "rules": rules, "request_id": "fixed"})["targets"]) for _ in range(10)}
    assert len(runs) == 1


@pytest.mark.parametrize(("body", "message"), [
    ({}, "`model` is required"),
    ({"model": ""}, "`model` is required"),
    ({"model": "x", "endpoint": "images"}, "`endpoint` must be one of"),
    ({"model": "x", "user_id": 5}, "`user_id` must be a string"),
    ({"model": "x", "headers": {"a": 1}}, "`headers` must be an object of strings"),
    ({"model": "x", "metadata": []}, "`metadata` must be an object"),
    ({"model": "x", "messages": {}}, "`messages` must be an array"),
    ({"model": "x", "allowed_models": "gpt-*"}, "`allowed_models` must be an array of globs"),
    ({"model": "x", "smart_answer": 1}, "`smart_answer` must be a string"),
    ({"model": "x", "rules": {}}, "`rules` must be an array of rule objects"),
])
def test_malformed_requests(body: dict[str, Any], message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        simulate(ROUTER, CATALOG, AllClosed(), body)


def request(body: bytes, *headers: tuple[bytes, bytes]) -> Request:
    return Request("POST", b"/internal/routing/simulate", "/internal/routing/simulate", "", Headers(list(headers)),
                   body, None, "1.1")


TOKEN = b"s3cret-service-token"


async def call(req: Request, token: bytes = TOKEN) -> tuple[int, Any]:
    resp = await simulate_handler(req, service_token=token, router=ROUTER, catalog=CATALOG, health=AllClosed())
    assert isinstance(resp.body, bytes)
    return resp.status, orjson.loads(resp.body)


async def test_handler_answers_with_the_simulation() -> None:
    body = orjson.dumps({"model": "auto"})
    for auth in ((b"authorization", b"Bearer " + TOKEN), (b"x-nexus-service-token", TOKEN)):
        status, out = await call(request(body, auth))
        assert status == 200 and out["rule"]["name"] == "by-team"
        assert out == orjson.loads(orjson.dumps(simulate(ROUTER, CATALOG, AllClosed(), {"model": "auto"})))


async def test_handler_refuses_bad_tokens() -> None:
    body = orjson.dumps({"model": "auto"})
    for headers in ((), ((b"authorization", b"Bearer wrong"),), ((b"authorization", b"Bearer " + TOKEN[:-1]),),
                    ((b"authorization", TOKEN),), ((b"x-nexus-service-token", b""),)):
        status, out = await call(request(body, *headers))
        assert status == 401 and out["error"]["message"] == "invalid service token"
    # No configured token: the endpoint is off, even for an empty presented token.
    status, _ = await call(request(body, (b"x-nexus-service-token", b"")), token=b"")
    assert status == 401


async def test_handler_rejects_bad_bodies() -> None:
    auth = (b"authorization", b"Bearer " + TOKEN)
    for body, message in ((b"{", "not valid JSON"), (b"[]", "must be a JSON object"), (b"{}", "`model` is required")):
        status, out = await call(request(body, auth))
        assert status == 400 and message in out["error"]["message"]
