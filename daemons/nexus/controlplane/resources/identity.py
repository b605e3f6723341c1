"""Admin API: identity — users, groups and members, policies and attachments, admin API keys, identity providers.

Authorisation follows the conventions of ``iam.seed``: every operation's own action on its own
target, plus, where one operation touches two principals, a second check through
``authz.require`` (adding a user to a group is ``admin:group.update`` on the group *and*
``admin:user.update`` on the user; attaching a policy is ``admin:policy.update`` on the policy
*and* ``admin:<user|group|api-key>.update`` on the principal). Groups and policies carry the tag
``name`` so the seeded policies can let security-admins hand out some managed groups and not
others; users carry their attributes as tags (ABAC).

Tenant lines the API keeps on top of IAM: an org group only takes members from its org subtree,
an org policy is only attached to principals of its org subtree (a Deny in an org policy would
otherwise reach every tenant through a system group), and an identity provider only maps claims
to groups its org may use. Managed (seeded) groups and policies are read-only: 409
``managed_resource``.

Secrets are write-only: passwords are hashed (``crypto.passwords``), TOTP secrets are only ever
cleared, identity-provider client secrets are sealed with the vault under the AAD that
``auth.federation`` opens them with, and an admin API key is shown once, at creation.

The IAM simulator lives in ``resources.iam_simulate``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio

from nexus.controlplane.api import schema
from nexus.controlplane.api.authz import require
from nexus.controlplane.api.crud import ListQuery, Resource, decode_cursor, encode_cursor, scope_path
from nexus.controlplane.api.crud import operations as crud_operations
from nexus.controlplane.api.errors import ApiError, invalid, not_found
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field, patch_of
from nexus.controlplane.auth import apikeys
from nexus.controlplane.auth.federation import seal_client_secret
from nexus.controlplane.auth.local import MAX_PASSWORD, normalise_email, password_problem
from nexus.controlplane.iam.document import document_to_json, parse_document
from nexus.controlplane.iam.errors import PolicyError
from nexus.controlplane.iam.evaluate import compile_document
from nexus.controlplane.iam.nrn import scope_org_path
from nexus.controlplane.iam.variables import TAG_KEY
from nexus.controlplane.resources import iam_simulate
from nexus.crypto import passwords

TAG = "identity"
EMAIL = r"^\s*[^@\s]+@[^@\s]+\s*$"
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_VALUE = 256
UserStatus = Literal["invited", "active", "disabled"]


def _managed_guard(call: Call) -> None:
    if call.target.before is not None and call.target.before.get("managed"):
        raise ApiError(409, "managed_resource", "managed (seeded) groups and policies are read-only",
                       {"resource": call.target.nrn})


def _in_subtree(path: str | None, root: str) -> bool:
    return path is not None and (path == root or path.startswith(root + "/"))


def _actor(call: Call) -> uuid.UUID | None:
    """The acting user for ``created_by``-style columns (they reference app_user; API keys are not users)."""
    return call.principal.id if call.principal.kind == "user" else None


# -- users --------------------------------------------------------------------------------------

@attrs.frozen
class User:
    """A user account. The password hash and TOTP secret are never part of it."""

    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    display_name: str
    status: UserStatus
    can_access_console: bool
    must_change_password: bool
    has_password: bool
    mfa_enabled: bool
    failed_login_count: int
    locked_until: dt.datetime | None
    identity_provider_id: uuid.UUID | None
    external_subject: str | None
    attributes: dict[str, Any]
    password_changed_at: dt.datetime | None
    last_login_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class UserCreate:
    """A new user: with ``password`` (write-only) it can sign in at once, without it it is invited."""

    org_id: uuid.UUID
    email: str = field(pattern=EMAIL, max_length=320, description="stored trimmed and lower case")
    display_name: str = field(default="", max_length=200)
    can_access_console: bool = False
    password: str | None = field(default=None, max_length=MAX_PASSWORD,
                                 description="initial password (write-only, never returned)")
    status: UserStatus | None = field(default=None, description="default: active with a password, else invited")
    must_change_password: bool | None = field(
        default=None, description="default: true when an initial password is given")
    attributes: dict[str, str] = field(factory=dict, description="ABAC tags (nexus:PrincipalTag/<key>)")


@attrs.frozen
class UserUpdate:
    """Fields a user update may change; disabling a user revokes their sessions."""

    display_name: str = field(max_length=200)
    status: UserStatus = "active"
    can_access_console: bool = False
    must_change_password: bool = False
    attributes: dict[str, str] = field(factory=dict)


@attrs.frozen
class PasswordReset:
    """A new password set by an administrator (write-only); the user's sessions are revoked."""

    password: str = field(max_length=MAX_PASSWORD)
    must_change_password: bool = True


