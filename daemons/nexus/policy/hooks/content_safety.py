"""``content-safety``: harmful content, jailbreaks and prompt injection, blocking by default.  Pure.

Options: as ``rulepack-engine``, with ``categories`` defaulting to
``["content-safety", "jailbreak", "prompt-injection"]``.
"""

from __future__ import annotations

from nexus.policy.config import HookConfig, OnMatch, structure_options
from nexus.policy.hooks.base import BuildEnv
from nexus.policy.hooks.scanning import RuleSelection, ScanHook, select_rules

DEFAULT_CATEGORIES = ("content-safety", "jailbreak", "prompt-injection")
DEFAULT_ON_MATCH = OnMatch()


def build(config: HookConfig, env: BuildEnv) -> ScanHook:
    options = structure_options(RuleSelection, config)
    rules = select_rules(options, env, config, DEFAULT_CATEGORIES)
    return ScanHook(config, rules, options.on_match or DEFAULT_ON_MATCH, options.hold_back_chars)
