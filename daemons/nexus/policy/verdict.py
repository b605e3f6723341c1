"""Hook verdicts, per-hook results and the per-stage decision.  Pure.

A hook answers one ``Verdict``: a ``Decision`` plus why (reasons, a reason code,
the rule ids that fired) and, for a redaction, the ``Span`` list to mask.  The
pipeline folds the verdicts of one stage into a ``StageDecision`` that the shell
acts on (forward, rewrite, block with ``status``) and that the audit event
stores as ``request_hooks`` / ``response_hooks`` (``StageDecision.to_json``).

Precedence (``Decision.rank``): hard reject > soft block > modify > approve >
abstain.  *Hard* means the traffic must never pass (a hard rule, a fail-closed
hook, an access or size violation); *soft* means a policy block that depends on
the moment or the tenant (a soft rule, a rate limit).  Both stop the traffic.

Redaction.  A span covers ``[start, end)`` in characters (Python ``str``
indices, so multi-byte UTF-8 never splits) of the segment named by its locator,
and is replaced by ``[REDACTED_<RULE_ID>]``.  ``merge_spans`` merges overlapping
spans (the earliest, then longest, keeps its replacement) and ``apply_spans``
rewrites a text; everything outside the spans is copied unchanged.

Errors: ``apply_spans`` raises ``ValueError`` for a span outside the text.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from nexus.policy.exchange import Locator, Segment, Stage

__all__ = [
    "ABSTAIN",
    "Decision",
    "HookResult",
    "Span",
    "StageDecision",
    "Verdict",
    "apply_spans",
    "approve",
    "block",
    "merge_spans",
    "placeholder",
    "redact",
    "strictest",
    "to_source",
]


class Decision(enum.StrEnum):
    ABSTAIN = "abstain"
    APPROVE = "approve"
    MODIFY = "modify"
    BLOCK_SOFT = "block_soft"
    REJECT_HARD = "reject_hard"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def blocks(self) -> bool:
        return self is Decision.BLOCK_SOFT or self is Decision.REJECT_HARD


_RANK = {
    Decision.ABSTAIN: 0,
    Decision.APPROVE: 1,
    Decision.MODIFY: 2,
    Decision.BLOCK_SOFT: 3,
    Decision.REJECT_HARD: 4,
}


def strictest(decisions: Iterable[Decision]) -> Decision:
    """The highest-precedence decision of ``decisions`` (``ABSTAIN`` when empty)."""
    best = Decision.ABSTAIN
    for decision in decisions:
        if _RANK[decision] > _RANK[best]:
            best = decision
    return best


def placeholder(rule_id: str) -> str:
    return f"[REDACTED_{rule_id}]"


@attrs.frozen(slots=True)
class Span:
    """``[start, end)`` characters of the segment at ``locator``, matched by ``rule_id``."""

    locator: Locator
    start: int
    end: int
    rule_id: str
    replacement: str


@attrs.frozen(slots=True)
class Verdict:
    """What one hook decided.

    ``status`` overrides the stage's block status (413 too large, 429 rate
    limited); ``retry_after_s`` goes to ``Retry-After``.  ``tags`` are the
    classifications this hook found (rule categories and labels), visible to the
    hooks after it (data residency reads them).  ``region_constraints`` is a
    residency constraint for a router that picks the provider after the hooks ran:
    for every group, the provider's region must match one of its globs.
    """

    decision: Decision
    reasons: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()
    reason_code: str | None = None
    status: int | None = None
    retry_after_s: float | None = None
    tags: tuple[str, ...] = ()
    region_constraints: tuple[tuple[str, ...], ...] = ()


ABSTAIN = Verdict(Decision.ABSTAIN)


def approve(reasons: tuple[str, ...] = (), rule_ids: tuple[str, ...] = (), **kw: Any) -> Verdict:
    return Verdict(Decision.APPROVE, reasons, rule_ids, **kw)


def redact(
    spans: tuple[Span, ...], reasons: tuple[str, ...] = (), rule_ids: tuple[str, ...] = (), **kw: Any
) -> Verdict:
    return Verdict(Decision.MODIFY, reasons, rule_ids, spans, **kw)


def block(reasons: tuple[str, ...], rule_ids: tuple[str, ...] = (), *, hard: bool = True, **kw: Any) -> Verdict:
    return Verdict(Decision.REJECT_HARD if hard else Decision.BLOCK_SOFT, reasons, rule_ids, **kw)


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Spans sorted by locator and start, overlapping ones merged into one.

    A merged span keeps the replacement of the span that starts first (the longest
    on a tie) and reaches the furthest end of the group.  Adjacent spans stay
    separate, each with its own placeholder.
    """
    ordered = sorted(spans, key=lambda s: (s.locator, s.start, -s.end, s.rule_id))
    out: list[Span] = []
    for s in ordered:
        if out:
            last = out[-1]
            if last.locator == s.locator and s.start < last.end:
                if s.end > last.end:
                    out[-1] = attrs.evolve(last, end=s.end)
                continue
        out.append(s)
    return out


