"""Quota policies and overrides as records, which of them apply to a request, windows, estimates.

Pure: no I/O, no Trio.  ``store`` builds a :class:`QuotaSnapshot` from the
``quota_policy`` / ``quota_override`` / ``organization`` / ``provider`` rows
(through :data:`CONVERTER`); the engine asks it, per request,
:meth:`QuotaSnapshot.applicable` — the policies that count this request, each
with the subject it counts against and its effective limits — and
:func:`locate` says where each counter lives in Valkey right now.

What applies (axes):

- organization: explicit policies on the key's org or any ancestor (an org's
  budget covers its subtree); a per-subject default (subject NULL) counts every
  org of the key's chain that lies inside its scope, each against its own
  counter;
- project, user (the key's owner), virtual_key, provider (provider id), model
  (model code): the explicit policy for that subject, and every per-subject
  default, counted per subject;
- ``scope_org_id`` restricts any policy to keys whose org is in that subtree;
- the key's own ``rpm`` / ``tpm`` become sliding 60 s policies on the
  virtual_key axis (requests / total tokens), hard limits only;
- an override for (policy, subject) replaces *both* limits of the policy for
  that subject (a NULL in the override means no such limit); expired
  overrides are ignored at the time of the request.

Windows: calendar day / ISO week (Monday) / month in UTC, one counter per
window; sliding windows of N seconds are split into ``SUB_BUCKETS`` buckets
held as fields of one hash, so a check sums at most ``SUB_BUCKETS + 1`` fields.
A sliding window counts the current bucket and the ``buckets - 1`` before it:
it covers between ``window - width`` and ``window`` of history (width =
window / 60, one second for an RPM limit).

Time comes from the gateway's clock (``now`` in epoch seconds), not Valkey's:
hosts are NTP-synchronised, and a few milliseconds of skew only decide which
of two adjacent windows a request at the boundary lands in.

Errors: records validate themselves (``ValueError``; through ``CONVERTER``
a ``cattrs`` ``ClassValidationError``).  Nothing else raises.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol

import attrs
import cattrs

from nexus.wire.canonical import text_of
from nexus.wire.usage import Usage

Axis = Literal["organization", "project", "user", "virtual_key", "provider", "model"]
Unit = Literal["requests", "input_tokens", "output_tokens", "total_tokens", "cost_micro_usd"]
WindowKind = Literal["calendar", "sliding"]
Period = Literal["day", "week", "month"]
FailMode = Literal["closed", "open"]
HardAction = Literal["block", "downgrade"]

SUB_BUCKETS: Final = 60
# A calendar counter outlives its window by the longest request (1 h upstream timeout) plus a margin, so the
# reconciliation of a request that started before midnight still finds the counter it reserved on.
CALENDAR_GRACE_MS: Final = 3_900_000
CHARS_PER_TOKEN: Final = 3
# Reserved for the answer when the request sets no limit and the model has no default: overestimating rejects
# requests near the end of a budget, underestimating lets the last ones overspend; typical chat answers are
# well below this.
DEFAULT_OUTPUT_TOKENS: Final = 1024
KEY_LIMIT_WINDOW_S: Final = 60


def _window_ok(inst: QuotaPolicy, _attr: attrs.Attribute[Any], _value: Any) -> None:
    if inst.window_kind == "calendar":
        if inst.calendar_period is None or inst.window_seconds is not None:
            raise ValueError(f"quota policy {inst.name!r}: a calendar window needs a period and no seconds")
    elif inst.window_seconds is None or inst.window_seconds < 1 or inst.calendar_period is not None:
        raise ValueError(f"quota policy {inst.name!r}: a sliding window needs window_seconds >= 1 and no period")
    if inst.soft_limit is None and inst.hard_limit is None:
        raise ValueError(f"quota policy {inst.name!r}: needs a soft or a hard limit")


_non_negative = attrs.validators.optional(attrs.validators.ge(0))


@attrs.frozen(slots=True)
class QuotaPolicy:
    """One ``quota_policy`` row; ``subject`` is the axis's subject column (None: a per-subject default)."""

    id: str
    name: str
    axis: Axis
    unit: Unit
    window_kind: WindowKind = attrs.field(validator=_window_ok)
    subject: str | None = None
    scope_org_id: str | None = None
    calendar_period: Period | None = None
    window_seconds: int | None = None
    soft_limit: int | None = attrs.field(default=None, validator=_non_negative)
    hard_limit: int | None = attrs.field(default=None, validator=_non_negative)
    hard_action: HardAction = "block"
    fail_mode: FailMode = "closed"

    @property
    def window_label(self) -> str:
        """``day`` / ``week`` / ``month`` or ``60s``: for messages and /v1/usage."""
        return self.calendar_period if self.calendar_period is not None else f"{self.window_seconds}s"


