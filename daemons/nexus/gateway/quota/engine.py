"""The quota engine: reserve before the upstream call, reconcile after, over Valkey.

Use::

    settings = QuotaSettings.from_config(config.gateway.quota)
    engine = QuotaEngine.from_settings(valkey, settings, rebuilder=rebuild.pg_rebuilder(pool))
    engine.snapshot = await store.load_snapshot(pool)   # and again on every policy change signal
    await nursery.start(engine.run)                # the write-behind flusher, and the probe while down
    await engine.prepare()                         # optional: rebuild lost counters now, not on a request
    subject = subject_for(key, route)
    reservation = await engine.reserve(subject, estimate_chat(chat, route))   # QuotaExceeded / QuotaUnavailable
    headers += reservation.headers()
    ... upstream call ...
    await engine.reconcile(reservation, call.usage, usage_cost(route.prices, call.usage))  # or None: failed

Reservation.  ``reserve`` runs one Lua script (``script.RESERVE``) that checks
every applicable counter against its hard limit and, only if all pass,
increments them all, in one atomic step on the server.  Reservations are
therefore never deferred, whatever the mode: the last unit of a budget is
granted exactly once across every gateway process.  A hard limit raises
:class:`QuotaExceeded` (429, the axis named, ``Retry-After``).

Reconciliation.  ``reconcile`` charges the difference between what was
reserved and what the request really used (``actual`` None: the request failed
and is refunded in full, its request count included).  With ``write_behind``
(the default) the differences are summed in process and the ``run`` task
applies them every ``flush_interval`` seconds in one script call per batch;
with ``write_behind=False`` (``NEXUS_QUOTA_WRITE_BEHIND=0``) ``reconcile``
applies them before it returns (shielded from cancellation, bounded by the
Valkey client's command timeout; if that fails they are queued for ``run``).
Start ``run`` in both modes.

Overshoot bound.  Let H be a hard limit and t the time of the last grant on
its counter.  That grant saw ``counter + E <= H``; the counter then held every
granted estimate plus every *applied* reconciliation.  So the final usage U
(every request finished and reconciled) is bounded by::

    U <= H + sum over requests in flight at t         of max(0, actual - estimate)
           + sum over requests reconciled in (t - D, t] of max(0, actual - estimate)

where D = ``flush_interval`` + the duration of one flush (a few ms).  The
first sum exists in both modes: an estimate is a guess, and a request that
used more than it reserved finishes anyway.  The second is what write-behind
adds: extra charges of requests that finished in the last flush interval but
were not yet in Valkey when the last grant was checked (and are 0 with
``write_behind=False``).  Refunds (actual < estimate) only delay budget coming
back; they never cause an overshoot.  With exact estimates (request counts)
U <= H in both modes.

Valkey unreachable (or a script error, or counters lost and not rebuildable).
Policies with a hard limit and ``fail_mode = 'closed'`` (the column's default;
the key's RPM/TPM follow ``fail_mode_default``, i.e. ``[gateway.quota]
on_valkey_down``) make ``reserve`` raise :class:`QuotaUnavailable`: the
gateway answers **503** with ``Retry-After: 1`` — not 429, because the caller
exceeded nothing, SDKs retry a 503 with backoff, and dashboards can tell an
outage from users hitting limits.  The wait is bounded by the Valkey client:
at once while its health task knows the server is down, else its
``command_timeout``.  Keys under no policy never touch Valkey and keep working.

When every applicable hard limit fails open the request proceeds, counted in
this process only (``bypassed`` counts it; ``X-Nexus-Quota-Warning`` says so):
each counter starts from the last value this process read from Valkey (0 if
none) and its hard limit is enforced locally; a sliding window is approximated
by the aligned fixed window of its length.  Fail-open bound, per counter and
window, with N gateway processes, u0 the true usage when Valkey went away and
s_p the last value process p saw (s_p <= u0)::

    U <= u0 + sum over p of max(0, H - s_p)      (<= (N + 1) * H)

i.e. exact-ish with one process that saw the counter recently, at most N
budgets more with N processes that never saw it; a sliding window can admit up
to twice its limit across an aligned boundary; a process restarted during the
outage starts from 0.  What was counted locally (reservations and their
reconciliations) is queued like write-behind differences under the last epoch
seen, so it reaches Valkey when it comes back with its data (same epoch) and
is dropped if Valkey lost it (new epoch: the rebuild from rollups counts it).

``state`` (a ``DependencyState`` named "quota", on /readyz) goes down with a
detail saying which mode is in force; it comes back with the first successful
script, or within ``flush_interval`` of Valkey's return: while down, ``run``
probes the sentinel every tick and rebuilds lost counters itself.

Loss of counters.  The reserve script refuses to count when the sentinel key
is missing; the engine then rebuilds (``rebuild``), once per process and once
across processes (a ``SET NX`` lock; the others wait for the new sentinel),
bounded by ``rebuild_timeout``, and retries.  The sentinel's value is the
counters' epoch: reconciliations of reservations made before a loss are
dropped by the script instead of corrupting rebuilt counters.

Flush failures keep the pending differences (merged, at most ``max_pending``
counters; beyond that new ones are dropped and counted) and retry on the next
tick.  A reply lost after the server ran the script (a timeout) can apply one
batch twice; a refused connection — the usual outage — cannot.

Resource handling: the engine owns no connection; the ``ValkeyClient`` (and
the rebuilder's ``PgPool``) belong to the caller.  ``run`` flushes once more,
shielded and bounded, when it is cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import trio
from prometheus_client import Counter

from nexus.gateway.errors import GatewayError
from nexus.gateway.quota.policy import (
    EMPTY,
    Estimate,
    FailMode,
    Location,
    QuotaSnapshot,
    QuotaSubject,
    Unit,
    actual_amount,
    rebuild_lock_key,
    sentinel_key,
)
from nexus.gateway.quota.rebuild import Rebuilder, RebuildError
from nexus.gateway.quota.script import (
    RECONCILE,
    RELEASE,
    RESERVE,
    Charge,
    Exhausted,
    Granted,
    ReservePlan,
    parse_reserve,
    plan_reserve,
    reconcile_call,
)
from nexus.gateway.quota.settings import QuotaSettings
from nexus.net.resp.client import ValkeyClient, ValkeyConnectionError, ValkeyError
from nexus.runtime.dependency import DependencyState
from nexus.runtime.metrics import REGISTRY
from nexus.wire.usage import Usage

log = logging.getLogger("nexus.gateway.quota")

PREFIX: Final = "nexus:quota:"
_FLUSH_BATCH: Final = 256
_FINAL_FLUSH_TIMEOUT: Final = 2.0
_LOCK_MS: Final = 30_000
_POLL: Final = 0.05

_RESERVATIONS = Counter("nexus_quota_reservations", "Quota reservations by outcome", ["result"], registry=REGISTRY)
_GRANTED = _RESERVATIONS.labels("granted")
_EXCEEDED = _RESERVATIONS.labels("exceeded")
_BYPASSED = _RESERVATIONS.labels("bypassed")
_REJECTED = _RESERVATIONS.labels("unavailable")
_FLUSH_FAILURES = Counter("nexus_quota_flush_failures", "Write-behind flushes that failed (retried)",
                          registry=REGISTRY)
_DROPPED = Counter("nexus_quota_reconciliations_dropped", "Reconciliations dropped: too many pending counters",
                   registry=REGISTRY)
_REBUILDS = Counter("nexus_quota_rebuilds", "Counter rebuilds after a Valkey loss", registry=REGISTRY)

_SAFE = bytes(c if 0x20 <= c < 0x7F else 0x3F for c in range(256))


def _header(text: str) -> bytes:
    # Policy names are free text: keep header values printable ASCII.
    return text.encode("utf-8", "replace").translate(_SAFE)


class QuotaExceeded(Exception):
    """A hard limit would be exceeded; the gateway answers 429 naming the axis, with ``Retry-After``.

    ``action`` is the policy's ``hard_action``: ``downgrade`` asks the router
    to retry on a cheaper allowed model (``limit - used`` is the headroom).
    """

    def __init__(
        self, axis: str, policy: str, limit: int, used: int, retry_after: float, *, unit: Unit = "requests",
        requested: int = 1, subject: str = "", window: str = "", action: str = "block", policy_id: str = "",
    ) -> None:
        self.axis = axis
        self.policy = policy
        self.limit = limit
        self.used = used
        self.retry_after = retry_after
        self.unit = unit
        self.requested = requested
        self.subject = subject
        self.window = window
        self.action = action
        self.policy_id = policy_id
        alone = " (this request alone exceeds it)" if requested > limit else ""
        super().__init__(
            f"quota exceeded on axis {axis}: policy {policy!r} allows {limit} {unit} per {window or 'window'}, "
            f"{used} used, this request needs {requested}{alone}; retry after {self.retry_after_seconds} s")

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))

    def gateway_error(self) -> GatewayError:
        return GatewayError("rate_limited", str(self), status=429,
                            headers=((b"retry-after", b"%d" % self.retry_after_seconds),))


class QuotaUnavailable(Exception):
    """The counters cannot be reached and a fail-closed policy applies: 503 with ``Retry-After: 1``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def gateway_error(self) -> GatewayError:
        return GatewayError("upstream_error", self.message, status=503, headers=((b"retry-after", b"1"),))


