"""``POST /api/admin/iam/simulate``: the decision for a request, and which statements took part. Pure.

``simulate`` returns the same ``Decision`` as ``evaluate`` plus, in evaluation order:

- ``matched``: every statement that applies (action, resource and conditions), Allow and Deny
  alike, so an operator sees each grant and each deny that fired, not only the deciding one;
- ``near_misses``: statements whose action and resource match but that did not apply, with why
  (the first condition that failed, or an org policy kept out of a resource outside its org).

``simulation_to_json`` unstructures it with cattrs (UUIDs as text) for the response body.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import cattrs

from nexus.controlplane.iam.conditions import RequestContext
from nexus.controlplane.iam.evaluate import (
    AccessRequest,
    AttachedPolicy,
    Decision,
    confined_out,
    evaluate,
    iter_statements,
)

__all__ = ["Simulation", "StatementMatch", "simulate", "simulation_to_json"]


@attrs.frozen
class StatementMatch:
    """One statement of one policy. ``note`` says why a near miss did not apply (None when it did)."""

    policy_id: uuid.UUID | None
    policy_name: str
    statement_index: int
    sid: str | None
    effect: Literal["Allow", "Deny"]
    note: str | None = None


@attrs.frozen
class Simulation:
    decision: Decision
    matched: tuple[StatementMatch, ...]
    near_misses: tuple[StatementMatch, ...]


def simulate(policies: Sequence[AttachedPolicy], request: AccessRequest) -> Simulation:
    """Evaluate ``request`` and report every statement that matched or nearly did."""
    ctx = RequestContext(request.principal, request.resource, request.source_ip, request.now,
                         request.resource_tags, request.extra)
    matched: list[StatementMatch] = []
    misses: list[StatementMatch] = []
    for policy, st in iter_statements(policies):
        if not st.covers(request.action, request.resource, request.principal):
            continue
        effect: Literal["Allow", "Deny"] = "Deny" if st.deny else "Allow"
        note: str | None = None
        if confined_out(policy, st, request.resource):
            note = f"the policy belongs to org {policy.org_path} and cannot allow outside it"
        else:
            failed = st.failed_condition(ctx)
            if failed is not None:
                note = f"condition {failed.describe()} not met"
        entry = StatementMatch(policy.id, policy.name, st.index, st.sid, effect, note)
        (matched if note is None else misses).append(entry)
    return Simulation(evaluate(policies, request), tuple(matched), tuple(misses))


_converter = cattrs.Converter()
_converter.register_unstructure_hook(uuid.UUID, str)


def simulation_to_json(simulation: Simulation) -> dict[str, Any]:
    """The JSON object of a simulation (``decision``, ``matched``, ``near_misses``)."""
    result: dict[str, Any] = _converter.unstructure(simulation)
    return result
