"""One scanner per snapshot, and scanner matches turned into findings under each org's overrides.  Pure.

Every content hook of a snapshot (rulepack-engine, pii-detector,
content-safety, keyword-filter) contributes its rules to one union
``Scanner``, so a stage scans its text once however many content hooks run;
each hook then keeps the findings of its own rules.

A ``Finding`` is a scanner match placed in a segment (by locator) with the
severity the org sees: an org's ``rule_override`` either drops the rule's
matches or changes their severity.  Overrides are looked up per match from a
dict built once per snapshot.

``ScannerCache`` keeps compiled scanners across snapshots, keyed by the
patterns, so a reload that changes hooks but not rules compiles nothing.

Errors: ``PolicyConfigError`` when two rules share an id but differ; whatever
``Scanner.build`` raises for an uncompilable rule set propagates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from nexus.policy.config import PolicyConfigError, RuleOverride
from nexus.policy.exchange import Locator, Segment
from nexus.policy.rules.model import Rule, Severity
from nexus.policy.scan import Match, Scanner, StreamScan

__all__ = ["Finding", "RuleIndex", "ScannerCache"]

_NO_OVERRIDES: Mapping[str, RuleOverride] = {}


@attrs.frozen(slots=True)
class Finding:
    locator: Locator
    rule_id: str
    category: str
    severity: Severity
    start: int
    end: int


def _key(rules: Sequence[Rule]) -> tuple[tuple[object, ...], ...]:
    return tuple((r.id, r.pattern, r.flags, r.validator, r.category, r.severity) for r in rules)


class ScannerCache:
    """Compiled scanners by rule set; keeps the ``keep`` most recent (a reload needs the old and the new)."""

    __slots__ = ("_cache_dir", "_entries", "_keep")

    def __init__(self, *, cache_dir: Path | None = None, keep: int = 2) -> None:
        self._cache_dir = cache_dir
        self._keep = keep
        self._entries: dict[tuple[tuple[object, ...], ...], Scanner] = {}

    def get(self, rules: Sequence[Rule]) -> Scanner:
        key = _key(rules)
        scanner = self._entries.pop(key, None)
        if scanner is None:
            scanner = Scanner.build(list(rules), cache_dir=self._cache_dir)
        self._entries[key] = scanner
        while len(self._entries) > self._keep:
            del self._entries[next(iter(self._entries))]
        return scanner


class RuleIndex:
    """The union scanner of a snapshot, its rules by id, and the overrides by org."""

    __slots__ = ("overrides", "rules", "scanner")

    def __init__(self, rules: Iterable[Rule], overrides: Iterable[RuleOverride], cache: ScannerCache) -> None:
        by_id: dict[str, Rule] = {}
        for rule in rules:
            seen = by_id.get(rule.id)
            if seen is not None and seen != rule:
                raise PolicyConfigError(f"rule id {rule.id} names two different rules")
            by_id[rule.id] = rule
        self.rules: Mapping[str, Rule] = by_id
        self.scanner: Scanner | None = cache.get(sorted(by_id.values(), key=lambda r: r.id)) if by_id else None
        per_org: dict[str, dict[str, RuleOverride]] = {}
        for ov in overrides:
            per_org.setdefault(ov.org_id, {})[ov.rule_id] = ov
        self.overrides: Mapping[str, Mapping[str, RuleOverride]] = per_org

    def for_org(self, org_id: str | None) -> Mapping[str, RuleOverride]:
        if org_id is None:
            return _NO_OVERRIDES
        return self.overrides.get(org_id, _NO_OVERRIDES)

    def findings(self, segments: Sequence[Segment], org: Mapping[str, RuleOverride]) -> tuple[Finding, ...]:
        scanner = self.scanner
        if scanner is None:
            return ()
        out: list[Finding] = []
        for seg in segments:
            matches = scanner.scan(seg.text)
            if matches:
                self.place(out, matches, seg.locator, org)
        return tuple(out)

    def stream(self) -> StreamScan | None:
        return None if self.scanner is None else self.scanner.stream()

    @staticmethod
    def place(out: list[Finding], matches: Iterable[Match], locator: Locator, org: Mapping[str, RuleOverride]) -> None:
        """Append ``matches`` (in the text at ``locator``) to ``out`` as findings, overrides applied."""
        for m in matches:
            severity = m.severity
            if org:
                ov = org.get(m.rule_id)
                if ov is not None:
                    if ov.disabled:
                        continue
                    if ov.severity is not None:
                        severity = ov.severity
            out.append(Finding(locator, m.rule_id, m.category, severity, m.start, m.end))  # type: ignore[arg-type]
