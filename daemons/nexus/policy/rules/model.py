"""Rule and rule-pack records (attrs, frozen).  Pure.

A ``Rule`` is one pattern of one pack.  ``pattern`` must compile in both
Hyperscan (detection) and Python ``re`` (span confirmation): no lookaround, no
backreferences, bounded width.  A named group ``(?P<v>...)`` marks the value to
report and validate (``password = hunter2`` reports ``hunter2``); without it the
whole match is the value.  ``category`` equals the pack name.
"""

from __future__ import annotations

from typing import Literal

import attrs

Severity = Literal["hard", "soft", "warn"]
SEVERITIES: tuple[Severity, ...] = ("hard", "soft", "warn")
FLAGS: frozenset[str] = frozenset({"caseless", "dotall", "multiline", "utf8", "ucp"})


@attrs.frozen
class Rule:
    id: str
    category: str
    severity: Severity
    pattern: str
    flags: tuple[str, ...]
    description: str
    labels: tuple[str, ...]
    validator: str | None
    examples: tuple[str, ...]
    counterexamples: tuple[str, ...]
    pack: str
    pack_version: str


@attrs.frozen
class RulePack:
    name: str
    version: str
    description: str
    rules: tuple[Rule, ...]
