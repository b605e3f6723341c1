"""The content hooks: keyword-filter, pii-detector, content-safety, rulepack-engine (nexus/policy/hooks/)."""

from __future__ import annotations

import pytest

from nexus.policy.config import PolicyConfigError
from nexus.policy.exchange import Exchange
from nexus.policy.pipeline import Pipeline
from nexus.policy.rules import Rule, all_rules, load_packs
from nexus.policy.verdict import Decision
from tests.policy.hookkit import SECRET, hook, pipeline, texts


def kw(**config: object) -> Pipeline:
    return pipeline([hook("kw", "keyword-filter", config=config)])


def decide(p: Pipeline, *items: str) -> Decision:
    return p.evaluate(texts(*items)).decision


# -- keyword-filter ----------------------------------------------------------------------------------


def test_keywords_match_whole_words_caseless_by_default() -> None:
    p = kw(keywords=["ass", "Project Titan"])
    assert decide(p, "a classy assessment") is Decision.APPROVE
    assert decide(p, "you ASS!") is Decision.BLOCK_SOFT
    assert decide(p, "about project titan.") is Decision.BLOCK_SOFT
    assert decide(p, "project titanic") is Decision.APPROVE


def test_keyword_options() -> None:
    inside = kw(keywords=["ass"], wholeWords=False)
    assert decide(inside, "a classy one") is Decision.BLOCK_SOFT
    exact = kw(keywords=["Titan"], caseSensitive=True)
    assert decide(exact, "titan") is Decision.APPROVE
    assert decide(exact, "Titan") is Decision.BLOCK_SOFT
    hard = kw(keywords=["titan"], severity="hard")
    assert decide(hard, "titan") is Decision.REJECT_HARD
    warn = kw(keywords=["titan"], severity="warn")
    assert decide(warn, "titan") is Decision.APPROVE


def test_keywords_are_literals_even_with_regex_characters_and_accents() -> None:
    p = kw(keywords=["c++", "a.b", "café"])
    assert decide(p, "I write C++ daily") is Decision.BLOCK_SOFT
    assert decide(p, "axb") is Decision.APPROVE
    assert decide(p, "see a.b") is Decision.BLOCK_SOFT
    assert decide(p, "un CAFÉ noir") is Decision.BLOCK_SOFT


def test_keyword_patterns_and_ids_redact() -> None:
    p = kw(patterns=[{"pattern": r"proj-[0-9]{4}", "id": "PROJECT_CODE"}], keywords=["titan"], onMatch="redact")
    d = p.evaluate(texts("titan is proj-1234"))
    assert d.decision is Decision.MODIFY
    assert d.rewrites[0].text.startswith("[REDACTED_KW_") and d.rewrites[0].text.endswith(" is [REDACTED_PROJECT_CODE]")
    assert d.tags == ("keyword",)


def test_two_keyword_hooks_keep_their_own_matches() -> None:
    p = pipeline(
        [
            hook("first", "keyword-filter", config={"keywords": ["alpha"], "onMatch": "approve"}, priority=0),
            hook("second", "keyword-filter", config={"keywords": ["beta"], "severity": "hard"}, priority=1),
        ]
    )
    d = p.evaluate(texts("alpha only"))
    assert d.decision is Decision.APPROVE
    assert [r.rule_ids for r in d.hooks][1] == ()
    d = p.evaluate(texts("beta too"))
    assert d.decision is Decision.REJECT_HARD and d.hooks[0].rule_ids == ()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs keywords or patterns"),
        ({"keywords": [" "]}, "empty keyword"),
        ({"patterns": [{"pattern": "a(?=b)"}]}, "lookahead"),
        ({"patterns": [{"pattern": "a.*b"}]}, "bound every repeat"),
        ({"patterns": [{"pattern": "ab", "id": "lower"}]}, "UPPER_SNAKE_CASE"),
        ({"patterns": [{"pattern": "ab", "id": "SAME"}, {"pattern": "cd", "id": "SAME"}]}, "duplicate ids"),
        ({"keywords": ["x"], "severity": "fatal"}, "severity"),
    ],
)
def test_keyword_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyConfigError, match=message):
        kw(**config)


# -- rule-selecting hooks ---------------------------------------------------------------------------------


def test_pii_detector_redacts_pii_only_by_default() -> None:
    p = pipeline([hook("pii", "pii-detector")])
    d = p.evaluate(texts(f"mail a@b.io key {SECRET}"))
    assert d.decision is Decision.MODIFY
    assert d.rewrites[0].text == f"mail [REDACTED_EMAIL] key {SECRET}"
    blocking = pipeline([hook("pii", "pii-detector", config={"onMatch": "block"})])
    assert blocking.evaluate(texts("mail a@b.io")).decision is Decision.BLOCK_SOFT


