"""``rulepack-engine``: the rule packs against the text, every pack unless the options narrow it.  Pure.

Options: ``packs``, ``categories``, ``rules``, ``excludeRules`` select the
rules (default: all of them); ``onMatch`` (default: hard and soft block, warn
records); ``holdBackChars`` for incremental streaming.
"""

from __future__ import annotations

from nexus.policy.config import HookConfig, OnMatch, structure_options
from nexus.policy.hooks.base import BuildEnv
from nexus.policy.hooks.scanning import RuleSelection, ScanHook, select_rules

DEFAULT_ON_MATCH = OnMatch()


def build(config: HookConfig, env: BuildEnv) -> ScanHook:
    options = structure_options(RuleSelection, config)
    rules = select_rules(options, env, config, None)
    return ScanHook(config, rules, options.on_match or DEFAULT_ON_MATCH, options.hold_back_chars)
