"""Action names, action patterns, and the catalogue of resources the admin API authorises. Pure.

An action is ``admin:<resource>.<verb>`` (the admin API, ``/api/admin/*``) or
``my:<resource>.<verb>`` (a signed-in user's own things, ``/api/my/*``), lower case. ``<resource>``
is also the ``<type>`` of the NRN the action applies to; ``CATALOGUE`` says which service each
belongs to and which verbs it has, so that handlers name actions and resources alike everywhere
(``action("virtual-key", "revoke")``, ``resource_nrn("virtual-key", "acme/emea", key_id)``).

An action *pattern* (a policy's ``Action`` entry) globs with ``*`` inside a segment:
``admin:*.read``, ``admin:virtual-key.*``, ``admin:*`` (every admin action), ``my:*``, ``*``.
Matching is case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from nexus.controlplane.iam.nrn import format_nrn

__all__ = [
    "CATALOGUE",
    "PREFIXES",
    "ActionPattern",
    "ResourceKind",
    "action",
    "all_actions",
    "compile_action_pattern",
    "is_action",
    "resource_nrn",
]

PREFIXES = ("admin", "my")
_ACTION = re.compile(r"(?:admin|my):[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*")
_PATTERN = re.compile(r"\*|(?:admin|my|\*):(?:\*|[a-z0-9*-]+\.[a-z0-9*-]+)")
_CRUD = ("read", "create", "update", "delete")


@attrs.frozen
class ResourceKind:
    """One resource type of the catalogue: the NRN service it lives in and its verbs."""

    service: str
    verbs: tuple[str, ...]


def _kind(service: str, *verbs: str, crud: bool = True) -> ResourceKind:
    return ResourceKind(service, (*(_CRUD if crud else ()), *verbs))


CATALOGUE: Mapping[str, ResourceKind] = MappingProxyType({
    # platform
    "organization": _kind("platform"),
    "project": _kind("platform"),
    "audit-log": _kind("platform", "read", "verify", crud=False),
    "alert": _kind("platform"),
    "analytics": _kind("platform", "read", crud=False),
    "thing": _kind("platform"),
    "enrollment-token": _kind("platform", "revoke"),
    "kill-switch": _kind("platform"),
    "job": _kind("platform"),
    # iam
    "user": _kind("iam"),
    "group": _kind("iam"),
    "policy": _kind("iam"),
    "api-key": _kind("iam", "revoke"),
    "identity-provider": _kind("iam"),
    "iam": _kind("iam", "simulate", crud=False),
    # gateway
    "virtual-key": _kind("gateway", "revoke"),
    "provider": _kind("gateway"),
    "credential": _kind("gateway", "rotate"),
    "model": _kind("gateway"),
    "routing-rule": _kind("gateway", "simulate"),
    "quota-policy": _kind("gateway"),
    "quota-override": _kind("gateway"),
    "passthrough": _kind("gateway"),
    "traffic": _kind("gateway", "read", "read-payload", crud=False),
    "usage": _kind("gateway", "read", crud=False),
    # compliance
    "hook": _kind("compliance"),
    "rule-pack": _kind("compliance"),
    "rule-override": _kind("compliance"),
    "interception-domain": _kind("compliance"),
    "exemption": _kind("compliance"),
})


def action(resource: str, verb: str, prefix: str = "admin") -> str:
    """``admin:<resource>.<verb>`` for a catalogued resource and verb, or ``my:<resource>.<verb>``.

    Raises ``ValueError`` for an ``admin:`` action outside ``CATALOGUE`` (``my:`` actions are not
    catalogued: they all apply to the caller's own user NRN) or a malformed name.
    """
    name = f"{prefix}:{resource}.{verb}"
    if prefix not in PREFIXES or not is_action(name):
        raise ValueError(f"{name!r} is not an action name")
    if prefix == "admin":
        kind = CATALOGUE.get(resource)
        if kind is None:
            raise ValueError(f"unknown resource {resource!r}")
        if verb not in kind.verbs:
            raise ValueError(f"{resource} has no verb {verb!r} (verbs: {', '.join(kind.verbs)})")
    return name


def all_actions() -> tuple[str, ...]:
    """Every ``admin:`` action of the catalogue."""
    return tuple(f"admin:{r}.{v}" for r, kind in CATALOGUE.items() for v in kind.verbs)


def resource_nrn(resource: str, org_path: str | None, rid: str = "*") -> str:
    """The NRN of a catalogued resource: ``resource_nrn("virtual-key", "acme", id)``.

    ``org_path`` None is system-wide; ``rid`` ``"*"`` names the collection (list, create).
    """
    return format_nrn(CATALOGUE[resource].service, org_path, resource, rid)


def is_action(text: str) -> bool:
    """Whether ``text`` is a concrete action name (no globs)."""
    return isinstance(text, str) and _ACTION.fullmatch(text) is not None


@attrs.frozen
class ActionPattern:
    """A compiled ``Action`` entry. ``exact`` is set when it has no glob (a set lookup beats a regex)."""

    text: str
    exact: str | None = attrs.field(repr=False)
    regex: re.Pattern[str] | None = attrs.field(repr=False, eq=False)

    def matches(self, name: str) -> bool:
        if self.exact is not None:
            return name == self.exact
        assert self.regex is not None
        return self.regex.fullmatch(name) is not None


def compile_action_pattern(text: str) -> ActionPattern:
    """Compile an action pattern; raises ``ValueError`` with the problem."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string, not {type(text).__name__}")
    if not _PATTERN.fullmatch(text):
        raise ValueError(f"{text!r} is not an action: expected admin:<resource>.<verb> or my:<resource>.<verb> "
                         "(lower case, * globs), admin:*, my:* or *")
    if "*" not in text:
        return ActionPattern(text, text, None)
    if text == "*":
        return ActionPattern(text, None, re.compile(r".*", re.DOTALL))
    prefix, _, rest = text.partition(":")
    source = "[^:]*" if prefix == "*" else re.escape(prefix)
    if rest == "*":
        source += r":.*"
    else:
        resource, _, verb = rest.partition(".")
        source += ":" + _glob(resource) + r"\." + _glob(verb)
    return ActionPattern(text, None, re.compile(source, re.DOTALL))


def _glob(segment: str) -> str:
    return "".join("[^.:]*" if ch == "*" else re.escape(ch) for ch in segment)
