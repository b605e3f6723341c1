"""Policy variables: ``${nexus:PrincipalOrgPath}`` and friends inside Resource patterns and condition values.

A seeded, system-wide policy says ``nrn:nexus:gateway:org/${nexus:PrincipalOrgPath}:*`` and so
covers each caller's own org subtree. Variables name facts about the *caller* only (the request's
other facts are for conditions), so a value can never be steered by what is being accessed:

- ``${nexus:PrincipalId}``: the user or API key id (UUID text);
- ``${nexus:PrincipalType}``: ``user``, ``api_key`` or ``system``;
- ``${nexus:PrincipalOrgPath}``: the caller's org path (``acme/emea``);
- ``${nexus:PrincipalTag/<k>}``: the caller's attribute ``k``.

A template is parsed once into literal text and ``Var`` parts; substitution happens per request.
A variable that cannot be resolved (a tag the caller lacks) resolves to None, and whatever
contains it matches nothing. ``$`` not followed by ``{`` is literal. Pure.
"""

from __future__ import annotations

import re
from typing import TypeAlias

import attrs

from nexus.controlplane.principal import Principal

__all__ = ["TAG_KEY", "VARIABLES", "Part", "Var", "has_variables", "resolve", "split_template"]

VARIABLES = frozenset({"nexus:PrincipalId", "nexus:PrincipalType", "nexus:PrincipalOrgPath"})
_TAG_PREFIX = "nexus:PrincipalTag/"
# Tag keys as they may appear after PrincipalTag/ and ResourceTag/ (and as attribute names).
TAG_KEY = re.compile(r"[A-Za-z0-9_.:=+@-][A-Za-z0-9_.:/=+@-]{0,127}")


@attrs.frozen
class Var:
    """A ``${name}`` reference inside a template."""

    name: str


Part: TypeAlias = str | Var


def has_variables(text: str) -> bool:
    return "${" in text


def split_template(text: str) -> tuple[Part, ...]:
    """``"org/${nexus:PrincipalOrgPath}/x"`` → ``("org/", Var("nexus:PrincipalOrgPath"), "/x")``.

    Raises ``ValueError`` (the problem, for the caller to prefix with a path) for an unclosed
    ``${`` or an unknown variable.
    """
    parts: list[Part] = []
    pos = 0
    while True:
        start = text.find("${", pos)
        if start < 0:
            if pos < len(text):
                parts.append(text[pos:])
            return tuple(parts)
        end = text.find("}", start + 2)
        if end < 0:
            raise ValueError(f"unclosed policy variable at offset {start}")
        name = text[start + 2 : end]
        _check_variable(name)
        if start > pos:
            parts.append(text[pos:start])
        parts.append(Var(name))
        pos = end + 1


def _check_variable(name: str) -> None:
    if name in VARIABLES:
        return
    if name.startswith(_TAG_PREFIX) and TAG_KEY.fullmatch(name[len(_TAG_PREFIX) :]):
        return
    known = ", ".join(f"${{{v}}}" for v in sorted(VARIABLES))
    raise ValueError(f"unknown policy variable ${{{name}}} (known: {known}, ${{nexus:PrincipalTag/<key>}})")


def resolve(name: str, principal: Principal) -> str | None:
    """The value of variable ``name`` for ``principal``, or None when it has none."""
    if name == "nexus:PrincipalOrgPath":
        return principal.org_path
    if name == "nexus:PrincipalId":
        return str(principal.id)
    if name == "nexus:PrincipalType":
        return principal.kind
    if name.startswith(_TAG_PREFIX):
        return principal.tags.get(name[len(_TAG_PREFIX) :])
    return None
