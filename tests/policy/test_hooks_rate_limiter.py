"""rate-limiter: the count is a command to the shell (nexus/policy/hooks/rate_limiter.py)."""

from __future__ import annotations

import pytest

from nexus.policy.commands import CounterReply, IncrementCounter
from nexus.policy.config import PolicyConfigError
from nexus.policy.verdict import Decision, StageDecision
from tests.policy.hookkit import hook, pipeline, texts


@pytest.mark.parametrize(
    ("by", "meta", "key"),
    [
        ("ip", {"source_ip": "192.0.2.1"}, "ip:192.0.2.1"),
        ("key", {"key_id": "k1"}, "key:k1"),
        ("user", {"user_id": "u1"}, "user:u1"),
        ("project", {"project_id": "p1"}, "project:p1"),
        ("org", {"org_id": "o1"}, "org:o1"),
    ],
)
def test_counts_per_axis(by: str, meta: dict[str, str], key: str) -> None:
    p = pipeline([hook("rl", "rate-limiter", config={"by": by, "limit": 3, "windowSeconds": 10})])
    run = p.start(texts("x", **meta))
    assert run.next() == IncrementCounter(f"nexus:rl:id-rl:{key}", 10.0, 1, hook_id="id-rl", timeout_s=1.0)
    d = run.send(CounterReply(3, 4.0))
    assert isinstance(d, StageDecision) and d.decision is Decision.APPROVE


def test_over_the_limit_blocks_soft_with_retry_after() -> None:
    p = pipeline([hook("rl", "rate-limiter", config={"limit": 3})])
    run = p.start(texts("x", key_id="k1"))
    run.next()
    d = run.send(CounterReply(4, 12.5))
    assert isinstance(d, StageDecision)
    assert (d.decision, d.status, d.retry_after_s, d.reason_code) == (Decision.BLOCK_SOFT, 429, 12.5, "RATE_LIMITED")


def test_missing_identity_abstains_without_a_command() -> None:
    p = pipeline([hook("rl", "rate-limiter", config={"by": "user", "limit": 3})])
    d = p.start(texts("x", key_id="k1")).next()
    assert isinstance(d, StageDecision) and d.decision is Decision.ABSTAIN


@pytest.mark.parametrize("config", [{}, {"limit": 0}, {"limit": 1, "by": "host"}, {"limit": 1, "windowSeconds": 0}])
def test_config_errors(config: dict[str, object]) -> None:
    with pytest.raises(PolicyConfigError):
        pipeline([hook("rl", "rate-limiter", config=config)])
