"""Check every rule against its own examples and counterexamples.  Synchronous.

Used by ``nexus rules test`` and the test suite: an example must produce a
match of its rule (validator included) and a counterexample must not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from nexus.policy.rules.model import Rule
from nexus.policy.scan.scanner import Scanner


@attrs.frozen
class Failure:
    rule_id: str
    kind: Literal["example", "counterexample"]
    text: str
    found: tuple[str, ...]  # rule ids the text did produce

    def describe(self) -> str:
        what = "example does not match" if self.kind == "example" else "counterexample matches"
        others = f" (matched: {', '.join(self.found)})" if self.found else ""
        return f"{self.rule_id}: {what}: {self.text!r}{others}"


def check_rule(scanner: Scanner, rule: Rule) -> list[Failure]:
    failures: list[Failure] = []
    cases: list[tuple[str, Literal["example", "counterexample"]]] = [
        *((t, "example") for t in rule.examples),
        *((t, "counterexample") for t in rule.counterexamples),
    ]
    for text, kind in cases:
        found = tuple(sorted({m.rule_id for m in scanner.scan(text)}))
        if (rule.id in found) != (kind == "example"):
            failures.append(Failure(rule.id, kind, text, found))
    return failures


def check_rules(scanner: Scanner, rules: Iterable[Rule]) -> list[Failure]:
    return [failure for rule in rules for failure in check_rule(scanner, rule)]
