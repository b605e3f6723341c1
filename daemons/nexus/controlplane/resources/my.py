"""``/api/my/*``: a signed-in user's own profile, personal virtual keys, usage and budget.

Every operation is ``my:<resource>.<verb>`` on the caller's own user,
``nrn:nexus:iam:org/<org path>:user/<id>`` (tagged ``owner`` = the caller), as ``iam.seed``
lays down; the handlers then only ever touch the caller's rows, so another user's key is
"not found" rather than "forbidden". Admin API keys are not users and get 403 here.

Personal keys are ``virtual_key`` rows with ``kind = 'personal'`` and ``owner_user_id`` = the
caller, in the caller's org; the clear ``nvk_`` key is returned once and stored as
``vkeys.hash_key(key_hmac, key)``, and every change publishes the ``virtual_key`` signal so
gateways drop their cached copy.

Usage comes from ``usage_rollup_1d`` (the traffic writer keeps the day buckets current): gateway
traffic attributed to the caller (personal keys carry their owner) or made with one of their
keys. The budget reads the gateway's own quota counters in Valkey through
``gateway.quota.usage.read_usage``, for the policies on the caller (``user`` axis) and on each of
their live personal keys (``virtual_key`` axis, including the keys' own RPM/TPM limits).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import attrs

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import decode_cursor, encode_cursor
from nexus.controlplane.api.errors import ApiError, invalid, not_found
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field
from nexus.controlplane.auth import totp
from nexus.crypto import vkeys
from nexus.crypto.vault import Sealed
from nexus.gateway.quota.engine import QuotaUnavailable
from nexus.gateway.quota.policy import QuotaSubject
from nexus.gateway.quota.store import load_snapshot
from nexus.gateway.quota.usage import read_usage

TAG = "my"
BASE = "/api/my"
BUDGET_AXES = ("user", "virtual_key")


async def _me(call: Call) -> Target:
    """The caller's own user NRN: what every ``my:`` action is authorised on."""
    me = call.principal
    if me.kind != "user":
        raise ApiError(403, "forbidden", "/api/my is for signed-in users; an API key has no account of its own")
    return Target(nrn=nrn("iam", me.org_path, "user", str(me.id)), org_id=me.org_id, tags={"owner": str(me.id)})


async def _rows(call: Call, query: str, args: Any) -> list[dict[str, Any]]:
    cur = await call.conn.execute(query, args)
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]


@attrs.frozen
class PageQuery:
    """Page size and the cursor of the previous page."""

    limit: int = field(default=50, minimum=1, maximum=500, description="page size")
    cursor: str | None = field(default=None, max_length=512, description="next_cursor from the previous page")


# -- profile ------------------------------------------------------------------------------------

@attrs.frozen
class MyProfile:
    """The caller's own account."""

    id: uuid.UUID
    email: str
    display_name: str
    org_id: uuid.UUID
    org_path: str
    status: Literal["invited", "active", "disabled"]
    can_access_console: bool
    must_change_password: bool
    mfa_enabled: bool
    attributes: dict[str, Any]
    groups: list[str]
    last_login_at: dt.datetime | None
    created_at: dt.datetime


async def _profile(call: Call) -> Reply:
    rows = await _rows(call, (
        "SELECT u.id, u.email, u.display_name, u.org_id, o.path AS org_path, u.status, u.can_access_console, "
        "u.must_change_password, u.totp_enabled_at IS NOT NULL AS mfa_enabled, u.attributes, "
        "ARRAY(SELECT g.name FROM iam_group_member m JOIN iam_group g ON g.id = m.group_id "
        "WHERE m.user_id = u.id ORDER BY g.name) AS groups, u.last_login_at, u.created_at "
        "FROM app_user u JOIN organization o ON o.id = u.org_id WHERE u.id = %s"), (call.principal.id,))
    if not rows:
        raise not_found("user")
    return Reply(schema.converter.structure(rows[0], MyProfile))


# -- personal virtual keys ----------------------------------------------------------------------

@attrs.frozen
class PersonalKey:
    """One of the caller's personal virtual keys (the clear key is never shown again after creation)."""

    id: uuid.UUID
    name: str
    description: str
    key_prefix: str
    org_id: uuid.UUID
    allowed_models: list[str]
    rpm: int | None
    tpm: int | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    revoked_reason: str | None
    last_used_at: dt.datetime | None
    created_at: dt.datetime


