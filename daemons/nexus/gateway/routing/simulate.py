"""Explain a routing decision without sending anything upstream (pure, plus its HTTP handler).

``simulate(router, catalog, health, request_json)`` plans a described request
and says which targets would be tried in which order and why: every rule
considered (in scope? matched? applied, selected or shadowed?), the strategy
trace, the targets with their retry and fallback settings, and every
candidate filtered out with the reason.  The control plane exposes it; the
gateway serves it at ``POST /internal/routing/simulate`` (``simulate_handler``)
behind a service token.

Request JSON (only ``model`` is required)::

    {"model": "gpt-4o", "endpoint": "chat", "request_id": "r-1", "virtual_key_id": "…", "org_id": "…",
     "org_path": "acme/emea", "project_id": "…", "user_id": "…", "headers": {"x-team": "ml"},
     "metadata": {"tier": "gold"}, "messages": [{"role": "user", "content": "hi"}],
     "allowed_models": ["gpt-*"],        # the key's globs; default ["*"]
     "smart_answer": "gpt-4o-mini",      # what the smart router replies; default: it fails, default used
     "rules": [ {routing_rule columns…} ]}  # draft rules to try instead of the live ones

A non-sticky load balance is random in production; here its randomness is
seeded from the request id, so the same input explains the same way.

Errors: ``SimulationError`` (a ``ValueError``) for a malformed request;
``simulate_handler`` answers it with 400, a bad token with 401.
"""

from __future__ import annotations

import fnmatch
import hmac
import random
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from nexus.gateway.routing.health import HealthView
from nexus.gateway.routing.planner import NeedsSmartChoice, Plan, Router
from nexus.gateway.routing.predicate import ENDPOINTS, RouteRequest
from nexus.gateway.routing.rules import RoutingRule, RuleError, parse_rule
from nexus.net.http1.types import Request, Response
from nexus.wire.errors import openai_error

if TYPE_CHECKING:
    from nexus.gateway.catalog import Catalog

_JSON = (b"content-type", b"application/json")
_STRING_FIELDS = ("request_id", "virtual_key_id", "org_id", "org_path", "project_id", "user_id")


class SimulationError(ValueError):
    pass


def _request(data: Mapping[str, Any]) -> RouteRequest:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise SimulationError("`model` is required and must be a non-empty string")
    endpoint = data.get("endpoint", "chat")
    if endpoint not in ENDPOINTS:
        raise SimulationError(f"`endpoint` must be one of {', '.join(sorted(ENDPOINTS))}")
    values: dict[str, Any] = {}
    for name in _STRING_FIELDS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise SimulationError(f"`{name}` must be a string")
        values[name] = value
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise SimulationError("`headers` must be an object of strings")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise SimulationError("`metadata` must be an object")
    messages = data.get("messages", [])
    if not isinstance(messages, list):
        raise SimulationError("`messages` must be an array")
    return RouteRequest(model, endpoint, values["request_id"] or "", values["virtual_key_id"], values["org_id"],
                        values["org_path"], values["project_id"], values["user_id"],
                        {str(k).lower(): v for k, v in headers.items()}, metadata, messages)


def _allowed(data: Mapping[str, Any]) -> Callable[[str], bool]:
    globs = data.get("allowed_models", ["*"])
    if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
        raise SimulationError("`allowed_models` must be an array of globs")
    if "*" in globs:
        return lambda _code: True
    pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs) or r"(?!)")
    return lambda code: pattern.fullmatch(code) is not None


def _draft_router(data: Mapping[str, Any]) -> Router | None:
    drafts = data.get("rules")
    if drafts is None:
        return None
    if not isinstance(drafts, list) or not all(isinstance(d, dict) for d in drafts):
        raise SimulationError("`rules` must be an array of rule objects")
    rules: list[RoutingRule] = []
    skipped: list[str] = []
    for i, draft in enumerate(drafts):
        try:
            rules.append(parse_rule({"id": f"draft-{i}", **draft}))
        except RuleError as exc:
            skipped.append(str(exc))
    return Router.build(rules, skipped)


def _rule_row(rule: RoutingRule, verdict: str) -> dict[str, Any]:
    return {"id": rule.id, "name": rule.name, "stage": rule.stage, "priority": rule.priority,
            "org_id": rule.org_id, "strategy": rule.strategy.describe(), "verdict": verdict}


