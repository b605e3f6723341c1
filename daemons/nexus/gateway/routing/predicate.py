"""Mongo-style predicates over a request's routing facts, compiled once into plain closures (pure).

A rule's ``match_conditions`` (and a ``conditional`` strategy's ``when``) is a
JSON object compiled at load by ``compile_predicate`` into a function
``RouteRequest -> bool``; matching a request then costs a few attribute reads
and comparisons, never a parse or a regex compilation.

Language:

- ``{}`` matches everything; several keys in one object must all match.
- ``{"<field>": <value>}`` is ``{"<field>": {"$eq": <value>}}``.
- Field operators: ``$eq $ne $in $nin $regex`` (with optional ``$options``:
  ``i``, ``m``, ``s``) ``$gt $gte $lt $lte $exists $prefix $not`` (``$not``
  takes an operator object and negates it).  ``$regex`` searches (like
  MongoDB); anchor with ``^`` / ``$``.  Comparisons hold only between two
  numbers or two strings; anything else is false.
- ``$prefix`` (our addition) is ``str.startswith``, except on ``org_path``
  where it matches whole path segments: ``{"org_path": {"$prefix":
  "acme/emea"}}`` matches ``acme/emea`` and ``acme/emea/sales``, not
  ``acme/emeax``: an organization and its sub-organizations.
- Combinators: ``$and`` and ``$or`` (non-empty arrays of predicates), ``$not``
  (one predicate).
- Fields: ``model`` (as requested), ``endpoint`` (``chat``, ``responses``,
  ``messages``, ``embeddings``, ``gemini``), ``virtual_key_id``, ``org_id``,
  ``org_path``, ``project_id``, ``user_id``, ``headers.<name>`` (case
  insensitive; the first value) and ``metadata.<key>[.<key>...]``.  A missing
  value is ``None``: ``{"$exists": false}`` and ``{"$eq": null}`` match it.

Errors: ``compile_predicate`` raises ``PredicateError`` (a ``ValueError``) whose
message names the place in the predicate, e.g. ``$.$or[1].model: $regex needs a
string``; callers prefix the rule's name.  Compiled predicates never raise.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, Protocol

import attrs

Endpoint = Literal["chat", "responses", "messages", "embeddings", "gemini"]
ENDPOINTS: frozenset[str] = frozenset({"chat", "responses", "messages", "embeddings", "gemini"})

MAX_DEPTH = 32
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


class HeaderLookup(Protocol):
    """What a predicate reads headers through: ``nexus.net.http1.types.Headers``, or a dict of lower-case names."""

    def get(self, name: str, /) -> str | None: ...


_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
_NO_HEADERS: HeaderLookup = MappingProxyType({})


@attrs.frozen(slots=True)
class RouteRequest:
    """The facts routing decides on; the gateway builds one per request.

    ``org_path`` is the organization's slash-separated slug path (``acme/emea``).
    ``messages`` is the conversation as the caller sent it (chat-style
    ``{"role", "content"}`` items); only the ``smart`` strategy reads it.
    """

    model: str
    endpoint: Endpoint = "chat"
    request_id: str = ""
    virtual_key_id: str | None = None
    org_id: str | None = None
    org_path: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    headers: HeaderLookup = _NO_HEADERS
    metadata: Mapping[str, Any] = _NO_METADATA
    messages: Sequence[Any] = ()


Predicate = Callable[[RouteRequest], bool]
Getter = Callable[[RouteRequest], Any]


class PredicateError(ValueError):
    pass


def always(_request: RouteRequest) -> bool:
    return True


_PLAIN_FIELDS = ("model", "endpoint", "virtual_key_id", "org_id", "org_path", "project_id", "user_id")
FIELDS = (*_PLAIN_FIELDS, "headers.<name>", "metadata.<key>")


def compile_predicate(spec: Any, where: str = "$") -> Predicate:
    """``spec`` (parsed JSON) → a predicate; ``PredicateError`` when it is not a valid one."""
    return _compile(spec, where, 0)


def _compile(spec: Any, where: str, depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise PredicateError(f"{where}: predicate nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict):
        raise PredicateError(f"{where}: a predicate must be an object, got {_kind(spec)}")
    clauses: list[Predicate] = []
    for key, arg in spec.items():
        here = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(arg, list) or not arg:
                raise PredicateError(f"{here}: needs a non-empty array of predicates")
            parts = [_compile(item, f"{here}[{i}]", depth + 1) for i, item in enumerate(arg)]
            clauses.append(_all(parts) if key == "$and" else _any(parts))
        elif key == "$not":
            clauses.append(_negate(_compile(arg, here, depth + 1)))
        elif not isinstance(key, str) or key.startswith("$"):
            raise PredicateError(f"{here}: unknown operator {key!r} (combinators are $and, $or, $not)")
        else:
            clauses.append(_field(key, arg, here, depth))
    return _all(clauses)


def _field(name: str, arg: Any, where: str, depth: int) -> Predicate:
    get, is_metadata = _getter(name, where)
    if isinstance(arg, dict) and any(isinstance(k, str) and k.startswith("$") for k in arg):
        return _operators(get, name, arg, where, depth, is_metadata)
    return _op_eq(get, arg)


def _getter(name: str, where: str) -> tuple[Getter, bool]:
    if name in _PLAIN_FIELDS:
        return operator.attrgetter(name), False
    head, _, rest = name.partition(".")
    if head == "headers" and rest:
        if not _HEADER_NAME.fullmatch(rest):
            raise PredicateError(f"{where}: {rest!r} is not a valid header name")
        header = rest.lower()
        return (lambda r: r.headers.get(header)), False
    if head == "metadata" and rest:
        keys = rest.split(".")
        if not all(keys):
            raise PredicateError(f"{where}: empty key in {name!r}")
        if len(keys) == 1:
            key = keys[0]
            return (lambda r: r.metadata.get(key)), True
        return _nested(tuple(keys)), True
    raise PredicateError(f"{where}: unknown field {name!r}; fields are {', '.join(FIELDS)}")


def _nested(keys: tuple[str, ...]) -> Getter:
    def get(r: RouteRequest) -> Any:
        value: Any = r.metadata
        for key in keys:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value
    return get


def _operators(get: Getter, name: str, ops: dict[Any, Any], where: str, depth: int, is_metadata: bool) -> Predicate:
    if "$options" in ops and "$regex" not in ops:
        raise PredicateError(f"{where}.$options: only valid beside $regex")
    clauses: list[Predicate] = []
    for op, arg in ops.items():
        here = f"{where}.{op}"
        if op == "$eq":
            clauses.append(_op_eq(get, arg))
        elif op == "$ne":
            clauses.append(_negate(_op_eq(get, arg)))
        elif op in ("$in", "$nin"):
            member = _op_in(get, arg, here, is_metadata)
            clauses.append(member if op == "$in" else _negate(member))
        elif op == "$regex":
            clauses.append(_op_regex(get, arg, ops.get("$options", ""), here))
        elif op == "$options":
            continue
        elif op in _COMPARE:
            clauses.append(_op_compare(get, _COMPARE[op], arg, here))
        elif op == "$exists":
            if not isinstance(arg, bool):
                raise PredicateError(f"{here}: needs true or false")
            clauses.append((lambda r: get(r) is not None) if arg else (lambda r: get(r) is None))
        elif op == "$prefix":
            clauses.append(_op_prefix(get, arg, here, segments=name == "org_path"))
        elif op == "$not":
            if not isinstance(arg, dict) or not arg or not all(isinstance(k, str) and k.startswith("$") for k in arg):
                raise PredicateError(f"{here}: needs an operator object such as {{\"$regex\": \"...\"}}")
            if depth + 1 > MAX_DEPTH:
                raise PredicateError(f"{here}: predicate nested deeper than {MAX_DEPTH} levels")
            clauses.append(_negate(_operators(get, name, arg, here, depth + 1, is_metadata)))
        else:
            raise PredicateError(f"{here}: unknown operator {op!r}")
    return _all(clauses)


def _op_eq(get: Getter, arg: Any) -> Predicate:
    if arg is None:
        return lambda r: get(r) is None
    return lambda r: get(r) == arg


def _op_in(get: Getter, arg: Any, where: str, is_metadata: bool) -> Predicate:
    if not isinstance(arg, list):
        raise PredicateError(f"{where}: needs an array")
    if not is_metadata and all(isinstance(v, str | int | float | bool) or v is None for v in arg):
        # Our own fields are strings or None, so a set lookup is safe; metadata values may be unhashable.
        members: frozenset[Any] | tuple[Any, ...] = frozenset(arg)
    else:
        members = tuple(arg)
    return lambda r: get(r) in members


def _op_regex(get: Getter, pattern: Any, options: Any, where: str) -> Predicate:
    if not isinstance(pattern, str):
        raise PredicateError(f"{where}: $regex needs a string")
    if not isinstance(options, str) or any(c not in _REGEX_FLAGS for c in options):
        raise PredicateError(f"{where}: $options takes letters from 'ims'")
    flags = 0
    for c in options:
        flags |= _REGEX_FLAGS[c]
    try:
        search = re.compile(pattern, flags).search
    except re.error as exc:
        raise PredicateError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None

    def match(r: RouteRequest) -> bool:
        value = get(r)
        return isinstance(value, str) and search(value) is not None
    return match


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le,
}


def _op_compare(get: Getter, cmp: Callable[[Any, Any], bool], arg: Any, where: str) -> Predicate:
    if isinstance(arg, str):
        def compare_str(r: RouteRequest) -> bool:
            value = get(r)
            return isinstance(value, str) and cmp(value, arg)
        return compare_str
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise PredicateError(f"{where}: needs a number or a string")

    def compare_num(r: RouteRequest) -> bool:
        value = get(r)
        return isinstance(value, int | float) and not isinstance(value, bool) and cmp(value, arg)
    return compare_num


def _op_prefix(get: Getter, arg: Any, where: str, *, segments: bool) -> Predicate:
    if not isinstance(arg, str) or not arg:
        raise PredicateError(f"{where}: $prefix needs a non-empty string")
    if segments:
        root = arg.rstrip("/")
        below = root + "/"

        def subtree(r: RouteRequest) -> bool:
            value = get(r)
            return isinstance(value, str) and (value == root or value.startswith(below))
        return subtree

    def prefix(r: RouteRequest) -> bool:
        value = get(r)
        return isinstance(value, str) and value.startswith(arg)
    return prefix


def _all(parts: list[Predicate]) -> Predicate:
    if not parts:
        return always
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda r: a(r) and b(r)
    seq = tuple(parts)

    def every(r: RouteRequest) -> bool:
        for p in seq:  # noqa: SIM110 - all() over a generator allocates per call, on the hot path
            if not p(r):
                return False
        return True
    return every


def _any(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    seq = tuple(parts)

    def some(r: RouteRequest) -> bool:
        for p in seq:  # noqa: SIM110 - as in _all
            if p(r):
                return True
        return False
    return some


def _negate(p: Predicate) -> Predicate:
    return lambda r: not p(r)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
