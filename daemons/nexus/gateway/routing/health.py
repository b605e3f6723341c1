"""Circuit breakers per upstream (provider + credential), in process memory (pure: no I/O, no Trio).

Each upstream key (the catalog's ``Provider.id``; ``"<provider id>:<credential
id>"`` once a provider rotates several credentials) has a breaker:

- ``closed``: traffic flows.  ``failure_threshold`` consecutive failures, or an
  error rate of at least ``error_rate_threshold`` over the last ``window_s``
  seconds (once ``min_requests`` attempts were seen there), open it.
- ``open``: the planner moves the upstream's targets to the end of the plan
  (never drops them: when everything is open, everything is still tried).
- ``half_open``: ``cooldown_s`` after opening, one probe per
  ``probe_interval_s`` may go through: the planner treats the upstream as
  usable while a probe is due, and the attempt loop claims it with
  ``begin``.  The probe's success closes the breaker, its failure reopens it
  for another cooldown.  Any success closes the breaker, including an attempt
  the plan made to an open upstream as a last resort.

Which failures count: everything the upstream is to blame for (5xx, 408,
429, timeouts, connection errors, an error frame, a stream that broke after
the first byte).  ``client_error`` (the caller's 4xx) is neutral: it neither
counts as a failure nor resets the failure streak.

``record`` and ``begin`` are called by the attempt loop, ``usable`` and
``state`` by the planner (through ``HealthView``), ``snapshot`` by ``/readyz``
and the reporter that writes ``provider_health``.  The clock is injected
(``time.monotonic`` by default) so tests drive time.  Nothing here raises.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import attrs

CircuitState = Literal["closed", "open", "half_open"]
NEUTRAL_KINDS = frozenset({"client_error"})
_BUCKETS = 10
_LATENCIES = 128


class HealthView(Protocol):
    """What the planner may ask about upstream health (read only)."""

    def usable(self, provider_id: str) -> bool:
        """False while the breaker is open and no half-open probe is due: the planner moves it last."""
        ...

    def state(self, provider_id: str) -> CircuitState: ...


class AllClosed:
    """A ``HealthView`` that knows nothing: every upstream is closed (simulation without live health)."""

    def usable(self, provider_id: str) -> bool:
        return True

    def state(self, provider_id: str) -> CircuitState:
        return "closed"


@attrs.frozen
class BreakerConfig:
    failure_threshold: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    window_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    min_requests: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    error_rate_threshold: float = attrs.field(default=0.5, validator=[attrs.validators.gt(0),
                                                                       attrs.validators.le(1)])
    cooldown_s: float = attrs.field(default=15.0, validator=attrs.validators.ge(0))
    probe_interval_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))


class _Breaker:
    __slots__ = ("consecutive", "epoch", "fails", "last_error", "last_failure", "last_success", "latencies",
                 "latency_n", "next_probe", "oks", "open", "opened_at")

    def __init__(self) -> None:
        self.open = False
        self.opened_at = 0.0
        self.next_probe = 0.0
        self.consecutive = 0
        # A ring of per-bucket counts over the error-rate window; epoch[i] says which bucket slot i holds.
        self.oks = [0] * _BUCKETS
        self.fails = [0] * _BUCKETS
        self.epoch = [-1] * _BUCKETS
        self.latencies = [0.0] * _LATENCIES
        self.latency_n = 0
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None


class Health:
    """Every upstream's breaker; implements ``HealthView``."""

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._bucket_s = self.config.window_s / _BUCKETS
        self._breakers: dict[str, _Breaker] = {}

    # --- HealthView -----------------------------------------------------------------------------------

    def state(self, provider_id: str) -> CircuitState:
        b = self._breakers.get(provider_id)
        if b is None or not b.open:
            return "closed"
        return "half_open" if self._clock() >= b.opened_at + self.config.cooldown_s else "open"

    def usable(self, provider_id: str) -> bool:
        b = self._breakers.get(provider_id)
        if b is None or not b.open:
            return True
        # next_probe is opened_at + cooldown at first, then pushed on by each probe claimed.
        return self._clock() >= b.next_probe

    # --- the attempt loop -----------------------------------------------------------------------------

    def begin(self, provider_id: str) -> None:
        """An attempt is about to go to ``provider_id``: if it is the half-open probe, claim it."""
        b = self._breakers.get(provider_id)
        if b is not None and b.open:
            now = self._clock()
            if now >= b.next_probe:
                b.next_probe = now + self.config.probe_interval_s

    def record(self, provider_id: str, ok: bool, kind: str | None = None, latency_s: float = 0.0) -> None:
        """The result of one attempt; ``kind`` is ``Outcome.health_kind`` (only ``client_error`` is special)."""
        if not ok and kind in NEUTRAL_KINDS:
            return
        b = self._breakers.get(provider_id)
        if b is None:
            b = self._breakers[provider_id] = _Breaker()
        now = self._clock()
        if ok:
            b.latencies[b.latency_n % _LATENCIES] = latency_s
            b.latency_n += 1
        slot = self._slot(b, now)
        if ok:
            b.oks[slot] += 1
            b.consecutive = 0
            b.last_success = now
            if b.open:
                self._close(b)
            return
        b.fails[slot] += 1
        b.consecutive += 1
        b.last_failure = now
        b.last_error = kind
        cfg = self.config
        if b.open:
            # A failed probe (or last-resort attempt): another full cooldown.
            b.opened_at = now
            b.next_probe = now + cfg.cooldown_s
            return
        if b.consecutive >= cfg.failure_threshold or self._rate_exceeded(b, now):
            b.open = True
            b.opened_at = now
            b.next_probe = now + cfg.cooldown_s

    def _slot(self, b: _Breaker, now: float) -> int:
        epoch = int(now / self._bucket_s)
        slot = epoch % _BUCKETS
        if b.epoch[slot] != epoch:
            b.epoch[slot] = epoch
            b.oks[slot] = b.fails[slot] = 0
        return slot

    def _window(self, b: _Breaker, now: float) -> tuple[int, int]:
        oldest = int(now / self._bucket_s) - _BUCKETS + 1
        oks = fails = 0
        for i in range(_BUCKETS):
            if b.epoch[i] >= oldest:
                oks += b.oks[i]
                fails += b.fails[i]
        return oks, fails

    def _rate_exceeded(self, b: _Breaker, now: float) -> bool:
        oks, fails = self._window(b, now)
        total = oks + fails
        return total >= self.config.min_requests and fails / total >= self.config.error_rate_threshold

    def _close(self, b: _Breaker) -> None:
        # The old window would reopen the breaker on the next failure: start counting afresh.
        b.open = False
        b.consecutive = 0
        b.epoch = [-1] * _BUCKETS

    # --- reporting ------------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per known upstream, shaped like ``provider_health`` (times as seconds ago)."""
        now = self._clock()
        rows = []
        for key, b in sorted(self._breakers.items()):
            oks, fails = self._window(b, now)
            seen = min(b.latency_n, _LATENCIES)
            lat = sorted(b.latencies[:seen])
            rows.append({
                "provider_id": key,
                "circuit_state": self.state(key),
                "consecutive_failures": b.consecutive,
                "error_rate": round(fails / (oks + fails), 4) if oks + fails else 0.0,
                "latency_p50_ms": _percentile_ms(lat, 0.50),
                "latency_p99_ms": _percentile_ms(lat, 0.99),
                "last_success_s_ago": None if b.last_success is None else round(now - b.last_success, 3),
                "last_failure_s_ago": None if b.last_failure is None else round(now - b.last_failure, 3),
                "last_error": b.last_error,
                "open_for_s": round(now - b.opened_at, 3) if b.open else None,
            })
        return rows


def _percentile_ms(ordered: list[float], q: float) -> int | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000)
