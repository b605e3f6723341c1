"""Policy documents: attrs records, a strict parser whose errors name the JSON path, and JSON output. Pure.

The JSON form (control-plane.md)::

    {"Version": "2025-01-01",
     "Statement": [{"Sid": "ReadKeys",                      # optional, unique in the document
                    "Effect": "Allow",                      # or "Deny"
                    "Action": ["admin:virtual-key.read"],   # or a string; or NotAction
                    "Resource": "nrn:nexus:gateway:org/acme:virtual-key/*",   # or a list; or NotResource
                    "Condition": {"IpAddress": {"nexus:SourceIp": ["10.0.0.0/8"]}}}]}   # optional

``NotAction`` / ``NotResource`` (instead of ``Action`` / ``Resource``) make a statement apply to
every action / resource *except* those listed. Anything else is refused: unknown keys, unknown
condition operators or keys, malformed actions, resources, values and policy variables. Every
``PolicyError`` names the offending value's path, e.g. ``Statement[1].Effect: must be "Allow" or
"Deny"`` or ``Statement[0].Condition.IpAddress.nexus:SourceIp[1]: '10.0.0.300/8' is not ...``.

``document_to_json`` writes the canonical form (lists everywhere, keys in the order above), so
``parse_document(document_to_json(d)) == d``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from nexus.controlplane.iam.actions import compile_action_pattern
from nexus.controlplane.iam.conditions import ConditionError, JsonScalar, compile_condition
from nexus.controlplane.iam.errors import PolicyError
from nexus.controlplane.iam.nrn import compile_resource_pattern

__all__ = [
    "MAX_ENTRIES",
    "MAX_STATEMENTS",
    "VERSION",
    "Condition",
    "Effect",
    "JsonScalar",
    "PolicyDocument",
    "Statement",
    "document_to_json",
    "parse_document",
]

VERSION = "2025-01-01"
MAX_STATEMENTS = 100
MAX_ENTRIES = 100  # actions, resources, condition values of one statement each

Effect: TypeAlias = Literal["Allow", "Deny"]

_DOCUMENT_KEYS = ("Version", "Statement")
_STATEMENT_KEYS = ("Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition")


@attrs.frozen(cache_hash=True)
class Condition:
    """One ``{"<operator>": {"<key>": [values]}}`` entry of a statement's ``Condition``."""

    operator: str
    key: str
    values: tuple[JsonScalar, ...]


@attrs.frozen(cache_hash=True)
class Statement:
    """One statement. With ``not_action`` the statement covers every action *not* in ``actions``;
    likewise ``not_resource``."""

    effect: Effect
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    sid: str | None = None
    conditions: tuple[Condition, ...] = ()
    not_action: bool = False
    not_resource: bool = False


@attrs.frozen(cache_hash=True)
class PolicyDocument:
    """A whole policy. Hashable (and its hash cached), so compiled forms can be cached by document."""

    statements: tuple[Statement, ...]
    version: str = VERSION