def _check_attributes(values: Mapping[str, str]) -> None:
    if len(values) > MAX_ATTRIBUTES:
        raise invalid(f"attributes: at most {MAX_ATTRIBUTES} entries", "attributes")
    for key, value in values.items():
        if not TAG_KEY.fullmatch(key):
            raise invalid(f"attributes.{key}: not a valid tag key (letters, digits and _.:/=+@-, at most 128)",
                          "attributes")
        if len(value) > MAX_ATTRIBUTE_VALUE:
            raise invalid(f"attributes.{key}: at most {MAX_ATTRIBUTE_VALUE} characters", "attributes")


async def _hash_password(call: Call, password: str) -> str:
    problem = password_problem(password, "", call.services.authenticator.settings.password_min_length)
    if problem is not None:
        raise invalid(f"password: {problem.replace('the new password', 'the password')}", "password")
    return await trio.to_thread.run_sync(passwords.hash_password, password)


async def _user_columns(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "email" in out:
        out["email"] = normalise_email(out["email"])
    if "attributes" in out:
        _check_attributes(out["attributes"])
    if call.request.method == "POST":
        password = out.pop("password", None)
        if password is not None:
            out["password_hash"] = await _hash_password(call, password)
            out["password_changed_at"] = dt.datetime.now(dt.UTC)
        if out.get("status") is None:
            out["status"] = "active" if password is not None else "invited"
        if out.get("must_change_password") is None:
            out["must_change_password"] = password is not None
    return out


@attrs.frozen
class _Users(Resource):
    async def list_rows(self, call: Call) -> Reply:
        if getattr(call.query, "email", None):
            call.query = attrs.evolve(call.query, email=normalise_email(call.query.email))
        return await Resource.list_rows(self, call)


USERS = _Users(
    path="users", rtype="user", service="iam", table="app_user", read=User, create=UserCreate, update=UserUpdate,
    tag=TAG, filters=("org_id", "status", "email"), prepare=_user_columns,
    # ABAC tags: the user's attributes, plus "privileged" computed here so nobody can set it (iam/seed.py).
    tags_column=("attributes || jsonb_build_object('privileged', (EXISTS (SELECT 1 FROM iam_group_member m "
                 "JOIN iam_group g ON g.id = m.group_id WHERE m.user_id = t.id AND g.org_id IS NULL "
                 "AND g.name IN ('super-admins', 'provider-admins', 'compliance-team')))::text)"),
    expressions={"has_password": "t.password_hash IS NOT NULL", "mfa_enabled": "t.totp_enabled_at IS NOT NULL"},
)


async def _user_reply(call: Call, user_id: uuid.UUID) -> Reply:
    user = USERS.target(await USERS.fetch(call, user_id, lock=False))
    return Reply(user.before, after=user.before)


async def _revoke_sessions(call: Call, user_id: uuid.UUID, reason: str) -> None:
    await call.conn.execute(
        "UPDATE refresh_token SET revoked_at = now(), revoked_reason = %s WHERE user_id = %s AND revoked_at IS NULL",
        (reason, user_id))


async def _update_user(call: Call) -> Reply:
    rid = call.path_uuid()
    status = call.body.get("status")
    if rid == call.principal.id and status is not None and status != "active":
        raise ApiError(409, "conflict", "status: you cannot disable your own account", {"field": "status"})
    reply = await USERS.modify(call)
    if status == "disabled":
        await _revoke_sessions(call, rid, "user_disabled")
    if status is not None:
        # The user's personal keys live and die with the account (gateway/keys/store.py reads its status).
        reply = attrs.evolve(reply, signal=("virtual_key", None))
    return reply


async def _delete_user(call: Call) -> Reply:
    if call.path_uuid() == call.principal.id:
        raise ApiError(409, "conflict", "you cannot delete your own account")
    return await USERS.remove(call)


async def _reset_password(call: Call) -> Reply:
    rid = call.path_uuid()
    body: PasswordReset = call.body
    hashed = await _hash_password(call, body.password)
    await call.conn.execute(
        "UPDATE app_user SET password_hash = %s, password_changed_at = now(), must_change_password = %s, "
        "failed_login_count = 0, locked_until = NULL WHERE id = %s", (hashed, body.must_change_password, rid))
    await _revoke_sessions(call, rid, "password_changed")
    return await _user_reply(call, rid)


async def _unlock(call: Call) -> Reply:
    rid = call.path_uuid()
    await call.conn.execute("UPDATE app_user SET failed_login_count = 0, locked_until = NULL WHERE id = %s", (rid,))
    return await _user_reply(call, rid)


async def _reset_totp(call: Call) -> Reply:
    rid = call.path_uuid()
    await call.conn.execute(
        "UPDATE app_user SET totp_ciphertext = NULL, totp_nonce = NULL, totp_key_id = NULL, totp_enabled_at = NULL, "
        "totp_last_step = NULL WHERE id = %s", (rid,))
    return await _user_reply(call, rid)


def _user_operations() -> list[Operation]:
    ops = [op for op in USERS.operations() if op.method not in ("PATCH", "DELETE")]
    item = f"{USERS.base}/{{id}}"
    return [
        *ops,
        Operation("PATCH", item, "admin:user.update", "Update a user (disabling revokes their sessions)", TAG,
                  _update_user, USERS.locate_row, body=UserUpdate, partial_body=True, response=User),
        Operation("DELETE", item, "admin:user.delete", "Delete a user", TAG, _delete_user, USERS.locate_row,
                  status=204),
        Operation("POST", f"{item}/password", "admin:user.update",
                  "Set a user's password (revokes their sessions; by default they must change it)", TAG,
                  _reset_password, USERS.locate_row, body=PasswordReset, response=User),
        Operation("POST", f"{item}/unlock", "admin:user.update", "Clear a user's sign-in lockout", TAG, _unlock,
                  USERS.locate_row, response=User),
        Operation("DELETE", f"{item}/totp", "admin:user.update", "Remove a user's second factor (TOTP)", TAG,
                  _reset_totp, USERS.locate_row, response=User),
    ]


# -- groups and policies ------------------------------------------------------------------------

@attrs.frozen
class _Named(Resource):
    """A resource whose IAM target carries ``nexus:ResourceTag/name`` (managed groups and policies)."""

    def target(self, row: Mapping[str, Any]) -> Target:
        base = Resource.target(self, row)
        return attrs.evolve(base, tags={**base.tags, "name": str(row["name"])})


@attrs.frozen
class Group:
    """An IAM group; ``org_id`` null and ``managed`` true for the seeded, system-wide ones."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    name: str
    description: str
    managed: bool
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class GroupCreate:
    """A new group of an organization."""

    org_id: uuid.UUID
    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)


GroupUpdate = patch_of(
    GroupCreate,
    "org_id",
    doc="Fields a group update may change.",
)


@attrs.frozen
class GroupMember:
    """A user's membership of a group; ``source`` oidc marks one granted from identity-provider claims."""

    user_id: uuid.UUID
    email: str
    display_name: str
    org_id: uuid.UUID
    source: Literal["manual", "oidc"]
    added_by: uuid.UUID | None
    added_at: dt.datetime


GROUPS = _Named(path="groups", rtype="group", service="iam", table="iam_group", read=Group, create=GroupCreate,
                update=GroupUpdate, tag=TAG, filters=("org_id", "managed"))


@attrs.frozen
class Policy:
    """An IAM policy; ``document`` is stored in canonical form (lists everywhere)."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    name: str
    description: str
    document: dict[str, Any]
    managed: bool
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class PolicyCreate:
    """A new policy of an organization (its Allow statements only reach inside that org's subtree)."""

    org_id: uuid.UUID
    name: str = field(min_length=1, max_length=200)
    document: dict[str, Any] = field(description='{"Version": "2025-01-01", "Statement": [...]}')
    description: str = field(default="", max_length=2000)


@attrs.frozen
class PolicyUpdate:
    """Fields a policy update may change."""

    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)
    document: dict[str, Any] = field(factory=dict)


async def _policy_columns(_call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if "document" not in values:
        return values
    try:
        parsed = parse_document(values["document"])
        compile_document(parsed)
    except PolicyError as exc:
        where = exc.path if exc.path.startswith("document") else f"document.{exc.path}"
        raise invalid(f"{where}: {exc.problem}", where) from None
    return {**values, "document": document_to_json(parsed)}


POLICIES = _Named(path="policies", rtype="policy", service="iam", table="iam_policy", read=Policy,
                  create=PolicyCreate, update=PolicyUpdate, tag=TAG, filters=("org_id", "managed"),
                  prepare=_policy_columns)


def _guarded(resource: Resource) -> list[Operation]:
    """CRUD with update and delete refused on managed rows."""

    async def modify(call: Call) -> Reply:
        _managed_guard(call)
        return await resource.modify(call)

    async def remove(call: Call) -> Reply:
        _managed_guard(call)
        return await resource.remove(call)

    handlers = {"PATCH": modify, "DELETE": remove}
    return [attrs.evolve(op, handler=handlers[op.method]) if op.method in handlers else op
            for op in resource.operations()]


async def _listing_scope(call: Call) -> str:
    """The org subtree (or ``*``) a listing of principals covers; reading them needs ``admin:user.read`` there."""
    scope = await scope_path(call, call.query.org)
    await require(call, "admin:user.read", Target(nrn=nrn("iam", scope, "user")))
    return scope


def _scope_sql(scope: str, column: str, extra: str = "") -> tuple[str, list[Any]]:
    if scope == "*":
        return "", []
    like = scope.replace("%", r"\%").replace("_", r"\_") + "/%"
    return f" AND ({column} = %s OR {column} LIKE %s{extra})", [scope, like]


def _page(rows: list[dict[str, Any]], limit: int, order: str, key: str, cls: type) -> dict[str, Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1][order], rows[-1][key]) if more and rows else None
    items: list[Any] = [schema.converter.structure({k: v for k, v in r.items() if not k.startswith("_")}, cls)
                        for r in rows]
    return {"items": items, "next_cursor": cursor}


async def _fetch_dicts(call: Call, query: str, args: list[Any]) -> list[dict[str, Any]]:
    cur = await call.conn.execute(query, args)
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]


