"""What one upstream attempt came to, and what the attempt loop does next (pure).

The attempt loop (the gateway's generate path) walks a plan's targets in order.
After each attempt it builds an ``Outcome`` and asks ``decide``:

- ``done``: the attempt succeeded;
- ``retry``: try the same target again after ``backoff_s`` (the failure is in
  the target's ``retry_on`` and its retry budget is not spent);
- ``next``: move on to the next target (the failure is in its ``fallback_on``);
- ``stop``: answer the client with this failure.

Outcome kinds, and how the loop maps what it saw (``nexus.net.http1.client``
errors are not imported here so that this module stays free of Trio):

- ``ok``: a usable answer (HTTP < 400, no error frame first);
- ``status``: an HTTP error status, ``Outcome.from_status(status, retry_after)``;
- ``timeout``: ``FirstByteTimeout`` / ``ReadTimeout`` before the first byte;
- ``connect``: ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout`` or a
  ``RemoteProtocolError`` before the response head (connection refused, reset,
  TLS failure): nothing usable came back;
- ``error_frame``: HTTP 200, but the stream's first event was an error;
- ``late``: anything that failed after the first byte reached the client.  It is
  never retried: the client already holds part of an answer.

Failure vocabulary of ``retry_on`` and ``onStatusCodes`` (``FailureSet.parse``):
HTTP status integers 400-599, and the words ``"5xx"``, ``"timeout"``,
``"connect"`` and ``"error_frame"``.  The default set is 429, 5xx, timeouts,
connection errors and error frames; 400/401/403/404 are in it only if a rule
lists them.

``X-Nexus-Attempts`` (``attempts_header``) is an RFC 8941 list, one item per
attempt in the order made: the item is the quoted ``"provider/model"``, with
parameters ``outcome`` (a token from the kinds above), ``status`` (integer, when
an HTTP status was received) and ``ms`` (integer milliseconds the attempt took)::

    X-Nexus-Attempts: "openai/gpt-4o";outcome=status;status=503;ms=41, "azure-east/gpt-4o";outcome=ok;status=200;ms=812

Errors: ``FailureSet.parse`` raises ``ValueError`` naming the bad entry; nothing
else here raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs

OutcomeKind = Literal["ok", "status", "timeout", "connect", "error_frame", "late"]
Verdict = Literal["done", "retry", "next", "stop"]

# The word each failure gives the health breaker; health.NEUTRAL_KINDS says which do not count against a provider.
HealthKind = Literal["ok", "client_error", "rate_limited", "server_error", "timeout", "connect", "error_frame", "late"]

_WORDS = ("5xx", "timeout", "connect", "error_frame")


@attrs.frozen(slots=True)
class Outcome:
    kind: OutcomeKind
    status: int | None = None
    # Seconds the upstream asked us to wait (Retry-After, in seconds form only).
    retry_after_s: float | None = None

    @classmethod
    def from_status(cls, status: int, retry_after: bytes | str | None = None) -> Outcome:
        if status < 400:
            return cls("ok", status)
        return cls("status", status, _retry_after(retry_after))

    @property
    def health_kind(self) -> HealthKind:
        kind = self.kind
        if kind == "status":
            status = self.status or 0
            if status == 429:
                return "rate_limited"
            # 408 is the upstream timing out on us: a provider problem, not the caller's.
            return "server_error" if status >= 500 or status == 408 else "client_error"
        return kind


OK = Outcome("ok", 200)
TIMEOUT = Outcome("timeout")
CONNECT = Outcome("connect")
ERROR_FRAME = Outcome("error_frame")
LATE = Outcome("late")


def _retry_after(value: bytes | str | None) -> float | None:
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        seconds = float(text.strip())
    except ValueError:
        return None  # an HTTP-date: too rare upstream to be worth parsing
    return seconds if 0 <= seconds < 86400 else None


@attrs.frozen(slots=True)
class FailureSet:
    """Which failed outcomes a rule treats as a reason to retry (``retry_on``) or to move on (``fallback_on``)."""

    statuses: frozenset[int] = frozenset()
    server_errors: bool = False
    timeout: bool = False
    connect: bool = False
    error_frame: bool = False

    def __contains__(self, outcome: object) -> bool:
        if not isinstance(outcome, Outcome):
            return False
        kind = outcome.kind
        if kind == "status":
            status = outcome.status or 0
            return status in self.statuses or (self.server_errors and status >= 500)
        if kind == "timeout":
            return self.timeout
        if kind == "connect":
            return self.connect
        if kind == "error_frame":
            return self.error_frame
        return False  # ok, and late: never

    @classmethod
    def parse(cls, items: Iterable[Any]) -> FailureSet:
        statuses: set[int] = set()
        words: set[str] = set()
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError(f"{item!r} is neither an HTTP status nor one of {', '.join(_WORDS)}")
            if isinstance(item, int):
                if not 400 <= item <= 599:
                    raise ValueError(f"{item} is not an HTTP error status (400-599)")
                statuses.add(item)
            elif item in _WORDS:
                words.add(item)
            else:
                raise ValueError(f"unknown failure {item!r}; use an HTTP status or one of {', '.join(_WORDS)}")
        return cls(frozenset(statuses), "5xx" in words, "timeout" in words, "connect" in words,
                   "error_frame" in words)

    def describe(self) -> list[int | str]:
        out: list[int | str] = sorted(self.statuses)
        out.extend(word for word, on in zip(_WORDS, (self.server_errors, self.timeout, self.connect,
                                                      self.error_frame), strict=True) if on)
        return out


DEFAULT_FAILURES = FailureSet(frozenset({429}), True, True, True, True)


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value}")


@attrs.frozen(slots=True)
class RetryPolicy:
    """Retries on the same target: ``max_retries`` more attempts, waiting base·2^n ms, at most ``max_backoff_ms``."""

    max_retries: int = attrs.field(default=1, validator=[attrs.validators.le(10), _non_negative])
    backoff_ms: int = attrs.field(default=200, validator=[attrs.validators.le(60_000), _non_negative])
    max_backoff_ms: int = attrs.field(default=2_000, validator=[attrs.validators.le(600_000), _non_negative])
    retry_on: FailureSet = DEFAULT_FAILURES

    def __attrs_post_init__(self) -> None:
        if self.max_backoff_ms < self.backoff_ms:
            raise ValueError(f"max_backoff_ms ({self.max_backoff_ms}) is below backoff_ms ({self.backoff_ms})")


DEFAULT_RETRY = RetryPolicy()


def retryable(outcome: Outcome, policy: RetryPolicy) -> bool:
    """Whether ``outcome`` justifies another attempt on the same target (budget aside)."""
    if outcome not in policy.retry_on:
        return False
    # An upstream that asks for a longer pause than we would wait is better left alone: try the next target.
    wait = outcome.retry_after_s
    return wait is None or wait * 1000 <= policy.max_backoff_ms


def decide(outcome: Outcome, policy: RetryPolicy, fallback_on: FailureSet, retries_done: int) -> Verdict:
    if outcome.kind == "ok":
        return "done"
    if outcome.kind == "late":
        return "stop"
    if retries_done < policy.max_retries and retryable(outcome, policy):
        return "retry"
    return "next" if outcome in fallback_on else "stop"


def backoff_s(policy: RetryPolicy, retry_index: int, u: float, retry_after_s: float | None = None) -> float:
    """Seconds to wait before retry number ``retry_index`` (0-based); ``u`` is uniform in [0, 1).

    Equal jitter: half the exponential step is fixed, half random, so retries from many requests
    spread out without any of them retrying at once.  An upstream Retry-After (already checked to be
    within ``max_backoff_ms`` by ``retryable``) wins.
    """
    if retry_after_s is not None:
        return retry_after_s
    step = min(policy.max_backoff_ms, policy.backoff_ms * (1 << min(retry_index, 30))) / 1000
    return step / 2 + u * step / 2


@attrs.frozen(slots=True)
class Attempt:
    """One upstream attempt, for the audit event and ``X-Nexus-Attempts``."""

    provider: str
    model: str
    outcome: OutcomeKind
    status: int | None
    duration_s: float

    def as_event(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "outcome": self.outcome, "status": self.status,
                "duration_ms": round(self.duration_s * 1000, 3)}


def attempts_header(attempts: Sequence[Attempt]) -> bytes:
    # Provider names and model codes are restricted by the schema to characters that need no escaping in an
    # RFC 8941 string (no quote, no backslash, printable ASCII).
    parts = []
    for a in attempts:
        status = f";status={a.status}" if a.status is not None else ""
        parts.append(f'"{a.provider}/{a.model}";outcome={a.outcome}{status};ms={round(a.duration_s * 1000)}')
    return ", ".join(parts).encode("ascii", "replace")
