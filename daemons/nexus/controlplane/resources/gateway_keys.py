"""Virtual keys: the credentials callers present to the gateway.

The clear key (``nvk_…``) exists only in the 201 answer of create: the table keeps
``HMAC-SHA256(key_hmac, key)`` (the gateway's lookup) and the first characters for display.
Every change publishes ``virtual_key`` with the key's id; gateways drop that key from their
cache at once, which is how a revocation is refused everywhere within a second.

IAM: ``admin:virtual-key.create`` carries the owner the new key will have as
``nexus:ResourceTag/owner`` (empty for application keys), so a developer may only create keys
for themselves; reads, revocation and deletion see the existing key's owner the same way.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import attrs
from psycopg.types.json import Jsonb

from nexus.controlplane.api.crud import Resource, org_path
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field, patch_of
from nexus.controlplane.resources.gateway_common import INT4_MAX, INT8_MAX, Condition, actor, invalid, now
from nexus.crypto import vkeys

TAG = "virtual-keys"
SIGNAL = "virtual_key"
MODEL_GLOB = r"^[^\s]{1,200}$"


@attrs.frozen
class VirtualKey:
    """A virtual key as the admin API shows it: never the key or its hash, only ``key_prefix``."""

    id: uuid.UUID
    name: str
    description: str
    kind: Literal["personal", "application"]
    org_id: uuid.UUID
    project_id: uuid.UUID | None
    owner_user_id: uuid.UUID | None
    key_prefix: str = field(description="the key's first characters, for recognising it")
    allowed_models: list[str] = field(description="model globs; [\"*\"] allows every model, [] none")
    rpm: int | None = field(description="requests per minute; null = no limit")
    tpm: int | None = field(description="tokens per minute; null = no limit")
    metadata: dict[str, Any] = field()
    expires_at: dt.datetime | None = field()
    revoked: bool = field()
    revoked_at: dt.datetime | None = field()
    revoked_by: uuid.UUID | None = field()
    revoked_reason: str | None = field()
    last_used_at: dt.datetime | None = field()
    created_by: uuid.UUID | None = field()
    created_at: dt.datetime = field()
    updated_at: dt.datetime = field()


@attrs.frozen
class VirtualKeyCreated(VirtualKey):
    """A new virtual key with its clear ``key``, shown this once and never again."""

    key: str = field(description="the clear key (nvk_…); store it now, it cannot be read back")


@attrs.frozen
class VirtualKeyCreate:
    """A new virtual key: personal keys belong to a user (default: the caller), application keys to a project."""

    name: str = field(min_length=1, max_length=200)
    kind: Literal["personal", "application"] = "personal"
    description: str = field(default="", max_length=2000)
    org_id: uuid.UUID | None = field(default=None, description="default: the project's, the owner's or the caller's")
    project_id: uuid.UUID | None = None
    owner_user_id: uuid.UUID | None = field(default=None, description="personal keys; default the caller")
    allowed_models: list[str] = field(factory=lambda: ["*"], max_length=1000)
    rpm: int | None = field(default=None, minimum=1, maximum=INT4_MAX)
    tpm: int | None = field(default=None, minimum=1, maximum=INT8_MAX)
    expires_at: dt.datetime | None = None
    metadata: dict[str, Any] = field(factory=dict)


VirtualKeyUpdate = patch_of(
    VirtualKeyCreate,
    "kind", "org_id", "project_id", "owner_user_id",
    doc="Fields a virtual key update may change (owner, org, project and kind are fixed at creation).",
)


@attrs.frozen
class VirtualKeyRevoke:
    """Why the key is revoked (kept with the key and in the audit log)."""

    reason: str = field(default="", max_length=500)


def _check_models(globs: list[str]) -> None:
    for i, glob in enumerate(globs):
        if not glob or len(glob) > 200 or any(ch.isspace() for ch in glob):
            raise invalid(f"allowed_models[{i}]", "a model glob is 1-200 characters without spaces")


async def _prepare_update(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if "allowed_models" in values:
        _check_models(values["allowed_models"])
    return values


def _list_tags(query: Any) -> dict[str, str]:
    # Listing one owner's keys is a question about keys that user owns: IAM sees that owner.
    owner = getattr(query, "owner_user_id", None)
    return {"owner": str(owner)} if owner is not None else {}


VIRTUAL_KEYS = Resource(
    path="virtual-keys", rtype="virtual-key", service="gateway", table="virtual_key", read=VirtualKey, tag=TAG,
    update=VirtualKeyUpdate, signal=SIGNAL, filters=("org_id", "project_id", "kind", "owner_user_id"),
    owner_column="owner_user_id", expressions={"revoked": "t.revoked_at IS NOT NULL"},
    conditions={"revoked": Condition(bool, "(t.revoked_at IS NOT NULL) = %s", "only revoked (true) or live (false)")},
    collection_tags=_list_tags, prepare=_prepare_update, noun="virtual key",
)


def _owner(call: Call) -> uuid.UUID | None:
    body: VirtualKeyCreate = call.body
    if body.kind == "personal" and body.owner_user_id is None and call.principal.kind == "user":
        return call.principal.id
    return body.owner_user_id


async def _one(call: Call, query: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    cur = await call.conn.execute(query, args)
    return await cur.fetchone()


async def _key_org(call: Call, owner: uuid.UUID | None) -> uuid.UUID:
    body: VirtualKeyCreate = call.body
    if body.org_id is not None:
        return body.org_id
    if body.project_id is not None:
        row = await _one(call, "SELECT org_id FROM project WHERE id = %s", (body.project_id,))
        if row is None:
            raise invalid("project_id", "no such project")
        return uuid.UUID(str(row[0]))
    if owner is not None:
        row = await _one(call, "SELECT org_id FROM app_user WHERE id = %s", (owner,))
        if row is None:
            raise invalid("owner_user_id", "no such user")
        return uuid.UUID(str(row[0]))
    return call.principal.org_id


async def locate_new_key(call: Call) -> Target:
    owner = _owner(call)
    org_id = await _key_org(call, owner)
    return Target(nrn=nrn("gateway", await org_path(call, org_id), "virtual-key"), org_id=org_id,
                  tags={"owner": str(owner) if owner is not None else ""})


async def _check_create(call: Call, org_id: uuid.UUID, owner: uuid.UUID | None) -> None:
    body: VirtualKeyCreate = call.body
    _check_models(body.allowed_models)
    if body.kind == "personal" and owner is None:
        raise invalid("owner_user_id", "a personal key needs an owner")
    if body.kind == "application":
        if owner is not None:
            raise invalid("owner_user_id", "an application key belongs to a project, not a user")
        if body.project_id is None:
            raise invalid("project_id", "an application key needs a project")
    if body.project_id is not None:
        row = await _one(call, "SELECT org_id FROM project WHERE id = %s", (body.project_id,))
        if row is None or uuid.UUID(str(row[0])) != org_id:
            raise invalid("project_id", "no such project in the key's organization")
    if owner is not None:
        key_path = await org_path(call, org_id)
        row = await _one(call, "SELECT o.path FROM app_user u JOIN organization o ON o.id = u.org_id WHERE u.id = %s",
                         (owner,))
        if row is None:
            raise invalid("owner_user_id", "no such user")
        user_path = str(row[0])
        # The owner and the key must sit on one branch of the org tree: a key never bills a foreign tenant.
        if not (user_path == key_path or user_path.startswith(key_path + "/") or key_path.startswith(user_path + "/")):
            raise invalid("owner_user_id", "the owner belongs to an organization outside the key's branch")
    if body.expires_at is not None and body.expires_at <= now():
        raise invalid("expires_at", "must be in the future")


async def create_key(call: Call) -> Reply:
    body: VirtualKeyCreate = call.body
    owner = _owner(call)
    org_id = call.target.org_id
    assert org_id is not None
    await _check_create(call, org_id, owner)
    key = vkeys.generate()
    row = await _one(
        call,
        "INSERT INTO virtual_key (key_hash, key_prefix, name, description, kind, org_id, project_id, owner_user_id, "
        "allowed_models, rpm, tpm, metadata, expires_at, created_by) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (vkeys.hash_key(call.services.key_hmac, key), vkeys.display_prefix(key), body.name, body.description,
         body.kind, org_id, body.project_id, owner, body.allowed_models, body.rpm, body.tpm, Jsonb(body.metadata),
         body.expires_at, actor(call)),
    )
    assert row is not None
    created = VIRTUAL_KEYS.target(await VIRTUAL_KEYS.fetch(call, row[0], lock=False))
    assert created.before is not None
    return Reply({**created.before, "key": key}, status=201, after=created.before, nrn=created.nrn,
                 signal=(SIGNAL, str(row[0])))


async def revoke_key(call: Call) -> Reply:
    body: VirtualKeyRevoke = call.body
    rid = call.path_uuid()
    if (call.target.before or {}).get("revoked"):
        raise ApiError(409, "conflict", "the virtual key is already revoked")
    await call.conn.execute(
        "UPDATE virtual_key SET revoked_at = now(), revoked_by = %s, revoked_reason = %s WHERE id = %s",
        (actor(call), body.reason or None, rid))
    revoked = VIRTUAL_KEYS.target(await VIRTUAL_KEYS.fetch(call, rid, lock=False))
    return Reply(revoked.before, after=revoked.before, signal=(SIGNAL, str(rid)))


def operations() -> list[Operation]:
    base = VIRTUAL_KEYS.base
    ops = VIRTUAL_KEYS.operations()
    ops.insert(2, Operation("POST", base, "admin:virtual-key.create", "Create a virtual key (the key is shown once)",
                            TAG, create_key, locate_new_key, body=VirtualKeyCreate, response=VirtualKeyCreated,
                            status=201))
    ops.append(Operation("POST", f"{base}/{{id}}/revoke", "admin:virtual-key.revoke", "Revoke a virtual key", TAG,
                         revoke_key, VIRTUAL_KEYS.locate_row, body=VirtualKeyRevoke, response=VirtualKey))
    return ops