@attrs.frozen(slots=True)
class QuotaOverride:
    """One ``quota_override`` row: limits for one subject of a policy, until ``expires_at`` (epoch s)."""

    id: str
    policy_id: str
    subject: str
    soft_limit: int | None = attrs.field(default=None, validator=_non_negative)
    hard_limit: int | None = attrs.field(default=None, validator=_non_negative)
    expires_at: float | None = None


CONVERTER: Final = cattrs.Converter(forbid_extra_keys=True)


def policy_from_row(row: Mapping[str, Any]) -> QuotaPolicy:
    return CONVERTER.structure(dict(row), QuotaPolicy)


def override_from_row(row: Mapping[str, Any]) -> QuotaOverride:
    return CONVERTER.structure(dict(row), QuotaOverride)


def _key_policy(unit: Unit, fail_mode: FailMode) -> QuotaPolicy:
    # The limit itself comes from the key (``Applied.hard``); 0 only satisfies the record's own check.
    label = "rpm" if unit == "requests" else "tpm"
    return QuotaPolicy(id=f"key-{label}", name=f"key {label}", axis="virtual_key", unit=unit,
                       window_kind="sliding", window_seconds=KEY_LIMIT_WINDOW_S, hard_limit=0, fail_mode=fail_mode)


_KEY_RPM: Final[Mapping[FailMode, QuotaPolicy]] = {m: _key_policy("requests", m) for m in ("closed", "open")}
_KEY_TPM: Final[Mapping[FailMode, QuotaPolicy]] = {m: _key_policy("total_tokens", m) for m in ("closed", "open")}


@attrs.frozen(slots=True)
class QuotaSubject:
    """Who and what one request is: the key's identity plus, for generation, the routed provider and model.

    ``provider_id`` / ``model`` None skips those axes (GET /v1/usage without a model).
    """

    key_id: str | None
    org_id: str | None
    project_id: str | None = None
    user_id: str | None = None
    provider_id: str | None = None
    model: str | None = None
    rpm: int | None = None
    tpm: int | None = None


class KeyLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def org_id(self) -> str: ...
    @property
    def project_id(self) -> str | None: ...
    @property
    def owner_user_id(self) -> str | None: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...


class PricesLike(Protocol):
    """``catalog.Prices``: micro-dollars per million tokens."""

    @property
    def input(self) -> int: ...
    @property
    def output(self) -> int: ...
    @property
    def cached_input(self) -> int: ...
    @property
    def cache_write(self) -> int: ...
    @property
    def reasoning(self) -> int: ...


class ProviderLike(Protocol):
    @property
    def id(self) -> str: ...


class RouteLike(Protocol):
    """``catalog.ModelRoute`` (kept structural: the catalog module is not pure)."""

    @property
    def code(self) -> str: ...
    @property
    def provider(self) -> ProviderLike: ...
    @property
    def prices(self) -> PricesLike: ...
    @property
    def default_max_tokens(self) -> int | None: ...


