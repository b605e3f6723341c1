"""The engine passes its own contract (nexus/policy/contract.py) for every ingress."""

from __future__ import annotations

import attrs
import pytest

from nexus.policy import contract
from nexus.policy.commands import IncrementCounter
from nexus.policy.verdict import Decision
from tests.policy.hookkit import SCANNERS


@pytest.mark.parametrize("ingress", ["gateway", "proxy", "agent"])
@pytest.mark.parametrize("case", contract.CASES, ids=[c.name for c in contract.CASES])
def test_case(case: contract.Case, ingress: str) -> None:
    outcome = contract.run_case(case, ingress, SCANNERS)  # type: ignore[arg-type]
    assert contract.check(case, outcome.decision, outcome.body, outcome.commands) == []


def test_cases_cover_every_decision_and_both_content_stages() -> None:
    assert {c.expect for c in contract.CASES} == set(Decision)
    assert {c.stage for c in contract.CASES} == {"connection", "request", "response"}
    implementations = {h.implementation for c in contract.CASES for h in c.hooks}
    assert implementations == {
        "rulepack-engine",
        "pii-detector",
        "keyword-filter",
        "request-size-validator",
        "ip-access-filter",
        "rate-limiter",
        "webhook-forward",
        "data-residency",
    }
    assert len({c.name for c in contract.CASES}) == len(contract.CASES)


def test_check_reports_every_difference() -> None:
    case = next(c for c in contract.CASES if c.name == "email in the system prompt is redacted")
    outcome = contract.run_case(case, scanners=SCANNERS)
    wrong = attrs.evolve(outcome.decision, decision=Decision.APPROVE, rule_ids=(), status=418)
    problems = contract.check(case, wrong, case.body)
    assert [p.split(" ")[0] for p in problems] == ["decision", "rule", "status", "body"]


def test_script_refuses_commands_it_has_no_reply_for() -> None:
    with pytest.raises(AssertionError, match="no reply left"):
        contract.Script([])(IncrementCounter("k", 1.0))
