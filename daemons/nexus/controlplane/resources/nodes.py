"""Admin API: nodes — things (every daemon and agent) with their shadows, and agent enrollment tokens.

Things register through the hub, so the API lists, reads, edits and deletes them but never creates
one. Editing ``desired`` is a per-thing override in the hub's model (hub.md): each key written
gets the next version (``desired_ver`` + 1), lands in ``config_override`` and in the
``config_change_event`` log that hubs tail, and the thing reports it back when applied. A key set
to null removes the override (JSON merge-patch), falling back to the type's template if any.

Enrollment tokens are shown once: creation returns the clear token, the table keeps its SHA-256
(0004's column comment), which is what the hub compares an installer's token against.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from typing import Any, Literal

import attrs
from psycopg.types.json import Jsonb

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import Resource
from nexus.controlplane.api.errors import ApiError, invalid
from nexus.controlplane.api.operation import Call, Operation, Reply
from nexus.controlplane.api.schema import field
from nexus.controlplane.resources.sourced import hide_system_rows

TAG = "nodes"
ThingType = Literal["hub", "control-plane", "gateway", "proxy", "agent"]
ThingStatus = Literal["pending", "online", "offline", "stale", "revoked", "decommissioned"]
CONFIG_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,127}")


def user_id(call: Call) -> uuid.UUID | None:
    return call.principal.id if call.principal.kind == "user" else None


# -- things -----------------------------------------------------------------------------------


@attrs.frozen
class ThingSummary:
    """A daemon or agent; ``drift`` is true while it has not applied the latest desired config."""

    id: uuid.UUID
    type: ThingType
    name: str
    org_id: uuid.UUID | None
    host: str | None
    version: str | None
    status: ThingStatus
    desired_ver: int
    reported_ver: int
    drift: bool
    labels: dict[str, Any]
    last_seen: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class Thing:
    """A thing with its shadow: ``desired`` / ``reported`` are ``{"<key>": {"ver": n, "value": ...}}``."""

    id: uuid.UUID
    type: ThingType
    name: str
    org_id: uuid.UUID | None
    host: str | None
    version: str | None
    status: ThingStatus
    desired: dict[str, Any]
    reported: dict[str, Any]
    desired_ver: int
    reported_ver: int
    drift: bool
    labels: dict[str, Any]
    last_seen: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class ThingUpdate:
    """``desired``: keys to set (each gets the next version) or, with null, to reset to the template."""

    desired: dict[str, Any] = field(factory=dict, description="config keys to set; null removes the override")
    labels: dict[str, str] = field(factory=dict)
    name: str = field(default="", min_length=1, max_length=200)


# The hub and the gateways are things without an org: org callers list only their org's things.
_THING_SOURCE = hide_system_rows("thing", (a.name for a in attrs.fields(Thing) if a.name != "drift"))
_EXPRESSIONS = {"drift": "t.desired_ver > t.reported_ver", "org_id": "t.own_org_id"}
THINGS = Resource(
    path="things", rtype="thing", service="platform", table="thing", read=ThingSummary, tag=TAG,
    filters=("type", "status"), expressions=_EXPRESSIONS, source=_THING_SOURCE,
)
# The same rows with their shadows, for get / update / delete (and so for the audit log's before).
THING = Resource(
    path="things", rtype="thing", service="platform", table="thing", read=Thing, tag=TAG, expressions=_EXPRESSIONS,
    source=_THING_SOURCE,
)


async def update_thing(call: Call) -> Reply:
    body: dict[str, Any] = call.body
    rid = call.path_uuid()
    if "desired" in body:
        await _write_desired(call, rid, body["desired"])
    if "labels" in body:
        await call.conn.execute("UPDATE thing SET labels = %s WHERE id = %s", (Jsonb(body["labels"]), rid))
    if "name" in body:
        await call.conn.execute("UPDATE thing SET name = %s WHERE id = %s", (body["name"], rid))
    updated = THING.target(await THING.fetch(call, rid, lock=False))
    return Reply(updated.before, after=updated.before)


async def _write_desired(call: Call, rid: uuid.UUID, changes: dict[str, Any]) -> None:
    if not changes:
        raise invalid("desired: name at least one key", "desired")
    for key in changes:
        if not CONFIG_KEY.fullmatch(key):
            raise invalid(f"desired.{key}: a key is lower case, starts with a letter, at most 128 of a-z 0-9 _ . -",
                          f"desired.{key}")
    # locate_row holds the row lock (FOR UPDATE), so two edits of one thing serialise here.
    cur = await call.conn.execute("SELECT type, desired, desired_ver FROM thing WHERE id = %s", (rid,))
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "not_found", "thing not found")
    thing_type, desired, version = row[0], dict(row[1]), int(row[2]) + 1
    actor = user_id(call)
    for key, value in changes.items():
        if value is None:
            await call.conn.execute("DELETE FROM config_override WHERE thing_id = %s AND key = %s", (rid, key))
            cur = await call.conn.execute(
                "SELECT value, signal_only FROM config_template WHERE thing_type = %s AND key = %s", (thing_type, key))
            template = await cur.fetchone()
            if template is None:
                desired.pop(key, None)
            else:
                desired[key] = ({"ver": version, "signal_only": True} if template[1]
                                else {"ver": version, "value": template[0]})
            change = "override_removed"
        else:
            await call.conn.execute(
                "INSERT INTO config_override (thing_id, key, value, version, updated_by) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (thing_id, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version, "
                "updated_by = EXCLUDED.updated_by",
                (rid, key, Jsonb(value), version, actor))
            desired[key] = {"ver": version, "value": value}
            change = "override"
        await call.conn.execute(
            "INSERT INTO config_change_event (change, thing_type, thing_id, key, version, actor_id) "
            "VALUES (%s, %s, %s, %s, %s, %s)", (change, thing_type, rid, key, version, actor))
    await call.conn.execute("UPDATE thing SET desired = %s, desired_ver = %s WHERE id = %s",
                            (Jsonb(desired), version, rid))


def thing_operations() -> list[Operation]:
    list_op = THINGS.operations()[0]
    return [
        list_op,
        Operation("GET", "/api/admin/things/{id}", "admin:thing.read", "Get a thing with its shadow", TAG, THING.get,
                  THING.locate_row, response=Thing),
        Operation("PATCH", "/api/admin/things/{id}", "admin:thing.update",
                  "Update a thing: desired config keys, labels, name", TAG, update_thing, THING.locate_row,
                  body=ThingUpdate, partial_body=True, response=Thing),
        Operation("DELETE", "/api/admin/things/{id}", "admin:thing.delete", "Delete a thing", TAG, THING.remove,
                  THING.locate_row, status=204),
    ]


# -- enrollment tokens ------------------------------------------------------------------------

TOKEN_PREFIX = "nxe_"  # noqa: S105 - a display prefix, not a secret
DISPLAY_CHARS = 8
MAX_LIFETIME = dt.timedelta(days=90)


@attrs.frozen
class EnrollmentToken:
    """An agent enrollment token (its secret is never shown again after creation)."""

    id: uuid.UUID
    token_prefix: str
    org_id: uuid.UUID
    name: str
    labels: dict[str, Any]
    max_uses: int
    use_count: int
    status: Literal["active", "revoked", "expired", "exhausted"]
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    created_by: uuid.UUID | None
    created_at: dt.datetime


@attrs.frozen
class EnrollmentTokenCreated(EnrollmentToken):
    """A new enrollment token: ``token`` is shown this once; store it in the installer's secrets."""

    token: str = field(description="the clear token (nxe_…); it cannot be read back")


