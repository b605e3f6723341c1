"""Routing rules and the routing simulator.

A rule is checked by the gateway's own parser (``gateway.routing.rules.parse_rule``) before it is
stored, so a rule the gateway would skip at load is a 422 naming the field here instead. The
simulator answers "which targets, in which order, and why" with the gateway's library function
(``gateway.routing.simulate.simulate``) over the rules and catalogue loaded by the gateway's
own loaders (``load_router``, ``catalog.load``) and the circuit states gateways last reported
(``provider_health``). Only the rules that can apply to the simulated organization (global
ones and those of its ancestors) are shown: other tenants' rules are not the caller's business.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import Resource, org_path
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field
from nexus.controlplane.resources.gateway_common import INT4_MAX, actor, invalid, merged
from nexus.gateway import catalog
from nexus.gateway.routing.health import CircuitState
from nexus.gateway.routing.planner import Router
from nexus.gateway.routing.rules import RuleError, parse_rule
from nexus.gateway.routing.simulate import SimulationError, simulate
from nexus.gateway.routing.store import load_router

TAG = "routing"
SIGNAL = "routing_rule"
Endpoint = Literal["chat", "responses", "messages", "embeddings", "gemini"]


@attrs.frozen
class RoutingRule:
    """A routing rule: stage 0 filters (policy), stage 1 picks targets; org_id null = global."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    name: str
    description: str
    stage: Literal[0, 1]
    priority: int
    match_conditions: dict[str, Any] = field(description="Mongo-style predicate over the request's routing facts")
    strategy: dict[str, Any] = field(description="strategy tree; every node carries \"type\"")
    retry_policy: dict[str, Any] = field()
    fallback_chain: list[Any] = field()
    enabled: bool = field()
    created_by: uuid.UUID | None = field()
    created_at: dt.datetime = field()
    updated_at: dt.datetime = field()


@attrs.frozen
class RoutingRuleCreate:
    """A new routing rule, validated by the gateway's rule parser."""

    name: str = field(min_length=1, max_length=200)
    strategy: dict[str, Any] = field(description="strategy tree; every node carries \"type\"")
    org_id: uuid.UUID | None = field(default=None, description="null: a global rule (installation-wide)")
    description: str = field(default="", max_length=2000)
    stage: Literal[0, 1] = 1
    priority: int = field(default=0, minimum=-INT4_MAX, maximum=INT4_MAX)
    match_conditions: dict[str, Any] = field(factory=dict)
    retry_policy: dict[str, Any] = field(factory=dict)
    fallback_chain: list[dict[str, Any]] = field(factory=list, max_length=32)
    enabled: bool = True


@attrs.frozen
class RoutingRuleUpdate:
    """Fields a routing rule update may change (its organization is fixed)."""

    name: str = field(min_length=1, max_length=200)
    strategy: dict[str, Any] = field(factory=dict)
    description: str = field(default="", max_length=2000)
    stage: Literal[0, 1] = 1
    priority: int = field(default=0, minimum=-INT4_MAX, maximum=INT4_MAX)
    match_conditions: dict[str, Any] = field(factory=dict)
    retry_policy: dict[str, Any] = field(factory=dict)
    fallback_chain: list[dict[str, Any]] = field(factory=list, max_length=32)
    enabled: bool = True


_RULE_FIELDS = ("name", "description", "stage", "priority", "match_conditions", "strategy", "retry_policy",
                "fallback_chain", "enabled")
_PATH = re.compile(r" @ \$\.([A-Za-z_]+)")


def rule_error_field(message: str) -> str:
    """The routing_rule column a ``RuleError`` message is about."""
    found = _PATH.search(message)
    if found and found.group(1) in _RULE_FIELDS:
        return found.group(1)
    if "fallback chain" in message:
        return "fallback_chain"
    return "strategy"


def check_rule(values: Mapping[str, Any], org_id: uuid.UUID | str | None, path: str | None) -> None:
    """Parse the rule as the gateway will; a ``RuleError`` becomes a 422 naming the field."""
    data = {name: schema.unstructure(values[name]) for name in _RULE_FIELDS if name in values}
    data.update(id="new", org_id=str(org_id) if org_id is not None else None, org_path=path)
    try:
        parse_rule(data)
    except RuleError as exc:
        text = str(exc)
        problem = text.split(": ", 1)[1] if text.startswith("routing rule ") and ": " in text else text
        where = rule_error_field(problem)
        raise ApiError(422, "validation_error", f"{where}: {problem}", {"field": where}) from None


