"""Routing plans: which upstream targets a request tries, in which order, and why (pure).

``Router`` is the immutable snapshot of the enabled rules, policies (stage 0)
first, then routes (stage 1), each by priority descending (ties by name, then
id, so every gateway orders them alike).  The config watcher builds a new one
on a ``routing_rule`` change signal and swaps it in; a request uses the one
snapshot it started with.

``Router.plan(request, catalog, health, allowed)``:

1. Every in-scope stage-0 policy whose predicate matches applies.
2. The first in-scope stage-1 rule whose predicate matches expands its strategy
   tree into primary targets, then its fallback chain is appended.  With no
   matching rule, the plan is every provider serving the requested model code,
   in catalog order.
3. Targets resolve against the catalog (a ``provider`` is a provider name or
   id; none means every provider serving the model); duplicates are dropped.
4. Candidates the key may not use (``allowed(code)``) or a policy denies are
   removed, each noted in ``Plan.filtered`` with the reason.
5. Targets whose circuit is open move to the end, in their order; nothing is
   dropped for health.

When nothing is left and a policy removed at least one candidate, the ``Plan``
has no targets and ``denied`` gives the (first) policy's reason.  An empty plan
without ``denied`` means nothing serves the request (unknown model, or nothing
the key may use): the caller answers 404.  The caller still checks the
*requested* model against the key itself, as today.

A rule with a ``smart`` node returns ``NeedsSmartChoice`` instead: the shell
asks the router model (``smart.run_smart``) and ``resolve(answer)`` finishes
the plan, using the node's default on any failure or unusable answer.

Cost: predicates were compiled with the snapshot; planning a request is a few
closure calls per rule and one dict lookup per target.  Errors: none raised
(bad input was rejected when the rules were parsed).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from nexus.gateway.routing.attempts import (
    DEFAULT_FAILURES,
    DEFAULT_RETRY,
    FailureSet,
    Outcome,
    RetryPolicy,
    Verdict,
    decide,
)
from nexus.gateway.routing.health import CircuitState, HealthView
from nexus.gateway.routing.predicate import RouteRequest
from nexus.gateway.routing.rules import RoutingRule
from nexus.gateway.routing.strategies import Context, NeedSmart, Node, Policy, RawTarget, Smart, SmartAnswer

if TYPE_CHECKING:
    from nexus.gateway.catalog import Catalog, ModelRoute

Allowed = Callable[[str], bool]

# Caps on what the smart router is shown: enough to choose well, small enough to stay cheap.
SMART_MAX_CANDIDATES = 100
SMART_MAX_MESSAGES = 6
SMART_MAX_CHARS = 6_000
DEFAULT_SMART_PROMPT = (
    "You route requests to language models. Pick the single best model for the conversation below from this "
    "catalog (m = model code, in/out = USD per million input/output tokens, ctx = context window in tokens). "
    "Prefer the cheapest model that will answer well; pick a stronger one only for hard reasoning, long context "
    "or code.\n\n{catalog}\n\nAnswer with JSON only: {\"model\": \"<one m value from the catalog, exactly>\"}"
)
_MODEL_IN_TEXT = re.compile(r'"model(?:Id)?"\s*:\s*"([^"]+)"')
_CHAT_MODALITY = {"chat": "chat", "responses": "chat", "messages": "chat", "gemini": "chat",
                  "embeddings": "embedding"}


@attrs.frozen(slots=True)
class PlannedTarget:
    route: ModelRoute
    why: str
    retry: RetryPolicy
    fallback_on: FailureSet
    health: CircuitState

    @property
    def retries(self) -> int:
        return self.retry.max_retries

    def decide(self, outcome: Outcome, retries_done: int) -> Verdict:
        """What to do after ``outcome`` on this target (see ``attempts.decide``)."""
        return decide(outcome, self.retry, self.fallback_on, retries_done)


@attrs.frozen(slots=True)
class Filtered:
    """A candidate that did not make it into the plan."""

    provider: str
    model: str
    reason: str


@attrs.frozen(slots=True)
class Plan:
    targets: tuple[PlannedTarget, ...]
    denied: str | None = None
    rule_id: str | None = None
    rule_name: str | None = None
    policies: tuple[str, ...] = ()
    ab_arm: str | None = None
    trace: tuple[str, ...] = ()
    filtered: tuple[Filtered, ...] = ()


@attrs.frozen(slots=True)
class _Job:
    """Everything needed to (re)finish one plan: the first pass, or the pass after the smart answer."""

    request: RouteRequest
    catalog: Catalog
    health: HealthView
    allowed: Allowed
    rng: Callable[[], float]
    policies: tuple[RoutingRule, ...]
    rule: RoutingRule | None


@attrs.frozen(slots=True, eq=False)
class NeedsSmartChoice:
    """Planning paused at a ``smart`` node: ask ``router`` with ``messages`` within ``timeout_s``."""

    router: ModelRoute
    messages: list[dict[str, str]]
    candidates: tuple[str, ...]
    default: Node
    timeout_s: float
    _job: _Job = attrs.field(repr=False)

    def resolve(self, answer: str | None) -> Plan:
        """Finish the plan with the router model's reply text (``None``: it failed or timed out)."""
        return _finish(self._job, parse_answer(answer, self.candidates))


