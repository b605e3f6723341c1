"""The one place the admin API asks IAM: may this principal do this action on this target?"""

from __future__ import annotations

import datetime as dt

from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Target
from nexus.controlplane.iam.evaluate import AccessRequest, Decision, evaluate
from nexus.controlplane.iam.store import policies_for_principal
from nexus.controlplane.principal import Principal
from nexus.controlplane.services import Services


async def decide(services: Services, principal: Principal, action: str, target: Target, ip: str | None) -> Decision:
    policies = await policies_for_principal(services.pg, principal)
    request = AccessRequest(principal=principal, action=action, resource=target.nrn, source_ip=ip,
                            now=dt.datetime.now(dt.UTC), resource_tags=dict(target.tags))
    return evaluate(policies, request)


class Denied(ApiError):
    """A refused second check; the router audits it after rolling the request back."""

    def __init__(self, action: str, target: Target) -> None:
        super().__init__(403, "forbidden", f"not allowed: {action} on {target.nrn}",
                         {"action": action, "resource": target.nrn})
        self.target = target


async def require(call: Call, action: str, target: Target) -> None:
    """A second authorisation an operation needs beyond its own (e.g. update on the user added to a group)."""
    decision = await decide(call.services, call.principal, action, target, call.source_ip)
    if not decision.allowed:
        raise Denied(action, target)
