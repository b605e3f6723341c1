"""Compliance configuration records: hooks, rule overrides, passthrough, kill switch, exemptions.  Pure.

The gateway (and the hub, for agents) reads these from PostgreSQL and hands the
rows or their JSON form here; nothing in this module does I/O.  Two shapes are
accepted for each record:

- a database row (``from_row``): snake_case column names, ``uuid.UUID`` and
  ``datetime`` values as psycopg returns them, extra columns ignored (so
  ``SELECT *`` works);
- JSON (``from_json``/``to_json``): camelCase keys (``failBehavior``,
  ``timeoutMs``…), ids as strings and times as ISO 8601, the form the hub ships
  to agents.

A hook's own ``config`` object (the ``jsonb`` column) stays a plain mapping
here; each hook structures it into its attrs options class at pipeline build
time with ``structure_options``, which forbids unknown keys.

Errors: every malformed record raises ``PolicyConfigError`` (a ``ValueError``)
whose message names the record (hook id and name when known) and the key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception

from nexus.policy.exchange import Stage

__all__ = [
    "MAX_PASSTHROUGH",
    "Action",
    "Exemption",
    "FailBehavior",
    "HookConfig",
    "Implementation",
    "IngressScope",
    "KillSwitch",
    "OnMatch",
    "PassthroughSetting",
    "PolicyConfigError",
    "PolicySnapshot",
    "RuleOverride",
    "ScopeKind",
    "StreamMode",
    "from_json",
    "from_row",
    "structure_options",
    "to_json",
]

Implementation = Literal[
    "keyword-filter",
    "pii-detector",
    "content-safety",
    "rulepack-engine",
    "rate-limiter",
    "request-size-validator",
    "ip-access-filter",
    "data-residency",
    "webhook-forward",
]
FailBehavior = Literal["fail-open", "fail-closed"]
IngressScope = Literal["all", "gateway", "proxy", "agent"]
StreamMode = Literal["observe", "incremental", "buffer"]
ScopeKind = Literal["global", "org", "project", "virtual_key"]
Tier = Literal["global", "provider_type", "provider_instance"]
SeverityName = Literal["hard", "soft", "warn"]
Action = Literal["block", "redact", "approve"]
_ACTIONS: tuple[str, ...] = get_args(Action)

# Passthrough is an emergency measure: no setting may outlive this.
MAX_PASSTHROUGH = dt.timedelta(hours=8)

T = TypeVar("T")


class PolicyConfigError(ValueError):
    """A configuration record is malformed; the message names it and the key."""


@attrs.frozen(kw_only=True)
class HookConfig:
    """One ``hook_config`` row.  ``config`` is the hook's own options object, still raw."""

    id: str
    name: str
    implementation: Implementation
    stage: Stage
    priority: int = 0
    fail_behavior: FailBehavior = "fail-open"
    timeout_ms: int = attrs.field(default=1000, validator=[attrs.validators.ge(1), attrs.validators.le(60_000)])
    ingress: IngressScope = "all"
    stream_mode: StreamMode = "observe"
    config: dict[str, Any] = attrs.field(factory=dict)
    enabled: bool = True
    scope_kind: ScopeKind = "global"
    org_id: str | None = None
    project_id: str | None = None
    virtual_key_id: str | None = None

    def __attrs_post_init__(self) -> None:
        owner = {"org": self.org_id, "project": self.project_id, "virtual_key": self.virtual_key_id}
        set_ids = {kind for kind, value in owner.items() if value is not None}
        expected = set() if self.scope_kind == "global" else {self.scope_kind}
        if set_ids != expected:
            raise ValueError(f"scope_kind {self.scope_kind!r} does not match the ids set: {sorted(set_ids)}")

    @property
    def scope_id(self) -> str | None:
        return self.org_id or self.project_id or self.virtual_key_id

    @property
    def label(self) -> str:
        return f"hook {self.name!r} ({self.id})"