def parse_answer(answer: str | None, candidates: Sequence[str]) -> SmartAnswer:
    """The candidate the reply names: ``{"model": code}`` (also inside a code fence or prose), or a bare code."""
    if answer is None:
        return SmartAnswer(None, "router model failed or timed out")
    text = answer.strip()
    found: Any = None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        found = data.get("model", data.get("modelId"))
    elif isinstance(data, str):
        found = data
    else:
        m = _MODEL_IN_TEXT.search(text)
        found = m.group(1) if m else text.strip("`'\". \n")
    if isinstance(found, str) and found in candidates:
        return SmartAnswer(found, "")
    shown = text if len(text) <= 80 else text[:77] + "..."
    return SmartAnswer(None, f"router model answered something that is not a candidate: {shown!r}")


@attrs.frozen
class Router:
    policies: tuple[RoutingRule, ...] = ()
    routes: tuple[RoutingRule, ...] = ()
    # Rules the loader could not use, with the reason: reported, never applied.
    skipped: tuple[str, ...] = ()

    @classmethod
    def build(cls, rules: Iterable[RoutingRule], skipped: Iterable[str] = ()) -> Router:
        ordered = sorted((r for r in rules if r.enabled), key=lambda r: (r.stage, -r.priority, r.name, r.id))
        return cls(tuple(r for r in ordered if r.stage == 0), tuple(r for r in ordered if r.stage == 1),
                   tuple(skipped))

    @property
    def rules(self) -> tuple[RoutingRule, ...]:
        return self.policies + self.routes

    def plan(self, request: RouteRequest, catalog: Catalog, health: HealthView, allowed: Allowed, *,
             rng: Callable[[], float] = random.random) -> Plan | NeedsSmartChoice:
        policies = tuple(p for p in self.policies if p.applies(request))
        rule = None
        for candidate in self.routes:
            if candidate.applies(request):
                rule = candidate
                break
        job = _Job(request, catalog, health, allowed, rng, policies, rule)
        try:
            return _finish(job, None)
        except NeedSmart as need:
            return _needs_smart(job, need.node)


EMPTY_ROUTER = Router()


def _finish(job: _Job, smart: SmartAnswer | None) -> Plan:
    request, rule = job.request, job.rule
    ctx = Context(request, job.rng, smart)
    raw: list[RawTarget] = []
    if rule is None:
        retry = DEFAULT_RETRY
        ctx.trace.append(f"no routing rule matched: every provider serving {request.model}")
        raw.append(RawTarget(None, request.model, "requested model", DEFAULT_FAILURES))
    else:
        retry = rule.retry_policy
        ctx.trace.append(f"rule {rule.name!r} matched (priority {rule.priority})")
        strategy = rule.strategy
        assert not isinstance(strategy, Policy)  # parse_rule keeps policies out of stage 1
        strategy.expand(ctx, DEFAULT_FAILURES, f"rule {rule.name}", raw)
        for i, target in enumerate(rule.fallback_chain, 1):
            raw.append(RawTarget(target.provider, target.model, f"rule {rule.name} > fallback chain #{i}",
                                 DEFAULT_FAILURES))
    return _assemble(job, ctx, raw, retry)