@attrs.frozen
class PersonalKeyCreated(PersonalKey):
    """A new personal key with its clear ``key`` (``nvk_…``), shown this once."""

    key: str = field(description="the clear key; store it now, it cannot be shown again")


@attrs.frozen
class PersonalKeyCreate:
    """A new personal virtual key for the caller."""

    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)
    allowed_models: list[str] = field(factory=lambda: ["*"], description="model globs; [\"*\"] allows every model")
    expires_at: dt.datetime | None = None


_KEY_COLUMNS = ("id, name, description, key_prefix, org_id, allowed_models, rpm, tpm, expires_at, revoked_at, "
                "revoked_reason, last_used_at, created_at")


def _key_nrn(call: Call, key_id: uuid.UUID) -> str:
    return nrn("gateway", call.principal.org_path, "virtual-key", str(key_id))


async def _own_key(call: Call, key_id: uuid.UUID) -> PersonalKey:
    rows = await _rows(call, f"SELECT {_KEY_COLUMNS} FROM virtual_key WHERE id = %s AND owner_user_id = %s "
                             "AND kind = 'personal'", (key_id, call.principal.id))
    if not rows:
        raise not_found("virtual key")
    return schema.converter.structure(rows[0], PersonalKey)


async def _list_keys(call: Call) -> Reply:
    q: PageQuery = call.query
    query = f"SELECT {_KEY_COLUMNS} FROM virtual_key WHERE owner_user_id = %s AND kind = 'personal'"
    args: list[Any] = [call.principal.id]
    if q.cursor:
        at, rid = decode_cursor(q.cursor)
        query += " AND (created_at, id) < (%s, %s)"
        args += [at, rid]
    rows = await _rows(call, query + " ORDER BY created_at DESC, id DESC LIMIT %s", [*args, q.limit + 1])
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return Reply({"items": [schema.converter.structure(r, PersonalKey) for r in rows], "next_cursor": cursor})


async def _create_key(call: Call) -> Reply:
    body: PersonalKeyCreate = call.body
    if not body.name.strip():
        raise invalid("name: must not be blank", "name")
    if body.expires_at is not None and body.expires_at <= dt.datetime.now(dt.UTC):
        raise invalid("expires_at: must be in the future", "expires_at")
    if len(body.allowed_models) > 100 or any(not m or len(m) > 200 or any(c.isspace() for c in m)
                                             for m in body.allowed_models):
        raise invalid("allowed_models: at most 100 model globs, each 1-200 characters without spaces",
                      "allowed_models")
    me = call.principal
    key = vkeys.generate()
    cur = await call.conn.execute(
        "INSERT INTO virtual_key (key_hash, key_prefix, name, description, kind, org_id, owner_user_id, "
        "allowed_models, expires_at, created_by) VALUES (%s, %s, %s, %s, 'personal', %s, %s, %s, %s, %s) RETURNING id",
        (vkeys.hash_key(call.services.key_hmac, key), vkeys.display_prefix(key), body.name.strip(), body.description,
         me.org_id, me.id, body.allowed_models, body.expires_at, me.id))
    row = await cur.fetchone()
    assert row is not None
    created = await _own_key(call, row[0])
    shown = PersonalKeyCreated(**attrs.asdict(created, recurse=False), key=key)
    return Reply(shown, status=201, after=schema.unstructure(created), nrn=_key_nrn(call, created.id),
                 signal=("virtual_key", str(created.id)))


async def _revoke_key(call: Call) -> Reply:
    key_id = call.path_uuid()
    before = await _own_key(call, key_id)
    if before.revoked_at is None:
        await call.conn.execute(
            "UPDATE virtual_key SET revoked_at = now(), revoked_by = %s, revoked_reason = 'revoked by owner' "
            "WHERE id = %s", (call.principal.id, key_id))
    after = await _own_key(call, key_id)
    return Reply(after, after=schema.unstructure(after), nrn=_key_nrn(call, key_id),
                 signal=("virtual_key", str(key_id)))


# -- usage --------------------------------------------------------------------------------------

@attrs.frozen
class UsageQuery:
    """How many UTC days back to report, today included."""

    days: int = field(default=30, minimum=1, maximum=366, description="UTC days, today included")


@attrs.frozen
class UsageTotals:
    """Sums over the whole window."""

    requests: int
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int


@attrs.frozen
class UsageLine:
    """One UTC day (``YYYY-MM-DD``) and model."""

    day: str
    model: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int


