"""Routing rule records, structured and validated with cattrs from database rows or JSON (pure).

A rule as stored (``routing_rule`` columns, JSON values already parsed)::

    {"id": "…", "org_id": null, "org_path": null, "name": "prod", "stage": 1, "priority": 10,
     "match_conditions": {"model": {"$in": ["gpt-4o", "auto"]}},
     "strategy": {"type": "loadbalance", "stickyOn": "user", "weightedTargets": [
                     {"weight": 3, "node": {"type": "single", "provider": "openai", "model": "gpt-4o"}},
                     {"weight": 1, "node": {"provider": "azure", "model": "gpt-4o"}}]},
     "retry_policy": {"max_retries": 1, "backoff_ms": 200, "max_backoff_ms": 2000, "retry_on": [429, "5xx"]},
     "fallback_chain": [{"provider": "anthropic", "model": "claude-sonnet-4"}], "enabled": true}

Strategy nodes use the camelCase keys of the shared design (``onStatusCodes``,
``weightedTargets``, ``stickyOn``, ``stickyTtlMs``, ``routerProvider``,
``routerModel``, ``systemPrompt``, ``timeoutMs``, ``allowModels``, …); a node
without ``type`` that names a ``model`` is a ``single``.  Unknown keys are
errors (a typo must not silently disable a setting).

Validation beyond types: stage 0 rules carry a ``policy`` strategy and no
fallback chain, stage 1 rules no ``policy`` anywhere; a tree is at most
``MAX_DEPTH`` nodes deep and holds at most one ``smart`` node; weights are
non-negative with a positive sum; ``match_conditions`` and every ``when``
compile (``predicate``).

Errors: ``parse_rule`` raises ``RuleError`` whose message names the rule (name
and id) and each problem with its JSON path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception as cattrs_format

from nexus.gateway.routing.attempts import DEFAULT_RETRY, FailureSet, RetryPolicy
from nexus.gateway.routing.predicate import Predicate, PredicateError, RouteRequest, always, compile_predicate
from nexus.gateway.routing.strategies import (
    NODE_TYPES,
    ABSplit,
    Arm,
    Branch,
    Conditional,
    Fallback,
    LoadBalance,
    Node,
    Policy,
    Single,
    Smart,
    Sticky,
    Strategy,
    Weighted,
    count_smart,
    depth,
)

MAX_DEPTH = 10
# Raw JSON nesting allowed before structuring: keeps recursion bounded whatever the database holds.
_MAX_JSON_NESTING = 128


class RuleError(ValueError):
    pass


def _stage(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if value not in (0, 1):
        raise ValueError(f"stage must be 0 (policy) or 1 (route), got {value}")


@attrs.frozen(slots=True)
class RoutingRule:
    id: str
    name: str
    strategy: Strategy
    org_id: str | None = None
    # The owning organization's path (joined from ``organization``): the rule applies to its subtree.
    org_path: str | None = None
    description: str = ""
    stage: int = attrs.field(default=1, validator=_stage)
    priority: int = 0
    match_conditions: Predicate = always
    retry_policy: RetryPolicy = DEFAULT_RETRY
    fallback_chain: tuple[Single, ...] = ()
    enabled: bool = True
    # The rule's whole test, scope included, as one closure: global rules (the usual case) cost one call.
    applies: Predicate = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        match = self.match_conditions
        if self.org_id is None:
            object.__setattr__(self, "applies", match)
            return
        in_scope = self.in_scope
        object.__setattr__(self, "applies", lambda r: in_scope(r) and match(r))

    def in_scope(self, request: RouteRequest) -> bool:
        """Global rules apply to everyone; an organization's rules to it and its sub-organizations."""
        if self.org_id is None or self.org_id == request.org_id:
            return True
        path, root = request.org_path, self.org_path
        if path is None or not root:
            return False
        root = root.rstrip("/")
        return path == root or path.startswith(root + "/")


# --- the converter -----------------------------------------------------------------------------------

_conv = cattrs.Converter(forbid_extra_keys=True)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _strict(expected: type[Any], name: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _t: Any) -> Any:
        # cattrs would coerce (str(5) == "5", int(2.7) == 2, int(True) == 1): a stored rule must say what it means.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"expected {name}, got {_kind(value)} {value!r}")
        return value
    return hook


_conv.register_structure_hook(str, _strict(str, "a string"))
_conv.register_structure_hook(int, _strict(int, "an integer"))
_conv.register_structure_hook(bool, _strict(bool, "true or false"))


