"""``pii-detector``: the ``pii`` pack (cards with Luhn, IBAN with mod-97, SSN rules…), redacting by default.  Pure.

The checksum validators run inside the scanner (a rule names its validator),
so a finding here is already a valid card number, IBAN or SSN.

Options: as ``rulepack-engine``, with ``categories`` defaulting to ``["pii"]``
and ``onMatch`` to redact hard and soft matches.
"""

from __future__ import annotations

from nexus.policy.config import HookConfig, OnMatch, structure_options
from nexus.policy.hooks.base import BuildEnv
from nexus.policy.hooks.scanning import RuleSelection, ScanHook, select_rules

DEFAULT_CATEGORIES = ("pii",)
DEFAULT_ON_MATCH = OnMatch(hard="redact", soft="redact")


def build(config: HookConfig, env: BuildEnv) -> ScanHook:
    options = structure_options(RuleSelection, config)
    rules = select_rules(options, env, config, DEFAULT_CATEGORIES)
    return ScanHook(config, rules, options.on_match or DEFAULT_ON_MATCH, options.hold_back_chars)
