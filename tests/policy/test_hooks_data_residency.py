"""data-residency: classifications map to allowed provider regions (nexus/policy/hooks/data_residency.py)."""

from __future__ import annotations

import pytest

from nexus.policy.config import PolicyConfigError
from nexus.policy.pipeline import Pipeline
from nexus.policy.verdict import Decision
from tests.policy.hookkit import hook, pipeline, texts

RULES = {
    "rules": [
        {"classification": "pii", "allowedRegions": ["eu-*", "europe-west?"]},
        {"classification": "confidential", "allowedRegions": ["eu-central-1"]},
    ]
}


def residency(**extra: object) -> Pipeline:
    return pipeline(
        [
            hook("pii", "pii-detector", config={"onMatch": "approve"}, priority=0),
            hook("residency", "data-residency", config={**RULES, **extra}, priority=1),
        ]
    )


def test_tagged_data_must_stay_in_allowed_regions() -> None:
    p = residency()
    assert p.evaluate(texts("a@b.io", provider_region="eu-west-1")).decision is Decision.APPROVE
    assert p.evaluate(texts("a@b.io", provider_region="europe-west4")).decision is Decision.APPROVE
    d = p.evaluate(texts("a@b.io", provider_region="us-east-1"))
    assert (d.decision, d.status, d.reason_code) == (Decision.REJECT_HARD, 403, "DATA_RESIDENCY")
    assert d.reasons == ("pii data may not go to region us-east-1",)


def test_untagged_data_goes_anywhere() -> None:
    d = residency().evaluate(texts("nothing personal", provider_region="us-east-1"))
    assert d.decision is Decision.APPROVE and d.hooks[1].decision is Decision.ABSTAIN


def test_exchange_classifications_apply_and_every_rule_must_hold() -> None:
    p = residency()
    meta = {"classifications": frozenset({"confidential"})}
    assert p.evaluate(texts("x", provider_region="eu-central-1", **meta)).decision is Decision.APPROVE
    assert p.evaluate(texts("x", provider_region="eu-west-1", **meta)).blocked
    both = p.evaluate(texts("a@b.io", provider_region="eu-west-1", **meta))
    assert both.reasons == ("confidential data may not go to region eu-west-1",)


def test_unknown_region_constrains_the_router_or_blocks() -> None:
    d = residency().evaluate(texts("a@b.io", classifications=frozenset({"confidential"})))
    assert d.decision is Decision.APPROVE
    assert d.region_constraints == (("eu-*", "europe-west?"), ("eu-central-1",))
    assert d.region_allowed("eu-central-1") and not d.region_allowed("eu-west-1")
    strict = residency(unknownRegion="block").evaluate(texts("a@b.io"))
    assert strict.decision is Decision.REJECT_HARD


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"rules": []},
        {"rules": [{"classification": "pii", "allowedRegions": []}]},
        {"rules": [{"classification": "pii"}]},
    ],
)
def test_config_errors(config: dict[str, object]) -> None:
    with pytest.raises(PolicyConfigError):
        pipeline([hook("residency", "data-residency", config=config)])
