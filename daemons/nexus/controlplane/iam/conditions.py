"""Condition operators and the request context they read. Pure.

A statement's ``Condition`` is ``{"<Operator>": {"<key>": value or [values]}}``. As in AWS IAM:

- several values for one key are OR-ed; several keys under one operator, and several operators,
  are AND-ed;
- a key the request lacks makes a positive operator false and a negated one (``StringNotEquals``,
  ``StringNotLike``, ``NumericNotEquals``, ``DateNotEquals``, ``NotIpAddress``) true;
  ``<Operator>IfExists`` is true when the key is missing; ``Null`` tests presence itself
  (``"true"``: the key must be missing, ``"false"``: present);
- a key with several values in the request (a list in ``extra``) matches a positive operator when
  any of its values matches, and a negated one when none does.

Operators: ``StringEquals``, ``StringNotEquals``, ``StringEqualsIgnoreCase``,
``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike`` (``*`` any run, ``?`` one
character), ``Numeric{Equals,NotEquals,LessThan,LessThanEquals,GreaterThan,GreaterThanEquals}``,
``Date{Equals,NotEquals,LessThan,LessThanEquals,GreaterThan,GreaterThanEquals}`` (ISO 8601; a time
without an offset is UTC; numbers are Unix seconds), ``Bool``, ``IpAddress`` / ``NotIpAddress``
(CIDR or single addresses, IPv4 and IPv6; an IPv4-mapped IPv6 client address counts as IPv4),
``Null``; every one but ``Null`` also with the ``IfExists`` suffix. The request is on the left:
``NumericLessThan {"k": 10}`` holds when k < 10.

Keys: ``nexus:SourceIp``, ``nexus:CurrentTime``, ``nexus:MfaPresent``, ``nexus:PrincipalId``,
``nexus:PrincipalType``, ``nexus:PrincipalOrgPath``, ``nexus:PrincipalTag/<k>``,
``nexus:ResourceTag/<k>``, ``nexus:ResourceOrgPath``, and any ``<namespace>:<Name>`` key the
caller passes in the request's ``extra``. A key spelled like a built-in one in another case is an
error, since it would silently never match. String operators accept policy variables in values.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import attrs

from nexus.controlplane.iam.nrn import scope_org_path
from nexus.controlplane.iam.variables import TAG_KEY, Part, Var, has_variables, resolve, split_template
from nexus.controlplane.principal import Principal

__all__ = [
    "BUILTIN_KEYS",
    "OPERATORS",
    "CompiledCondition",
    "ConditionError",
    "ContextValue",
    "JsonScalar",
    "RequestContext",
    "check_context_key",
    "compile_condition",
]

ContextValue: TypeAlias = str | int | float | bool | datetime
JsonScalar: TypeAlias = str | int | float | bool

BUILTIN_KEYS = frozenset({
    "nexus:SourceIp", "nexus:CurrentTime", "nexus:MfaPresent", "nexus:PrincipalId", "nexus:PrincipalType",
    "nexus:PrincipalOrgPath", "nexus:ResourceOrgPath",
})
_TAG_PREFIXES = ("nexus:PrincipalTag/", "nexus:ResourceTag/")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*:[A-Za-z][A-Za-z0-9]*(?:/.+)?")
_BUILTIN_FOLDED = {k.casefold(): k for k in (*BUILTIN_KEYS, *_TAG_PREFIXES)}


class ConditionError(ValueError):
    """A condition is invalid. ``where`` is the path suffix below the key (``"[1]"`` or ``""``)."""

    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.where = where


def check_context_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a well-formed condition key (see the module docstring)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a condition key (<namespace>:<Name>, e.g. nexus:SourceIp)")
    for prefix in _TAG_PREFIXES:
        if key[: len(prefix)].casefold() == prefix.casefold():
            if not key.startswith(prefix):
                raise ValueError(f"unknown condition key {key!r}: did you mean {prefix}<key>?")
            if not TAG_KEY.fullmatch(key[len(prefix) :]):
                raise ValueError(f"{key!r}: bad tag key {key[len(prefix):]!r}")
            return
    if "/" in key:
        raise ValueError(f"{key!r} is not a condition key (only PrincipalTag/ and ResourceTag/ keys have a '/')")
    known = _BUILTIN_FOLDED.get(key.casefold())
    if known is not None and known != key:
        raise ValueError(f"unknown condition key {key!r}: did you mean {known}?")


class RequestContext:
    """The condition keys of one request, computed on first use.

    ``extra`` maps further keys to a value or a sequence of values; None or an empty sequence
    counts as missing.
    """

    __slots__ = ("_cache", "extra", "now", "principal", "resource", "resource_tags", "source_ip")

    def __init__(
        self,
        principal: Principal,
        resource: str,
        source_ip: str | None,
        now: datetime,
        resource_tags: Mapping[str, str],
        extra: Mapping[str, ContextValue | Sequence[ContextValue] | None],
    ) -> None:
        self.principal = principal
        self.resource = resource
        self.source_ip = source_ip
        self.now = now
        self.resource_tags = resource_tags
        self.extra = extra
        self._cache: dict[str, tuple[ContextValue, ...] | None] = {}

    def lookup(self, key: str) -> tuple[ContextValue, ...] | None:
        """The request's values for ``key``, or None when it has none."""
        try:
            return self._cache[key]
        except KeyError:
            pass
        value = self._compute(key)
        self._cache[key] = value
        return value

    def _compute(self, key: str) -> tuple[ContextValue, ...] | None:
        p = self.principal
        if key.startswith("nexus:"):
            name = key[6:]
            if name == "SourceIp":
                return None if self.source_ip is None else (self.source_ip,)
            if name == "CurrentTime":
                return (self.now,)
            if name == "MfaPresent":
                return (p.mfa,)
            if name == "PrincipalId":
                return (str(p.id),)
            if name == "PrincipalType":
                return (p.kind,)
            if name == "PrincipalOrgPath":
                return (p.org_path,)
            if name == "ResourceOrgPath":
                path = scope_org_path(self.resource)
                return None if path is None else (path,)
            if name.startswith("PrincipalTag/"):
                tag = p.tags.get(name[13:])
                return None if tag is None else (tag,)
            if name.startswith("ResourceTag/"):
                tag = self.resource_tags.get(name[12:])
                return None if tag is None else (tag,)
        value = self.extra.get(key)
        if value is None:
            return None
        if isinstance(value, (str, int, float, datetime)):  # bool is an int
            return (value,)
        values = tuple(value)
        return values or None


