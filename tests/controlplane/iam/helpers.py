"""Shared helpers for the IAM tests: a fixed caller, a fixed clock, one-line requests and policies."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from nexus.controlplane.iam.document import parse_document
from nexus.controlplane.iam.evaluate import AccessRequest, AttachedPolicy, Decision, evaluate
from nexus.controlplane.principal import Principal

USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
ORG_ID = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def principal(org_path: str = "acme/emea", *, tags: Mapping[str, str] | None = None, mfa: bool = False,
              kind: str = "user", pid: uuid.UUID = USER_ID) -> Principal:
    return Principal(kind, pid, ORG_ID, org_path, "alice@acme.test", dict(tags or {}), mfa)  # type: ignore[arg-type]


def request(action: str, resource: str, *, who: Principal | None = None, ip: str | None = "10.1.2.3",
            now: datetime = NOW, tags: Mapping[str, str] | None = None,
            extra: Mapping[str, Any] | None = None) -> AccessRequest:
    return AccessRequest(who or principal(), action, resource, ip, now, dict(tags or {}), dict(extra or {}))


def policy(*statements: dict[str, Any], name: str = "test", org_path: str | None = None) -> AttachedPolicy:
    return AttachedPolicy(uuid.uuid4(), name, parse_document({"Version": "2025-01-01", "Statement": list(statements)}),
                          org_path)


def allow(action: Any, resource: Any = "*", condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource, **extra}
    if condition is not None:
        st["Condition"] = condition
    return st


def deny(action: Any, resource: Any = "*", condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {**allow(action, resource, condition, **extra), "Effect": "Deny"}


def decide(policies: Sequence[AttachedPolicy] | AttachedPolicy, req: AccessRequest) -> Decision:
    if isinstance(policies, AttachedPolicy):
        policies = [policies]
    return evaluate(policies, req)
