"""The routing strategies: nodes of a rule's strategy tree and how each expands into targets (pure).

A stage-1 rule's strategy is a tree of ``Node``s.  Planning calls
``node.expand(ctx, on, why, out)``, which appends ``RawTarget``s (a provider
name or id, or ``None`` for "every provider serving the model", and a model
code) to ``out`` in the order they should be tried.  ``on`` is the failure set
that lets the attempt loop move past a target (the nearest enclosing
``fallback``'s ``onStatusCodes``, else the default), ``why`` the trace text
that explains how the walk got here.

- ``Single``: one target.  ``provider`` may be omitted: then every provider
  serving the model, in catalog order.
- ``Fallback``: its targets in order; failures in ``onStatusCodes`` move on.
- ``LoadBalance``: a weighted pick, then the other targets as alternates in
  weighted-random order (so a failing or circuit-open pick still has somewhere
  to go).  The pick is a weighted rendezvous hash: each target scores
  ``-ln(u)/weight`` with ``u`` uniform in (0, 1), lowest wins, which picks
  target *i* with probability ``weight_i / sum``.  With ``stickyOn``
  (``header:<name>``, ``key`` or ``user``) ``u`` is a keyed BLAKE2b hash of the
  sticky value and the target, so a value keeps its target while the set of
  targets is unchanged, and removing one target moves only the values that
  were on it.  No state is kept, so ``stickyTtlMs`` is accepted for
  compatibility and has no effect: stickiness lasts as long as the target set.
  Without a sticky value the pick is random.  Weight 0 takes a target out.
- ``Conditional``: the first branch whose ``when`` predicate matches, else
  ``default`` (none: no targets).
- ``ABSplit``: exactly one arm, by the same hash of the request id (or of the
  sticky value, with ``stickyOn``), so a request id always gets the same arm;
  the arm is recorded in ``ctx.ab_arm`` for the audit event.  No alternates:
  an experiment arm must not silently turn into the other arm.
- ``Smart``: asks a small LLM (``NeedSmart`` unwinds the walk; the planner
  returns ``NeedsSmartChoice`` and re-walks with the answer).  The chosen model
  code is served by every provider that has it; any failure uses ``default``.
- ``Policy``: stage-0 filter, never a tree node (see ``Policy.denial``).

Errors: expansion does not raise, except ``NeedSmart`` (control flow for the
planner).  Construction validates its arguments with ``ValueError``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from nexus.gateway.routing.attempts import DEFAULT_FAILURES, FailureSet
from nexus.gateway.routing.predicate import Predicate, RouteRequest

if TYPE_CHECKING:
    from nexus.gateway.catalog import ModelRoute

_TWO_64 = float(1 << 64)
DEFAULT_SMART_TIMEOUT_MS = 3_000


@attrs.frozen(slots=True)
class RawTarget:
    provider: str | None
    model: str
    why: str
    fallback_on: FailureSet


@attrs.frozen(slots=True)
class SmartAnswer:
    """The smart router's decision: a candidate code, or ``None`` and why the default is used."""

    code: str | None
    note: str


class Context:
    """Per-plan scratch state shared by the nodes of one walk."""

    __slots__ = ("ab_arm", "request", "rng", "smart", "trace")

    def __init__(self, request: RouteRequest, rng: Callable[[], float], smart: SmartAnswer | None) -> None:
        self.request = request
        self.rng = rng
        self.smart = smart
        self.trace: list[str] = []
        self.ab_arm: str | None = None


class NeedSmart(Exception):
    """Control flow: the walk reached a smart node before its answer was known."""

    def __init__(self, node: Smart) -> None:
        super().__init__("smart strategy needs the router model's answer")
        self.node = node


# --- sticky values and weighted rendezvous -----------------------------------------------------------

