"""Admin API: compliance resources — hooks, rule packs and their rules, rule overrides,
interception domains and exemptions.

Hooks are checked by the compliance engine's own parser (``nexus.policy.config`` and the hook
registry) before they are stored, so a hook the gateway could not build never reaches it: the
422 names the option (``config.keywords``). Rule packs are seeded from the repository; the API
only lists them and switches them on or off. Every write signals the kind the gateway's config
watcher reloads (``hook_config``, ``rule_pack``, ``interception_domain``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio
from psycopg import sql

from nexus.controlplane.api import schema
from nexus.controlplane.api.crud import Resource, decode_cursor, encode_cursor, org_path
from nexus.controlplane.api.crud import operations as crud_operations
from nexus.controlplane.api.errors import ApiError, invalid
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.api.schema import field, patch_of
from nexus.policy.config import Exemption, HookConfig, PolicyConfigError, from_row
from nexus.policy.hooks.base import BuildEnv

TAG = "compliance"
HOST_PATTERN = r"^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?))+$"
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

Implementation = Literal["keyword-filter", "pii-detector", "content-safety", "rulepack-engine", "rate-limiter",
                         "request-size-validator", "ip-access-filter", "data-residency", "webhook-forward"]
Stage = Literal["connection", "request", "response"]
FailBehavior = Literal["fail-open", "fail-closed"]
Ingress = Literal["all", "gateway", "proxy", "agent"]
StreamMode = Literal["observe", "incremental", "buffer"]
ScopeKind = Literal["global", "org", "project", "virtual_key"]
Severity = Literal["hard", "soft", "warn"]


def user_id(call: Call) -> uuid.UUID | None:
    """The caller as an ``app_user`` reference (``created_by`` columns); API keys have none."""
    return call.principal.id if call.principal.kind == "user" else None


# -- hooks ------------------------------------------------------------------------------------


@attrs.frozen
class Hook:
    """A configured compliance hook; ``config`` is the implementation's own options object."""

    id: uuid.UUID
    name: str
    implementation: Implementation
    stage: Stage
    priority: int
    fail_behavior: FailBehavior
    timeout_ms: int
    ingress: Ingress
    stream_mode: StreamMode
    config: dict[str, Any]
    enabled: bool
    scope_kind: ScopeKind
    org_id: uuid.UUID | None
    project_id: uuid.UUID | None
    virtual_key_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class HookCreate:
    """A new hook; ``scope_kind`` says which one of org_id / project_id / virtual_key_id is set."""

    name: str = field(min_length=1, max_length=200)
    implementation: Implementation = field()
    stage: Stage = field()
    priority: int = field(default=0, minimum=-1_000_000, maximum=1_000_000)
    fail_behavior: FailBehavior = "fail-open"
    timeout_ms: int = field(default=1000, minimum=1, maximum=60_000)
    ingress: Ingress = "all"
    stream_mode: StreamMode = "observe"
    config: dict[str, Any] = field(factory=dict, description="the implementation's options (camelCase keys)")
    enabled: bool = True
    scope_kind: ScopeKind = "global"
    org_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    virtual_key_id: uuid.UUID | None = None


@attrs.frozen
class HookUpdate:
    """Fields a hook update may change (its implementation and scope are fixed at creation)."""

    name: str = field(min_length=1, max_length=200)
    stage: Stage = "request"
    priority: int = field(default=0, minimum=-1_000_000, maximum=1_000_000)
    fail_behavior: FailBehavior = "fail-open"
    timeout_ms: int = field(default=1000, minimum=1, maximum=60_000)
    ingress: Ingress = "all"
    stream_mode: StreamMode = "observe"
    config: dict[str, Any] = field(factory=dict, description="the implementation's options (camelCase keys)")
    enabled: bool = True


_SCOPE_ID = {"org": "org_id", "project": "project_id", "virtual_key": "virtual_key_id"}

