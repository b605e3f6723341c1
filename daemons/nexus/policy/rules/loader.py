"""Load and validate YAML rule packs.  Pure apart from reading the files.

A pack file holds ``name``, ``version``, ``description`` and ``rules``; each rule
holds ``id``, ``category`` (the pack name), ``severity``, ``pattern``, ``flags``,
``description``, ``labels``, optional ``validator``, ``examples`` and
``counterexamples`` (at least one of each).  Everything is checked here except
that examples match, which needs the compiled database (``nexus rules test``
and the test suite check that).

Errors: ``RulePackError`` (a ``ValueError``) naming the file and the rule id;
``OSError`` from reading a file propagates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nexus.policy import validators
from nexus.policy.rules import regex
from nexus.policy.rules.model import FLAGS, SEVERITIES, Rule, RulePack

PACKS_DIR = Path(__file__).resolve().parent / "packs"
_ID = re.compile(r"[A-Z][A-Z0-9_]{2,79}")
_NAME = re.compile(r"[a-z][a-z0-9-]{1,39}")
_PACK_KEYS = {"name", "version", "description", "rules"}
_RULE_KEYS = {
    "id", "category", "severity", "pattern", "flags", "description", "labels",
    "validator", "examples", "counterexamples",
}


class RulePackError(ValueError):
    """A pack file is malformed; the message names the file and, when known, the rule."""


def load_packs(directory: Path | None = None) -> list[RulePack]:
    """Every ``*.yaml`` pack in ``directory`` (default: the packaged packs), sorted by file name.

    Rule ids must be unique across all the packs loaded together.
    """
    root = PACKS_DIR if directory is None else directory
    files = sorted(root.glob("*.yaml"))
    if not files:
        raise RulePackError(f"{root}: no *.yaml rule packs")
    packs = [load_pack_file(path) for path in files]
    _check_unique(packs, files)
    return packs


def load_pack_file(path: Path) -> RulePack:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RulePackError(f"{path}: not valid YAML: {exc}") from None
    return parse_pack(doc, str(path))


def all_rules(packs: Iterable[RulePack]) -> list[Rule]:
    return [rule for pack in packs for rule in pack.rules]


def parse_pack(doc: object, source: str) -> RulePack:
    """Validate one decoded pack document; ``source`` names it in errors."""
    if not isinstance(doc, Mapping):
        raise RulePackError(f"{source}: a pack is a mapping with {sorted(_PACK_KEYS)}")
    unknown = set(doc) - _PACK_KEYS
    if unknown:
        raise RulePackError(f"{source}: unknown keys {sorted(unknown)}")
    name = _text(doc, "name", source)
    if not _NAME.fullmatch(name):
        raise RulePackError(f"{source}: pack name {name!r} must be lower-case words joined by '-'")
    version = _text(doc, "version", source)
    description = _text(doc, "description", source)
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RulePackError(f"{source}: 'rules' must be a non-empty list")
    rules = tuple(_parse_rule(item, name, version, source, i) for i, item in enumerate(raw_rules))
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RulePackError(f"{source}: rule {rule.id}: duplicate id")
        seen.add(rule.id)
    return RulePack(name=name, version=version, description=description, rules=rules)


def _parse_rule(item: object, pack: str, version: str, source: str, index: int) -> Rule:
    where = f"{source}: rule #{index + 1}"
    if not isinstance(item, Mapping):
        raise RulePackError(f"{where}: a rule is a mapping")
    if isinstance(item.get("id"), str):
        where = f"{source}: rule {item['id']}"
    unknown = set(item) - _RULE_KEYS
    if unknown:
        raise RulePackError(f"{where}: unknown keys {sorted(unknown)}")
    rule_id = _text(item, "id", where)
    if not _ID.fullmatch(rule_id):
        raise RulePackError(f"{where}: id must be UPPER_SNAKE_CASE (3-80 characters)")
    category = _text(item, "category", where)
    if category != pack:
        raise RulePackError(f"{where}: category {category!r} must equal the pack name {pack!r}")
    severity = _text(item, "severity", where)
    if severity not in SEVERITIES:
        raise RulePackError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
    flags = _strings(item, "flags", where, required=False)
    bad = set(flags) - FLAGS
    if bad:
        raise RulePackError(f"{where}: unknown flags {sorted(bad)} (allowed: {sorted(FLAGS)})")
    pattern = _text(item, "pattern", where)
    try:
        regex.check(pattern, flags)
    except regex.PatternError as exc:
        raise RulePackError(f"{where}: pattern: {exc}") from None
    validator = item.get("validator")
    if validator is not None and (not isinstance(validator, str) or validator not in validators.NAMES):
        raise RulePackError(f"{where}: unknown validator {validator!r} (known: {', '.join(validators.NAMES)})")
    examples = _strings(item, "examples", where, required=True)
    counterexamples = _strings(item, "counterexamples", where, required=True)
    return Rule(
        id=rule_id,
        category=category,
        severity=severity,
        pattern=pattern,
        flags=tuple(sorted(set(flags))),
        description=_text(item, "description", where),
        labels=_strings(item, "labels", where, required=False),
        validator=validator,
        examples=examples,
        counterexamples=counterexamples,
        pack=pack,
        pack_version=version,
    )


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RulePackError(f"{where}: '{key}' must be a non-empty string")
    return value


def _strings(doc: Mapping[str, Any], key: str, where: str, *, required: bool) -> tuple[str, ...]:
    value = doc.get(key, [] if not required else None)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulePackError(f"{where}: '{key}' must be a list of non-empty strings")
    if required and not value:
        raise RulePackError(f"{where}: '{key}' needs at least one entry")
    return tuple(value)


def _check_unique(packs: list[RulePack], files: list[Path]) -> None:
    owner: dict[str, Path] = {}
    names: dict[str, Path] = {}
    for pack, path in zip(packs, files, strict=True):
        if pack.name in names:
            raise RulePackError(f"{path}: pack name {pack.name!r} also used by {names[pack.name]}")
        names[pack.name] = path
        for rule in pack.rules:
            if rule.id in owner:
                raise RulePackError(f"{path}: rule {rule.id}: id also defined in {owner[rule.id]}")
            owner[rule.id] = path