@attrs.frozen
class MyUsage:
    """The caller's gateway usage since ``since`` (midnight UTC), by day and model, newest first."""

    since: dt.datetime
    days: int
    totals: UsageTotals
    by_day_model: list[UsageLine]


async def _usage(call: Call) -> Reply:
    days: int = call.query.days
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - dt.timedelta(days=days - 1)
    rows = await _rows(call, (
        "SELECT to_char(r.bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, r.model, "
        "sum(r.requests)::bigint AS requests, sum(r.input_tokens)::bigint AS input_tokens, "
        "sum(r.output_tokens)::bigint AS output_tokens, sum(r.cost_micro_usd)::bigint AS cost_micro_usd "
        "FROM usage_rollup_1d r WHERE r.bucket >= %(since)s AND r.source = 'gateway' AND (r.user_id = %(me)s "
        "OR r.virtual_key_id IN (SELECT id FROM virtual_key WHERE owner_user_id = %(me)s)) "
        "GROUP BY 1, 2 ORDER BY 1 DESC, 2 NULLS LAST"), {"since": since, "me": call.principal.id})
    lines = [schema.converter.structure(r, UsageLine) for r in rows]
    totals = UsageTotals(*(sum(getattr(line, name) for line in lines)
                           for name in ("requests", "input_tokens", "output_tokens", "cost_micro_usd")))
    return Reply(MyUsage(since, days, totals, lines))


# -- budget -------------------------------------------------------------------------------------

@attrs.frozen
class BudgetWindow:
    """A calendar window (``period``, ``id``, ``resets_at``) or a sliding one (``seconds``)."""

    kind: Literal["calendar", "sliding"]
    period: Literal["day", "week", "month"] | None = None
    id: str | None = None
    resets_at: dt.datetime | None = None
    seconds: int | None = None


@attrs.frozen
class BudgetLine:
    """One quota counter that limits the caller: its limits, what is used and what remains."""

    policy: str
    policy_id: str
    axis: Literal["user", "virtual_key"]
    subject: str
    unit: Literal["requests", "input_tokens", "output_tokens", "total_tokens", "cost_micro_usd"]
    window: BudgetWindow
    used: int
    soft_limit: int | None
    hard_limit: int | None
    remaining: int | None
    soft_limit_reached: bool


@attrs.frozen
class MyBudget:
    """Every quota on the caller and on their live personal keys."""

    policies: list[BudgetLine]


async def _budget(call: Call) -> Reply:
    me = call.principal
    keys = await _rows(call, (
        "SELECT id::text AS id, org_id::text AS org_id, rpm, tpm FROM virtual_key WHERE owner_user_id = %s "
        "AND kind = 'personal' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
        "ORDER BY created_at, id"), (me.id,))
    subjects = [QuotaSubject(key_id=None, org_id=str(me.org_id), user_id=str(me.id))]
    subjects += [QuotaSubject(key_id=k["id"], org_id=k["org_id"], user_id=str(me.id), rpm=k["rpm"], tpm=k["tpm"])
                 for k in keys]
    snapshot = await load_snapshot(call.services.pg)
    lines: dict[tuple[str, str], BudgetLine] = {}
    for subject in subjects:
        try:
            usage = await read_usage(call.services.valkey, snapshot, subject)
        except QuotaUnavailable:
            raise ApiError(503, "unavailable", "quota counters are unavailable; retry shortly") from None
        for entry in usage["policies"]:
            if entry["axis"] in BUDGET_AXES:
                lines.setdefault((entry["policy_id"], entry["subject"]),
                                 schema.converter.structure(entry, BudgetLine))
    return Reply(MyBudget(list(lines.values())))


# -- second factor ----------------------------------------------------------------------------------------------


@attrs.frozen
class MfaEnrollment:
    """A TOTP secret to load into an authenticator app; it is shown once and active only once confirmed."""

    secret: str
    otpauth_uri: str


@attrs.frozen
class MfaCode:
    """A current 6-digit code from the authenticator app."""

    code: str = field(pattern=r"^[0-9]{6}$")


@attrs.frozen
class MfaStatus:
    """Whether sign-in asks for a TOTP code."""

    enabled: bool


async def _totp_row(call: Call) -> dict[str, Any]:
    rows = await _rows(call, "SELECT email, totp_ciphertext, totp_nonce, totp_key_id, totp_enabled_at, totp_last_step "
                             "FROM app_user WHERE id = %s FOR UPDATE", (call.principal.id,))
    if not rows:
        raise not_found("user")
    return rows[0]


