"""The content hooks' common part: pick rules, then judge the findings of those rules.  Pure.

rulepack-engine, pii-detector, content-safety and keyword-filter are all a
``ScanHook``: a set of rules (selected from the packs, or made from keywords)
that the pipeline compiles into the snapshot's union scanner, and an
``OnMatch`` table that turns each finding into an action by its severity:

- ``block``: a hard rule rejects (``reject_hard``), a soft or warn rule blocks
  (``block_soft``);
- ``redact``: the match is masked with ``[REDACTED_<RULE_ID>]`` (``modify``);
- ``approve``: the match is recorded only.

The verdict is the strictest action over all findings; its rule ids list every
rule that fired, its tags every category and label (data residency reads
them), its spans the matches behind the decision.

Options shared by the rule-selecting hooks (camelCase in the hook config):
``packs``, ``categories``, ``rules`` (explicit ids), ``excludeRules``,
``onMatch``, ``holdBackChars`` (streaming, see ``nexus.policy.stream``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from nexus.policy.config import HookConfig, OnMatch, PolicyConfigError
from nexus.policy.hooks.base import BuildEnv, HookContext, PureHook
from nexus.policy.matching import Finding
from nexus.policy.rules.model import Rule
from nexus.policy.rules.regex import MAX_WIDTH
from nexus.policy.verdict import ABSTAIN, Decision, Span, Verdict, placeholder

__all__ = ["MAX_HOLD_BACK", "RuleSelection", "ScanHook", "select_rules"]

# A window past the widest possible match buys nothing but latency.
MAX_HOLD_BACK = MAX_WIDTH
_CLEAN = Verdict(Decision.APPROVE)
_BLOCK = {"hard": Decision.REJECT_HARD, "soft": Decision.BLOCK_SOFT, "warn": Decision.BLOCK_SOFT}
_RANK = {d: d.rank for d in Decision}


@attrs.frozen(kw_only=True)
class RuleSelection:
    packs: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    rules: tuple[str, ...] | None = None
    exclude_rules: tuple[str, ...] = ()
    on_match: OnMatch | None = None
    hold_back_chars: int = attrs.field(
        default=MAX_HOLD_BACK, validator=[attrs.validators.ge(0), attrs.validators.le(MAX_HOLD_BACK)]
    )


def select_rules(
    options: RuleSelection, env: BuildEnv, config: HookConfig, default_categories: tuple[str, ...] | None
) -> tuple[Rule, ...]:
    """The rules ``options`` select (``default_categories`` when it names none); never empty."""
    pool: Iterable[Rule]
    if options.rules is not None:
        unknown = [rid for rid in options.rules if rid not in env.rules]
        if unknown:
            raise PolicyConfigError(f"{config.label}: unknown rules {unknown}")
        pool = [env.rules[rid] for rid in options.rules]
    else:
        pool = env.rules.values()
        if options.packs is not None:
            _known(config, "packs", options.packs, {r.pack for r in env.rules.values()})
            packs = set(options.packs)
            pool = [r for r in pool if r.pack in packs]
        categories = options.categories if options.categories is not None else default_categories
        if options.categories is not None:
            _known(config, "categories", options.categories, {r.category for r in env.rules.values()})
        if categories is not None:
            wanted = set(categories)
            pool = [r for r in pool if r.category in wanted]
    excluded = set(options.exclude_rules)
    chosen = tuple(sorted((r for r in pool if r.id not in excluded), key=lambda r: r.id))
    if not chosen:
        raise PolicyConfigError(f"{config.label}: selects no rules")
    return chosen


def _known(config: HookConfig, key: str, names: tuple[str, ...], known: set[str]) -> None:
    unknown = sorted(set(names) - known)
    if unknown:
        raise PolicyConfigError(f"{config.label}: unknown {key} {unknown}")


class ScanHook(PureHook):
    """A content hook over its own rules of the union scan."""

    __slots__ = ("hold_back", "on_match", "rules")

    def __init__(self, config: HookConfig, rules: tuple[Rule, ...], on_match: OnMatch, hold_back: int) -> None:
        super().__init__(config)
        self.rules: Mapping[str, Rule] = {r.id: r for r in rules}
        self.on_match = on_match
        self.hold_back = hold_back

    def evaluate(self, ctx: HookContext) -> Verdict:
        if not ctx.segments:
            return ABSTAIN
        return self.judge(ctx.findings())

    def judge(self, findings: Iterable[Finding]) -> Verdict:
        """The verdict of this hook's rules over ``findings`` (which may hold other hooks' rules)."""
        rules = self.rules
        on_match = self.on_match
        decision = Decision.APPROVE
        rule_ids: list[str] = []
        reasons: list[str] = []
        tags: list[str] = []
        spans: dict[Decision, list[Span]] = {}
        for f in findings:
            rule = rules.get(f.rule_id)
            if rule is None:
                continue
            if f.rule_id not in rule_ids:
                rule_ids.append(f.rule_id)
                reasons.append(f"{f.rule_id} ({rule.category}, {f.severity})")
                tags.append(rule.category)
                tags.extend(rule.labels)
            action = on_match[f.severity]
            if action == "approve":
                continue
            d = _BLOCK[f.severity] if action == "block" else Decision.MODIFY
            spans.setdefault(d, []).append(Span(f.locator, f.start, f.end, f.rule_id, placeholder(f.rule_id)))
            if _RANK[d] > _RANK[decision]:
                decision = d
        if not rule_ids:
            return _CLEAN
        return Verdict(
            decision,
            tuple(reasons),
            tuple(rule_ids),
            tuple(spans.get(decision, ())),
            reason_code="RULE_MATCH",
            tags=tuple(dict.fromkeys(tags)),
        )