async def _list_members(call: Call) -> Reply:
    q: ListQuery = call.query
    scope = await _listing_scope(call)
    where, args = _scope_sql(scope, "o.path")
    query = ("SELECT m.user_id, u.email, u.display_name, u.org_id, m.source, m.added_by, m.added_at "
             "FROM iam_group_member m JOIN app_user u ON u.id = m.user_id JOIN organization o ON o.id = u.org_id "
             "WHERE m.group_id = %s" + where)
    args = [call.path_uuid(), *args]
    if q.cursor:
        at, uid = decode_cursor(q.cursor)
        query += " AND (m.added_at, m.user_id) < (%s, %s)"
        args += [at, uid]
    query += " ORDER BY m.added_at DESC, m.user_id DESC LIMIT %s"
    rows = await _fetch_dicts(call, query, [*args, q.limit + 1])
    return Reply(_page(rows, q.limit, "added_at", "user_id", GroupMember))


async def _member_user(call: Call) -> tuple[dict[str, Any], Target]:
    """The user a membership change names, after ``admin:user.update`` on them."""
    row = dict(await USERS.fetch(call, call.path_uuid("user_id"), lock=False))
    target = USERS.target(row)
    await require(call, "admin:user.update", target)
    return row, target


async def _add_member(call: Call) -> Reply:
    user, _ = await _member_user(call)
    group_path = scope_org_path(call.target.nrn)
    if group_path is not None and not _in_subtree(user["_org_path"], group_path):
        raise invalid(f"user_id: the user belongs to org {user['_org_path']}, outside the group's org {group_path}",
                      "user_id")
    group_id = call.path_uuid()
    await call.conn.execute(
        "INSERT INTO iam_group_member (group_id, user_id, source, added_by) VALUES (%s, %s, 'manual', %s) "
        "ON CONFLICT (group_id, user_id) DO UPDATE SET source = 'manual'", (group_id, user["id"], _actor(call)))
    rows = await _fetch_dicts(
        call, "SELECT m.user_id, u.email, u.display_name, u.org_id, m.source, m.added_by, m.added_at "
        "FROM iam_group_member m JOIN app_user u ON u.id = m.user_id WHERE m.group_id = %s AND m.user_id = %s",
        [group_id, user["id"]])
    member = schema.converter.structure(rows[0], GroupMember)
    return Reply(member, after={"group_id": str(group_id), "user_id": str(user["id"]), "added": True})