# A hook's org is its own org_id, or the org of the project or virtual key it is scoped to: that org
# is the scope of its NRN and of list filtering. The derived table renames it org_id (so the generic
# list treats only global hooks as org-less) and keeps the stored column as scope_org_id.
_HOOK_SOURCE = (
    "(SELECT h.id, h.name, h.implementation, h.stage, h.priority, h.fail_behavior, h.timeout_ms, h.ingress,"
    " h.stream_mode, h.config, h.enabled, h.scope_kind, h.project_id, h.virtual_key_id, h.created_by,"
    " h.created_at, h.updated_at, h.org_id AS scope_org_id,"
    " COALESCE(h.org_id, (SELECT p.org_id FROM project p WHERE p.id = h.project_id),"
    " (SELECT k.org_id FROM virtual_key k WHERE k.id = h.virtual_key_id)) AS org_id"
    " FROM hook_config h)"
)


_rules_env: BuildEnv | None = None
_rules_lock = trio.Lock()


async def rules_env() -> BuildEnv:
    """The packaged rules the gateway builds hooks with, loaded once (parsing the packs takes a second)."""
    global _rules_env
    async with _rules_lock:
        if _rules_env is None:
            from nexus.policy.rules.loader import all_rules, load_packs

            rules = await trio.to_thread.run_sync(lambda: all_rules(load_packs()))
            _rules_env = BuildEnv({r.id: r for r in rules})
    return _rules_env


_LABELS = ("hook 'hook' (validate)", "HookConfig 'hook' (validate)")
_EXTRA = re.compile(r"extra fields found \(([^,)]+)")
_QUOTED = re.compile(r"^'([A-Za-z_][A-Za-z0-9_]*)'")


def hook_problem(message: str) -> tuple[str, str]:
    """(field, message) for the first problem in a ``PolicyConfigError`` about the hook being validated."""
    first = message.split("; ")[0]
    for label in _LABELS:
        if first.startswith(label):
            first = first[len(label):]
            break
    if first.startswith(":"):  # the hook's own check of its options (unknown pack, bad pattern)
        detail = first[1:].strip()
        return "config", f"config: {detail}"
    path, _, detail = first.strip().partition(": ")
    if not detail:
        return "config", f"config: {first.strip()}"
    if path == "config":
        extra = _EXTRA.search(detail)
        quoted = _QUOTED.match(detail)
        if extra:
            path = f"config.{extra.group(1).strip()}"
        elif quoted:
            path = f"config.{quoted.group(1)}"
    return path, f"{path}: {detail}"


async def validate_hook(values: Mapping[str, Any]) -> None:
    """Build the hook the way the gateway will, from the engine's own config parser and hook registry."""
    from nexus.policy.hooks.registry import build_hook

    env = await rules_env()
    # A fixed label, so the engine's messages can be reduced to the field they name.
    row = {**{k: v for k, v in values.items() if k in _HOOK_FIELDS}, "id": "validate", "name": "hook"}
    for name in ("org_id", "project_id", "virtual_key_id"):
        if row.get(name) is not None:
            row[name] = str(row[name])
    try:
        build_hook(from_row(HookConfig, row), env)
    except (PolicyConfigError, ValueError, TypeError) as exc:
        where, message = hook_problem(str(exc))
        raise invalid(message, where) from None


_HOOK_FIELDS = frozenset(a.name for a in attrs.fields(HookCreate))


def check_scope(values: Mapping[str, Any]) -> None:
    kind = values.get("scope_kind", "global")
    wanted = _SCOPE_ID.get(kind)
    for name in _SCOPE_ID.values():
        given = values.get(name) is not None
        if name == wanted and not given:
            raise invalid(f"{name}: required when scope_kind is {kind!r}", name)
        if name != wanted and given:
            raise invalid(f"{name}: must be empty when scope_kind is {kind!r}", name)