def _quote(key: object) -> str:
    return json.dumps(key) if isinstance(key, str) else repr(key)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _mapping(value: object, path: str, allowed: Sequence[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(path, f"must be an object, not {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise PolicyError(path, f"keys must be strings, not {_kind(key)}")
        if allowed is not None and key not in allowed:
            raise PolicyError(path, f"unknown key {_quote(key)} (allowed: {', '.join(allowed)})")
    return value


def _strings(value: object, path: str, what: str) -> tuple[tuple[str, str], ...]:
    """A string or a non-empty list of strings → ((item path, item), ...)."""
    if isinstance(value, str):
        return ((path, value),)
    if not isinstance(value, list):
        raise PolicyError(path, f"must be a string or a list of strings ({what}), not {_kind(value)}")
    if not value:
        raise PolicyError(path, "must not be empty")
    if len(value) > MAX_ENTRIES:
        raise PolicyError(path, f"at most {MAX_ENTRIES} entries")
    items: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise PolicyError(f"{path}[{i}]", f"must be a string ({what}), not {_kind(item)}")
        items.append((f"{path}[{i}]", item))
    return tuple(items)


def parse_document(obj: object) -> PolicyDocument:
    """Validate a decoded JSON policy document and return its record; ``PolicyError`` names the bad path."""
    doc = _mapping(obj, "document", _DOCUMENT_KEYS)
    if "Version" not in doc:
        raise PolicyError("Version", f'is required (use "{VERSION}")')
    if doc["Version"] != VERSION:
        raise PolicyError("Version", f'must be "{VERSION}", not {_quote(doc["Version"])}')
    if "Statement" not in doc:
        raise PolicyError("Statement", "is required")
    raw = doc["Statement"]
    if not isinstance(raw, list):
        raise PolicyError("Statement", f"must be a list of statements, not {_kind(raw)}")
    if not raw:
        raise PolicyError("Statement", "must contain at least one statement")
    if len(raw) > MAX_STATEMENTS:
        raise PolicyError("Statement", f"at most {MAX_STATEMENTS} statements")
    statements: list[Statement] = []
    sids: dict[str, int] = {}
    for index, item in enumerate(raw):
        statement = _statement(item, f"Statement[{index}]")
        if statement.sid is not None:
            if statement.sid in sids:
                raise PolicyError(f"Statement[{index}].Sid",
                                  f"duplicate Sid {_quote(statement.sid)} (also Statement[{sids[statement.sid]}])")
            sids[statement.sid] = index
        statements.append(statement)
    return PolicyDocument(tuple(statements), VERSION)


def _statement(obj: object, path: str) -> Statement:
    st = _mapping(obj, path, _STATEMENT_KEYS)
    sid: str | None = None
    if "Sid" in st:
        raw_sid = st["Sid"]
        if not isinstance(raw_sid, str) or not raw_sid or len(raw_sid) > 128 or not all(
                ch.isascii() and (ch.isalnum() or ch in "_-.") for ch in raw_sid):
            raise PolicyError(f"{path}.Sid", "must be 1-128 letters, digits, '_', '-' or '.'")
        sid = raw_sid
    if "Effect" not in st:
        raise PolicyError(f"{path}.Effect", 'is required ("Allow" or "Deny")')
    if st["Effect"] not in ("Allow", "Deny") or not isinstance(st["Effect"], str):
        raise PolicyError(f"{path}.Effect", f'must be "Allow" or "Deny", not {_quote(st["Effect"])}')
    effect: Effect = "Allow" if st["Effect"] == "Allow" else "Deny"
    action_key = _one_of(st, path, "Action", "NotAction")
    resource_key = _one_of(st, path, "Resource", "NotResource")
    actions = []
    for item_path, item in _strings(st[action_key], f"{path}.{action_key}", "actions"):
        try:
            compile_action_pattern(item)
        except ValueError as exc:
            raise PolicyError(item_path, str(exc)) from None
        actions.append(item)
    resources = []
    for item_path, item in _strings(st[resource_key], f"{path}.{resource_key}", "resource names"):
        try:
            compile_resource_pattern(item)
        except ValueError as exc:
            raise PolicyError(item_path, str(exc)) from None
        resources.append(item)
    conditions = _conditions(st["Condition"], f"{path}.Condition") if "Condition" in st else ()
    return Statement(effect, tuple(actions), tuple(resources), sid, conditions,
                     action_key == "NotAction", resource_key == "NotResource")


def _one_of(st: Mapping[str, Any], path: str, key: str, negated: str) -> str:
    if key in st and negated in st:
        raise PolicyError(path, f"has both {key} and {negated}; use one")
    if key not in st and negated not in st:
        raise PolicyError(f"{path}.{key}", f"is required (or {negated})")
    return key if key in st else negated


def _conditions(obj: object, path: str) -> tuple[Condition, ...]:
    block = _mapping(obj, path)
    if not block:
        raise PolicyError(path, "must not be empty (leave Condition out instead)")
    out: list[Condition] = []
    for operator, keys in block.items():
        op_path = f"{path}.{operator}"
        entries = _mapping(keys, op_path)
        if not entries:
            raise PolicyError(op_path, "must name at least one condition key")
        for key, raw in entries.items():
            key_path = f"{op_path}.{key}"
            values: tuple[Any, ...] = tuple(raw) if isinstance(raw, list) else (raw,)
            if len(values) > MAX_ENTRIES:
                raise PolicyError(key_path, f"at most {MAX_ENTRIES} values")
            for i, value in enumerate(values):
                if value is None or not isinstance(value, (str, int, float, bool)):
                    where = f"[{i}]" if isinstance(raw, list) else ""
                    raise PolicyError(f"{key_path}{where}", f"must be a string, number or boolean, not {_kind(value)}")
            try:
                compile_condition(operator, key, values)
            except ConditionError as exc:
                where = exc.where if isinstance(raw, list) else ""
                if exc.problem.startswith("unknown condition operator"):
                    raise PolicyError(op_path, exc.problem) from None
                raise PolicyError(f"{key_path}{where}", exc.problem) from None
            out.append(Condition(operator, key, values))
    return tuple(out)


def document_to_json(doc: PolicyDocument) -> dict[str, Any]:
    """The canonical JSON object of ``doc`` (lists for every multi-valued element)."""
    statements: list[dict[str, Any]] = []
    for st in doc.statements:
        out: dict[str, Any] = {}
        if st.sid is not None:
            out["Sid"] = st.sid
        out["Effect"] = st.effect
        out["NotAction" if st.not_action else "Action"] = list(st.actions)
        out["NotResource" if st.not_resource else "Resource"] = list(st.resources)
        if st.conditions:
            block: dict[str, dict[str, list[JsonScalar]]] = {}
            for cond in st.conditions:
                block.setdefault(cond.operator, {})[cond.key] = list(cond.values)
            out["Condition"] = block
        statements.append(out)
    return {"Version": doc.version, "Statement": statements}