async def _prepare_rule(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if call.request.method == "PATCH":
        org_id = (call.target.before or {}).get("org_id")
        check_rule(merged(call, values), org_id, None if org_id is None else call.target.nrn.split(":")[3][4:])
        return values
    org_id = values.get("org_id")
    check_rule(values, org_id, await org_path(call, org_id) if org_id is not None else None)
    return {**values, "created_by": actor(call)}


ROUTING_RULES = Resource(
    path="routing-rules", rtype="routing-rule", service="gateway", table="routing_rule", read=RoutingRule, tag=TAG,
    create=RoutingRuleCreate, update=RoutingRuleUpdate, signal=SIGNAL, filters=("org_id", "stage", "enabled"),
    prepare=_prepare_rule, noun="routing rule",
)


# -- simulate -------------------------------------------------------------------------------------

@attrs.frozen
class RoutingSimulation:
    """A described request; org, project and owner default from ``virtual_key_id``'s key."""

    model: str = field(min_length=1, max_length=256)
    endpoint: Endpoint = "chat"
    request_id: str = field(default="simulation", max_length=128,
                            description="seeds load-balance randomness: the same id explains the same way")
    virtual_key_id: uuid.UUID | None = None
    org_id: uuid.UUID | None = field(default=None, description="default: the key's org, else the caller's")
    project_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    headers: dict[str, str] = field(factory=dict)
    metadata: dict[str, Any] = field(factory=dict)
    messages: list[dict[str, Any]] = field(factory=list, max_length=1000)
    allowed_models: list[str] | None = field(default=None, max_length=1000,
                                             description="the key's model globs; default the key's, else [\"*\"]")
    smart_answer: str | None = field(default=None, max_length=10000,
                                     description="what the smart router replies; null: it fails")
    rules: list[dict[str, Any]] | None = field(default=None, max_length=100,
                                               description="draft rules to try instead of the live ones")


@attrs.frozen
class SimulatedRequest:
    """The routing facts the simulation decided on."""

    model: str
    endpoint: str
    request_id: str
    virtual_key_id: str | None
    org_id: str | None
    org_path: str | None
    project_id: str | None
    user_id: str | None


@attrs.frozen
class SimulatedRule:
    """One rule in evaluation order and what it did for this request."""

    id: str
    name: str
    stage: int
    priority: int
    org_id: str | None
    strategy: str
    verdict: str


@attrs.frozen
class SimulatedSmart:
    """The smart-router question the plan paused on, and the answer used."""

    router: str
    candidates: list[str]
    default: str
    timeout_ms: int
    messages: list[dict[str, Any]]
    answer: str | None


@attrs.frozen
class SimulatedRuleRef:
    """The stage-1 rule that chose the targets."""

    id: str
    name: str | None


@attrs.frozen
class SimulatedTarget:
    """One upstream attempt of the plan, in order."""

    order: int
    provider: str
    model: str
    upstream_model: str
    why: str
    health: str
    retries: int
    backoff_ms: int
    max_backoff_ms: int
    retry_on: list[Any] = field(description="statuses and failure names that retry this target")
    fallback_on: list[Any] = field(description="statuses and failure names that move to the next target")


@attrs.frozen
class SimulatedFiltered:
    """A candidate left out of the plan, with the reason."""

    provider: str
    model: str
    reason: str


@attrs.frozen
class RoutingSimulationResult:
    """Which targets would be tried, in which order, and why."""

    request: SimulatedRequest
    rules: list[SimulatedRule]
    skipped_rules: list[str]
    smart: SimulatedSmart | None
    rule: SimulatedRuleRef | None
    policies: list[str]
    denied: str | None
    ab_arm: str | None
    trace: list[str]
    targets: list[SimulatedTarget]
    filtered: list[SimulatedFiltered]


@attrs.frozen
class RecordedHealth:
    """A ``HealthView`` over the circuit states gateways last wrote to ``provider_health``."""

    states: Mapping[str, CircuitState]

    def usable(self, provider_id: str) -> bool:
        return self.states.get(provider_id, "closed") != "open"

    def state(self, provider_id: str) -> CircuitState:
        return self.states.get(provider_id, "closed")


_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


async def _health(call: Call) -> RecordedHealth:
    cur = await call.conn.execute("SELECT provider_id::text, circuit_state FROM provider_health")
    states: dict[str, CircuitState] = {}
    for pid, state in await cur.fetchall():
        if _SEVERITY[state] >= _SEVERITY[states.get(pid, "closed")]:
            states[pid] = state
    return RecordedHealth(states)


async def _key_facts(call: Call, key_id: uuid.UUID) -> tuple[Any, ...]:
    cur = await call.conn.execute(
        "SELECT org_id, project_id, owner_user_id, allowed_models FROM virtual_key WHERE id = %s", (key_id,))
    row = await cur.fetchone()
    if row is None:
        raise invalid("virtual_key_id", "no such virtual key")
    return tuple(row)


async def _simulated_org(call: Call) -> uuid.UUID:
    body: RoutingSimulation = call.body
    if body.org_id is not None:
        return body.org_id
    if body.virtual_key_id is not None:
        return uuid.UUID(str((await _key_facts(call, body.virtual_key_id))[0]))
    return call.principal.org_id


async def locate_simulation(call: Call) -> Target:
    org_id = await _simulated_org(call)
    return Target(nrn=nrn("gateway", await org_path(call, org_id), "routing-rule"), org_id=org_id)


async def _visible_router(call: Call, path: str) -> Router:
    """The gateway's rule snapshot, narrowed to rules that can apply to ``path`` (global or an ancestor's)."""
    cur = await call.conn.execute(
        "SELECT r.id::text FROM routing_rule r LEFT JOIN organization o ON o.id = r.org_id "
        "WHERE r.org_id IS NULL OR o.path = %s OR starts_with(%s, o.path || '/')", (path, path))
    visible = {row[0] for row in await cur.fetchall()}
    router = await load_router(call.services.pg)
    return Router.build([r for r in router.rules if r.id in visible],
                        [s for s in router.skipped if any(f"({rid})" in s for rid in visible)])


_BACKTICK = re.compile(r"`([a-z_]+)`")


async def simulate_routing(call: Call) -> Reply:
    body: RoutingSimulation = call.body
    org_id = call.target.org_id
    assert org_id is not None
    project_id, user_id, allowed = body.project_id, body.user_id, body.allowed_models
    if body.virtual_key_id is not None:
        _key_org, key_project, key_owner, key_models = await _key_facts(call, body.virtual_key_id)
        project_id = project_id or key_project
        user_id = user_id or key_owner
        allowed = allowed if allowed is not None else list(key_models or ())
    path = call.target.nrn.split(":")[3][4:]
    request: dict[str, Any] = {
        "model": body.model, "endpoint": body.endpoint, "request_id": body.request_id,
        "virtual_key_id": str(body.virtual_key_id) if body.virtual_key_id else None, "org_id": str(org_id),
        "org_path": path, "project_id": str(project_id) if project_id else None,
        "user_id": str(user_id) if user_id else None, "headers": body.headers, "metadata": body.metadata,
        "messages": body.messages, "smart_answer": body.smart_answer,
    }
    if allowed is not None:
        request["allowed_models"] = allowed
    if body.rules is not None:
        request["rules"] = body.rules
    health = await _health(call)
    router = await _visible_router(call, path)
    snapshot = await catalog.load(call.services.pg, call.services.vault)
    try:
        result = simulate(router, snapshot, health, request)
    except SimulationError as exc:
        found = _BACKTICK.search(str(exc))
        where = found.group(1) if found else "body"
        raise ApiError(422, "validation_error", f"{where}: {exc}", {"field": where}) from None
    return Reply(schema.converter.structure(result, RoutingSimulationResult))


def operations() -> list[Operation]:
    ops = ROUTING_RULES.operations()
    ops.append(Operation("POST", f"{ROUTING_RULES.base}/simulate", "admin:routing-rule.simulate",
                         "Simulate routing: which targets in which order, and why", TAG, simulate_routing,
                         locate_simulation, body=RoutingSimulation, response=RoutingSimulationResult,
                         operation_id="post_admin_routing_rules_simulate"))
    return ops
