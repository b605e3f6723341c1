"""Quota policies and their per-subject overrides.

A policy's IAM scope is its ``scope_org_id`` (null: installation-wide, super-admins only); an
override is scoped like its policy. ``org_id`` / ``project_id`` / ... on these tables are quota
*subjects*, not the owner. Rows are checked field by field for the table's rules (so the 422
names the field rather than a constraint) and then parsed by the gateway's own records
(``gateway.quota.policy.policy_from_row`` / ``override_from_row``), the code that will read them.
A subject that has an organization (org, project, user, key) must lie in the scope's subtree, so
one tenant's admins cannot aim quotas at, or probe for, another tenant's things.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs
from cattrs.v import format_exception

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import Resource
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Operation
from nexus.controlplane.api.schema import field, patch_of
from nexus.controlplane.resources.gateway_common import INT8_MAX, actor, invalid, merged, now
from nexus.gateway.quota.policy import override_from_row, policy_from_row

TAG = "quotas"
Axis = Literal["organization", "project", "user", "virtual_key", "provider", "model"]
Unit = Literal["requests", "input_tokens", "output_tokens", "total_tokens", "cost_micro_usd"]
AXIS_COLUMN: Mapping[str, str] = {"organization": "org_id", "project": "project_id", "user": "user_id",
                                  "virtual_key": "virtual_key_id", "provider": "provider_id", "model": "model_code"}
SUBJECT_COLUMNS = tuple(AXIS_COLUMN.values())
_COLUMN_AXIS = {column: axis for axis, column in AXIS_COLUMN.items()}
# Subjects that belong to an organization, and how to find its path.
_SUBJECT_ORG: Mapping[str, str] = {
    "org_id": "SELECT path FROM organization WHERE id = %s",
    "project_id": "SELECT o.path FROM project p JOIN organization o ON o.id = p.org_id WHERE p.id = %s",
    "user_id": "SELECT o.path FROM app_user u JOIN organization o ON o.id = u.org_id WHERE u.id = %s",
    "virtual_key_id": "SELECT o.path FROM virtual_key k JOIN organization o ON o.id = k.org_id WHERE k.id = %s",
    "provider_id": "SELECT NULL::text FROM provider WHERE id = %s",
}


@attrs.frozen
class QuotaPolicy:
    """One limit on one axis; a null subject makes it a per-subject default."""

    id: uuid.UUID
    name: str
    description: str
    scope_org_id: uuid.UUID | None = field(description="the org subtree it applies to; null = everywhere")
    axis: Axis = field()
    org_id: uuid.UUID | None = field()
    project_id: uuid.UUID | None = field()
    user_id: uuid.UUID | None = field()
    virtual_key_id: uuid.UUID | None = field()
    provider_id: uuid.UUID | None = field()
    model_code: str | None = field()
    unit: Unit = field()
    window_kind: Literal["calendar", "sliding"] = field()
    calendar_period: Literal["day", "week", "month"] | None = field()
    window_seconds: int | None = field()
    soft_limit: int | None = field()
    hard_limit: int | None = field()
    hard_action: Literal["block", "downgrade"] = field()
    fail_mode: Literal["closed", "open"] = field()
    enabled: bool = field()
    created_by: uuid.UUID | None = field()
    created_at: dt.datetime = field()
    updated_at: dt.datetime = field()


@attrs.frozen
class QuotaPolicyCreate:
    """A new quota policy; set at most the one subject column of its axis."""

    axis: Axis
    unit: Unit
    window_kind: Literal["calendar", "sliding"]
    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)
    scope_org_id: uuid.UUID | None = None
    org_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    virtual_key_id: uuid.UUID | None = None
    provider_id: uuid.UUID | None = None
    model_code: str | None = field(default=None, min_length=1, max_length=128)
    calendar_period: Literal["day", "week", "month"] | None = None
    window_seconds: int | None = field(default=None, minimum=1, maximum=31 * 86400)
    soft_limit: int | None = field(default=None, minimum=0, maximum=INT8_MAX)
    hard_limit: int | None = field(default=None, minimum=0, maximum=INT8_MAX)
    hard_action: Literal["block", "downgrade"] = "block"
    fail_mode: Literal["closed", "open"] = "closed"
    enabled: bool = True


QuotaPolicyUpdate = patch_of(
    QuotaPolicyCreate,
    "scope_org_id",
    doc="Fields a quota policy update may change (its scope is fixed).",
)


@attrs.frozen
class QuotaOverride:
    """Different limits for one subject of a policy, optionally until ``expires_at``."""

    id: uuid.UUID
    quota_policy_id: uuid.UUID
    org_id: uuid.UUID | None
    project_id: uuid.UUID | None
    user_id: uuid.UUID | None
    virtual_key_id: uuid.UUID | None
    provider_id: uuid.UUID | None
    model_code: str | None
    soft_limit: int | None
    hard_limit: int | None
    reason: str
    expires_at: dt.datetime | None
    created_by: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class QuotaOverrideCreate:
    """A new override: exactly one subject (the column of the policy's axis) and at least one limit."""

    quota_policy_id: uuid.UUID
    reason: str = field(min_length=1, max_length=500)
    org_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    virtual_key_id: uuid.UUID | None = None
    provider_id: uuid.UUID | None = None
    model_code: str | None = field(default=None, min_length=1, max_length=128)
    soft_limit: int | None = field(default=None, minimum=0, maximum=INT8_MAX)
    hard_limit: int | None = field(default=None, minimum=0, maximum=INT8_MAX)
    expires_at: dt.datetime | None = None


QuotaOverrideUpdate = patch_of(
    QuotaOverrideCreate,
    "quota_policy_id", "org_id", "project_id", "user_id", "virtual_key_id", "provider_id", "model_code",
    doc="Fields an override update may change (policy and subject are fixed).",
)


# -- checks ---------------------------------------------------------------------------------------

def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _check_limits(row: Mapping[str, Any]) -> None:
    soft, hard = row.get("soft_limit"), row.get("hard_limit")
    if soft is None and hard is None:
        raise invalid("hard_limit", "a soft_limit or a hard_limit is required")
    if soft is not None and hard is not None and soft > hard:
        raise invalid("soft_limit", "must not exceed hard_limit")


def _check_window(row: Mapping[str, Any]) -> None:
    period, seconds = row.get("calendar_period"), row.get("window_seconds")
    if row.get("window_kind") == "calendar":
        if period is None:
            raise invalid("calendar_period", "a calendar window needs a period (day, week or month)")
        if seconds is not None:
            raise invalid("window_seconds", "only a sliding window has window_seconds")
    else:
        if seconds is None:
            raise invalid("window_seconds", "a sliding window needs window_seconds")
        if period is not None:
            raise invalid("calendar_period", "only a calendar window has a calendar_period")


def _parser_error(exc: Exception) -> ApiError:
    """A refusal of the gateway's quota records as a 422 naming the field."""
    if isinstance(exc, cattrs.BaseValidationError):
        def fmt(e: BaseException, tp: Any) -> str:
            return str(e) if isinstance(e, ValueError) and str(e) else format_exception(e, tp)

        lines = cattrs.transform_error(exc, path="$", format_exception=fmt)
        problem, _, where = (lines[0] if lines else "invalid value @ $").rpartition(" @ ")
    else:
        problem, where = str(exc), "$"
    name = where.removeprefix("$").lstrip(".").split(".")[0].split("[")[0] or "body"
    return invalid({"subject": "body", "policy_id": "quota_policy_id"}.get(name, name), problem)


async def _subject_in_scope(call: Call, column: str, value: Any, scope_org_id: Any) -> None:
    query = _SUBJECT_ORG.get(column)
    if query is None:  # model codes: free text
        return
    cur = await call.conn.execute(query, (_uuid(value),))
    row = await cur.fetchone()
    if row is None:
        raise invalid(column, f"no such {_COLUMN_AXIS[column].replace('_', ' ')}")
    if scope_org_id is None or row[0] is None:
        return
    cur = await call.conn.execute("SELECT path FROM organization WHERE id = %s", (_uuid(scope_org_id),))
    scope = await cur.fetchone()
    path = str(row[0])
    if scope is None or not (path == scope[0] or path.startswith(str(scope[0]) + "/")):
        raise invalid(column, "lies outside the scope organization's subtree")


async def check_policy(call: Call, row: Mapping[str, Any]) -> None:
    axis = row["axis"]
    subject_column = AXIS_COLUMN[axis]
    for column in SUBJECT_COLUMNS:
        if row.get(column) is not None and column != subject_column:
            raise invalid(column, f"only a policy on the {_COLUMN_AXIS[column]!r} axis names a {column}")
    _check_window(row)
    _check_limits(row)
    record = {
        "id": str(row.get("id") or "new"), "name": row["name"], "axis": axis, "unit": row["unit"],
        "window_kind": row["window_kind"], "subject": _text(row.get(subject_column)),
        "scope_org_id": _text(row.get("scope_org_id")), "calendar_period": row.get("calendar_period"),
        "window_seconds": row.get("window_seconds"), "soft_limit": row.get("soft_limit"),
        "hard_limit": row.get("hard_limit"), "hard_action": row.get("hard_action", "block"),
        "fail_mode": row.get("fail_mode", "closed"),
    }
    try:
        policy_from_row(record)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _parser_error(exc) from None
    if row.get(subject_column) is not None:
        await _subject_in_scope(call, subject_column, row[subject_column], row.get("scope_org_id"))


async def _prepare_policy(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if call.request.method == "PATCH":
        row = merged(call, values)
        # Changing the axis moves the subject: the old axis's column must go with it.
        if "axis" in values:
            for column in SUBJECT_COLUMNS:
                if column != AXIS_COLUMN[values["axis"]] and column not in values and row.get(column) is not None:
                    values[column] = row[column] = None
        await check_policy(call, row)
        return values
    await check_policy(call, values)
    return {**values, "created_by": actor(call)}


async def _policy_scope(call: Call) -> uuid.UUID | None:
    scope: uuid.UUID | None = call.body.scope_org_id
    return scope


QUOTA_POLICIES = Resource(
    path="quota-policies", rtype="quota-policy", service="gateway", table="quota_policy", read=QuotaPolicy, tag=TAG,
    create=QuotaPolicyCreate, update=QuotaPolicyUpdate, signal="quota_policy", scope_sql="t.scope_org_id",
    filters=("scope_org_id", "axis", "unit", "enabled"), new_scope=_policy_scope, prepare=_prepare_policy,
    noun="quota policy",
)


async def _policy_of(call: Call, policy_id: Any) -> Mapping[str, Any]:
    cur = await call.conn.execute(
        "SELECT axis, scope_org_id, org_id, project_id, user_id, virtual_key_id, provider_id, model_code "
        "FROM quota_policy WHERE id = %s", (_uuid(policy_id),))
    row = await cur.fetchone()
    if row is None:
        raise invalid("quota_policy_id", "no such quota policy")
    names = [d.name for d in cur.description or ()]
    return dict(zip(names, row, strict=True))


async def check_override(call: Call, row: Mapping[str, Any], *, creating: bool) -> None:
    policy = await _policy_of(call, row["quota_policy_id"])
    column = AXIS_COLUMN[policy["axis"]]
    named = [c for c in SUBJECT_COLUMNS if row.get(c) is not None]
    for other in named:
        if other != column:
            raise invalid(other, f"the policy counts per {policy['axis']}: name the subject in {column}")
    if not named:
        raise invalid(column, f"an override names the {policy['axis']} it applies to")
    if policy[column] is not None and str(policy[column]) != str(row[column]):
        raise invalid(column, "the policy counts only its own subject; override that one")
    _check_limits(row)
    expires = row.get("expires_at")
    if isinstance(expires, str):
        expires = schema.converter.structure(expires, dt.datetime)
    if creating and expires is not None and expires <= now():
        raise invalid("expires_at", "must be in the future")
    try:
        override_from_row({"id": str(row.get("id") or "new"), "policy_id": str(row["quota_policy_id"]),
                           "subject": str(row[column]), "soft_limit": row.get("soft_limit"),
                           "hard_limit": row.get("hard_limit"),
                           "expires_at": expires.timestamp() if expires is not None else None})
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _parser_error(exc) from None
    if creating:
        await _subject_in_scope(call, column, row[column], policy["scope_org_id"])


async def _prepare_override(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if call.request.method == "PATCH":
        await check_override(call, merged(call, values), creating=False)
        return values
    await check_override(call, values, creating=True)
    return {**values, "created_by": actor(call)}


async def _override_scope(call: Call) -> uuid.UUID | None:
    policy = await _policy_of(call, call.body.quota_policy_id)
    scope: uuid.UUID | None = policy["scope_org_id"]
    return scope


QUOTA_OVERRIDES = Resource(
    path="quota-overrides", rtype="quota-override", service="gateway", table="quota_override", read=QuotaOverride,
    tag=TAG, create=QuotaOverrideCreate, update=QuotaOverrideUpdate, signal="quota_override",
    scope_sql="(SELECT p.scope_org_id FROM quota_policy p WHERE p.id = t.quota_policy_id)",
    filters=("quota_policy_id",), new_scope=_override_scope, prepare=_prepare_override, noun="quota override",
)


def operations() -> list[Operation]:
    return QUOTA_POLICIES.operations() + QUOTA_OVERRIDES.operations()
