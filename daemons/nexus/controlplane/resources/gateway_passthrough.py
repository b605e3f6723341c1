"""Emergency bypasses: passthrough settings and the fleet-wide kill switch.

Both are installation-wide, so their NRNs have the empty scope (super-admins, or a policy that
names them). Passthrough settings live in ``passthrough_setting`` and expire within 8 hours;
DELETE removes one, ``PATCH {"reverted": true}`` ends it early and keeps it for the record. The
kill switch is the ``kill_switch`` entry of ``system_metadata``, the value the gateway reads
(``gateway.compliance``) into ``policy.config.KillSwitch``. Both are checked with those same
records (``policy.config.from_row``) before they are written, and signal gateways to reload.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from psycopg.types.json import Jsonb

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import Resource
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field
from nexus.controlplane.resources.gateway_catalog import Adapter
from nexus.controlplane.resources.gateway_common import Condition, actor, invalid, merged
from nexus.policy.config import MAX_PASSTHROUGH, KillSwitch, PassthroughSetting, from_row

TAG = "passthrough"
DEFAULT_DURATION = dt.timedelta(hours=1)
Tier = Literal["global", "provider_type", "provider_instance"]


@attrs.frozen
class Passthrough:
    """A passthrough setting: which inspection requests to its target skip, until when."""

    id: uuid.UUID
    tier: Tier
    provider_adapter: str | None
    provider_id: uuid.UUID | None
    bypass_hooks: bool
    bypass_cache: bool
    bypass_normalize: bool
    reason: str
    expires_at: dt.datetime
    live: bool = field(description="not reverted and not expired")
    reverted_at: dt.datetime | None = field()
    created_by: uuid.UUID | None = field()
    reverted_by: uuid.UUID | None = field()
    created_at: dt.datetime = field()


@attrs.frozen
class PassthroughCreate:
    """A new passthrough setting; the target matches the tier (adapter for provider_type, id for an instance)."""

    tier: Tier
    reason: str = field(min_length=1, max_length=500)
    provider_adapter: Adapter | None = None
    provider_id: uuid.UUID | None = None
    bypass_hooks: bool = False
    bypass_cache: bool = False
    bypass_normalize: bool = field(default=False, description="implies bypass_cache")
    expires_at: dt.datetime | None = field(default=None, description="default one hour from now; at most 8 hours")


@attrs.frozen
class PassthroughUpdate:
    """Fields a live passthrough setting may change; ``reverted: true`` ends it now."""

    reason: str = field(min_length=1, max_length=500)
    expires_at: dt.datetime = field(description="at most 8 hours after creation")
    bypass_hooks: bool = False
    bypass_cache: bool = False
    bypass_normalize: bool = False
    reverted: Literal[True] = True


async def _db_now(call: Call) -> dt.datetime:
    # The table's 8-hour check compares with the transaction's now(): decide with the same clock.
    cur = await call.conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    value: dt.datetime = row[0]
    return value


_FIELDS = ("provider_adapter", "provider_id", "bypass_normalize", "bypass_cache", "expires_at", "reason")


def _check_setting(row: Mapping[str, Any], created_at: dt.datetime) -> None:
    if not (row.get("bypass_hooks") or row.get("bypass_cache") or row.get("bypass_normalize")):
        raise invalid("bypass_hooks", "set at least one of bypass_hooks, bypass_cache, bypass_normalize")
    expires = row["expires_at"]
    if expires <= created_at:
        raise invalid("expires_at", "must be after the setting's creation")
    if expires > created_at + MAX_PASSTHROUGH:
        raise invalid("expires_at", "a passthrough setting lasts at most 8 hours")
    record = {"tier": row["tier"], "reason": row["reason"], "expires_at": expires,
              "provider_adapter": row.get("provider_adapter"),
              "provider_id": None if row.get("provider_id") is None else str(row["provider_id"]),
              "bypass_hooks": row.get("bypass_hooks", False), "bypass_cache": row.get("bypass_cache", False),
              "bypass_normalize": row.get("bypass_normalize", False), "created_at": created_at}
    try:
        from_row(PassthroughSetting, record)
    except ValueError as exc:
        message = str(exc).split(": ", 1)[-1]
        where = next((name for name in _FIELDS if name in message), "tier")
        raise invalid(where, message) from None


def _when(value: Any) -> dt.datetime:
    parsed: dt.datetime = schema.converter.structure(value, dt.datetime)
    return parsed


async def _prepare(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if call.request.method == "PATCH":
        before = call.target.before or {}
        if before.get("reverted_at") is not None:
            raise ApiError(409, "conflict", "the passthrough setting was already reverted")
        reverted = values.pop("reverted", None)
        row = merged(call, values)
        row["expires_at"] = _when(row["expires_at"])
        if reverted is None or values:
            _check_setting(row, _when(before["created_at"]))
        if reverted:
            values.update(reverted_at=await _db_now(call), reverted_by=actor(call))
        if not values:
            raise invalid("body", "nothing to update")
        return values
    created = await _db_now(call)
    if values.get("expires_at") is None:
        values["expires_at"] = created + DEFAULT_DURATION
    _check_setting(values, created)
    return {**values, "created_by": actor(call)}


PASSTHROUGH = Resource(
    path="passthrough", rtype="passthrough", service="gateway", table="passthrough_setting", read=Passthrough,
    tag=TAG, create=PassthroughCreate, update=PassthroughUpdate, signal="passthrough", org="none",
    filters=("tier", "provider_adapter", "provider_id"),
    expressions={"live": "(t.reverted_at IS NULL AND t.expires_at > now())"},
    conditions={"live": Condition(bool, "(t.reverted_at IS NULL AND t.expires_at > now()) = %s",
                                  "only live (true) or ended (false) settings")},
    prepare=_prepare, noun="passthrough setting",
)


# -- kill switch ----------------------------------------------------------------------------------

KILL_SWITCH_NRN = nrn("platform", None, "kill-switch", "global")


@attrs.frozen
class KillSwitchState:
    """The fleet-wide kill switch: when engaged, every hook is skipped (proxies stop bumping TLS)."""

    engaged: bool
    reason: str
    changed_at: dt.datetime | None
    changed_by: str | None = field(description="the id of who changed it last")


@attrs.frozen
class KillSwitchUpdate:
    """Engage or release the kill switch; engaging needs a reason."""

    engaged: bool
    reason: str = field(default="", max_length=500)


def _state(record: KillSwitch) -> dict[str, Any]:
    state = KillSwitchState(record.engaged, record.reason, record.changed_at, record.changed_by)
    out: dict[str, Any] = schema.unstructure(state)
    return out


async def locate_kill_switch(call: Call) -> Target:
    lock = " FOR UPDATE" if call.request.method != "GET" else ""
    cur = await call.conn.execute(f"SELECT value FROM system_metadata WHERE key = 'kill_switch'{lock}")
    row = await cur.fetchone()
    record = KillSwitch()
    if row is not None:
        try:
            record = from_row(KillSwitch, row[0])
        except ValueError:  # shown as the gateway would act: engaged only if it says so plainly
            record = KillSwitch(engaged=isinstance(row[0], dict) and row[0].get("engaged") is True)
    return Target(nrn=KILL_SWITCH_NRN, before=_state(record))


async def read_kill_switch(call: Call) -> Reply:
    return Reply(call.target.before)


async def set_kill_switch(call: Call) -> Reply:
    body: KillSwitchUpdate = call.body
    if body.engaged and not body.reason.strip():
        raise invalid("reason", "engaging the kill switch needs a reason")
    value = {"engaged": body.engaged, "reason": body.reason, "changed_at": (await _db_now(call)).isoformat(),
             "changed_by": str(call.principal.id)}
    record = from_row(KillSwitch, value)
    await call.conn.execute(
        "INSERT INTO system_metadata (key, value) VALUES ('kill_switch', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (Jsonb(value),))
    state = _state(record)
    return Reply(state, after=state, nrn=KILL_SWITCH_NRN, signal=("kill_switch", None))


def operations() -> list[Operation]:
    return [
        *PASSTHROUGH.operations(),
        Operation("GET", "/api/admin/kill-switch", "admin:kill-switch.read", "Read the kill switch", TAG,
                  read_kill_switch, locate_kill_switch, response=KillSwitchState),
        Operation("PUT", "/api/admin/kill-switch", "admin:kill-switch.update", "Engage or release the kill switch",
                  TAG, set_kill_switch, locate_kill_switch, body=KillSwitchUpdate, response=KillSwitchState),
    ]