async def _remove_member(call: Call) -> Reply:
    user, _ = await _member_user(call)
    group_id = call.path_uuid()
    cur = await call.conn.execute("DELETE FROM iam_group_member WHERE group_id = %s AND user_id = %s RETURNING 1",
                                  (group_id, user["id"]))
    if await cur.fetchone() is None:
        raise not_found("group member")
    return Reply(status=204, after={"group_id": str(group_id), "user_id": str(user["id"]), "removed": True})


def _group_operations() -> list[Operation]:
    members = f"{GROUPS.base}/{{id}}/members"
    return [
        *_guarded(GROUPS),
        Operation("GET", members, "admin:group.read", "List a group's members (in an org subtree)", TAG,
                  _list_members, GROUPS.locate_row, query=ListQuery, response=GroupMember, paged=True),
        Operation("PUT", f"{members}/{{user_id}}", "admin:group.update",
                  "Add a user to a group (also needs admin:user.update on the user)", TAG, _add_member,
                  GROUPS.locate_row, response=GroupMember),
        Operation("DELETE", f"{members}/{{user_id}}", "admin:group.update",
                  "Remove a user from a group (also needs admin:user.update on the user)", TAG, _remove_member,
                  GROUPS.locate_row, status=204),
    ]


# -- admin API keys -----------------------------------------------------------------------------