async def prepare_hook(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if call.request.method == "POST":
        check_scope(values)
        await validate_hook(values)
        return {**values, "created_by": user_id(call)}
    current = dict(call.target.before or {})
    await validate_hook({**current, **values})
    return values


async def locate_new_hook(call: Call) -> Target:
    body: HookCreate = call.body
    check_scope(attrs.asdict(body, recurse=False))
    org_id: uuid.UUID | None = body.org_id
    if body.project_id is not None:
        org_id = await _owner_org(call, "project", body.project_id, "project_id")
    elif body.virtual_key_id is not None:
        org_id = await _owner_org(call, "virtual_key", body.virtual_key_id, "virtual_key_id")
    if org_id is None:
        return Target(nrn=nrn("compliance", None, "hook"))
    return Target(nrn=nrn("compliance", await org_path(call, org_id), "hook"), org_id=org_id)


async def _owner_org(call: Call, table: str, rid: uuid.UUID, name: str) -> uuid.UUID:
    cur = await call.conn.execute(sql.SQL("SELECT org_id FROM {} WHERE id = %s").format(sql.Identifier(table)), (rid,))
    row = await cur.fetchone()
    if row is None:
        raise invalid(f"{name}: no such {table.replace('_', ' ')}", name)
    return uuid.UUID(str(row[0]))


HOOKS = Resource(
    path="hooks", rtype="hook", service="compliance", table="hook_config", read=Hook, create=HookCreate,
    update=HookUpdate, tag=TAG, signal="hook_config", filters=("implementation", "stage", "scope_kind", "enabled"),
    expressions={"org_id": "t.scope_org_id"}, prepare=prepare_hook, source=_HOOK_SOURCE,
)


def hook_operations() -> list[Operation]:
    ops = HOOKS.operations()
    return [attrs.evolve(op, locate=locate_new_hook) if op.method == "POST" else op for op in ops]


# -- rule packs and rules ---------------------------------------------------------------------


@attrs.frozen
class RulePack:
    """A rule pack (seeded from the repository or custom) and how many rules it holds."""

    id: uuid.UUID
    name: str
    version: str
    description: str
    source: Literal["builtin", "custom"]
    enabled: bool
    rule_count: int
    enabled_rule_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class RulePackUpdate:
    """A rule pack can only be switched on or off; its rules come from the pack file."""

    enabled: bool = True


@attrs.frozen
class Rule:
    """One detection rule; ``rule_id`` is the public id that events and overrides use."""

    id: uuid.UUID
    rule_id: str
    category: str
    severity: Severity
    pattern: str
    flags: list[str]
    description: str
    labels: list[str]
    validator: str | None
    examples: list[str]
    counterexamples: list[str]
    enabled: bool


@attrs.frozen
class RuleQuery:
    limit: int = field(default=100, minimum=1, maximum=1000, description="page size")
    cursor: str | None = field(default=None, max_length=512, description="next_cursor from the previous page")
    category: str | None = field(default=None, max_length=63, description="only rules of this category")
    severity: Severity | None = field(default=None, description="only rules of this severity")


RULE_PACKS = Resource(
    path="rule-packs", rtype="rule-pack", service="compliance", table="rule_pack", read=RulePack,
    update=RulePackUpdate, tag=TAG, signal="rule_pack", org="none", filters=("source", "enabled"), delete=False,
    order="created_at",
    expressions={
        "rule_count": "(SELECT count(*) FROM rule r WHERE r.rule_pack_id = t.id)",
        "enabled_rule_count": "(SELECT count(*) FROM rule r WHERE r.rule_pack_id = t.id AND r.enabled)",
    },
)

_RULE_COLUMNS = sql.SQL(", ").join(sql.Identifier(a.name) for a in attrs.fields(Rule))


async def list_rules(call: Call) -> Reply:
    q: RuleQuery = call.query
    where = [sql.SQL("rule_pack_id = %s")]
    args: list[Any] = [call.path_uuid()]
    if q.category is not None:
        where.append(sql.SQL("category = %s"))
        args.append(q.category)
    if q.severity is not None:
        where.append(sql.SQL("severity = %s"))
        args.append(q.severity)
    if q.cursor:
        after, _ = decode_cursor(q.cursor)
        if not isinstance(after, str):
            raise invalid("cursor: not a cursor this API issued", "cursor")
        where.append(sql.SQL("rule_id > %s"))
        args.append(after)
    query = (sql.SQL("SELECT ") + _RULE_COLUMNS + sql.SQL(" FROM rule WHERE ") + sql.SQL(" AND ").join(where)
             + sql.SQL(" ORDER BY rule_id LIMIT %s"))
    cur = await call.conn.execute(query, [*args, q.limit + 1])
    names = [d.name for d in cur.description or ()]
    rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    cursor = encode_cursor(rows[-1]["rule_id"], rows[-1]["id"]) if more else None
    return Reply({"items": [schema.converter.structure(r, Rule) for r in rows], "next_cursor": cursor})


def rule_pack_operations() -> list[Operation]:
    return [*RULE_PACKS.operations(), Operation(
        "GET", "/api/admin/rule-packs/{id}/rules", "admin:rule-pack.read", "List a rule pack's rules", TAG,
        list_rules, RULE_PACKS.locate_row, query=RuleQuery, response=Rule, paged=True)]


# -- rule overrides ---------------------------------------------------------------------------


@attrs.frozen
class RuleOverride:
    """Per org: a rule disabled, or its severity changed."""

    id: uuid.UUID
    org_id: uuid.UUID
    rule_id: str
    disabled: bool
    severity: Severity | None
    reason: str
    created_by: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class RuleOverrideCreate:
    """A new override: either ``disabled`` or a ``severity`` (or both)."""

    org_id: uuid.UUID
    rule_id: str = field(pattern=RULE_ID, description="the public rule id (see /rule-packs/{id}/rules)")
    disabled: bool = False
    severity: Severity | None = None
    reason: str = field(default="", max_length=2000)


RuleOverrideUpdate = patch_of(
    RuleOverrideCreate,
    "org_id", "rule_id",
    doc="Fields a rule override update may change (its org and rule are fixed).",
)


async def prepare_override(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    merged = {**(call.target.before or {}), **values}
    if not merged.get("disabled") and merged.get("severity") is None:
        raise invalid("severity: required unless the override disables the rule", "severity")
    if call.request.method == "POST":
        cur = await call.conn.execute("SELECT 1 FROM rule WHERE rule_id = %s", (values["rule_id"],))
        if await cur.fetchone() is None:
            raise invalid(f"rule_id: no rule {values['rule_id']!r}", "rule_id")
        return {**values, "created_by": user_id(call)}
    return values


RULE_OVERRIDES = Resource(
    path="rule-overrides", rtype="rule-override", service="compliance", table="rule_override", read=RuleOverride,
    create=RuleOverrideCreate, update=RuleOverrideUpdate, tag=TAG, signal="rule_pack",
    filters=("org_id", "rule_id"), prepare=prepare_override,
)


# -- interception domains ---------------------------------------------------------------------


@attrs.frozen
class InterceptionDomain:
    """A host the proxy bumps and agents intercept; ``*`` stands for one label."""

    id: uuid.UUID
    pattern: str
    provider: str | None
    description: str
    builtin: bool
    enabled: bool
    created_by: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class InterceptionDomainCreate:
    pattern: str = field(pattern=HOST_PATTERN, max_length=253,
                         description="lower-case host; a label may be * (api.openai.com, *.openai.azure.com)")
    provider: str | None = field(default=None, max_length=100)
    description: str = field(default="", max_length=2000)
    enabled: bool = True


InterceptionDomainUpdate = patch_of(
    InterceptionDomainCreate,
    "pattern",
    doc="Fields an interception domain update may change (its pattern is fixed).",
)


async def prepare_created_by(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "created_by": user_id(call)} if call.request.method == "POST" else values


INTERCEPTION_DOMAINS = Resource(
    path="interception-domains", rtype="interception-domain", service="compliance", table="interception_domain",
    read=InterceptionDomain, create=InterceptionDomainCreate, update=InterceptionDomainUpdate, tag=TAG,
    signal="interception_domain", org="none", filters=("builtin", "enabled", "provider"),
    prepare=prepare_created_by,
)


async def remove_domain(call: Call) -> Reply:
    if (call.target.before or {}).get("builtin"):
        raise ApiError(409, "conflict", "a built-in interception domain cannot be deleted; disable it instead",
                       {"field": "builtin"})
    return await INTERCEPTION_DOMAINS.remove(call)


def domain_operations() -> list[Operation]:
    return [attrs.evolve(op, handler=remove_domain) if op.method == "DELETE" else op
            for op in INTERCEPTION_DOMAINS.operations()]


# -- exemptions -------------------------------------------------------------------------------


@attrs.frozen
class ExemptionRead:
    """What escapes inspection: a host or source network (interception), or a user or key (hooks)."""

    id: uuid.UUID
    kind: Literal["host", "source_cidr", "user", "virtual_key"]
    host_pattern: str | None
    source_cidr: str | None
    user_id: uuid.UUID | None
    virtual_key_id: uuid.UUID | None
    bypass: Literal["interception", "hooks"]
    certificate_pinned: bool
    reason: str
    expires_at: dt.datetime | None
    created_by: uuid.UUID | None
    created_at: dt.datetime


@attrs.frozen
class ExemptionCreate:
    """A new exemption: set exactly the field ``kind`` names; users and keys can only bypass hooks."""

    kind: Literal["host", "source_cidr", "user", "virtual_key"]
    bypass: Literal["interception", "hooks"]
    reason: str = field(min_length=1, max_length=2000)
    host_pattern: str | None = field(default=None, pattern=HOST_PATTERN, max_length=253)
    source_cidr: str | None = field(default=None, max_length=64, description="a network, e.g. 10.1.0.0/16")
    user_id: uuid.UUID | None = None
    virtual_key_id: uuid.UUID | None = None
    certificate_pinned: bool = False
    expires_at: dt.datetime | None = None


ExemptionUpdate = patch_of(
    ExemptionCreate,
    "kind", "bypass", "host_pattern", "source_cidr", "user_id", "virtual_key_id", "certificate_pinned",
    doc="Fields an exemption update may change (what it exempts is fixed).",
)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise invalid(f"source_cidr: {exc}", "source_cidr") from None


_EXEMPTION_TARGET = {"host": "host_pattern", "source_cidr": "source_cidr", "user": "user_id",
                     "virtual_key": "virtual_key_id"}


async def prepare_exemption(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if call.request.method != "POST":
        return values
    kind = values["kind"]
    for k, name in _EXEMPTION_TARGET.items():
        given = values.get(name) is not None
        if k == kind and not given:
            raise invalid(f"{name}: required when kind is {kind!r}", name)
        if k != kind and given:
            raise invalid(f"{name}: must be empty when kind is {kind!r}", name)
    if values.get("certificate_pinned") and kind != "host":
        raise invalid("certificate_pinned: only a host exemption can be certificate-pinned", "certificate_pinned")
    try:  # the engine's own reading of the row, so what we store is what the proxy and gateway accept
        from_row(Exemption, {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in values.items()})
    except PolicyConfigError as exc:
        text = str(exc).split(": ", 1)[-1]
        raise invalid(f"bypass: {text}" if "bypass" in text else text, "bypass" if "bypass" in text else "kind"
                      ) from None
    if values.get("source_cidr") is not None:
        values = {**values, "source_cidr": _network(values["source_cidr"])}
    return {**values, "created_by": user_id(call)}


EXEMPTIONS = Resource(
    path="exemptions", rtype="exemption", service="compliance", table="exemption", read=ExemptionRead,
    create=ExemptionCreate, update=ExemptionUpdate, tag=TAG, signal="exemption", org="none",
    filters=("kind", "bypass"), expressions={"source_cidr": "t.source_cidr::text"}, prepare=prepare_exemption,
)


def operations() -> list[Operation]:
    return [*hook_operations(), *rule_pack_operations(), *crud_operations([RULE_OVERRIDES]),
            *domain_operations(), *EXEMPTIONS.operations()]