def test_content_safety_defaults_to_safety_categories_and_blocks() -> None:
    p = pipeline([hook("cs", "content-safety")])
    assert p.evaluate(texts(f"please DO ANYTHING NOW {SECRET}")).rule_ids == ("JAILBREAK",)
    assert p.evaluate(texts("please do anything now")).decision is Decision.REJECT_HARD
    warn = p.evaluate(texts("STOP SHOUTING"))
    assert (warn.decision, warn.rule_ids) == (Decision.APPROVE, ("SHOUT",))


def test_rulepack_engine_maps_severity_to_action() -> None:
    p = pipeline([hook("rp", "rulepack-engine")])
    assert p.evaluate(texts("hello")).decision is Decision.APPROVE
    assert p.evaluate(texts(SECRET)).decision is Decision.REJECT_HARD
    assert p.evaluate(texts("a@b.io")).decision is Decision.BLOCK_SOFT
    d = p.evaluate(texts("SHOUTING at x.example.com"))
    assert d.decision is Decision.APPROVE and set(d.rule_ids) == {"SHOUT", "DOMAIN"}
    table = pipeline([hook("rp", "rulepack-engine", config={"onMatch": {"hard": "redact", "warn": "block"}})])
    assert table.evaluate(texts("SHOUTING")).decision is Decision.BLOCK_SOFT
    redacted = table.evaluate(texts(f"key={SECRET}"))
    assert redacted.decision is Decision.MODIFY and redacted.rewrites[0].text == "key=[REDACTED_AWS_KEY]"


def test_rulepack_engine_selection() -> None:
    by_pack = pipeline([hook("rp", "rulepack-engine", config={"packs": ["pii"]})])
    assert by_pack.evaluate(texts(SECRET)).decision is Decision.APPROVE
    by_rule = pipeline([hook("rp", "rulepack-engine", config={"rules": ["AWS_KEY"]})])
    assert by_rule.evaluate(texts("a@b.io")).decision is Decision.APPROVE
    assert by_rule.evaluate(texts(SECRET)).decision is Decision.REJECT_HARD
    excluded = pipeline([hook("rp", "rulepack-engine", config={"excludeRules": ["AWS_KEY"]})])
    assert excluded.evaluate(texts(SECRET)).decision is Decision.APPROVE


def test_scan_verdict_details() -> None:
    p = pipeline([hook("rp", "rulepack-engine", config={"onMatch": "redact"})])
    d = p.evaluate(texts("first a@b.io", f"then {SECRET} and c@d.io"))
    (result,) = d.hooks
    assert result.rule_ids == ("EMAIL", "AWS_KEY")
    assert result.reasons == ("EMAIL (pii, soft)", "AWS_KEY (secret-leak, hard)")
    assert [(s.locator[1], s.start, s.end, s.rule_id) for s in result.spans] == [
        (0, 6, 12, "EMAIL"),
        (1, 5, 25, "AWS_KEY"),
        (1, 30, 36, "EMAIL"),
    ]
    assert d.tags == ("credential", "pii", "secret-leak")


def test_content_hooks_abstain_without_text() -> None:
    p = pipeline([hook("rp", "rulepack-engine"), hook("kw", "keyword-filter", config={"keywords": ["x"]})])
    d = p.evaluate(texts())
    assert [r.decision for r in d.hooks] == [Decision.ABSTAIN, Decision.ABSTAIN]


# -- the shipped packs through the pipeline ---------------------------------------------------------------

SHIPPED = all_rules(load_packs())
_PACKS = pipeline([hook("pii", "pii-detector", priority=0), hook("all", "rulepack-engine", priority=1)], rules=SHIPPED)


@pytest.mark.parametrize("rule", SHIPPED, ids=[r.id for r in SHIPPED])
def test_every_shipped_example_is_caught_through_the_pipeline(rule: Rule) -> None:
    for example in rule.examples:
        d = _PACKS.evaluate(Exchange.for_request({"messages": [{"role": "user", "content": example}]}, ingress="proxy"))
        assert rule.id in d.rule_ids, example
        if rule.category == "pii" and rule.severity != "warn":
            # pii-detector masked it before rulepack-engine looked, so only a stricter other rule can block.
            assert d.decision is not Decision.APPROVE
            assert d.rewrites or d.blocked
        elif rule.severity == "hard":
            assert d.decision is Decision.REJECT_HARD
        elif rule.severity == "soft":
            assert d.decision.rank >= Decision.BLOCK_SOFT.rank