@attrs.frozen(slots=True)
class Sticky:
    spec: str
    _get: Callable[[RouteRequest], str | None] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        spec = self.spec
        get: Callable[[RouteRequest], str | None]
        if spec == "key":
            get = _virtual_key
        elif spec == "user":
            get = _user
        elif spec.startswith("header:") and len(spec) > 7:
            header = spec[7:].lower()
            get = lambda r: r.headers.get(header)  # noqa: E731
        else:
            raise ValueError(f"stickyOn must be 'header:<name>', 'key' or 'user', got {spec!r}")
        object.__setattr__(self, "_get", get)

    def value(self, request: RouteRequest) -> str | None:
        return self._get(request) or None


def _virtual_key(r: RouteRequest) -> str | None:
    return r.virtual_key_id


def _user(r: RouteRequest) -> str | None:
    return r.user_id


def _hash_key(identity: str) -> bytes:
    return hashlib.blake2b(identity.encode(), digest_size=32).digest()


def _order(weights: tuple[int, ...], keys: tuple[bytes, ...], value: str | None, rng: Callable[[], float]
           ) -> list[int]:
    """Indices of the live (weight > 0) targets, the weighted-rendezvous winner first."""
    scored: list[tuple[float, int]] = []
    if value is None:
        for i, w in enumerate(weights):
            if w:
                scored.append((-math.log(1.0 - rng()) / w, i))
    else:
        data = value.encode()
        for i, w in enumerate(weights):
            if w:
                h = int.from_bytes(hashlib.blake2b(data, digest_size=8, key=keys[i]).digest(), "big")
                scored.append((-math.log((h + 0.5) / _TWO_64) / w, i))
    scored.sort()
    return [i for _, i in scored]


def _weights_ok(_inst: object, attr: attrs.Attribute[Any], items: tuple[Any, ...]) -> None:
    if not items:
        raise ValueError(f"{attr.name} must not be empty")
    if any(item.weight < 0 for item in items):
        raise ValueError(f"{attr.name}: weights must be >= 0")
    if not any(item.weight > 0 for item in items):
        raise ValueError(f"{attr.name}: at least one weight must be > 0")


def _not_empty(_inst: object, attr: attrs.Attribute[Any], items: tuple[Any, ...]) -> None:
    if not items:
        raise ValueError(f"{attr.name} must not be empty")