@attrs.frozen
class ApiKey:
    """An admin API key (``nxa_``); what it may do comes from the policies attached to it."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    description: str
    key_prefix: str
    created_by: uuid.UUID | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    last_used_ip: str | None
    policy_ids: list[uuid.UUID]
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class ApiKeyCreated(ApiKey):
    """A new admin API key with its clear ``key``, shown this once and never again."""

    key: str = field(description="the clear key; store it now, it cannot be shown again")


@attrs.frozen
class ApiKeyCreate:
    """A new admin API key, optionally with policies attached at once."""

    org_id: uuid.UUID
    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)
    expires_at: dt.datetime | None = None
    policy_ids: list[uuid.UUID] = field(factory=list, description="policies to attach (admin:policy.update each)")


ApiKeyUpdate = patch_of(
    ApiKeyCreate,
    "org_id", "expires_at", "policy_ids",
    doc="Fields an API key update may change.",
)


API_KEYS = Resource(
    path="api-keys", rtype="api-key", service="iam", table="admin_api_key", read=ApiKey, update=ApiKeyUpdate,
    tag=TAG, filters=("org_id",), noun="admin API key",
    expressions={"last_used_ip": "host(t.last_used_ip)",
                 "policy_ids": "ARRAY(SELECT a.policy_id FROM iam_attachment a WHERE a.admin_api_key_id = t.id "
                               "ORDER BY a.attached_at, a.policy_id)"},
)


async def _attach(call: Call, policy_row: Mapping[str, Any], column: str, principal_id: uuid.UUID,
                  principal_path: str | None) -> None:
    """Attach a policy, keeping an org policy inside its org subtree."""
    policy_path = policy_row["_org_path"]
    if policy_path is not None and not _in_subtree(principal_path, policy_path):
        raise invalid(f"principal_id: an org policy of {policy_path} can only be attached to principals of that "
                      "org and its descendants", "principal_id")
    await call.conn.execute(
        f"INSERT INTO iam_attachment (policy_id, {column}, attached_by) VALUES (%s, %s, %s) "
        f"ON CONFLICT ({column}, policy_id) DO NOTHING", (policy_row["id"], principal_id, _actor(call)))


async def _create_api_key(call: Call) -> Reply:
    body: ApiKeyCreate = call.body
    if not body.name.strip():
        raise invalid("name: must not be blank", "name")
    if body.expires_at is not None and body.expires_at <= dt.datetime.now(dt.UTC):
        raise invalid("expires_at: must be in the future", "expires_at")
    if len(set(body.policy_ids)) > 20:
        raise invalid("policy_ids: at most 20 policies", "policy_ids")
    policies: list[Mapping[str, Any]] = []
    for index, policy_id in enumerate(dict.fromkeys(body.policy_ids)):
        try:
            row = await POLICIES.fetch(call, policy_id, lock=False)
        except ApiError:
            raise invalid(f"policy_ids[{index}]: no such policy", "policy_ids") from None
        await require(call, "admin:policy.update", POLICIES.target(row))
        policies.append(row)
    key, created = await apikeys.create_api_key(
        call.conn, secret=call.services.key_hmac, org_id=body.org_id, name=body.name, description=body.description,
        created_by=_actor(call), expires_at=body.expires_at)
    key_path = scope_org_path(call.target.nrn)
    for row in policies:
        await _attach(call, row, "admin_api_key_id", created.id, key_path)
    target = API_KEYS.target(await API_KEYS.fetch(call, created.id, lock=False))
    assert target.before is not None
    shown = schema.converter.structure({**target.before, "key": key}, ApiKeyCreated)
    return Reply(shown, status=201, after=target.before, nrn=target.nrn)


async def _revoke_api_key(call: Call) -> Reply:
    rid = call.path_uuid()
    await apikeys.revoke_api_key(call.conn, rid)
    target = API_KEYS.target(await API_KEYS.fetch(call, rid, lock=False))
    return Reply(target.before, after=target.before)


def _api_key_operations() -> list[Operation]:
    return [*API_KEYS.operations(),
            Operation("POST", API_KEYS.base, "admin:api-key.create",
                      "Create an admin API key (the clear key is returned this once)", TAG, _create_api_key,
                      API_KEYS.locate_new, body=ApiKeyCreate, response=ApiKeyCreated, status=201),
            Operation("POST", f"{API_KEYS.base}/{{id}}/revoke", "admin:api-key.revoke", "Revoke an admin API key",
                      TAG, _revoke_api_key, API_KEYS.locate_row, response=ApiKey)]


# -- policy attachments -------------------------------------------------------------------------

PrincipalType = Literal["user", "group", "api-key"]
_PRINCIPALS: Mapping[str, tuple[Resource, str]] = {
    "user": (USERS, "user_id"), "group": (GROUPS, "group_id"), "api-key": (API_KEYS, "admin_api_key_id")}


@attrs.frozen
class Attachment:
    """A policy attached to a principal; ``label`` is the user's email or the group's or key's name."""

    principal_type: PrincipalType
    principal_id: uuid.UUID
    label: str
    org_id: uuid.UUID | None
    attached_by: uuid.UUID | None
    attached_at: dt.datetime