# A matcher tests one request value against all of a condition's policy values (OR).
_Matcher: TypeAlias = Callable[[ContextValue, RequestContext], bool]


@attrs.frozen
class CompiledCondition:
    """One operator applied to one key, ready to test against a ``RequestContext``."""

    operator: str
    key: str
    _negate: bool = attrs.field(repr=False)
    _if_exists: bool = attrs.field(repr=False)
    _null: bool | None = attrs.field(repr=False)  # Null: True = must be missing, False = must be present
    _matcher: _Matcher | None = attrs.field(repr=False, eq=False)

    def holds(self, ctx: RequestContext) -> bool:
        values = ctx.lookup(self.key)
        if self._null is not None:
            return (values is None) is self._null
        if values is None:
            return self._if_exists or self._negate
        assert self._matcher is not None
        matcher = self._matcher
        hit = any(matcher(v, ctx) for v in values)
        return not hit if self._negate else hit

    def describe(self) -> str:
        return f"{self.operator} {self.key}"


# ------------------------------------------------------------------------------------------------
# Policy values → matchers, one family at a time.

def _strings(values: Sequence[JsonScalar]) -> list[tuple[Part, ...]]:
    out: list[tuple[Part, ...]] = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ConditionError(f"must be a string, not {_kind(value)}", f"[{i}]")
        try:
            out.append(split_template(value) if has_variables(value) else (value,))
        except ValueError as exc:
            raise ConditionError(str(exc), f"[{i}]") from None
    return out


def _literal(template: tuple[Part, ...]) -> str | None:
    """The template's text when it has no variables."""
    if any(isinstance(p, Var) for p in template):
        return None
    return "".join(p for p in template if isinstance(p, str))


def _render(template: tuple[Part, ...], principal: Principal, escape: Callable[[str], str] | None) -> str | None:
    out: list[str] = []
    for part in template:
        if isinstance(part, Var):
            value = resolve(part.name, principal)
            if value is None:
                return None
            out.append(escape(value) if escape else value)
        else:
            out.append(part)
    return "".join(out)


def _as_text(value: ContextValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _string_equals(values: Sequence[JsonScalar], fold: bool) -> _Matcher:
    templates = _strings(values)
    literals = [_literal(t) for t in templates]
    if all(lit is not None for lit in literals):
        static = frozenset(lit.casefold() if fold else lit for lit in literals if lit is not None)

        def match_static(value: ContextValue, _ctx: RequestContext) -> bool:
            text = _as_text(value)
            return (text.casefold() if fold else text) in static

        return match_static

    def match(value: ContextValue, ctx: RequestContext) -> bool:
        text = _as_text(value)
        if fold:
            text = text.casefold()
        for template in templates:
            wanted = _render(template, ctx.principal, None)
            if wanted is not None and (wanted.casefold() if fold else wanted) == text:
                return True
        return False

    return match


def _like_source(literal: str) -> str:
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in literal)