@attrs.frozen(kw_only=True)
class OnMatch:
    """What a content hook does with a match, by the rule's (overridden) severity.

    In a hook's options, ``"onMatch": "redact"`` sets ``hard`` and ``soft`` (warn
    rules only ever record); ``{"hard": "block", "soft": "redact"}`` sets each.
    """

    hard: Action = "block"
    soft: Action = "block"
    warn: Action = "approve"

    def __getitem__(self, severity: str) -> Action:
        return self.hard if severity == "hard" else self.soft if severity == "soft" else self.warn


@attrs.frozen(kw_only=True)
class RuleOverride:
    """Per org: disable a rule or change its severity (``rule_override``)."""

    org_id: str
    rule_id: str
    disabled: bool = False
    severity: SeverityName | None = None
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.disabled and self.severity is None:
            raise ValueError("an override either disables the rule or sets a severity")


@attrs.frozen(kw_only=True)
class PassthroughSetting:
    """One ``passthrough_setting`` row: bypass flags for a tier and target, until ``expires_at``."""

    tier: Tier
    reason: str
    expires_at: dt.datetime
    provider_adapter: str | None = None
    provider_id: str | None = None
    bypass_hooks: bool = False
    bypass_cache: bool = False
    bypass_normalize: bool = False
    created_at: dt.datetime | None = None
    reverted_at: dt.datetime | None = None
    id: str | None = None

    def __attrs_post_init__(self) -> None:
        target = {"provider_type": self.provider_adapter, "provider_instance": self.provider_id}
        for tier, value in target.items():
            if (self.tier == tier) != (value is not None):
                name = "provider_adapter" if tier == "provider_type" else "provider_id"
                raise ValueError(f"tier {self.tier!r}: {name} must be set exactly for tier {tier!r}")
        if self.bypass_normalize and not self.bypass_cache:
            raise ValueError("bypass_normalize needs bypass_cache")
        for name in ("expires_at", "created_at", "reverted_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone")

    def live(self, now: dt.datetime) -> bool:
        """Not reverted, not expired, and within the 8 h limit (from creation, or from now)."""
        if self.reverted_at is not None or self.expires_at <= now:
            return False
        start = self.created_at if self.created_at is not None else now
        return self.expires_at - start <= MAX_PASSTHROUGH


@attrs.frozen(kw_only=True)
class KillSwitch:
    """The fleet-wide kill switch (``system_metadata`` key ``kill_switch``)."""

    engaged: bool = False
    reason: str = ""
    changed_at: dt.datetime | None = None
    changed_by: str | None = None


@attrs.frozen(kw_only=True)
class Exemption:
    """One ``exemption`` row: what escapes interception or hooks."""

    kind: Literal["host", "source_cidr", "user", "virtual_key"]
    bypass: Literal["interception", "hooks"]
    reason: str
    host_pattern: str | None = None
    source_cidr: str | None = None
    user_id: str | None = None
    virtual_key_id: str | None = None
    certificate_pinned: bool = False
    expires_at: dt.datetime | None = None
    id: str | None = None

    def __attrs_post_init__(self) -> None:
        field = {
            "host": "host_pattern",
            "source_cidr": "source_cidr",
            "user": "user_id",
            "virtual_key": "virtual_key_id",
        }
        for kind, name in field.items():
            if (self.kind == kind) != (getattr(self, name) is not None):
                raise ValueError(f"kind {self.kind!r}: {name} must be set exactly for kind {kind!r}")
        if self.kind in ("user", "virtual_key") and self.bypass != "hooks":
            raise ValueError("user and virtual_key exemptions can only bypass hooks")

    def live(self, now: dt.datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@attrs.frozen(kw_only=True)
class PolicySnapshot:
    """The hook configs and overrides one pipeline is built from; ``version`` names it in logs."""

    hooks: tuple[HookConfig, ...] = ()
    overrides: tuple[RuleOverride, ...] = ()
    version: str = ""


_RECORDS: tuple[type, ...] = (HookConfig, RuleOverride, PassthroughSetting, KillSwitch, Exemption)


def _text(value: Any, _type: Any) -> str:
    # psycopg hands uuid columns over as UUID and cidr/inet columns as ipaddress objects.
    if isinstance(value, uuid.UUID | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strict(kind: type[T]) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        # cattrs would turn "1" into 1 and 1 into True: a typo must not pass.
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        return value

    return hook


def _when(value: Any, _type: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime or ISO 8601 text, got {value!r}")
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _base() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(str, _text)
    conv.register_structure_hook(int, _strict(int))
    conv.register_structure_hook(bool, _strict(bool))
    conv.register_structure_hook(dt.datetime, _when)
    conv.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
    return conv


def _json_converter() -> cattrs.Converter:
    conv = _base()
    for cls in _RECORDS:
        renames = {f.name: override(rename=_camel(f.name)) for f in attrs.fields(cls) if "_" in f.name}
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))  # type: ignore[arg-type]
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))  # type: ignore[arg-type]
    return conv