def _rules(router: Router, request: RouteRequest) -> list[dict[str, Any]]:
    """Every rule in evaluation order with what it did for this request (the planner's own selection rule)."""
    rows = []
    for rule in router.policies:
        verdict = ("out of scope" if not rule.in_scope(request) else
                   "applied" if rule.match_conditions(request) else "did not match")
        rows.append(_rule_row(rule, verdict))
    chosen = False
    for rule in router.routes:
        if not rule.in_scope(request):
            verdict = "out of scope"
        elif not rule.match_conditions(request):
            verdict = "did not match"
        elif not chosen:
            verdict, chosen = "selected", True
        else:
            verdict = "matched, shadowed by a higher-priority rule"
        rows.append(_rule_row(rule, verdict))
    return rows


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "rule": None if plan.rule_id is None else {"id": plan.rule_id, "name": plan.rule_name},
        "policies": list(plan.policies),
        "denied": plan.denied,
        "ab_arm": plan.ab_arm,
        "trace": list(plan.trace),
        "targets": [{
            "order": i, "provider": t.route.provider.name, "model": t.route.code,
            "upstream_model": t.route.upstream_model, "why": t.why, "health": t.health,
            "retries": t.retry.max_retries, "backoff_ms": t.retry.backoff_ms,
            "max_backoff_ms": t.retry.max_backoff_ms, "retry_on": t.retry.retry_on.describe(),
            "fallback_on": t.fallback_on.describe(),
        } for i, t in enumerate(plan.targets, 1)],
        "filtered": [{"provider": f.provider, "model": f.model, "reason": f.reason} for f in plan.filtered],
    }


def simulate(router: Router, catalog: Catalog, health: HealthView, request_json: Mapping[str, Any]
             ) -> dict[str, Any]:
    if not isinstance(request_json, Mapping):
        raise SimulationError("the request must be a JSON object")
    request = _request(request_json)
    allowed = _allowed(request_json)
    answer = request_json.get("smart_answer")
    if answer is not None and not isinstance(answer, str):
        raise SimulationError("`smart_answer` must be a string")
    draft = _draft_router(request_json)
    if draft is not None:
        router = draft
    rng = random.Random(request.request_id).random
    result = router.plan(request, catalog, health, allowed, rng=rng)
    smart: dict[str, Any] | None = None
    if isinstance(result, NeedsSmartChoice):
        smart = {"router": f"{result.router.provider.name}/{result.router.code}",
                 "candidates": list(result.candidates), "default": result.default.describe(),
                 "timeout_ms": round(result.timeout_s * 1000), "messages": result.messages, "answer": answer}
        result = result.resolve(answer)
    out: dict[str, Any] = {
        "request": {"model": request.model, "endpoint": request.endpoint, "request_id": request.request_id,
                    "virtual_key_id": request.virtual_key_id, "org_id": request.org_id,
                    "org_path": request.org_path, "project_id": request.project_id, "user_id": request.user_id},
        "rules": _rules(router, request),
        "skipped_rules": list(router.skipped),
        "smart": smart,
    }
    out.update(_plan_json(result))
    return out


def _error(status: int, message: str, kind: str) -> Response:
    return Response(status, [_JSON], openai_error(status, message, kind))


def _presented_token(req: Request) -> bytes:
    auth = req.headers.get_bytes("authorization") or b""
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return (req.headers.get_bytes("x-nexus-service-token") or b"").strip()


async def simulate_handler(req: Request, *, service_token: bytes, router: Router, catalog: Catalog,
                           health: HealthView) -> Response:
    """``POST /internal/routing/simulate``: the token as ``Authorization: Bearer`` or ``x-nexus-service-token``.

    An empty ``service_token`` disables the endpoint (every call is refused).
    """
    presented = _presented_token(req)
    # compare_digest takes time independent of where the bytes differ; it reveals only the length.
    if not service_token or not hmac.compare_digest(presented, service_token):
        return _error(401, "invalid service token", "authentication_error")
    try:
        data = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"request body is not valid JSON: {exc}", "invalid_request_error")
    if not isinstance(data, dict):
        return _error(400, "request body must be a JSON object", "invalid_request_error")
    try:
        result = simulate(router, catalog, health, data)
    except SimulationError as exc:
        return _error(400, str(exc), "invalid_request_error")
    return Response(200, [_JSON], orjson.dumps(result))