@attrs.frozen
class EnrollmentTokenCreate:
    """A new token for agents of ``org_id``: ``max_uses`` enrollments until ``expires_at`` (default 24 h)."""

    org_id: uuid.UUID
    name: str = field(default="", max_length=200)
    labels: dict[str, str] = field(factory=dict, description="labels every agent enrolled with it gets")
    max_uses: int = field(default=1, minimum=1, maximum=100_000)
    expires_at: dt.datetime | None = field(default=None, description="at most 90 days ahead; default 24 h")


def hash_token(token: str) -> bytes:
    """What ``enrollment_token.token_hash`` stores (plain SHA-256: the token has 256 bits of entropy)."""
    return hashlib.sha256(token.encode()).digest()


TOKENS = Resource(
    path="enrollment-tokens", rtype="enrollment-token", service="platform", table="enrollment_token",
    read=EnrollmentToken, tag=TAG, filters=("org_id",), noun="enrollment token",
    expressions={"status": "CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked' WHEN t.expires_at <= now() THEN "
                           "'expired' WHEN t.use_count >= t.max_uses THEN 'exhausted' ELSE 'active' END"},
)


async def create_token(call: Call) -> Reply:
    body: EnrollmentTokenCreate = call.body
    now = dt.datetime.now(dt.UTC)
    expires = body.expires_at or now + dt.timedelta(hours=24)
    if expires <= now:
        raise invalid("expires_at: must be in the future", "expires_at")
    if expires - now > MAX_LIFETIME:
        raise invalid("expires_at: at most 90 days ahead", "expires_at")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    cur = await call.conn.execute(
        "INSERT INTO enrollment_token (token_hash, token_prefix, org_id, name, labels, max_uses, expires_at, "
        "created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (hash_token(token), token[: len(TOKEN_PREFIX) + DISPLAY_CHARS], body.org_id, body.name, Jsonb(body.labels),
         body.max_uses, expires, user_id(call)))
    row = await cur.fetchone()
    assert row is not None
    created = TOKENS.target(await TOKENS.fetch(call, row[0], lock=False))
    shown = schema.converter.structure({**(created.before or {}), "token": token}, EnrollmentTokenCreated)
    return Reply(shown, status=201, after=created.before, nrn=created.nrn)


async def revoke_token(call: Call) -> Reply:
    rid = call.path_uuid()
    await call.conn.execute("UPDATE enrollment_token SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
                            (rid,))
    updated = TOKENS.target(await TOKENS.fetch(call, rid, lock=False))
    return Reply(updated.before, after=updated.before)


def token_operations() -> list[Operation]:
    base = "/api/admin/enrollment-tokens"
    return [
        *TOKENS.operations(),
        Operation("POST", base, "admin:enrollment-token.create",
                  "Create an enrollment token (the token is returned once)", TAG, create_token, TOKENS.locate_new,
                  body=EnrollmentTokenCreate, response=EnrollmentTokenCreated, status=201),
        Operation("POST", base + "/{id}/revoke", "admin:enrollment-token.revoke", "Revoke an enrollment token", TAG,
                  revoke_token, TOKENS.locate_row, response=EnrollmentToken),
    ]


def operations() -> list[Operation]:
    return [*thing_operations(), *token_operations()]