def _options_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str))
    conv.register_structure_hook(int, _strict(int))
    conv.register_structure_hook(bool, _strict(bool))
    conv.register_structure_hook(float, lambda v, _t: _number(v))

    def camel_fields(cls: type) -> bool:
        return attrs.has(cls)

    def make(cls: type) -> Any:
        renames = {f.name: override(rename=_camel(f.name)) for f in attrs.fields(cls) if "_" in f.name}
        return make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames)  # type: ignore[arg-type]

    conv.register_structure_hook_factory(camel_fields, make)

    def is_tuple(cls: Any) -> bool:
        return get_origin(cls) is tuple

    def make_tuple(cls: Any) -> Any:
        # cattrs would read "abc" as ("a", "b", "c"): a keyword list typed as one string must fail.
        args = get_args(cls)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any

        def structure(value: Any, _type: Any) -> tuple[Any, ...]:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {value!r}")
            return tuple(conv.structure(v, item) for v in value)

        return structure

    conv.register_structure_hook_factory(is_tuple, make_tuple)
    make_on_match = make(OnMatch)

    def on_match(value: Any, _type: Any) -> OnMatch:
        if isinstance(value, str):
            if value not in _ACTIONS:
                raise ValueError(f"onMatch {value!r} is not one of {', '.join(_ACTIONS)}")
            action = cast(Action, value)
            return OnMatch(hard=action, soft=action)
        return make_on_match(value, OnMatch)  # type: ignore[no-any-return]

    conv.register_structure_hook(OnMatch, on_match)
    return conv


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


_ROW = _base()
_JSON = _json_converter()
_OPTIONS = _options_converter()


def _format(exc: BaseException, type_: Any) -> str:
    # Our validators explain themselves; cattrs' default would say only "invalid value".
    text = format_exception(exc, type_)
    if text.startswith(("invalid value", "unknown error")) and str(exc):
        return str(exc)
    return text


def _describe(exc: Exception, what: str) -> PolicyConfigError:
    if isinstance(exc, cattrs.BaseValidationError):
        # transform_error says "<problem> @ <path>"; operators read the path first.
        lines = (line.rpartition(" @ ") for line in cattrs.transform_error(exc, path=what, format_exception=_format))
        detail = "; ".join(f"{path}: {problem}" for problem, _, path in lines)
    else:
        detail = f"{what}: {exc}"
    return PolicyConfigError(detail)


def _name(data: Mapping[str, Any]) -> str:
    ident = data.get("id")
    name = data.get("name")
    if name is not None:
        return f"{name!r} ({ident})"
    return str(ident) if ident is not None else "record"


def from_row(cls: type[T], row: Mapping[str, Any]) -> T:
    """A record from a database row (snake_case columns; extra columns ignored)."""
    try:
        return _ROW.structure(dict(row), cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _describe(exc, f"{cls.__name__} {_name(row)}") from None


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """A record from its JSON form (camelCase keys; unknown keys ignored for version skew)."""
    try:
        return _JSON.structure(dict(data), cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _describe(exc, f"{cls.__name__} {_name(data)}") from None


def to_json(record: Any) -> dict[str, Any]:
    """The JSON form of a record (camelCase keys)."""
    return _JSON.unstructure(record)  # type: ignore[no-any-return]


def structure_options(cls: type[T], hook: HookConfig) -> T:
    """A hook's options (``hook.config``) as ``cls``: camelCase keys, unknown keys rejected."""
    try:
        return _OPTIONS.structure(hook.config, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _describe(exc, f"{hook.label} config") from None