def subject_for(key: KeyLike, route: RouteLike | None = None) -> QuotaSubject:
    """The subject of a request made with ``key`` (a ``VirtualKey``) to ``route`` (a ``ModelRoute``)."""
    return QuotaSubject(
        key_id=key.id, org_id=key.org_id, project_id=key.project_id, user_id=key.owner_user_id,
        provider_id=route.provider.id if route is not None else None,
        model=route.code if route is not None else None, rpm=key.rpm, tpm=key.tpm,
    )


@attrs.frozen(slots=True)
class Applied:
    """A policy that counts this request: the subject its counter belongs to and the effective limits."""

    policy: QuotaPolicy
    subject: str
    soft: int | None
    hard: int | None


def _chains(org_paths: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    by_path = {path: org for org, path in org_paths.items()}
    chains: dict[str, tuple[str, ...]] = {}
    for org, path in org_paths.items():
        parts = path.split("/")
        ancestors = (by_path.get("/".join(parts[:i])) for i in range(len(parts) - 1, 0, -1))
        chains[org] = (org, *(a for a in ancestors if a is not None))
    return chains


@attrs.frozen(slots=True)
class QuotaSnapshot:
    """Every enabled policy and live override, the org tree and provider names, indexed for the hot path.

    ``org_paths`` maps org id → path (``acme/emea/sales``); ``provider_names``
    provider id → name (rollups name providers, policies use ids).  Swap the
    whole snapshot on reload; never mutate one.
    """

    policies: tuple[QuotaPolicy, ...] = ()
    overrides: tuple[QuotaOverride, ...] = ()
    org_paths: Mapping[str, str] = attrs.field(factory=dict)
    provider_names: Mapping[str, str] = attrs.field(factory=dict)
    _explicit: dict[tuple[str, str], tuple[QuotaPolicy, ...]] = attrs.field(init=False, repr=False, eq=False)
    _defaults: dict[str, tuple[QuotaPolicy, ...]] = attrs.field(init=False, repr=False, eq=False)
    _override: dict[tuple[str, str], QuotaOverride] = attrs.field(init=False, repr=False, eq=False)
    _chains: dict[str, tuple[str, ...]] = attrs.field(init=False, repr=False, eq=False)
    _provider_ids: dict[str, str] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        explicit: dict[tuple[str, str], list[QuotaPolicy]] = {}
        defaults: dict[str, list[QuotaPolicy]] = {}
        for p in self.policies:
            if p.subject is None:
                defaults.setdefault(p.axis, []).append(p)
            else:
                explicit.setdefault((p.axis, p.subject), []).append(p)
        object.__setattr__(self, "_explicit", {k: tuple(v) for k, v in explicit.items()})
        object.__setattr__(self, "_defaults", {k: tuple(v) for k, v in defaults.items()})
        object.__setattr__(self, "_override", {(o.policy_id, o.subject): o for o in self.overrides})
        object.__setattr__(self, "_chains", _chains(self.org_paths))
        object.__setattr__(self, "_provider_ids", {name: pid for pid, name in self.provider_names.items()})

    def org_chain(self, org_id: str) -> tuple[str, ...]:
        """The org and its ancestors, nearest first (an org the snapshot does not know yet: itself only)."""
        return self._chains.get(org_id) or (org_id,)

    def provider_id(self, name: str) -> str | None:
        return self._provider_ids.get(name)

    def applicable(self, s: QuotaSubject, now: float, key_fail_mode: FailMode = "closed") -> tuple[Applied, ...]:
        """The counters this request touches, in a stable order (org chain first, key limits last)."""
        out: list[Applied] = []
        explicit, defaults = self._explicit, self._defaults
        chain = self.org_chain(s.org_id) if s.org_id is not None else ()
        if chain:
            for org in chain:
                for p in explicit.get(("organization", org), ()):
                    self._add(out, p, org, chain, now)
            for p in defaults.get("organization", ()):
                subjects = chain
                if p.scope_org_id is not None:
                    if p.scope_org_id not in chain:
                        continue
                    subjects = chain[: chain.index(p.scope_org_id) + 1]
                for org in subjects:
                    self._add(out, p, org, chain, now)
        for axis, value in (("project", s.project_id), ("user", s.user_id), ("virtual_key", s.key_id),
                            ("provider", s.provider_id), ("model", s.model)):
            if value is None:
                continue
            for p in explicit.get((axis, value), ()):
                self._add(out, p, value, chain, now)
            for p in defaults.get(axis, ()):
                self._add(out, p, value, chain, now)
        if s.key_id is not None:
            if s.rpm:
                out.append(Applied(_KEY_RPM[key_fail_mode], s.key_id, None, s.rpm))
            if s.tpm:
                out.append(Applied(_KEY_TPM[key_fail_mode], s.key_id, None, s.tpm))
        return tuple(out)

    def _add(self, out: list[Applied], p: QuotaPolicy, subject: str, chain: tuple[str, ...], now: float) -> None:
        if p.scope_org_id is not None and p.scope_org_id not in chain:
            return
        soft, hard = p.soft_limit, p.hard_limit
        o = self._override.get((p.id, subject))
        if o is not None and (o.expires_at is None or o.expires_at > now):
            soft, hard = o.soft_limit, o.hard_limit
            if soft is None and hard is None:
                return
        out.append(Applied(p, subject, soft, hard))


EMPTY: Final = QuotaSnapshot()

# ----------------------------------------------------------------------------------------------- windows

_EPOCH: Final = dt.date(1970, 1, 1)


def _seconds(day: dt.date) -> float:
    return float((day - _EPOCH).days * 86400)


@functools.lru_cache(maxsize=64)
def _calendar(period: Period, day: int) -> tuple[str, float, float]:
    date = _EPOCH + dt.timedelta(days=day)
    if period == "day":
        return f"d{date:%Y%m%d}", _seconds(date), _seconds(date) + 86400
    if period == "week":
        start = date - dt.timedelta(days=date.weekday())
        return f"w{start:%Y%m%d}", _seconds(start), _seconds(start) + 7 * 86400
    start = date.replace(day=1)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return f"m{start:%Y%m}", _seconds(start), _seconds(end)


def calendar_window(period: Period, now: float) -> tuple[str, float, float]:
    """(window id, start, end) in epoch seconds of the UTC day / ISO week / month containing ``now``."""
    return _calendar(period, int(now // 86400))


def sliding_layout(window_seconds: int) -> tuple[int, int]:
    """(bucket width in ms, number of buckets) of a sliding window."""
    window_ms = window_seconds * 1000
    width = -(-window_ms // SUB_BUCKETS)
    return width, -(-window_ms // width)


@attrs.frozen(slots=True)
class Location:
    """Where one counter lives right now.

    Calendar: ``key`` is a string counter for this window, ``field`` is empty.
    Sliding: ``key`` is a hash of bucket index → amount and ``field`` the
    current bucket.  ``alert_key`` is the once-per-window soft-limit marker
    (sliding windows use aligned windows of their length for it).
    """

    key: str
    field: str
    alert_key: str
    window: str
    resets_at: float | None
    expire_ms: int
    alert_ttl_ms: int
    reset_in_ms: int = 0
    bucket: int = 0
    buckets: int = 0
    width_ms: int = 0


def locate(a: Applied, now: float, prefix: str) -> Location:
    p = a.policy
    base = f"{p.id}:{a.subject}"
    now_ms = int(now * 1000)
    if p.calendar_period is not None:
        wid, _start, end = calendar_window(p.calendar_period, now)
        left = max(1, int(end * 1000) - now_ms)
        return Location(f"{prefix}c:{base}:{wid}", "", f"{prefix}a:{base}:{wid}", wid, end,
                        left + CALENDAR_GRACE_MS, left, reset_in_ms=left)
    seconds = p.window_seconds or 1
    width, count = sliding_layout(seconds)
    window_ms = seconds * 1000
    bucket = now_ms // width
    aligned = now_ms // window_ms
    return Location(f"{prefix}s:{base}", str(bucket), f"{prefix}a:{base}:s{aligned}", f"s{aligned}", None,
                    (count + 1) * width, window_ms - now_ms % window_ms, bucket=bucket, buckets=count, width_ms=width)


def sentinel_key(prefix: str) -> str:
    """Present while Valkey holds the counters; its value is the counters' epoch (see ``engine``)."""
    return f"{prefix}sentinel"


def rebuild_lock_key(prefix: str) -> str:
    return f"{prefix}rebuild"

# ----------------------------------------------------------------------------------------------- amounts


@attrs.frozen(slots=True)
class Estimate:
    """What one request reserves before its upstream call."""

    input_tokens: int
    output_tokens: int
    cost_micro: int = 0

    def amount(self, unit: Unit) -> int:
        if unit == "requests":
            return 1
        if unit == "input_tokens":
            return self.input_tokens
        if unit == "output_tokens":
            return self.output_tokens
        if unit == "total_tokens":
            return self.input_tokens + self.output_tokens
        return self.cost_micro


def actual_amount(unit: Unit, usage: Usage, cost_micro: int) -> int:
    """What a finished request really used, in ``unit``."""
    if unit == "requests":
        return 1
    if unit == "input_tokens":
        return usage.prompt_tokens
    if unit == "output_tokens":
        return usage.completion_tokens
    if unit == "total_tokens":
        return usage.prompt_tokens + usage.completion_tokens
    return cost_micro


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def estimate_cost(prices: PricesLike, input_tokens: int, output_tokens: int) -> int:
    """Micro-dollars for uncached input and output at list price, rounded up."""
    return _ceil_div(input_tokens * prices.input + output_tokens * prices.output, 1_000_000)


def usage_cost(prices: PricesLike, usage: Usage) -> int:
    """Micro-dollars of a finished request: cached reads, cache writes and reasoning at their own rates.

    One formula, rounded up once: prices are explicit per kind of token (see
    the ``model`` table), so a 0 price means free, not "same as input".
    """
    uncached = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    answer = max(usage.completion_tokens - usage.reasoning_tokens, 0)
    total = (uncached * prices.input + usage.cached_tokens * prices.cached_input
             + usage.cache_write_tokens * prices.cache_write + answer * prices.output
             + usage.reasoning_tokens * prices.reasoning)
    return _ceil_div(total, 1_000_000)


def _text_chars(chat: Mapping[str, Any]) -> int:
    # Anthropic-shaped bodies (passthrough) keep the system prompt beside the messages.
    chars = len(text_of(chat.get("system")))
    messages = chat.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if not isinstance(msg, dict):
                continue
            chars += len(text_of(msg.get("content")))
            for call in msg.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    chars += len(fn["arguments"])
        return chars
    inp = chat.get("input")  # embeddings
    if isinstance(inp, str):
        return len(inp)
    if isinstance(inp, list):
        return sum(len(x) for x in inp if isinstance(x, str))
    return 0


def _requested_output(chat: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = chat.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate_chat(
    chat: Mapping[str, Any], route: RouteLike | None = None, *, input_tokens: int | None = None,
    default_output: int = DEFAULT_OUTPUT_TOKENS,
) -> Estimate:
    """The reservation for a canonical chat (or embeddings) request.

    Input: ``input_tokens`` when the caller counted them, else the message text
    (content, tool-call arguments, a top-level ``system``; embeddings
    ``input``) at ``CHARS_PER_TOKEN`` characters per token.  Output:
    ``max_completion_tokens`` / ``max_tokens``, else the model's default, else
    ``default_output`` (0 for embeddings: pass it).  Cost: at the route's
    input and output prices.
    """
    if input_tokens is None:
        input_tokens = _ceil_div(_text_chars(chat), CHARS_PER_TOKEN)
    output = _requested_output(chat)
    if output is None:
        model_default = route.default_max_tokens if route is not None else None
        output = model_default if model_default else default_output
    cost = estimate_cost(route.prices, input_tokens, output) if route is not None else 0
    return Estimate(input_tokens, output, cost)
