"""The hooks pipeline: an immutable chain per config snapshot and its sans-IO dispatch loop.  Pure.

Building.  ``build_pipeline(snapshot, rules)`` builds every enabled hook of a
``PolicySnapshot`` once, compiles the rules of all content hooks into one
union scanner (``nexus.policy.matching``), and files the hooks by stage,
ingress and scope, each list sorted by ascending ``priority`` (then name,
then id).  A ``Pipeline`` never changes: on a config change the shell builds
a new one (compiling a new rule set takes seconds, so build it in a
worker thread; pass the same ``ScannerCache`` to reuse unchanged scanners)
and swaps the reference atomically.  Runs already started finish on the old
one.

Chain selection.  An exchange runs the global hooks of its stage and ingress
(``ingress: all`` counts for every pipe) plus the hooks scoped to its org,
project and key, merged in priority order; merged chains are memoised per
scope combination.

Protocol.  ``run = pipeline.start(exchange)`` evaluates the chain for
``exchange.stage``::

    step = run.next()
    while not isinstance(step, StageDecision):
        step = run.send(await shell.perform(step))   # one Reply per Command
    decision = step

``next()`` runs hooks until one needs I/O and returns its ``Command``
(``CallWebhook``, ``IncrementCounter``; stamped with the hook id and the
hook's ``timeout_s``), or returns the final ``StageDecision``.  The shell
performs the command within ``timeout_s`` and calls ``send(reply)`` with its
reply, ``Timeout()`` or ``Failure(error)``; ``send`` returns the next step the
same way.  A chain of pure hooks finishes inside the first ``next()`` without
a command.  ``drive(run, perform)`` is that loop for synchronous callers and
tests; ``Pipeline.evaluate(exchange)`` drives a run whose commands all fail
(fine for pure chains).

Fixed outer positions (not code in any hook):

- fail behavior: a hook that raises, whose command times out or fails, or
  whose redaction spans do not fit its text, becomes ``abstain`` (fail-open)
  or ``reject_hard`` with reason code ``HOOK_FAILED_CLOSED`` (fail-closed);
  the hook result records the error;
- short circuit: the first enforced block (hard or soft) ends the stage;
- redaction: content hooks judge the text as the exchange brought it (one
  scan per stage), so one hook's redaction never hides a match from another;
  every ``modify`` verdict's spans are kept in the exchange's own offsets
  (a webhook's, given in the masked text it was sent, are mapped back),
  overlapping spans merge, and hooks that read the text see it masked;
  ``StageDecision.rewrites`` holds the final text of every rewritten segment
  and the hook results carry the spans in the exchange's offsets.  Hooks
  therefore compose by precedence, not by order: when two content hooks
  cover one rule, one redacting and one blocking, the block wins (give each
  content hook its own rules to redact some and block others);
- timing: each hook's elapsed µs (including the shell's I/O for its
  commands) and the stage's.

A ``Run`` belongs to one exchange and is not thread-safe, but it may move
between threads between steps (scan a large body in a worker thread).

Errors: ``PolicyConfigError`` from building; ``PipelineError`` when the
protocol is misused (``next()`` while a command is outstanding, ``send()``
without one).  Exceptions from hooks never propagate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from nexus.policy.commands import Command, Failure, Reply, Timeout
from nexus.policy.config import HookConfig, PolicySnapshot
from nexus.policy.exchange import Exchange, Ingress, Stage
from nexus.policy.hooks.base import BuildEnv, Hook, HookContext, IOHook, PureHook
from nexus.policy.hooks.registry import build_hook
from nexus.policy.hooks.scanning import ScanHook
from nexus.policy.matching import RuleIndex, ScannerCache
from nexus.policy.rules.model import Rule
from nexus.policy.verdict import ABSTAIN, Decision, HookResult, StageDecision, Verdict

__all__ = [
    "BoundHook",
    "Perform",
    "Pipeline",
    "PipelineError",
    "Run",
    "Steps",
    "build_pipeline",
    "drive",
    "no_io",
]

INGRESSES: tuple[Ingress, ...] = ("gateway", "proxy", "agent")
_MEMO_MAX = 4096
_now = time.perf_counter_ns


class PipelineError(RuntimeError):
    """The run protocol was misused."""


@attrs.frozen(slots=True, eq=False)
class BoundHook:
    """A built hook with what the dispatch loop needs from its config, precomputed."""

    hook: Hook
    config: HookConfig
    io: bool
    scans: bool
    timeout_s: float
    fail_closed: bool

    @classmethod
    def of(cls, hook: Hook) -> BoundHook:
        cfg = hook.config
        return cls(
            hook,
            cfg,
            isinstance(hook, IOHook),
            isinstance(hook, ScanHook),
            cfg.timeout_ms / 1000,
            cfg.fail_behavior == "fail-closed",
        )


Perform = Callable[[Command], Reply]


class Steps(Protocol):
    """Anything driven like a ``Run``: ``next()`` once, then ``send(reply)`` per command."""

    def next(self) -> Command | StageDecision: ...

    def send(self, reply: Reply) -> Command | StageDecision: ...


def no_io(command: Command) -> Reply:
    """A performer for callers without a shell: every command fails (through fail behavior)."""
    return Failure(f"no I/O shell to perform {type(command).__name__}")


def drive(run: Steps, perform: Perform) -> StageDecision:
    """Run to the end, performing each command synchronously."""
    step = run.next()
    while not isinstance(step, StageDecision):
        step = run.send(perform(step))
    return step


class Pipeline:
    """The immutable hook chains of one snapshot."""

    __slots__ = ("_global", "_memo", "_scoped", "hooks", "index", "version")

    def __init__(self, hooks: Sequence[BoundHook], index: RuleIndex, version: str) -> None:
        self.hooks = tuple(hooks)
        self.index = index
        self.version = version
        glob: dict[tuple[Stage, Ingress], list[BoundHook]] = {}
        scoped: dict[tuple[Stage, Ingress, str, str], list[BoundHook]] = {}
        for b in self.hooks:
            cfg = b.config
            for ingress in INGRESSES if cfg.ingress == "all" else (cfg.ingress,):
                if cfg.scope_kind == "global":
                    glob.setdefault((cfg.stage, ingress), []).append(b)
                else:
                    scope = cfg.scope_id
                    assert scope is not None
                    scoped.setdefault((cfg.stage, ingress, cfg.scope_kind, scope), []).append(b)
        self._global = {k: tuple(v) for k, v in glob.items()}
        self._scoped = {k: tuple(v) for k, v in scoped.items()}
        self._memo: dict[tuple[Any, ...], tuple[BoundHook, ...]] = {}

    def chain(self, exchange: Exchange) -> tuple[BoundHook, ...]:
        """The hooks ``exchange`` runs, in order."""
        stage, ingress = exchange.stage, exchange.ingress
        base = self._global.get((stage, ingress), ())
        scoped = self._scoped
        if not scoped:
            return base
        extra: list[tuple[BoundHook, ...]] = []
        matched: list[str] = []
        scopes = (("org", exchange.org_id), ("project", exchange.project_id), ("virtual_key", exchange.key_id))
        for kind, ident in scopes:
            if ident is not None:
                found = scoped.get((stage, ingress, kind, ident))
                if found:
                    extra.append(found)
                    matched += (kind, ident)
        if not extra:
            return base
        # Keyed by the scopes that have hooks only, so a thousand keys of one org share one entry.
        key = (stage, ingress, *matched)
        chain = self._memo.get(key)
        if chain is None:
            merged = [*base]
            for hooks in extra:
                merged.extend(hooks)
            chain = tuple(sorted(merged, key=_order))
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = chain
        return chain

    def start(
        self,
        exchange: Exchange,
        *,
        streaming: bool = False,
        precomputed: Mapping[str, tuple[Verdict, int]] | None = None,
        chain: tuple[BoundHook, ...] | None = None,
    ) -> Run:
        """A run of ``exchange``'s chain (see the module docstring for the protocol).

        ``streaming`` marks the final run of a streamed response: hooks in
        stream mode ``observe`` are recorded but not enforced.  ``precomputed``
        maps hook ids to a (verdict, elapsed µs) the stream guard already
        reached; those hooks are recorded, not evaluated, and their spans not
        applied again.  ``chain`` replaces the exchange's chain (a subset of it).
        """
        ctx = HookContext(exchange, self.index, self.index.for_org(exchange.org_id))
        return Run(self.chain(exchange) if chain is None else chain, ctx, streaming, precomputed)

    def evaluate(self, exchange: Exchange, perform: Perform = no_io) -> StageDecision:
        """``drive`` a run of ``exchange`` synchronously."""
        return drive(self.start(exchange), perform)


def _order(b: BoundHook) -> tuple[int, str, str]:
    return (b.config.priority, b.config.name, b.config.id)


def build_pipeline(
    snapshot: PolicySnapshot, rules: Iterable[Rule], *, scanners: ScannerCache | None = None,
    disabled_packs: frozenset[str] = frozenset(),
) -> Pipeline:
    """Build every enabled hook of ``snapshot`` against ``rules`` (the loaded rule packs).

    Rules of ``disabled_packs`` stay known (a hook naming their category is still valid) but are
    left out of the scan, so they never match until the pack is enabled again.
    """
    env = BuildEnv({r.id: r for r in rules})
    bound = []
    for cfg in snapshot.hooks:
        if not cfg.enabled:
            continue
        bound.append(BoundHook.of(build_hook(cfg, env)))
    bound.sort(key=_order)
    scan_rules = [r for b in bound if isinstance(b.hook, ScanHook) for r in b.hook.rules.values()
                  if r.pack not in disabled_packs]
    index = RuleIndex(scan_rules, snapshot.overrides, scanners if scanners is not None else ScannerCache())
    return Pipeline(bound, index, snapshot.version)


class Run:
    """One evaluation of a chain: a state machine of commands out, replies in."""

    __slots__ = (
        "_block",
        "_chain",
        "_ctx",
        "_final",
        "_gen",
        "_hook_t0",
        "_i",
        "_observed",
        "_precomputed",
        "_results",
        "_streaming",
        "_t0",
        "_verdicts",
    )

    def __init__(
        self,
        chain: tuple[BoundHook, ...],
        ctx: HookContext,
        streaming: bool,
        precomputed: Mapping[str, tuple[Verdict, int]] | None,
    ) -> None:
        self._t0 = _now()
        self._chain = chain
        self._ctx = ctx
        self._streaming = streaming
        self._precomputed = precomputed
        self._i = 0
        self._gen: Generator[Command, Reply, Verdict] | None = None
        self._hook_t0 = 0
        self._results: list[HookResult] = []
        self._verdicts: list[Verdict] = []
        self._observed: list[Verdict] = []
        self._block: Verdict | None = None
        self._final: StageDecision | None = None

    @property
    def context(self) -> HookContext:
        return self._ctx

    def next(self) -> Command | StageDecision:
        if self._final is not None:
            return self._final
        if self._gen is not None:
            raise PipelineError("a command is outstanding: send() its reply")
        return self._advance()

    def send(self, reply: Reply) -> Command | StageDecision:
        gen = self._gen
        if gen is None:
            raise PipelineError("no command is outstanding")
        self._gen = None
        b = self._chain[self._i]
        t0 = self._hook_t0
        if isinstance(reply, Timeout | Failure):
            gen.close()
            stop = self._fail(b, "timeout" if isinstance(reply, Timeout) else reply.error, t0)
        else:
            try:
                command = gen.send(reply)
            except StopIteration as done:
                stop = self._settle(b, done.value, t0)
            except Exception as exc:
                stop = self._fail(b, _describe(exc), t0)
            else:
                self._gen = gen
                return attrs.evolve(command, hook_id=b.config.id, timeout_s=b.timeout_s)
        if stop:
            assert self._final is not None
            return self._final
        self._i += 1
        return self._advance()

    def _advance(self) -> Command | StageDecision:
        chain = self._chain
        ctx = self._ctx
        precomputed = self._precomputed
        n = len(chain)
        while self._i < n:
            b = chain[self._i]
            t0 = _now()
            pre = precomputed.get(b.config.id) if precomputed else None
            if pre is not None:
                stop = self._record(b, pre[0], pre[1], apply=False)
            elif b.io:
                hook = b.hook
                assert isinstance(hook, IOHook)
                try:
                    gen = hook.run(ctx)
                    command = next(gen)
                except StopIteration as done:
                    stop = self._settle(b, done.value, t0)
                except Exception as exc:
                    stop = self._fail(b, _describe(exc), t0)
                else:
                    self._gen = gen
                    self._hook_t0 = t0
                    return attrs.evolve(command, hook_id=b.config.id, timeout_s=b.timeout_s)
            else:
                hook = b.hook
                assert isinstance(hook, PureHook)
                try:
                    verdict = hook.evaluate(ctx)
                except Exception as exc:
                    stop = self._fail(b, _describe(exc), t0)
                else:
                    stop = self._settle(b, verdict, t0)
            if stop:
                assert self._final is not None
                return self._final
            self._i += 1
        final = self._final = self._conclude()
        return final

    def _settle(self, b: BoundHook, verdict: Verdict, t0: int) -> bool:
        try:
            return self._record(b, verdict, (_now() - t0) // 1000)
        except ValueError as exc:
            return self._fail(b, _describe(exc), t0)

    def _record(self, b: BoundHook, verdict: Verdict, elapsed_us: int, *, apply: bool = True) -> bool:
        """Account for one hook's verdict; True when it ends the stage."""
        cfg = b.config
        enforced = not self._streaming or cfg.stream_mode != "observe"
        ctx = self._ctx
        decision = verdict.decision
        spans = verdict.spans
        if enforced and apply and decision is Decision.MODIFY and spans:
            # May raise ValueError (spans that do not fit), which fails the hook before it counts.
            spans = ctx.redact(spans, in_view=not b.scans)
        self._results.append(
            HookResult(
                cfg.id,
                cfg.name,
                cfg.implementation,
                decision,
                elapsed_us,
                verdict.reasons,
                verdict.reason_code,
                verdict.rule_ids,
                spans,
                enforced=enforced,
            )
        )
        if verdict.tags:
            ctx.tags.update(verdict.tags)
        if not enforced:
            self._observed.append(verdict)
            return False
        self._verdicts.append(verdict)
        if decision.blocks:
            self._block = verdict
            self._final = self._conclude()
            return True
        return False

    def _fail(self, b: BoundHook, error: str, t0: int) -> bool:
        cfg = b.config
        elapsed_us = (_now() - t0) // 1000
        enforced = not self._streaming or cfg.stream_mode != "observe"
        if b.fail_closed:
            verdict = Verdict(
                Decision.REJECT_HARD, (f"hook {cfg.name!r} failed closed: {error}",), reason_code="HOOK_FAILED_CLOSED"
            )
        else:
            verdict = ABSTAIN
        self._results.append(
            HookResult(
                cfg.id,
                cfg.name,
                cfg.implementation,
                verdict.decision,
                elapsed_us,
                verdict.reasons,
                verdict.reason_code,
                error=error,
                failed="closed" if b.fail_closed else "open",
                enforced=enforced,
            )
        )
        if not enforced:
            self._observed.append(verdict)
            return False
        if not b.fail_closed:
            return False
        self._verdicts.append(verdict)
        self._block = verdict
        self._final = self._conclude()
        return True

    def _conclude(self) -> StageDecision:
        ctx = self._ctx
        results = self._results
        block = self._block
        enforced = not self._streaming or any(r.enforced for r in results)
        # With nothing enforced (a stream in observe mode), record what the hooks would have decided.
        verdicts = self._verdicts if enforced else self._observed
        decision = Decision.ABSTAIN
        for v in verdicts:
            if v.decision.rank > decision.rank:
                decision = v.decision
        deciding = [v for v in verdicts if v.decision is decision] if decision is not Decision.ABSTAIN else []
        reasons: list[str] = []
        for v in deciding:
            reasons.extend(v.reasons)
        reason_code = next((v.reason_code for v in deciding if v.reason_code is not None), None)
        rule_ids: dict[str, None] = {}
        for r in results:
            for rid in r.rule_ids:
                rule_ids[rid] = None
        constraints = tuple(g for v in verdicts for g in v.region_constraints)
        return StageDecision(
            ctx.exchange.stage,
            decision,
            tuple(results),
            tuple(reasons),
            tuple(rule_ids),
            reason_code,
            block.status if block is not None else None,
            block.retry_after_s if block is not None else None,
            ctx.rewrites(),
            tuple(sorted(ctx.tags)),
            constraints,
            (_now() - self._t0) // 1000,
            enforced,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
