"""Shared builders for the routing tests: an in-memory catalog and rules from their stored JSON shape."""

from __future__ import annotations

from typing import Any

from nexus.gateway.catalog import Catalog, ModelRoute, Prices, Provider
from nexus.gateway.routing.planner import Router
from nexus.gateway.routing.rules import RoutingRule, parse_rule


def make_catalog(*entries: tuple[str, str] | tuple[str, str, str]) -> Catalog:
    """``(provider, code[, modality])`` pairs, in catalog order; provider ids are ``id-<name>``."""
    providers: dict[str, Provider] = {}
    routes: dict[str, list[ModelRoute]] = {}
    for entry in entries:
        name, code = entry[0], entry[1]
        modality = entry[2] if len(entry) == 3 else "chat"
        provider = providers.setdefault(name, Provider(f"id-{name}", name, "openai", f"http://{name}.test", 30.0,
                                                       {}, None))
        prices = Prices(1_000_000 * (len(routes) + 1), 2_000_000, 0, 0, 0)
        routes.setdefault(code, []).append(
            ModelRoute(code, provider, f"{code}@{name}", modality, prices, None, None, 128_000, 0))
    return Catalog({k: tuple(v) for k, v in routes.items()})


_ids = iter(range(1, 1_000_000))


def make_rule(strategy: dict[str, Any], *, name: str | None = None, **fields: Any) -> RoutingRule:
    n = next(_ids)
    return parse_rule({"id": f"rule-{n}", "name": name or f"rule-{n}", "strategy": strategy, **fields})


def router(*rules: RoutingRule) -> Router:
    return Router.build(rules)


def allow_all(_code: str) -> bool:
    return True
