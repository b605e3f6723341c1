"""Request routing for the AI gateway: a pure planning core and a thin Trio shell.

Pure (no I/O, no Trio; importable anywhere):

- ``predicate``: Mongo-style match conditions, compiled once per snapshot;
- ``rules``: routing rule records, structured and validated with cattrs;
- ``strategies``: single, fallback, loadbalance, conditional, ab_split,
  smart and policy;
- ``planner``: ``Router`` (the rule snapshot) and ``Router.plan`` → ``Plan``
  (ordered targets with their retry and fallback settings) or
  ``NeedsSmartChoice``;
- ``health``: circuit breakers per upstream, read by the planner;
- ``attempts``: outcome classification, backoff, attempt records and the
  ``X-Nexus-Attempts`` header;
- ``simulate``: explain a plan (and the HTTP handler that serves it).

Shell (Trio, imported from their modules, not re-exported here so that
importing this package stays free of Trio): ``store.load_router`` /
``store.RouterHolder`` and ``smart.run_smart``.
"""

from nexus.gateway.routing.attempts import (
    Attempt,
    FailureSet,
    Outcome,
    RetryPolicy,
    attempts_header,
    backoff_s,
    decide,
)
from nexus.gateway.routing.health import AllClosed, BreakerConfig, Health, HealthView
from nexus.gateway.routing.planner import EMPTY_ROUTER, Filtered, NeedsSmartChoice, Plan, PlannedTarget, Router
from nexus.gateway.routing.predicate import PredicateError, RouteRequest, compile_predicate
from nexus.gateway.routing.rules import RoutingRule, RuleError, parse_rule
from nexus.gateway.routing.simulate import SimulationError, simulate, simulate_handler

__all__ = [
    "EMPTY_ROUTER",
    "AllClosed",
    "Attempt",
    "BreakerConfig",
    "FailureSet",
    "Filtered",
    "Health",
    "HealthView",
    "NeedsSmartChoice",
    "Outcome",
    "Plan",
    "PlannedTarget",
    "PredicateError",
    "RetryPolicy",
    "RouteRequest",
    "Router",
    "RoutingRule",
    "RuleError",
    "SimulationError",
    "attempts_header",
    "backoff_s",
    "compile_predicate",
    "decide",
    "parse_rule",
    "simulate",
    "simulate_handler",
]
