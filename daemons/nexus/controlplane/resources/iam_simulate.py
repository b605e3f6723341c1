"""``POST /api/admin/iam/simulate``: what IAM would answer for another principal, and why.

The simulated principal's policies are loaded exactly as the router loads them for a real
request (``iam.store``) and evaluated with ``iam.simulate``, so the answer is the router's answer
for the same action, resource, tags, address, time and MFA state.

Authorisation: ``admin:iam.simulate`` on the *simulated principal's own NRN*
(``nrn:nexus:iam:org/<path>:user/<id>`` or ``…:api-key/<id>``), tagged with the user's
attributes. A simulation shows which policies a principal holds, so it is scoped like reading
that principal: security-admins simulate principals of their org subtree, not other tenants'.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from typing import Literal

import attrs

from nexus.controlplane.api.errors import invalid
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field
from nexus.controlplane.auth.authenticate import string_tags
from nexus.controlplane.iam.actions import is_action
from nexus.controlplane.iam.errors import IamError
from nexus.controlplane.iam.evaluate import AccessRequest
from nexus.controlplane.iam.nrn import parse_nrn
from nexus.controlplane.iam.simulate import StatementMatch, simulate
from nexus.controlplane.iam.store import policies_for_api_key, policies_for_user
from nexus.controlplane.principal import Principal

TAG = "identity"


@attrs.frozen
class SimulatedPrincipal:
    """Whose permissions to simulate."""

    type: Literal["user", "api_key"]
    id: uuid.UUID


@attrs.frozen
class SimulationContext:
    """Request facts conditions may test; defaults: no MFA, now."""

    mfa: bool = False
    time: dt.datetime | None = None


@attrs.frozen
class SimulateRequest:
    """One access request to evaluate for ``principal``."""

    principal: SimulatedPrincipal
    action: str = field(max_length=200, description="admin:<resource>.<verb> or my:<resource>.<verb>")
    resource: str = field(max_length=1024, description="a concrete NRN, e.g. nrn:nexus:gateway:org/acme:virtual-key/*")
    resource_tags: dict[str, str] = field(factory=dict, description="the target's tags (nexus:ResourceTag/<k>)")
    source_ip: str | None = field(default=None, max_length=64)
    context: SimulationContext = field(factory=SimulationContext)


@attrs.frozen
class SimulatedDecision:
    """The verdict and the statement that decided it (none for the default deny)."""

    allowed: bool
    effect: Literal["Allow", "Deny", "DefaultDeny"]
    policy_id: uuid.UUID | None
    policy_name: str | None
    statement_index: int | None
    sid: str | None
    reason: str


@attrs.frozen
class SimulatedStatement:
    """A statement whose action and resource matched; ``note`` says why a near miss did not apply."""

    policy_id: uuid.UUID | None
    policy_name: str
    statement_index: int
    sid: str | None
    effect: Literal["Allow", "Deny"]
    note: str | None


@attrs.frozen
class SimulateResult:
    """The decision, every statement that applied, and those that nearly did."""

    principal_nrn: str
    decision: SimulatedDecision
    matched: list[SimulatedStatement]
    near_misses: list[SimulatedStatement]


async def _locate(call: Call) -> Target:
    who: SimulatedPrincipal = call.body.principal
    if who.type == "user":
        cur = await call.conn.execute(
            "SELECT o.path, u.org_id, u.attributes FROM app_user u JOIN organization o ON o.id = u.org_id "
            "WHERE u.id = %s", (who.id,))
    else:
        cur = await call.conn.execute(
            "SELECT o.path, k.org_id, NULL FROM admin_api_key k JOIN organization o ON o.id = k.org_id "
            "WHERE k.id = %s", (who.id,))
    row = await cur.fetchone()
    if row is None:
        raise invalid(f"principal.id: no such {who.type.replace('_', ' ')}", "principal.id")
    rtype = "user" if who.type == "user" else "api-key"
    return Target(nrn=nrn("iam", row[0], rtype, str(who.id)), org_id=row[1], tags=string_tags(row[2]))


def _statement(m: StatementMatch) -> SimulatedStatement:
    return SimulatedStatement(m.policy_id, m.policy_name, m.statement_index, m.sid, m.effect, m.note)


async def _simulate(call: Call) -> Reply:
    body: SimulateRequest = call.body
    if not is_action(body.action):
        raise invalid(f"action: {body.action!r} is not an action (admin:<resource>.<verb> or my:<resource>.<verb>)",
                      "action")
    try:
        parse_nrn(body.resource)
    except IamError as exc:
        raise invalid(f"resource: {exc}", "resource") from None
    if body.source_ip is not None:
        try:
            ipaddress.ip_address(body.source_ip)
        except ValueError:
            raise invalid(f"source_ip: {body.source_ip!r} is not an IP address", "source_ip") from None
    who = body.principal
    org_path = call.target.nrn.split(":")[3].removeprefix("org/")
    assert call.target.org_id is not None
    principal = Principal(kind=who.type, id=who.id, org_id=call.target.org_id, org_path=org_path,
                          label=str(who.id), tags=dict(call.target.tags), mfa=body.context.mfa)
    policies = (await policies_for_user(call.services.pg, who.id) if who.type == "user"
                else await policies_for_api_key(call.services.pg, who.id))
    try:
        request = AccessRequest(principal=principal, action=body.action, resource=body.resource,
                                source_ip=body.source_ip, now=body.context.time or dt.datetime.now(dt.UTC),
                                resource_tags=body.resource_tags)
    except IamError as exc:
        raise invalid(str(exc)) from None
    result = simulate(policies, request)
    d = result.decision
    decision = SimulatedDecision(d.allowed, d.effect, d.policy_id, d.policy_name, d.statement_index, d.sid, d.reason)
    return Reply(SimulateResult(call.target.nrn, decision, [_statement(m) for m in result.matched],
                                [_statement(m) for m in result.near_misses]))


def operations() -> list[Operation]:
    return [Operation("POST", "/api/admin/iam/simulate", "admin:iam.simulate",
                      "Simulate an IAM decision for a user or API key", TAG, _simulate, _locate,
                      body=SimulateRequest, response=SimulateResult)]
