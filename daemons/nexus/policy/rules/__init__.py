"""Rule packs: the attrs records, the YAML loader and the packaged packs (``packs/*.yaml``)."""

from nexus.policy.rules.loader import PACKS_DIR, RulePackError, all_rules, load_pack_file, load_packs, parse_pack
from nexus.policy.rules.model import Rule, RulePack, Severity

__all__ = [
    "PACKS_DIR",
    "Rule",
    "RulePack",
    "RulePackError",
    "Severity",
    "all_rules",
    "load_pack_file",
    "load_packs",
    "parse_pack",
]
