"""Rule packs: loader validation and every rule checked against its own examples."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from nexus.policy.rules import PACKS_DIR, Rule, RulePack, RulePackError, load_pack_file, load_packs, parse_pack
from nexus.policy.scan import Scanner
from nexus.policy.scan.selftest import check_rule

EXPECTED_PACKS = {
    "secret-leak", "tool-call-safety", "cloud-misconfig", "content-safety", "compliance", "insecure-code",
    "prompt-injection", "malware-threat", "supply-chain", "pii", "data-loss", "jailbreak",
}
ALL_RULES = [rule for pack in load_packs() for rule in pack.rules]


def _rule(**overrides: object) -> dict[str, object]:
    rule: dict[str, object] = {
        "id": "TEST_RULE", "category": "test-pack", "severity": "soft", "pattern": r"\bfoo\d{2}\b",
        "flags": ["caseless"], "description": "d", "labels": ["x"], "examples": ["foo12"],
        "counterexamples": ["foo1"],
    }
    rule.update(overrides)
    return rule


def _pack(*rules: dict[str, object]) -> dict[str, object]:
    return {"name": "test-pack", "version": "1", "description": "d", "rules": list(rules)}


def test_packaged_packs_cover_every_category(packs: list[RulePack]) -> None:
    assert {p.name for p in packs} == EXPECTED_PACKS
    counts = Counter(r.category for p in packs for r in p.rules)
    assert sum(counts.values()) >= 420
    assert min(counts.values()) >= 23
    assert counts["secret-leak"] >= 80 and counts["pii"] >= 26


def test_every_rule_is_documented_and_consistent(rules: list[Rule]) -> None:
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    for rule in rules:
        assert rule.category == rule.pack
        assert rule.examples and rule.counterexamples and rule.description and rule.labels


@pytest.mark.parametrize("rule", ALL_RULES, ids=[r.id for r in ALL_RULES])
def test_rule_examples(scanner: Scanner, rule: Rule) -> None:
    failures = check_rule(scanner, rule)
    assert not failures, "\n".join(f.describe() for f in failures)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pattern": r"foo(?=bar)"}, "lookahead"),
        ({"pattern": r"(a)\1"}, "backreferences"),
        ({"pattern": r"foo\d+"}, "bound every repeat"),
        ({"pattern": r"a{,3}"}, "'{,n}'"),
        ({"pattern": r"x?"}, "empty string"),
        ({"pattern": r"(?P<name>x)"}, "(?P<v>"),
        ({"pattern": r"[unclosed"}, "not a valid Python regular expression"),
        ({"pattern": "mot de passe\u00a0:"}, "utf8 flag"),
        ({"flags": ["caseless", "greedy"]}, "unknown flags"),
        ({"severity": "fatal"}, "severity must be"),
        ({"validator": "nope"}, "unknown validator"),
        ({"category": "other"}, "must equal the pack name"),
        ({"examples": []}, "'examples' needs at least one"),
        ({"counterexamples": "x"}, "'counterexamples' must be a list"),
        ({"id": "lower_case"}, "UPPER_SNAKE_CASE"),
        ({"surprise": 1}, "unknown keys"),
    ],
)
def test_loader_rejects_bad_rules_naming_file_and_rule(override: dict[str, object], message: str) -> None:
    with pytest.raises(RulePackError) as err:
        parse_pack(_pack(_rule(**override)), "packs/test.yaml")
    text = str(err.value)
    assert text.startswith("packs/test.yaml: rule ")
    assert message in text
    if "id" not in override:
        assert "TEST_RULE" in text


def test_loader_rejects_duplicate_ids_within_and_across_packs(tmp_path: Path) -> None:
    with pytest.raises(RulePackError, match="TEST_RULE: duplicate id"):
        parse_pack(_pack(_rule(), _rule()), "p.yaml")
    for name in ("pack-a", "pack-b"):
        doc = _pack(_rule(category=name))
        doc["name"] = name
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RulePackError, match=r"pack-b\.yaml: rule TEST_RULE: id also defined in .*pack-a\.yaml"):
        load_packs(tmp_path)


def test_loader_reports_yaml_errors_and_empty_directories(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RulePackError, match=r"bad\.yaml: not valid YAML"):
        load_pack_file(bad)
    with pytest.raises(RulePackError, match=r"no \*\.yaml rule packs"):
        load_packs(tmp_path / "missing")


def test_loaded_rule_record_fields() -> None:
    pack = parse_pack(_pack(_rule(flags=["ucp", "caseless"], validator="luhn_card")), "p.yaml")
    rule = pack.rules[0]
    assert (rule.pack, rule.pack_version, rule.flags, rule.validator) == ("test-pack", "1", ("caseless", "ucp"),
                                                                          "luhn_card")
    assert rule.examples == ("foo12",) and rule.labels == ("x",)


def test_packs_are_package_data() -> None:
    assert sorted(p.stem for p in PACKS_DIR.glob("*.yaml")) == sorted(EXPECTED_PACKS)


def test_policy_imports_load_no_trio() -> None:
    code = (
        "import sys\nimport nexus.policy, nexus.policy.rules, nexus.policy.validators, nexus.policy.scan\n"
        "import nexus.policy.scan.selftest\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'httpx', 'asyncio', 'socket'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