@attrs.frozen(slots=True)
class AxisUsage:
    """One counter after this request's reservation."""

    axis: str
    policy: str
    policy_id: str
    subject: str
    unit: Unit
    window: str
    period: str
    used: int
    soft: int | None
    hard: int | None

    @property
    def warning(self) -> bool:
        return self.soft is not None and self.used >= self.soft


@attrs.frozen(slots=True)
class SoftCrossing:
    """This request was the first to reach a soft limit in this window, across all gateways: raise one alert."""

    policy_id: str
    policy: str
    axis: str
    subject: str
    unit: Unit
    window: str
    used: int
    soft: int

    @property
    def dedup_key(self) -> str:
        """For the ``alert`` table's ``dedup_key``."""
        return f"quota.soft:{self.policy_id}:{self.subject}:{self.window}"


@attrs.frozen(slots=True)
class Reservation:
    """What ``reserve`` granted; pass it back to ``reconcile``."""

    epoch: bytes | None
    charges: tuple[Charge, ...]
    usage: tuple[AxisUsage, ...]
    crossings: tuple[SoftCrossing, ...]
    bypassed: bool = False
    # Counted in process while Valkey was unreachable: the local counter of each charge.
    local: tuple[str, ...] = ()

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``X-Nexus-Quota-Used`` / ``-Limit`` of the tightest counter, and ``-Warning`` at a soft limit."""
        tightest: AxisUsage | None = None
        ratio = -1.0
        warnings: list[str] = [BYPASS_WARNING] if self.bypassed else []
        for u in self.usage:
            limit = u.hard if u.hard is not None else u.soft
            if limit is None:
                continue
            r = u.used / limit if limit else math.inf
            if r > ratio:
                tightest, ratio = u, r
            if u.warning:
                warnings.append(f"{u.policy}: {u.used}/{u.soft} {u.unit} per {u.period} ({u.axis})")
        out: list[tuple[bytes, bytes]] = []
        if tightest is not None:
            limit = tightest.hard if tightest.hard is not None else tightest.soft
            out += [(b"x-nexus-quota-used", b"%d" % tightest.used), (b"x-nexus-quota-limit", b"%d" % (limit or 0))]
        if self.bypassed:
            out.append((b"x-nexus-quota-warning", _header("; ".join(warnings))))
        elif warnings:
            out.append((b"x-nexus-quota-warning", _header("soft limit reached: " + "; ".join(warnings))))
        return out


NO_QUOTA: Final = Reservation(None, (), (), ())
BYPASS_WARNING: Final = "quota counters unavailable: counted by this gateway process only"


class _Lost(Exception):
    """The counters are gone and were not rebuilt in time."""


class QuotaEngine:
    """Reservations and reconciliations against Valkey; see the module docstring.

    Args:
      valkey: the gateway's client (its ``command_timeout`` bounds every call).
      write_behind, flush_interval: reconciliation mode (``QuotaSettings``).
      fail_mode_default: fail mode of the key's own RPM/TPM limits.
      snapshot: the policies; assign ``engine.snapshot`` on (re)load.  Until
        one is given the engine applies only the keys' RPM/TPM and will not
        rebuild lost counters (an empty snapshot would rebuild none of them).
      rebuilder: restores counters after a Valkey loss (``rebuild.pg_rebuilder``);
        None restarts them from zero.
      prefix: of every key the engine writes (tests use their own).
      clock: epoch seconds (windows are UTC calendar periods).
      rebuild_timeout: how long a reservation may wait for a rebuild.
      max_pending: write-behind counters held at most while Valkey is down.
    """

    def __init__(
        self, valkey: ValkeyClient, *, write_behind: bool = True, flush_interval: float = 0.25,
        fail_mode_default: FailMode = "closed", snapshot: QuotaSnapshot | None = None,
        rebuilder: Rebuilder | None = None,
        prefix: str = PREFIX, clock: Callable[[], float] = time.time, rebuild_timeout: float = 10.0,
        max_pending: int = 100_000,
    ) -> None:
        if not 0 < flush_interval <= 10:
            raise ValueError(f"flush_interval must be in (0, 10] seconds, got {flush_interval}")
        self.valkey = valkey
        self.write_behind = write_behind
        self.flush_interval = flush_interval
        self.fail_mode_default: FailMode = fail_mode_default
        self._snapshot = snapshot or EMPTY
        self._loaded = snapshot is not None
        self.rebuilder = rebuilder
        self.prefix = prefix
        self.clock = clock
        self.rebuild_timeout = rebuild_timeout
        self.max_pending = max_pending
        self.bypassed = 0
        self.rejected = 0
        self._state = DependencyState("quota", ok=True, detail="ok")
        self._pending: dict[tuple[bytes, str, str], int] = {}
        self._recovering: trio.Event | None = None
        # For counting in process while Valkey is away: the counters' epoch and the last value read of each
        # counter (by local key), then the local counts themselves.
        self._epoch: bytes | None = None
        self._seen: dict[str, int] = {}
        self._local: dict[str, int] = {}

    @classmethod
    def from_settings(cls, valkey: ValkeyClient, settings: QuotaSettings, **kwargs: Any) -> QuotaEngine:
        return cls(valkey, write_behind=settings.write_behind, flush_interval=settings.flush_interval,
                   fail_mode_default=settings.fail_mode_default, **kwargs)

    @property
    def state(self) -> DependencyState:
        return self._state

    @property
    def snapshot(self) -> QuotaSnapshot:
        return self._snapshot

    @snapshot.setter
    def snapshot(self, snapshot: QuotaSnapshot) -> None:
        self._snapshot = snapshot
        self._loaded = True

    @property
    def pending(self) -> int:
        """Counters with a reconciliation not yet in Valkey."""
        return len(self._pending)

    async def prepare(self) -> bool:
        """Rebuild the counters now if Valkey lost them, instead of on the first request; False if that failed."""
        try:
            await self._check()
        except (ValkeyConnectionError, ValkeyError, RebuildError, _Lost, trio.TooSlowError) as exc:
            log.warning("quota counters not ready: %s", exc)
            return False
        return True

    async def _check(self) -> None:
        if await self.valkey.execute("GET", sentinel_key(self.prefix)) is None:
            await self._recover(self.clock())
        if not self._state.ok:
            self._up()

    def _up(self) -> None:
        log.warning("quota counters reachable again")
        self._state.mark_up("ok")
        # Valkey counts again; what was counted here is on its way there (queued).
        self._local.clear()

    # -- reservation --------------------------------------------------------------------------------

    async def reserve(self, subject: QuotaSubject, estimate: Estimate) -> Reservation:
        """Reserve ``estimate`` on every counter that applies to ``subject``.

        Raises ``QuotaExceeded`` or ``QuotaUnavailable``; returns ``NO_QUOTA``
        without a round trip when no policy applies.
        """
        now = self.clock()
        applied = self.snapshot.applicable(subject, now, self.fail_mode_default)
        if not applied:
            return NO_QUOTA
        plan = plan_reserve(applied, estimate, now, self.prefix)
        try:
            result = parse_reserve(await self.valkey.evalsha(RESERVE, plan.keys, plan.args))
            if result is None:
                await self._recover(now)
                result = parse_reserve(await self.valkey.evalsha(RESERVE, plan.keys, plan.args))
                if result is None:
                    raise _Lost("quota counters were lost and are not rebuilt yet")
        except (ValkeyConnectionError, ValkeyError, RebuildError, _Lost, trio.TooSlowError) as exc:
            return self._unavailable(plan, exc)
        if not self._state.ok:
            self._up()
        if isinstance(result, Exhausted):
            i = result.index
            self._saw(plan.locations[i], result.used)
            raise self._exceeded(plan, i, result.used, result.retry_after)
        _GRANTED.inc()
        return self._granted(plan, result)

    @staticmethod
    def _exceeded(plan: ReservePlan, i: int, used: int, retry_after: float) -> QuotaExceeded:
        _EXCEEDED.inc()
        a = plan.applied[i]
        return QuotaExceeded(
            a.policy.axis, a.policy.name, a.hard or 0, used, retry_after, unit=a.policy.unit,
            requested=plan.charges[i].amount, subject=a.subject, window=a.policy.window_label,
            action=a.policy.hard_action, policy_id=a.policy.id)

    def _saw(self, loc: Location, used: int) -> None:
        seen = self._seen
        if len(seen) >= self.max_pending:
            seen.clear()  # rare: only the fail-open starting points are lost
        seen[loc.alert_key if loc.field else loc.key] = used

    def _granted(self, plan: ReservePlan, g: Granted) -> Reservation:
        self._epoch = g.epoch
        usage: list[AxisUsage] = []
        crossings: list[SoftCrossing] = []
        for a, loc, used, flag in zip(plan.applied, plan.locations, g.used, g.flags, strict=True):
            p = a.policy
            self._saw(loc, used)
            usage.append(AxisUsage(p.axis, p.name, p.id, a.subject, p.unit, loc.window, p.window_label, used,
                                   a.soft, a.hard))
            if flag == 2 and a.soft is not None:
                crossings.append(SoftCrossing(p.id, p.name, p.axis, a.subject, p.unit, loc.window, used, a.soft))
        return Reservation(g.epoch, plan.charges, tuple(usage), tuple(crossings))

    def _unavailable(self, plan: ReservePlan, exc: BaseException) -> Reservation:
        closed = next((a for a in plan.applied if a.hard is not None and a.policy.fail_mode == "closed"), None)
        if closed is not None:
            self.rejected += 1
            _REJECTED.inc()
            self._down(f"counters unavailable, failing closed ({self.rejected} requests refused): {exc}")
            raise QuotaUnavailable(f"quota counters are unavailable and policy {closed.policy.name!r} does not "
                                   "allow unmetered traffic; try again shortly")
        reservation = self._count_locally(plan)
        self.bypassed += 1
        _BYPASSED.inc()
        self._down(f"counters unavailable, failing open ({self.bypassed} requests counted in this process only): "
                   f"{exc}")
        return reservation

    def _count_locally(self, plan: ReservePlan) -> Reservation:
        """Fail-open: check and count the hard limits in this process (see "Valkey unreachable" above)."""
        local, seen = self._local, self._seen
        keys = tuple(loc.alert_key if loc.field else loc.key for loc in plan.locations)
        used = [local[k] if k in local else seen.get(k, 0) for k in keys]
        for i, (a, charge) in enumerate(zip(plan.applied, plan.charges, strict=True)):
            if a.hard is not None and used[i] + charge.amount > a.hard:
                raise self._exceeded(plan, i, used[i], plan.locations[i].alert_ttl_ms / 1000)
        if len(local) >= self.max_pending:
            local.clear()
        usage: list[AxisUsage] = []
        for i, (a, loc, charge) in enumerate(zip(plan.applied, plan.locations, plan.charges, strict=True)):
            now_used = local[keys[i]] = used[i] + charge.amount
            p = a.policy
            usage.append(AxisUsage(p.axis, p.name, p.id, a.subject, p.unit, loc.window, p.window_label, now_used,
                                   a.soft, a.hard))
        epoch = self._epoch
        if epoch is not None:
            self._queue(epoch, [(c.key, c.field, c.amount) for c in plan.charges if c.amount])
        return Reservation(epoch, plan.charges, tuple(usage), (), bypassed=True, local=keys)

    def _down(self, detail: str) -> None:
        if self._state.ok:
            log.error("quota %s", detail)
        self._state.mark_down(detail)

    async def _recover(self, now: float) -> None:
        """Restore the sentinel (after a rebuild) once per process; others wait for it."""
        waiting = self._recovering
        if waiting is not None:
            with trio.move_on_after(self.rebuild_timeout):
                await waiting.wait()
            return
        done = self._recovering = trio.Event()
        try:
            with trio.fail_after(self.rebuild_timeout):
                await self._restore(now)
        finally:
            self._recovering = None
            done.set()

    async def _restore(self, now: float) -> None:
        valkey, sentinel, lock = self.valkey, sentinel_key(self.prefix), rebuild_lock_key(self.prefix)
        if not self._loaded:
            raise _Lost("quota counters are missing and the policies are not loaded yet")
        token = secrets.token_hex(16)
        while await valkey.execute("GET", sentinel) is None:
            if await valkey.execute("SET", lock, token, "NX", "PX", _LOCK_MS) is None:
                await trio.sleep(_POLL)  # another gateway is rebuilding
                continue
            try:
                count = await self.rebuilder(valkey, self.snapshot, now, self.prefix) if self.rebuilder else 0
                await valkey.execute("SET", sentinel, token)
            finally:
                # If this fails, the lock expires on its own.
                with (trio.CancelScope(shield=True), trio.move_on_after(valkey.command_timeout),
                      contextlib.suppress(ValkeyConnectionError, ValkeyError)):
                    await valkey.evalsha(RELEASE, (lock,), (token,))
            _REBUILDS.inc()
            log.warning("quota counters were missing in Valkey; %d calendar counters rebuilt from rollups", count)
            return

    # -- reconciliation ----------------------------------------------------------------------------------

    async def reconcile(self, reservation: Reservation, actual: Usage | None, cost_micro: int = 0) -> None:
        """Charge ``actual - reserved`` on every counter; ``actual`` None refunds everything (a failure).

        Write-behind: records the differences and returns without awaiting
        (safe in a ``finally`` under cancellation).  Synchronous: applies them
        now, shielded from cancellation.
        """
        epoch = reservation.epoch
        if epoch is None and not reservation.local:
            return
        deltas: list[tuple[str, str, int]] = []
        for c in reservation.charges:
            delta = -c.amount if actual is None else actual_amount(c.unit, actual, cost_micro) - c.amount
            if delta:
                deltas.append((c.key, c.field, delta))
        if not deltas:
            return
        if reservation.local:
            self._reconcile_locally(reservation, actual, cost_micro)
        if epoch is None:
            return
        if self.write_behind or reservation.local:
            self._queue(epoch, deltas)
            return
        with trio.CancelScope(shield=True):
            try:
                await self._apply(epoch, deltas)
            except (ValkeyConnectionError, ValkeyError) as exc:
                log.warning("quota reconciliation failed, retried in the background: %s", exc)
                self._queue(epoch, deltas)

    def _reconcile_locally(self, reservation: Reservation, actual: Usage | None, cost_micro: int) -> None:
        local = self._local
        for key, c in zip(reservation.local, reservation.charges, strict=True):
            if key in local:  # else Valkey came back meanwhile: it has the charge (queued) and gets the delta
                delta = -c.amount if actual is None else actual_amount(c.unit, actual, cost_micro) - c.amount
                local[key] = max(0, local[key] + delta)

    def _queue(self, epoch: bytes, deltas: Sequence[tuple[str, str, int]]) -> None:
        pending = self._pending
        for key, field, delta in deltas:
            slot = (epoch, key, field)
            before = pending.get(slot)
            if before is None and len(pending) >= self.max_pending:
                _DROPPED.inc()
                continue
            pending[slot] = (before or 0) + delta

    async def _apply(self, epoch: bytes, deltas: Sequence[tuple[str, str, int]]) -> None:
        keys, args = reconcile_call(self.prefix, epoch, deltas)
        await self.valkey.evalsha(RECONCILE, keys, args)

    async def flush(self) -> None:
        """Apply every pending difference now; what fails stays pending (raises nothing but cancellation)."""
        if not self._pending:
            return
        taken, self._pending = self._pending, {}
        by_epoch: dict[bytes, list[tuple[str, str, int]]] = {}
        for (epoch, key, field), delta in taken.items():
            if delta:
                by_epoch.setdefault(epoch, []).append((key, field, delta))
        batches = [(epoch, deltas[i:i + _FLUSH_BATCH]) for epoch, deltas in by_epoch.items()
                   for i in range(0, len(deltas), _FLUSH_BATCH)]
        done = 0
        try:
            for epoch, batch in batches:
                await self._apply(epoch, batch)
                done += 1
        except (ValkeyConnectionError, ValkeyError) as exc:
            _FLUSH_FAILURES.inc()
            log.warning("quota flush failed, retrying: %s", exc)
        finally:
            for epoch, batch in batches[done:]:
                self._queue(epoch, batch)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush every ``flush_interval`` until cancelled; then flush once more (shielded, bounded).

        While ``state`` is down, each tick first probes Valkey (and rebuilds lost counters) so the state
        comes back without waiting for a request.
        """
        task_status.started()
        try:
            while True:
                await trio.sleep(self.flush_interval)
                if not self._state.ok:
                    # Without this, /readyz would stay down until a request with a quota came by.
                    with contextlib.suppress(ValkeyConnectionError, ValkeyError, RebuildError, _Lost,
                                             trio.TooSlowError):
                        await self._check()
                # Shielded: cancelled mid-script, a batch the server did apply would be re-queued and applied
                # twice by the final flush.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + _FINAL_FLUSH_TIMEOUT
                    await self.flush()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + _FINAL_FLUSH_TIMEOUT
                await self.flush()