def apply_spans(text: str, spans: Sequence[Span]) -> str:
    """``text`` with each span replaced; ``spans`` must be merged (sorted, disjoint)."""
    parts: list[str] = []
    pos = 0
    n = len(text)
    for s in spans:
        if s.start < pos or s.end > n or s.start >= s.end:
            raise ValueError(f"span [{s.start}, {s.end}) does not fit a text of {n} characters after {pos}")
        parts.append(text[pos : s.start])
        parts.append(s.replacement)
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)


def to_source(s: Span, applied: Sequence[Span]) -> Span:
    """``s``, given in a text that ``apply_spans(source, applied)`` produced, in offsets of ``source``.

    An edge that falls inside a replacement moves outward to the edge of the
    span that replacement stands for, so the result covers it whole.
    """
    start = -1
    delta = 0  # offset in the produced text minus offset in the source, before the current replacement
    for a in applied:
        view_start = a.start + delta
        view_end = view_start + len(a.replacement)
        if start < 0:
            if s.start < view_start:
                start = s.start - delta
            elif s.start < view_end:
                start = a.start
        # The span starts before it ends, so its start is placed by the time its end is.
        if s.end <= view_start:
            return attrs.evolve(s, start=start, end=s.end - delta)
        if s.end <= view_end:
            return attrs.evolve(s, start=start, end=a.end)
        delta += len(a.replacement) - (a.end - a.start)
    return attrs.evolve(s, start=s.start - delta if start < 0 else start, end=s.end - delta)


@attrs.frozen(slots=True)
class HookResult:
    """One hook's part of a stage, as the audit event records it.

    ``error`` is set when the hook raised, its command failed or timed out;
    ``failed`` then says which way its fail behavior turned it ("open" or
    "closed").  ``enforced`` is False for a hook that only observed (a streaming
    hook in observe mode): its decision is recorded but did not act.
    """

    hook_id: str
    name: str
    implementation: str
    decision: Decision
    elapsed_us: int
    reasons: tuple[str, ...] = ()
    reason_code: str | None = None
    rule_ids: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()
    error: str | None = None
    failed: str | None = None
    enforced: bool = True


@attrs.frozen(slots=True)
class StageDecision:
    """The outcome of one stage for one exchange.

    ``rewrites`` holds the segments whose text the hooks changed, to apply with
    ``nexus.policy.exchange.apply_segments``.  ``status`` is the block status a
    hook asked for (None: the stage default, 403 at request and 451 at response
    for the proxy, the caller's error shape for the gateway).
    ``region_constraints``: every group lists region globs, one of which the
    chosen provider's region must match (``region_allowed``).  ``enforced`` is
    False when the decision was only observed (streaming observe mode).
    """

    stage: Stage
    decision: Decision
    hooks: tuple[HookResult, ...] = ()
    reasons: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    reason_code: str | None = None
    status: int | None = None
    retry_after_s: float | None = None
    rewrites: tuple[Segment, ...] = ()
    tags: tuple[str, ...] = ()
    region_constraints: tuple[tuple[str, ...], ...] = ()
    elapsed_us: int = 0
    enforced: bool = True

    @property
    def blocked(self) -> bool:
        return self.enforced and self.decision.blocks

    @property
    def modified(self) -> bool:
        return bool(self.rewrites)

    def region_allowed(self, region: str) -> bool:
        """Whether a provider in ``region`` satisfies every residency constraint of this stage."""
        return all(any(fnmatch.fnmatchcase(region, glob) for glob in group) for group in self.region_constraints)

    def to_json(self) -> dict[str, Any]:
        """The audit form: camelCase keys, defaults omitted, no text (spans carry offsets only)."""
        return _AUDIT.unstructure(self)  # type: ignore[no-any-return]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _audit_converter() -> cattrs.Converter:
    conv = cattrs.Converter(unstruct_collection_overrides={Sequence: list})
    omit = {Span: ("replacement",), StageDecision: ("rewrites",)}
    for cls in (Span, HookResult, StageDecision):
        fields = attrs.fields(cls)
        overrides: dict[str, Any] = {
            f.name: override(omit=True) if f.name in omit.get(cls, ()) else override(rename=_camel(f.name))
            for f in fields
        }
        # The stage keys and the decision are always present; the rest only when set.
        fn = make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=cls is not Span, **overrides)
        conv.register_unstructure_hook(cls, fn)
    return conv


_AUDIT = _audit_converter()
