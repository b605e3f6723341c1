"""Who is calling the control plane: the one record authentication produces and IAM consumes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Literal

import attrs

PrincipalKind = Literal["user", "api_key", "system"]


@attrs.frozen
class Principal:
    """An authenticated caller.

    ``org_path`` is the slash-joined org path (``acme/emea``) that seeded policies use through the
    ``${nexus:PrincipalOrgPath}`` variable; ``tags`` are the user's attributes for ABAC
    (``nexus:PrincipalTag/<k>``); ``mfa`` says the session was established with a second factor.
    """

    kind: PrincipalKind
    id: uuid.UUID
    org_id: uuid.UUID
    org_path: str
    label: str
    tags: Mapping[str, str] = attrs.field(factory=dict)
    mfa: bool = False
    session_id: str | None = None