def _string_like(values: Sequence[JsonScalar]) -> _Matcher:
    templates = [tuple(p if isinstance(p, Var) else _like_source(p) for p in t) for t in _strings(values)]
    literals = [_literal(t) for t in templates]
    if all(lit is not None for lit in literals):
        regex = re.compile("|".join(f"(?:{lit})" for lit in literals), re.DOTALL)

        def match_static(value: ContextValue, _ctx: RequestContext) -> bool:
            return regex.fullmatch(_as_text(value)) is not None

        return match_static

    def match(value: ContextValue, ctx: RequestContext) -> bool:
        text = _as_text(value)
        for template in templates:
            source = _render(template, ctx.principal, re.escape)
            if source is not None and _like_regex(source).fullmatch(text):
                return True
        return False

    return match


_LIKE_CACHE: dict[str, re.Pattern[str]] = {}


def _like_regex(source: str) -> re.Pattern[str]:
    regex = _LIKE_CACHE.get(source)
    if regex is None:
        if len(_LIKE_CACHE) > 4096:
            _LIKE_CACHE.clear()
        regex = _LIKE_CACHE[source] = re.compile(source, re.DOTALL)
    return regex


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "NotEquals": lambda a, b: a == b,  # negated by the caller
    "LessThan": lambda a, b: a < b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanEquals": lambda a, b: a >= b,
}


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _ordered(values: Sequence[JsonScalar], relation: str, parse: Callable[[object], Any], what: str) -> _Matcher:
    """Numeric* and Date*: the policy's values and the request's, parsed alike, compared by ``relation``."""
    wanted: list[Any] = []
    for i, value in enumerate(values):
        parsed = parse(value)
        if parsed is None:
            raise ConditionError(f"must be {what}, not {value!r}", f"[{i}]")
        wanted.append(parsed)
    compare = _COMPARE[relation]

    def match(value: ContextValue, _ctx: RequestContext) -> bool:
        parsed = parse(value)
        return parsed is not None and any(compare(parsed, w) for w in wanted)

    return match


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def _truth(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _bools(values: Sequence[JsonScalar]) -> frozenset[bool]:
    out: set[bool] = set()
    for i, value in enumerate(values):
        truth = _truth(value)
        if truth is None:
            raise ConditionError(f'must be true or false (or "true" / "false"), not {value!r}', f"[{i}]")
        out.add(truth)
    return frozenset(out)


def _bool(values: Sequence[JsonScalar]) -> _Matcher:
    wanted = _bools(values)

    def match(value: ContextValue, _ctx: RequestContext) -> bool:
        return _truth(value) in wanted

    return match


_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(value: object) -> _Address | None:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        address: _Address = value
    elif isinstance(value, str):
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            return None
    else:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _ip(values: Sequence[JsonScalar]) -> _Matcher:
    networks: list[_Network] = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ConditionError(f"must be a CIDR string, not {_kind(value)}", f"[{i}]")
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConditionError(f"{value!r} is not an IPv4 or IPv6 address or CIDR block", f"[{i}]") from None

    def match(value: ContextValue, _ctx: RequestContext) -> bool:
        address = _address(value)
        return address is not None and any(address in n for n in networks)

    return match


_Family = Callable[[Sequence[JsonScalar]], _Matcher]
# operator name → (build matcher, negated)
_BASE: dict[str, tuple[_Family, bool]] = {
    "StringEquals": (lambda v: _string_equals(v, False), False),
    "StringNotEquals": (lambda v: _string_equals(v, False), True),
    "StringEqualsIgnoreCase": (lambda v: _string_equals(v, True), False),
    "StringNotEqualsIgnoreCase": (lambda v: _string_equals(v, True), True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "Bool": (_bool, False),
    "IpAddress": (_ip, False),
    "NotIpAddress": (_ip, True),
}
for _relation in _COMPARE:
    _BASE[f"Numeric{_relation}"] = (
        (lambda r: lambda v: _ordered(v, r, _number, "a number"))(_relation), _relation == "NotEquals")
    _BASE[f"Date{_relation}"] = (
        (lambda r: lambda v: _ordered(v, r, _instant, "an ISO 8601 date-time or Unix seconds"))(_relation),
        _relation == "NotEquals")

OPERATORS = frozenset({*_BASE, *(f"{name}IfExists" for name in _BASE), "Null"})


def compile_condition(operator: str, key: str, values: Sequence[JsonScalar]) -> CompiledCondition:
    """Compile one operator/key pair; raises ``ConditionError`` for a bad operator, key or value."""
    if operator not in OPERATORS:
        raise ConditionError(f"unknown condition operator {operator!r}")
    try:
        check_context_key(key)
    except ValueError as exc:
        raise ConditionError(str(exc)) from None
    if not values:
        raise ConditionError("needs at least one value")
    if operator == "Null":
        wanted = _bools(values)
        if len(wanted) != 1:
            raise ConditionError("Null takes either true or false, not both")
        return CompiledCondition(operator, key, False, False, next(iter(wanted)), None)
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    build, negate = _BASE[base]
    return CompiledCondition(operator, key, negate, if_exists, None, build(values))


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__)