async def _principal(call: Call) -> tuple[str, str, dict[str, Any]]:
    """(principal type, attachment column, row) of the path's principal, after ``admin:<type>.update`` on it."""
    kind = call.params.get("principal_type", "")
    if kind not in _PRINCIPALS:
        raise not_found(f"principal type {kind!r} (user, group or api-key)")
    resource, column = _PRINCIPALS[kind]
    row = dict(await resource.fetch(call, call.path_uuid("principal_id"), lock=False))
    await require(call, f"admin:{kind}.update", resource.target(row))
    return kind, column, row


_ATTACHMENTS = (
    "SELECT CASE WHEN a.user_id IS NOT NULL THEN 'user' WHEN a.group_id IS NOT NULL THEN 'group' ELSE 'api-key' END "
    "AS principal_type, coalesce(a.user_id, a.group_id, a.admin_api_key_id) AS principal_id, "
    "coalesce(u.email, g.name, k.name) AS label, coalesce(u.org_id, g.org_id, k.org_id) AS org_id, a.attached_by, "
    "a.attached_at, a.id AS _id FROM iam_attachment a LEFT JOIN app_user u ON u.id = a.user_id "
    "LEFT JOIN iam_group g ON g.id = a.group_id LEFT JOIN admin_api_key k ON k.id = a.admin_api_key_id "
    "LEFT JOIN organization o ON o.id = coalesce(u.org_id, g.org_id, k.org_id) WHERE a.policy_id = %s"
)