def _non_empty_str(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value:
        raise ValueError(f"{attr.name} must not be empty")


# --- the nodes ---------------------------------------------------------------------------------------

@attrs.frozen(slots=True)
class Single:
    model: str = attrs.field(validator=_non_empty_str)
    provider: str | None = attrs.field(default=None, validator=_non_empty_str)

    def describe(self) -> str:
        return f"{self.provider or '*'}/{self.model}"

    def children(self) -> tuple[Node, ...]:
        return ()

    def expand(self, ctx: Context, on: FailureSet, why: str, out: list[RawTarget]) -> None:
        out.append(RawTarget(self.provider, self.model, why, on))


@attrs.frozen(slots=True)
class Fallback:
    targets: tuple[Node, ...] = attrs.field(validator=_not_empty)
    on_status_codes: FailureSet = DEFAULT_FAILURES

    def describe(self) -> str:
        return "fallback[" + ", ".join(t.describe() for t in self.targets) + "]"

    def children(self) -> tuple[Node, ...]:
        return self.targets

    def expand(self, ctx: Context, on: FailureSet, why: str, out: list[RawTarget]) -> None:
        for i, node in enumerate(self.targets, 1):
            node.expand(ctx, self.on_status_codes, f"{why} > fallback #{i}", out)


@attrs.frozen(slots=True)
class Weighted:
    weight: int
    node: Node


@attrs.frozen(slots=True)
class LoadBalance:
    weighted_targets: tuple[Weighted, ...] = attrs.field(validator=_weights_ok)
    sticky_on: Sticky | None = None
    sticky_ttl_ms: int | None = None
    _weights: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)
    _total: int = attrs.field(init=False, eq=False, repr=False)
    _keys: tuple[bytes, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        weights = tuple(t.weight for t in self.weighted_targets)
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_total", sum(weights))
        object.__setattr__(self, "_keys", tuple(_hash_key(t.node.describe()) for t in self.weighted_targets))

    def describe(self) -> str:
        return "loadbalance{" + ", ".join(f"{t.weight}:{t.node.describe()}" for t in self.weighted_targets) + "}"

    def children(self) -> tuple[Node, ...]:
        return tuple(t.node for t in self.weighted_targets)

    def expand(self, ctx: Context, on: FailureSet, why: str, out: list[RawTarget]) -> None:
        value = self.sticky_on.value(ctx.request) if self.sticky_on is not None else None
        order = _order(self._weights, self._keys, value, ctx.rng)
        how = f", sticky on {self.sticky_on.spec}" if value is not None and self.sticky_on is not None else ""
        targets = self.weighted_targets
        first = targets[order[0]]
        ctx.trace.append(f"loadbalance picked {first.node.describe()} (weight {first.weight}/{self._total}{how})")
        first.node.expand(ctx, on, f"{why} > loadbalance pick (weight {first.weight}/{self._total}{how})", out)
        for n, i in enumerate(order[1:], 1):
            targets[i].node.expand(ctx, on, f"{why} > loadbalance alternate #{n}", out)


@attrs.frozen(slots=True)
class Branch:
    when: Predicate
    then: Node


@attrs.frozen(slots=True)
class Conditional:
    conditions: tuple[Branch, ...] = ()
    default: Node | None = None

    def __attrs_post_init__(self) -> None:
        if not self.conditions and self.default is None:
            raise ValueError("conditional needs conditions or a default")

    def describe(self) -> str:
        parts = [f"when#{i} {b.then.describe()}" for i, b in enumerate(self.conditions, 1)]
        if self.default is not None:
            parts.append(f"default {self.default.describe()}")
        return "conditional{" + ", ".join(parts) + "}"

    def children(self) -> tuple[Node, ...]:
        kids = tuple(b.then for b in self.conditions)
        return kids if self.default is None else (*kids, self.default)

    def expand(self, ctx: Context, on: FailureSet, why: str, out: list[RawTarget]) -> None:
        request = ctx.request
        for i, branch in enumerate(self.conditions, 1):
            if branch.when(request):
                ctx.trace.append(f"conditional: condition #{i} matched")
                branch.then.expand(ctx, on, f"{why} > condition #{i}", out)
                return
        if self.default is None:
            ctx.trace.append("conditional: no condition matched and there is no default")
            return
        ctx.trace.append("conditional: no condition matched, default")
        self.default.expand(ctx, on, f"{why} > conditional default", out)


@attrs.frozen(slots=True)
class Arm:
    model: str = attrs.field(validator=_non_empty_str)
    weight: int
    provider: str | None = attrs.field(default=None, validator=_non_empty_str)

    def describe(self) -> str:
        return f"{self.provider or '*'}/{self.model}"


@attrs.frozen(slots=True)
class ABSplit:
    targets: tuple[Arm, ...] = attrs.field(validator=_weights_ok)
    sticky_on: Sticky | None = None
    _weights: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)
    _total: int = attrs.field(init=False, eq=False, repr=False)
    _keys: tuple[bytes, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        weights = tuple(a.weight for a in self.targets)
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_total", sum(weights))
        object.__setattr__(self, "_keys", tuple(_hash_key(a.describe()) for a in self.targets))

    def describe(self) -> str:
        return "ab_split{" + ", ".join(f"{a.weight}:{a.describe()}" for a in self.targets) + "}"

    def children(self) -> tuple[Node, ...]:
        return ()

    def expand(self, ctx: Context, on: FailureSet, why: str, out: list[RawTarget]) -> None:
        request = ctx.request
        value = self.sticky_on.value(request) if self.sticky_on is not None else None
        basis = f"sticky on {self.sticky_on.spec}" if value is not None and self.sticky_on is not None else "request id"
        if value is None:
            value = request.request_id or None
            if value is None:
                basis = "random: no request id"
        arm = self.targets[_order(self._weights, self._keys, value, ctx.rng)[0]]
        name = arm.describe()
        if ctx.ab_arm is None:  # the first split on the walk is the experiment; later ones are alternates
            ctx.ab_arm = name
        ctx.trace.append(f"ab_split arm {name} (weight {arm.weight}/{self._total}, by {basis})")
        out.append(RawTarget(arm.provider, arm.model, f"{why} > ab_split arm {name}", on))


@attrs.frozen(slots=True)
class Smart:
    router_model: str = attrs.field(validator=_non_empty_str)
    default: Node
    router_provider: str | None = attrs.field(default=None, validator=_non_empty_str)
    system_prompt: str | None = None
    timeout_ms: int = attrs.field(default=DEFAULT_SMART_TIMEOUT_MS,
                                  validator=[attrs.validators.ge(1), attrs.validators.le(60_000)])

    def describe(self) -> str:
        return f"smart{{router {self.router_provider or '*'}/{self.router_model}, default {self.default.describe()}}}"

    def children(self) -> tuple[Node, ...]:
        return (self.default,)

    def expand(self, ctx: Context, on: FailureSet, why: str, out: list[RawTarget]) -> None:
        answer = ctx.smart
        if answer is None:
            raise NeedSmart(self)
        if answer.code is not None:
            ctx.trace.append(f"smart: router chose {answer.code}")
            out.append(RawTarget(None, answer.code, f"{why} > smart choice", on))
            return
        ctx.trace.append(f"smart: default used ({answer.note})")
        self.default.expand(ctx, on, f"{why} > smart default", out)


Node: TypeAlias = Single | Fallback | LoadBalance | Conditional | ABSplit | Smart


# --- stage 0 -------------------------------------------------------------------------------------------

def _globs(globs: tuple[str, ...] | None) -> re.Pattern[str] | None:
    if globs is None:
        return None
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@attrs.frozen(slots=True)
class Policy:
    """Stage-0 filter over candidate targets: model codes and provider names, as globs.

    Several matching policies combine: a target must be in every given allow list (allows intersect) and in
    no deny list (denies union); deny wins over allow.
    """

    allow_models: tuple[str, ...] | None = None
    deny_models: tuple[str, ...] | None = None
    allow_providers: tuple[str, ...] | None = None
    deny_providers: tuple[str, ...] | None = None
    _allow_models: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _deny_models: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _allow_providers: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _deny_providers: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if (self.allow_models, self.deny_models, self.allow_providers, self.deny_providers) == (None,) * 4:
            raise ValueError("policy needs at least one of allowModels, denyModels, allowProviders, denyProviders")
        for name in ("allow_models", "deny_models", "allow_providers", "deny_providers"):
            object.__setattr__(self, "_" + name, _globs(getattr(self, name)))

    def describe(self) -> str:
        parts = [f"{name}={list(v)}" for name, v in (("allowModels", self.allow_models),
                 ("denyModels", self.deny_models), ("allowProviders", self.allow_providers),
                 ("denyProviders", self.deny_providers)) if v is not None]
        return "policy{" + ", ".join(parts) + "}"

    def denial(self, route: ModelRoute) -> str | None:
        """Why this policy removes ``route``, or ``None`` when it lets it through."""
        code, provider = route.code, route.provider.name
        if self._deny_models is not None and self._deny_models.fullmatch(code):
            return f"model {code} is in denyModels"
        if self._deny_providers is not None and self._deny_providers.fullmatch(provider):
            return f"provider {provider} is in denyProviders"
        if self._allow_models is not None and not self._allow_models.fullmatch(code):
            return f"model {code} is not in allowModels"
        if self._allow_providers is not None and not self._allow_providers.fullmatch(provider):
            return f"provider {provider} is not in allowProviders"
        return None


Strategy: TypeAlias = Node | Policy

NODE_TYPES: dict[str, type[Any]] = {
    "single": Single, "fallback": Fallback, "loadbalance": LoadBalance, "conditional": Conditional,
    "ab_split": ABSplit, "smart": Smart,
}


def depth(node: Node) -> int:
    kids = node.children()
    return 1 + max((depth(k) for k in kids), default=0)


def count_smart(node: Node) -> int:
    return (1 if isinstance(node, Smart) else 0) + sum(count_smart(k) for k in node.children())