def _tuple_factory(t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    elem = get_args(t)[0]

    def hook(value: Any, _t: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected an array, got {_kind(value)}")
        out, errors = [], []
        for i, item in enumerate(value):
            try:
                out.append(_conv.structure(item, elem))
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"@ index {i}", i, elem)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return tuple(out)
    return hook


_conv.register_structure_hook_factory(
    lambda t: cast(Any, get_origin(t)) is tuple and len(get_args(t)) == 2 and get_args(t)[1] is Ellipsis,
    _tuple_factory)


def _failures(value: Any, _t: Any) -> FailureSet:
    if not isinstance(value, list):
        raise ValueError(f"expected an array of statuses and failure names, got {_kind(value)}")
    return FailureSet.parse(value)


def _predicate(value: Any, _t: Any) -> Predicate:
    return compile_predicate(value)


def _sticky(value: Any, _t: Any) -> Sticky:
    if not isinstance(value, str):
        raise ValueError(f"stickyOn must be a string, got {_kind(value)}")
    return Sticky(value)


_conv.register_structure_hook(FailureSet, _failures)
_conv.register_structure_hook(Sticky, _sticky)
_conv.register_structure_hook_func(lambda t: t == Predicate, _predicate)


# JSON key of each renamed attribute, so that error messages speak the stored rule's language.
_JSON_NAMES: dict[str, str] = {}
_SNAKE = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def _json_names(message: str) -> str:
    return _SNAKE.sub(lambda m: _JSON_NAMES.get(m.group(0), m.group(0)), message)


def _register(cls: type[Any], **renames: str) -> None:
    _JSON_NAMES.update(renames)
    options: dict[str, Any] = {k: override(rename=v) for k, v in renames.items()}
    _conv.register_structure_hook(cls, make_dict_structure_fn(cls, _conv, _cattrs_forbid_extra_keys=True, **options))


def _node_class(value: Any, *, allow_policy: bool) -> tuple[type[Any], dict[str, Any]]:
    if not isinstance(value, dict):
        raise ValueError(f"a strategy node must be an object, got {_kind(value)}")
    kind = value.get("type")
    body = {k: v for k, v in value.items() if k != "type"}
    if kind is None and "model" in value:
        return Single, body
    if kind == "policy":
        if not allow_policy:
            raise ValueError("a policy strategy is only valid as the whole strategy of a stage-0 rule")
        return Policy, body
    if kind is None:
        raise ValueError("a strategy node needs a \"type\" (or a \"model\", for a single target)")
    cls = NODE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown strategy type {kind!r}; expected one of {', '.join([*NODE_TYPES, 'policy'])}")
    return cls, body


def _structure_node(value: Any, _t: Any) -> Node:
    cls, body = _node_class(value, allow_policy=False)
    node: Node = _conv.structure(body, cls)
    return node


def _structure_strategy(value: Any, _t: Any) -> Strategy:
    cls, body = _node_class(value, allow_policy=True)
    strategy: Strategy = _conv.structure(body, cls)
    return strategy


_single = make_dict_structure_fn(Single, _conv, _cattrs_forbid_extra_keys=True)


def _structure_single(value: Any, t: Any) -> Single:
    # Fallback-chain entries are plain targets; tolerate an explicit "type": "single".
    if isinstance(value, dict) and value.get("type") == "single":
        value = {k: v for k, v in value.items() if k != "type"}
    return _single(value, t)


# Hooks are looked up when a class's structuring function is generated: the unions come first.
_conv.register_structure_hook_func(lambda t: t == Node, _structure_node)
_conv.register_structure_hook_func(lambda t: t == Strategy, _structure_strategy)
_conv.register_structure_hook(Single, _structure_single)
_register(Arm)
_register(Weighted)
_register(Branch)
_register(Fallback, on_status_codes="onStatusCodes")
_register(LoadBalance, weighted_targets="weightedTargets", sticky_on="stickyOn", sticky_ttl_ms="stickyTtlMs")
_register(Conditional)
_register(ABSplit, sticky_on="stickyOn")
_register(Smart, router_provider="routerProvider", router_model="routerModel", system_prompt="systemPrompt",
          timeout_ms="timeoutMs")
_register(Policy, allow_models="allowModels", deny_models="denyModels", allow_providers="allowProviders",
          deny_providers="denyProviders")
_register(RetryPolicy)
_register(RoutingRule)


# --- parsing -------------------------------------------------------------------------------------------

def _format(exc: BaseException, type_: Any) -> str:
    # Our validators and hooks raise ValueErrors whose text is the useful part; cattrs' own wording is kept
    # for missing and extra keys.
    if isinstance(exc, ValueError | PredicateError) and not isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return str(exc)
    return cattrs_format(exc, type_)


def _nesting_ok(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if level > _MAX_JSON_NESTING:
            return False
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return True


def _check(rule: RoutingRule) -> list[str]:
    problems: list[str] = []
    strategy = rule.strategy
    if rule.stage == 0:
        if not isinstance(strategy, Policy):
            problems.append("a stage-0 rule must have a policy strategy")
        if rule.fallback_chain:
            problems.append("a stage-0 (policy) rule cannot have a fallback chain")
        return problems
    if isinstance(strategy, Policy):
        return ["a policy strategy belongs in a stage-0 rule"]
    if depth(strategy) > MAX_DEPTH:
        problems.append(f"strategy tree is {depth(strategy)} levels deep; at most {MAX_DEPTH}")
    if count_smart(strategy) > 1:
        problems.append("at most one smart node per strategy tree")
    return problems


def parse_rule(data: Mapping[str, Any]) -> RoutingRule:
    """A validated ``RoutingRule`` from its column values; ``RuleError`` names the rule and every problem."""
    label = f"routing rule {data.get('name')!r} ({data.get('id')})"
    if not _nesting_ok(data):
        raise RuleError(f"{label}: JSON nested deeper than {_MAX_JSON_NESTING} levels")
    try:
        rule: RoutingRule = _conv.structure(dict(data), RoutingRule)
    except ClassValidationError as exc:
        problems = cattrs.transform_error(exc, format_exception=_format)
        raise RuleError(f"{label}: " + "; ".join(_json_names(p) for p in problems)) from None
    except (ValueError, TypeError) as exc:
        raise RuleError(f"{label}: {_json_names(str(exc))}") from None
    problems = _check(rule)
    if problems:
        raise RuleError(f"{label}: " + "; ".join(problems))
    return rule