async def _list_attachments(call: Call) -> Reply:
    q: ListQuery = call.query
    scope = await _listing_scope(call)
    where, args = _scope_sql(scope, "o.path", " OR (a.group_id IS NOT NULL AND g.org_id IS NULL)")
    query = _ATTACHMENTS + where
    args = [call.path_uuid(), *args]
    if q.cursor:
        at, aid = decode_cursor(q.cursor)
        query += " AND (a.attached_at, a.id) < (%s, %s)"
        args += [at, aid]
    query += " ORDER BY a.attached_at DESC, a.id DESC LIMIT %s"
    rows = await _fetch_dicts(call, query, [*args, q.limit + 1])
    return Reply(_page(rows, q.limit, "attached_at", "_id", Attachment))


async def _put_attachment(call: Call) -> Reply:
    kind, column, row = await _principal(call)
    policy = await POLICIES.fetch(call, call.path_uuid(), lock=False)
    await _attach(call, policy, column, row["id"], row["_org_path"])
    rows = await _fetch_dicts(call, _ATTACHMENTS + f" AND a.{column} = %s", [policy["id"], row["id"]])
    attachment = schema.converter.structure({k: v for k, v in rows[0].items() if k != "_id"}, Attachment)
    return Reply(attachment, after={"policy_id": str(policy["id"]), "principal_type": kind,
                                    "principal_id": str(row["id"]), "attached": True})


async def _delete_attachment(call: Call) -> Reply:
    kind, column, row = await _principal(call)
    policy_id = call.path_uuid()
    cur = await call.conn.execute(f"DELETE FROM iam_attachment WHERE policy_id = %s AND {column} = %s RETURNING 1",
                                  (policy_id, row["id"]))
    if await cur.fetchone() is None:
        raise not_found("attachment")
    return Reply(status=204, after={"policy_id": str(policy_id), "principal_type": kind,
                                    "principal_id": str(row["id"]), "attached": False})


def _policy_operations() -> list[Operation]:
    attachments = f"{POLICIES.base}/{{id}}/attachments"
    one = f"{attachments}/{{principal_type}}/{{principal_id}}"
    return [
        *_guarded(POLICIES),
        Operation("GET", attachments, "admin:policy.read", "List who a policy is attached to (in an org subtree)",
                  TAG, _list_attachments, POLICIES.locate_row, query=ListQuery, response=Attachment, paged=True),
        Operation("PUT", one, "admin:policy.update",
                  "Attach a policy to a user, group or API key (also needs admin:<type>.update on it)", TAG,
                  _put_attachment, POLICIES.locate_row, response=Attachment),
        Operation("DELETE", one, "admin:policy.update",
                  "Detach a policy from a user, group or API key (also needs admin:<type>.update on it)", TAG,
                  _delete_attachment, POLICIES.locate_row, status=204),
    ]


# -- identity providers -------------------------------------------------------------------------

@attrs.frozen
class GroupMapping:
    """Users whose ``claim`` holds ``value`` join ``group_id`` on sign-in (JIT)."""

    group_id: uuid.UUID
    claim: str = field(min_length=1, max_length=200, description="claim path, dotted for nested claims")
    value: str = field(min_length=1, max_length=500)