async def _check_code(call: Call, row: dict[str, Any], code: str) -> None:
    """The code must match the pending or active secret, and never a step already used (no replay)."""
    if row["totp_ciphertext"] is None:
        raise ApiError(409, "conflict", "no second factor is being set up; POST /api/my/mfa first")
    sealed = Sealed(row["totp_key_id"], bytes(row["totp_nonce"]), bytes(row["totp_ciphertext"]))
    step = totp.matching_step(totp.open_secret(call.services.vault, call.principal.id, sealed), code)
    if step is None or (row["totp_last_step"] is not None and step <= row["totp_last_step"]):
        raise invalid("code: does not match the authenticator's current code", "code")
    await call.conn.execute("UPDATE app_user SET totp_last_step = %s WHERE id = %s", (step, call.principal.id))


async def _mfa_begin(call: Call) -> Reply:
    row = await _totp_row(call)
    if row["totp_enabled_at"] is not None:
        raise ApiError(409, "conflict", "a second factor is already active; remove it first (DELETE /api/my/mfa)")
    secret = totp.generate_secret()
    sealed = totp.seal_secret(call.services.vault, call.principal.id, secret)
    await call.conn.execute(
        "UPDATE app_user SET totp_ciphertext = %s, totp_nonce = %s, totp_key_id = %s, totp_last_step = NULL "
        "WHERE id = %s", (sealed.ciphertext, sealed.nonce, sealed.key_id, call.principal.id))
    return Reply(MfaEnrollment(secret, totp.provisioning_uri(secret, row["email"])), status=201,
                 after={"mfa": "pending"})


async def _mfa_confirm(call: Call) -> Reply:
    row = await _totp_row(call)
    await _check_code(call, row, call.body.code)
    await call.conn.execute("UPDATE app_user SET totp_enabled_at = coalesce(totp_enabled_at, now()) WHERE id = %s",
                            (call.principal.id,))
    return Reply(MfaStatus(True), after={"mfa": "enabled"})


async def _mfa_remove(call: Call) -> Reply:
    row = await _totp_row(call)
    if row["totp_enabled_at"] is not None:  # an active factor is removed only with a code from it
        await _check_code(call, row, call.body.code)
    await call.conn.execute(
        "UPDATE app_user SET totp_ciphertext = NULL, totp_nonce = NULL, totp_key_id = NULL, totp_enabled_at = NULL, "
        "totp_last_step = NULL WHERE id = %s", (call.principal.id,))
    return Reply(MfaStatus(False), after={"mfa": "disabled"})


def operations() -> list[Operation]:
    keys = f"{BASE}/virtual-keys"
    return [
        Operation("GET", f"{BASE}/profile", "my:profile.read", "My account", TAG, _profile, _me, response=MyProfile),
        Operation("GET", keys, "my:virtual-key.read", "List my personal virtual keys", TAG, _list_keys, _me,
                  query=PageQuery, response=PersonalKey, paged=True),
        Operation("POST", keys, "my:virtual-key.create", "Create a personal virtual key (the key is shown once)",
                  TAG, _create_key, _me, body=PersonalKeyCreate, response=PersonalKeyCreated, status=201),
        Operation("POST", f"{keys}/{{id}}/revoke", "my:virtual-key.revoke", "Revoke one of my personal keys", TAG,
                  _revoke_key, _me, response=PersonalKey),
        Operation("GET", f"{BASE}/usage", "my:usage.read", "My gateway usage by day and model", TAG, _usage, _me,
                  query=UsageQuery, response=MyUsage),
        Operation("GET", f"{BASE}/budget", "my:budget.read", "My quotas: limits, used and remaining", TAG, _budget,
                  _me, response=MyBudget),
        Operation("POST", f"{BASE}/mfa", "my:mfa.create", "Start setting up a TOTP second factor (secret shown once)",
                  TAG, _mfa_begin, _me, response=MfaEnrollment, status=201),
        Operation("POST", f"{BASE}/mfa/confirm", "my:mfa.update", "Turn the second factor on with a current code",
                  TAG, _mfa_confirm, _me, body=MfaCode, response=MfaStatus),
        Operation("POST", f"{BASE}/mfa/remove", "my:mfa.delete", "Turn the second factor off (a current code needed)",
                  TAG, _mfa_remove, _me, body=MfaCode, response=MfaStatus),
    ]
