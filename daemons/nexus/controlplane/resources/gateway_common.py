"""Shared pieces of the gateway area's admin resources: field-named errors, the acting user, merged patches.

Gateway tables use ``crud.Resource``'s ``scope_sql`` (a quota policy is scoped by ``scope_org_id``,
an override by its policy's; ``org_id`` there is a quota *subject*), ``conditions`` (``revoked=true``)
and ``collection_tags`` (a developer listing ``owner_user_id=<self>`` asks about keys they own).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from nexus.controlplane.api.crud import Condition
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call

# Bounds of the PostgreSQL integer types, declared in the schemas so callers learn them up front.
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def invalid(field_name: str, problem: str) -> ApiError:
    """A 422 in the API's shape whose message and details name the field."""
    return ApiError(422, "validation_error", f"{field_name}: {problem}", {"field": field_name})


def actor(call: Call) -> uuid.UUID | None:
    """The caller as an ``app_user`` id for ``created_by``-style columns (API keys are not users)."""
    return call.principal.id if call.principal.kind == "user" else None


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def merged(call: Call, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The row as it will be after a PATCH (``call.target.before`` is the current read form)."""
    return {**(call.target.before or {}), **patch}


__all__ = ["INT4_MAX", "INT8_MAX", "Condition", "actor", "invalid", "merged", "now"]
