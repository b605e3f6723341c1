"""The IAM decision: may this principal do this action on this resource? Pure, synchronous, no I/O.

Evaluation follows AWS IAM: an explicit ``Deny`` wins over any ``Allow``, an ``Allow`` wins over
the default, and the default is deny. A statement applies when its action patterns match the
action (or, with ``NotAction``, none does), its resource patterns match the resource (or, with
``NotResource``, none does) and every condition holds. Policies are examined in the order given
and statements in document order; the first applicable Deny decides at once, otherwise the first
applicable Allow is the one reported.

*Org policies stay in their org.* A policy owned by an organization (``AttachedPolicy.org_path``
set) can only allow things inside that org's subtree: its Allow statements do not apply to a
resource elsewhere, whatever their patterns say, so an org admin who may write policies cannot
grant anyone (themselves included) access outside the org. Its Deny statements apply everywhere
(they only ever take access away). System policies (``org_path`` None, the seeded ones) are not
confined; they confine themselves with ``${nexus:PrincipalOrgPath}``.

Speed: it runs on every admin request. Documents compile once (action and resource globs to
regular expressions, conditions to matchers) and the compiled form is cached by document (records
are hashable, with the hash cached). A statement is rejected on its action first, the cheapest
test; the condition context is built only when a statement with conditions gets that far.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Literal

import attrs

from nexus.controlplane.iam.actions import compile_action_pattern, is_action
from nexus.controlplane.iam.conditions import (
    BUILTIN_KEYS,
    CompiledCondition,
    ContextValue,
    RequestContext,
    check_context_key,
    compile_condition,
)
from nexus.controlplane.iam.document import PolicyDocument, Statement
from nexus.controlplane.iam.errors import PolicyError, RequestError
from nexus.controlplane.iam.nrn import ResourcePattern, compile_resource_pattern, in_org_subtree, parse_nrn
from nexus.controlplane.principal import Principal

__all__ = [
    "AccessRequest",
    "AttachedPolicy",
    "CompiledStatement",
    "Decision",
    "DecisionEffect",
    "compile_document",
    "evaluate",
]

DecisionEffect = Literal["Allow", "Deny", "DefaultDeny"]
ExtraValue = ContextValue | Sequence[ContextValue] | None


def _check_action(_inst: object, _attr: object, value: str) -> None:
    if not is_action(value):
        raise RequestError(f"{value!r} is not an action (admin:<resource>.<verb> or my:<resource>.<verb>)")


def _check_resource(_inst: object, _attr: object, value: str) -> None:
    parse_nrn(value)


def _check_now(_inst: object, _attr: object, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise RequestError("now must be a timezone-aware datetime")


def _check_extra(_inst: object, _attr: object, value: Mapping[str, ExtraValue]) -> None:
    for key in value:
        try:
            check_context_key(key)
        except ValueError as exc:
            raise RequestError(f"extra: {exc}") from None
        if key in BUILTIN_KEYS or key.startswith(("nexus:PrincipalTag/", "nexus:ResourceTag/")):
            raise RequestError(f"extra: {key} is set from the request itself, not from extra")


@attrs.frozen
class AccessRequest:
    """What is being attempted. ``resource`` is a concrete NRN (``<type>/*`` for a collection).

    ``resource_tags`` are the target's attributes for ``nexus:ResourceTag/<k>`` (``owner`` is the
    owning user's id by convention, see ``seed``); ``extra`` carries further condition keys
    (``<namespace>:<Name>``, a value or a list of values). Construction validates the action,
    the NRN (``NrnError``) and the rest (``RequestError``).
    """

    principal: Principal
    action: str = attrs.field(validator=_check_action)
    resource: str = attrs.field(validator=_check_resource)
    source_ip: str | None
    now: datetime = attrs.field(validator=_check_now)
    resource_tags: Mapping[str, str] = attrs.field(factory=dict)
    extra: Mapping[str, ExtraValue] = attrs.field(factory=dict, validator=_check_extra)


@attrs.frozen
class AttachedPolicy:
    """A policy as it applies to a principal. ``org_path`` is the owning org's path, None for system policies."""

    id: uuid.UUID | None
    name: str
    document: PolicyDocument
    org_path: str | None = None


@attrs.frozen
class Decision:
    """The verdict, with the statement that decided it (None for the default deny) and a reason for people."""

    allowed: bool
    effect: DecisionEffect
    policy_id: uuid.UUID | None
    policy_name: str | None
    statement_index: int | None
    sid: str | None
    reason: str


@attrs.frozen
class CompiledStatement:
    """A statement ready to test. ``covers`` checks action and resource; ``failed_condition`` the rest."""

    index: int
    sid: str | None
    deny: bool
    conditions: tuple[CompiledCondition, ...]
    _exact: frozenset[str] = attrs.field(repr=False)
    _globs: re.Pattern[str] | None = attrs.field(repr=False, eq=False)
    _not_action: bool = attrs.field(repr=False)
    _resources: tuple[ResourcePattern, ...] = attrs.field(repr=False)
    _not_resource: bool = attrs.field(repr=False)

    def action_matches(self, name: str) -> bool:
        hit = name in self._exact or (self._globs is not None and self._globs.fullmatch(name) is not None)
        return hit is not self._not_action

    def resource_matches(self, resource: str, principal: Principal) -> bool:
        hit = any(p.matches(resource, principal) for p in self._resources)
        return hit is not self._not_resource

    def covers(self, action: str, resource: str, principal: Principal) -> bool:
        return self.action_matches(action) and self.resource_matches(resource, principal)

    def failed_condition(self, ctx: RequestContext) -> CompiledCondition | None:
        for condition in self.conditions:
            if not condition.holds(ctx):
                return condition
        return None


def _compile_statement(st: Statement, index: int) -> CompiledStatement:
    path = f"Statement[{index}]"
    exact: set[str] = set()
    globs: list[str] = []
    for i, text in enumerate(st.actions):
        try:
            pattern = compile_action_pattern(text)
        except ValueError as exc:
            raise PolicyError(f"{path}.{'NotAction' if st.not_action else 'Action'}[{i}]", str(exc)) from None
        if pattern.exact is not None:
            exact.add(pattern.exact)
        else:
            assert pattern.regex is not None
            globs.append(pattern.regex.pattern)
    resources: list[ResourcePattern] = []
    for i, text in enumerate(st.resources):
        try:
            resources.append(compile_resource_pattern(text))
        except ValueError as exc:
            raise PolicyError(f"{path}.{'NotResource' if st.not_resource else 'Resource'}[{i}]", str(exc)) from None
    conditions: list[CompiledCondition] = []
    for cond in st.conditions:
        try:
            conditions.append(compile_condition(cond.operator, cond.key, cond.values))
        except ValueError as exc:
            raise PolicyError(f"{path}.Condition.{cond.operator}.{cond.key}", str(exc)) from None
    regex = re.compile("|".join(f"(?:{g})" for g in globs), re.DOTALL) if globs else None
    return CompiledStatement(index, st.sid, st.effect == "Deny", tuple(conditions), frozenset(exact), regex,
                             st.not_action, tuple(resources), st.not_resource)


@functools.lru_cache(maxsize=1024)
def compile_document(doc: PolicyDocument) -> tuple[CompiledStatement, ...]:
    """The compiled statements of ``doc`` (cached). ``PolicyError`` if it was built invalid in code."""
    return tuple(_compile_statement(st, i) for i, st in enumerate(doc.statements))


def _context(request: AccessRequest) -> RequestContext:
    return RequestContext(request.principal, request.resource, request.source_ip, request.now,
                          request.resource_tags, request.extra)


def _where(policy: AttachedPolicy, st: CompiledStatement) -> str:
    sid = f' (Sid "{st.sid}")' if st.sid else ""
    return f'policy "{policy.name}" Statement[{st.index}]{sid}'


def confined_out(policy: AttachedPolicy, st: CompiledStatement, resource: str) -> bool:
    """Whether an org policy's Allow statement is kept from ``resource`` because it lies outside the org."""
    return not st.deny and policy.org_path is not None and not in_org_subtree(resource, policy.org_path)


def evaluate(policies: Sequence[AttachedPolicy], request: AccessRequest) -> Decision:
    """Decide ``request`` under ``policies``: explicit Deny > Allow > default deny."""
    action, resource, principal = request.action, request.resource, request.principal
    ctx: RequestContext | None = None
    allowed_by: tuple[AttachedPolicy, CompiledStatement] | None = None
    for policy in policies:
        for st in compile_document(policy.document):
            if allowed_by is not None and not st.deny:
                continue  # already allowed: only a Deny can change the outcome now
            if not st.covers(action, resource, principal) or confined_out(policy, st, resource):
                continue
            if st.conditions:
                if ctx is None:
                    ctx = _context(request)
                if st.failed_condition(ctx) is not None:
                    continue
            if st.deny:
                return Decision(False, "Deny", policy.id, policy.name, st.index, st.sid,
                                f"denied by {_where(policy, st)}")
            allowed_by = (policy, st)
    if allowed_by is not None:
        policy, st = allowed_by
        return Decision(True, "Allow", policy.id, policy.name, st.index, st.sid, f"allowed by {_where(policy, st)}")
    suffix = "" if policies else " (no policies attached)"
    return Decision(False, "DefaultDeny", None, None, None, None, f"no statement allows {action} on {resource}{suffix}")


def iter_statements(
    policies: Sequence[AttachedPolicy],
) -> Iterator[tuple[AttachedPolicy, CompiledStatement]]:
    """Every compiled statement of ``policies`` in evaluation order (for ``simulate``)."""
    for policy in policies:
        for st in compile_document(policy.document):
            yield policy, st