@attrs.frozen
class IdentityProvider:
    """Where users sign in; the OIDC client secret is write-only (``has_client_secret`` says whether one is set)."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    kind: Literal["local", "oidc"]
    issuer: str | None
    client_id: str | None
    has_client_secret: bool
    scopes: list[str]
    jit_enabled: bool
    group_mappings: list[GroupMapping]
    settings: dict[str, Any]
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


HTTPS = r"^https://\S+$"


@attrs.frozen
class IdentityProviderCreate:
    """A new identity provider; an OIDC one needs an https ``issuer`` and a ``client_id``."""

    org_id: uuid.UUID
    name: str = field(min_length=1, max_length=200)
    kind: Literal["local", "oidc"] = "oidc"
    issuer: str | None = field(default=None, pattern=HTTPS, max_length=2000)
    client_id: str | None = field(default=None, min_length=1, max_length=500)
    client_secret: str | None = field(default=None, min_length=1, max_length=4096,
                                      description="write-only; sealed with the vault")
    scopes: list[str] = field(factory=lambda: ["openid", "email", "profile"])
    jit_enabled: bool = False
    group_mappings: list[GroupMapping] = field(factory=list)
    settings: dict[str, Any] = field(factory=dict)
    enabled: bool = True


@attrs.frozen
class IdentityProviderUpdate:
    """Fields an identity provider update may change; ``client_secret`` null removes the secret."""

    name: str = field(min_length=1, max_length=200)
    issuer: str | None = field(default=None, pattern=HTTPS, max_length=2000)
    client_id: str | None = field(default=None, min_length=1, max_length=500)
    client_secret: str | None = field(default=None, min_length=1, max_length=4096)
    scopes: list[str] = field(factory=list)
    jit_enabled: bool = False
    group_mappings: list[GroupMapping] = field(factory=list)
    settings: dict[str, Any] = field(factory=dict)
    enabled: bool = True


async def _check_mappings(call: Call, mappings: list[GroupMapping], idp_path: str | None) -> None:
    """Each mapped group must exist, be usable by the provider's org, and be one the caller may add members to."""
    for index, mapping in enumerate(mappings):
        where = f"group_mappings[{index}].group_id"
        try:
            row = await GROUPS.fetch(call, mapping.group_id, lock=False)
        except ApiError:
            raise invalid(f"{where}: no such group", where) from None
        group_path = row["_org_path"]
        if group_path is not None and not (idp_path and _in_subtree(idp_path, group_path)):
            raise invalid(f"{where}: the group belongs to org {group_path}, which the provider's org cannot use",
                          where)
        await require(call, "admin:group.update", GROUPS.target(row))


async def _idp_columns(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "scopes" in out:
        scopes = out["scopes"]
        if "openid" not in scopes or any(not s or any(c.isspace() for c in s) or len(s) > 100 for s in scopes):
            raise invalid("scopes: must include openid; each scope a word of at most 100 characters", "scopes")
        out["scopes"] = list(dict.fromkeys(scopes))
    if "group_mappings" in out:
        await _check_mappings(call, out["group_mappings"], scope_org_path(call.target.nrn))
    if call.request.method == "POST":
        out["id"] = uuid.uuid4()
    rid: uuid.UUID = out["id"] if "id" in out else call.path_uuid()
    if "client_secret" in out:
        secret = out.pop("client_secret")
        sealed = seal_client_secret(call.services.vault, rid, secret) if secret is not None else None
        out["client_secret_ciphertext"] = sealed.ciphertext if sealed else None
        out["client_secret_nonce"] = sealed.nonce if sealed else None
        out["client_secret_key_id"] = sealed.key_id if sealed else None
    return out


IDENTITY_PROVIDERS = Resource(
    path="identity-providers", rtype="identity-provider", service="iam", table="identity_provider",
    read=IdentityProvider, create=IdentityProviderCreate, update=IdentityProviderUpdate, tag=TAG,
    filters=("org_id", "kind", "enabled"), prepare=_idp_columns,
    expressions={"has_client_secret": "t.client_secret_ciphertext IS NOT NULL"},
)


def operations() -> list[Operation]:
    return [*_user_operations(), *_group_operations(), *_policy_operations(), *_api_key_operations(),
            *crud_operations([IDENTITY_PROVIDERS]), *iam_simulate.operations()]