def _assemble(job: _Job, ctx: Context, raw: list[RawTarget], retry: RetryPolicy) -> Plan:
    routes_by_code = job.catalog.routes
    allowed, health, policies = job.allowed, job.health, job.policies
    usable: list[PlannedTarget] = []
    parked: list[PlannedTarget] = []
    filtered: list[Filtered] = []
    seen: set[tuple[str, str]] = set()
    denial: str | None = None
    for t in raw:
        routes = routes_by_code.get(t.model)
        if not routes:
            filtered.append(Filtered(t.provider or "*", t.model, "model not in the catalog"))
            continue
        served = False
        for route in routes:
            provider = route.provider
            if t.provider is not None and t.provider != provider.name and t.provider != provider.id:
                continue
            served = True
            key = (provider.id, route.upstream_model)
            if key in seen:
                continue
            seen.add(key)
            if not (allowed(route.code) or (t.model != route.code and allowed(t.model))):
                filtered.append(Filtered(provider.name, route.code, "the virtual key may not use this model"))
                continue
            reason = _denial(policies, route)
            if reason is not None:
                denial = denial or reason
                filtered.append(Filtered(provider.name, route.code, reason))
                continue
            if health.usable(provider.id):
                usable.append(PlannedTarget(route, t.why, retry, t.fallback_on, health.state(provider.id)))
            else:
                parked.append(PlannedTarget(route, t.why + " (circuit open: moved last)", retry, t.fallback_on,
                                            health.state(provider.id)))
        if not served:
            filtered.append(Filtered(t.provider or "*", t.model, "provider unknown, disabled or not serving it"))
    if parked:
        ctx.trace.append("circuit open, moved last: " + ", ".join(p.route.provider.name for p in parked))
        usable.extend(parked)
    rule = job.rule
    return Plan(
        tuple(usable),
        denied=denial if not usable else None,
        rule_id=rule.id if rule else None,
        rule_name=rule.name if rule else None,
        policies=tuple(p.name for p in policies),
        ab_arm=ctx.ab_arm,
        trace=tuple(ctx.trace),
        filtered=tuple(filtered),
    )


def _denial(policies: tuple[RoutingRule, ...], route: ModelRoute) -> str | None:
    for rule in policies:
        policy = rule.strategy
        assert isinstance(policy, Policy)  # parse_rule: stage 0 is policy only
        reason = policy.denial(route)
        if reason is not None:
            return f"denied by policy {rule.name!r}: {reason}"
    return None


# --- smart ---------------------------------------------------------------------------------------------

def _needs_smart(job: _Job, node: Smart) -> Plan | NeedsSmartChoice:
    catalog = job.catalog
    router = _route_for(catalog, node.router_provider, node.router_model)
    if router is None:
        return _finish(job, SmartAnswer(None, f"router model {node.router_model} is not in the catalog"))
    candidates, lines = _smart_catalog(job)
    if not candidates:
        return _finish(job, SmartAnswer(None, "no candidate model for this request"))
    prompt = node.system_prompt or DEFAULT_SMART_PROMPT
    listing = "\n".join(lines)
    system = prompt.replace("{catalog}", listing) if "{catalog}" in prompt else f"{prompt}\n\n{listing}"
    messages = [{"role": "system", "content": system}, *_conversation(job.request.messages)]
    return NeedsSmartChoice(router, messages, candidates, node.default, node.timeout_ms / 1000, job)


def _route_for(catalog: Catalog, provider: str | None, code: str) -> ModelRoute | None:
    for route in catalog.routes.get(code, ()):
        if provider is None or provider in (route.provider.name, route.provider.id):
            return route
    return None


def _smart_catalog(job: _Job) -> tuple[tuple[str, ...], list[str]]:
    """Codes the router may pick (the key may use them, no policy denies them, right modality), and their lines."""
    modality = _CHAT_MODALITY.get(job.request.endpoint, "chat")
    codes: list[str] = []
    lines: list[str] = []
    seen: set[str] = set()
    for routes in job.catalog.routes.values():
        for route in routes:
            code = route.code
            if code in seen or route.modality != modality:
                continue
            seen.add(code)
            if not job.allowed(code) or _denial(job.policies, route) is not None:
                continue
            codes.append(code)
    codes.sort()
    del codes[SMART_MAX_CANDIDATES:]
    for code in codes:
        route = job.catalog.routes[code][0]
        line: dict[str, Any] = {"m": code, "in": route.prices.input / 1e6, "out": route.prices.output / 1e6}
        if route.context_window:
            line["ctx"] = route.context_window
        lines.append(orjson.dumps(line).decode())
    return tuple(codes), lines


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _conversation(messages: Sequence[Any]) -> list[dict[str, str]]:
    """The last few turns as plain text, newest kept when the budget runs out, starting with a user turn."""
    out: list[dict[str, str]] = []
    budget = SMART_MAX_CHARS
    for message in reversed(messages):
        if len(out) == SMART_MAX_MESSAGES or budget <= 0:
            break
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in ("user", "assistant", "model"):
            continue
        text = _text(message.get("content", message.get("parts")))
        if not text:
            continue
        text = text[-budget:]
        budget -= len(text)
        out.append({"role": "assistant" if role != "user" else "user", "content": text})
    out.reverse()
    while out and out[0]["role"] != "user":
        out.pop(0)
    return out or [{"role": "user", "content": "(the request has no text)"}]
