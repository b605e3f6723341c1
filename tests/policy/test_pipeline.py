"""The chain per snapshot and the sans-IO dispatch loop (nexus/policy/pipeline.py), as event scripts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Generator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.policy.commands import (
    CallWebhook,
    Command,
    CounterReply,
    Failure,
    IncrementCounter,
    Reply,
    Timeout,
    WebhookReply,
)
from nexus.policy.config import HookConfig, PolicyConfigError, RuleOverride
from nexus.policy.exchange import Exchange, apply_segments
from nexus.policy.hooks.base import HookContext, IOHook, PureHook
from nexus.policy.matching import RuleIndex
from nexus.policy.pipeline import BoundHook, Pipeline, PipelineError, drive
from nexus.policy.verdict import ABSTAIN, Decision, StageDecision, Verdict, approve, block
from tests.policy.hookkit import RULES, SCANNERS, SECRET, chat, hook, pipeline, rule, texts

ENGINE_MODULES = [
    "nexus.policy.exchange",
    "nexus.policy.verdict",
    "nexus.policy.commands",
    "nexus.policy.config",
    "nexus.policy.matching",
    "nexus.policy.pipeline",
    "nexus.policy.stream",
    "nexus.policy.passthrough",
    "nexus.policy.contract",
    "nexus.policy.hooks.registry",
]


def test_engine_imports_no_trio_and_no_io() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in ENGINE_MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('trio', 'httpx', 'socket', 'ssl', 'asyncio', 'psycopg', 'redis', 'nats'))\n" + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


# -- hooks written for these tests: they exercise the outer positions, not an implementation ----------


class Fixed(PureHook):
    __slots__ = ("seen", "verdict")

    def __init__(self, config: HookConfig, verdict: Verdict) -> None:
        super().__init__(config)
        self.verdict = verdict
        self.seen: list[str] = []

    def evaluate(self, ctx: HookContext) -> Verdict:
        self.seen.append(ctx.exchange.request_id or "")
        return self.verdict


class Raises(PureHook):
    __slots__ = ()

    def evaluate(self, ctx: HookContext) -> Verdict:
        raise KeyError("bug")


class Asks(IOHook):
    """Two commands, then approve; raises if a reply is not a counter."""

    __slots__ = ()

    def run(self, ctx: HookContext) -> Generator[Command, Reply, Verdict]:
        first = yield IncrementCounter("a", 1.0)
        second = yield IncrementCounter("b", 1.0)
        assert isinstance(first, CounterReply) and isinstance(second, CounterReply)
        return approve((f"{first.count}+{second.count}",))


def custom(*hooks: PureHook | IOHook) -> Pipeline:
    return Pipeline(
        sorted((BoundHook.of(h) for h in hooks), key=lambda b: b.config.priority), RuleIndex([], [], SCANNERS), "t"
    )


def names(decision: StageDecision) -> list[str]:
    return [r.name for r in decision.hooks]


# -- ordering, selection, short circuit ----------------------------------------------------------------


def test_hooks_run_by_ascending_priority_then_name() -> None:
    p = pipeline(
        [
            hook("c", "request-size-validator", priority=5),
            hook("b", "request-size-validator", priority=-1),
            hook("a", "request-size-validator", priority=5),
            hook("d", "request-size-validator", priority=2),
        ]
    )
    assert names(p.evaluate(texts("x"))) == ["b", "d", "a", "c"]


def test_chain_follows_stage_ingress_scope_and_enabled() -> None:
    p = pipeline(
        [
            hook("all", "request-size-validator"),
            hook("proxy-only", "request-size-validator", ingress="proxy"),
            hook("response", "request-size-validator", stage="response"),
            hook("off", "request-size-validator", enabled=False),
            hook("org", "request-size-validator", scope=("org", "o1")),
            hook("project", "request-size-validator", scope=("project", "p1"), priority=-1),
            hook("key", "request-size-validator", scope=("virtual_key", "k1"), priority=1),
        ]
    )
    assert names(p.evaluate(texts("x"))) == ["all"]
    assert names(p.evaluate(texts("x", ingress="proxy"))) == ["all", "proxy-only"]
    assert names(p.evaluate(texts("x", stage="response"))) == ["response"]
    assert names(p.evaluate(texts("x", org_id="o2", project_id="p2", key_id="k2"))) == ["all"]
    both = texts("x", org_id="o1", project_id="p1", key_id="k1")
    assert names(p.evaluate(both)) == ["project", "all", "org", "key"]
    assert names(p.evaluate(both)) == ["project", "all", "org", "key"]  # the memoised chain
    assert names(p.evaluate(texts("x", org_id="o1"))) == ["all", "org"]


def test_a_block_short_circuits_and_precedence_decides_the_rest() -> None:
    later = Fixed(hook("later", "keyword-filter", priority=9), approve(("never",)))
    p = custom(
        Fixed(hook("abstains", "keyword-filter", priority=0), ABSTAIN),
        Fixed(hook("approves", "keyword-filter", priority=1), approve(("fine",))),
        Fixed(hook("soft", "keyword-filter", priority=2), block(("soft rule",), ("R1",), hard=False, status=429)),
        later,
    )
    d = p.evaluate(texts("x"))
    assert d.decision is Decision.BLOCK_SOFT and d.blocked
    assert names(d) == ["abstains", "approves", "soft"]
    assert later.seen == []
    assert (d.reasons, d.rule_ids, d.status) == (("soft rule",), ("R1",), 429)

    quiet = custom(
        Fixed(hook("a", "keyword-filter", priority=0), approve(("a ok",))),
        Fixed(hook("b", "keyword-filter", priority=1), ABSTAIN),
    )
    d = quiet.evaluate(texts("x"))
    assert (d.decision, d.reasons, d.blocked) == (Decision.APPROVE, ("a ok",), False)
    assert custom().evaluate(texts("x")).decision is Decision.ABSTAIN


# -- fail behavior: a fixed outer position ---------------------------------------------------------------


@pytest.mark.parametrize("fail", ["fail-open", "fail-closed"])
def test_a_raising_hook_goes_through_its_fail_behavior(fail: str) -> None:
    p = custom(
        Raises(hook("buggy", "keyword-filter", fail_behavior=fail)),
        Fixed(hook("next", "keyword-filter", priority=1), approve()),
    )
    d = p.evaluate(texts("x"))
    result = d.hooks[0]
    assert result.error == "KeyError: 'bug'"
    if fail == "fail-open":
        assert result.failed == "open" and result.decision is Decision.ABSTAIN
        assert d.decision is Decision.APPROVE and names(d) == ["buggy", "next"]
    else:
        assert result.failed == "closed" and result.decision is Decision.REJECT_HARD
        assert d.decision is Decision.REJECT_HARD and d.reason_code == "HOOK_FAILED_CLOSED" and names(d) == ["buggy"]


@pytest.mark.parametrize("fail", ["fail-open", "fail-closed"])
@pytest.mark.parametrize("reply", [Timeout(), Failure("connection refused")], ids=["timeout", "failure"])
def test_command_timeouts_and_errors_go_through_fail_behavior(fail: str, reply: Reply) -> None:
    cfg = hook("rl", "rate-limiter", config={"limit": 5}, fail_behavior=fail, timeout_ms=250)
    p = pipeline([cfg, hook("size", "request-size-validator", priority=1)])
    run = p.start(texts("x", key_id="k1"))
    command = run.next()
    assert command == IncrementCounter("nexus:rl:id-rl:key:k1", 60.0, 1, hook_id="id-rl", timeout_s=0.25)
    d = run.send(reply)
    assert isinstance(d, StageDecision)
    error = "timeout" if isinstance(reply, Timeout) else "connection refused"
    assert d.hooks[0].error == error
    if fail == "fail-open":
        assert d.decision is Decision.APPROVE and names(d) == ["rl", "size"]
    else:
        assert d.decision is Decision.REJECT_HARD and names(d) == ["rl"]
        assert error in d.reasons[0]


def test_a_wrong_reply_type_fails_the_hook() -> None:
    p = pipeline([hook("rl", "rate-limiter", config={"limit": 5}, fail_behavior="fail-closed")])
    run = p.start(texts("x", key_id="k1"))
    run.next()
    d = run.send(WebhookReply(200, b"{}"))
    assert isinstance(d, StageDecision)
    assert d.decision is Decision.REJECT_HARD and "expected a counter reply" in (d.hooks[0].error or "")


def test_protocol_is_next_then_one_send_per_command() -> None:
    p = custom(Asks(hook("asks", "rate-limiter", timeout_ms=70)))
    run = p.start(texts("x"))
    with pytest.raises(PipelineError):
        run.send(CounterReply(1, 1.0))
    first = run.next()
    assert first == IncrementCounter("a", 1.0, hook_id="id-asks", timeout_s=0.07)
    with pytest.raises(PipelineError):
        run.next()
    second = run.send(CounterReply(1, 1.0))
    assert isinstance(second, IncrementCounter) and second.key == "b"
    final = run.send(CounterReply(2, 1.0))
    assert isinstance(final, StageDecision) and final.reasons == ("1+2",)
    assert run.next() is final
    with pytest.raises(PipelineError):
        run.send(CounterReply(3, 1.0))


def test_a_pure_chain_finishes_without_a_command() -> None:
    p = pipeline([hook("rp", "rulepack-engine"), hook("size", "request-size-validator")])
    assert isinstance(p.start(texts("plain words")).next(), StageDecision)


def test_timings_are_microseconds_and_include_the_shells_io() -> None:
    p = pipeline([hook("rl", "rate-limiter", config={"limit": 5}), hook("rp", "rulepack-engine", priority=1)])

    def slow(command: Command) -> Reply:
        time.sleep(0.003)
        return CounterReply(1, 1.0)

    d = drive(p.start(texts("hello", key_id="k")), slow)
    assert d.hooks[0].elapsed_us >= 3000
    assert 0 <= d.hooks[1].elapsed_us < 1_000_000
    assert d.elapsed_us >= d.hooks[0].elapsed_us


# -- redaction, overrides, what later hooks see ------------------------------------------------------------


def test_later_hooks_see_the_redacted_text() -> None:
    p = pipeline(
        [
            hook("pii", "pii-detector", priority=0),
            hook("guard", "webhook-forward", priority=1, config={"url": "https://guard.test/x"}),
        ]
    )
    body = chat("write to bob@mail.example.com please", "and ann@example.org")
    run = p.start(Exchange.for_request(body, ingress="gateway"))
    command = run.next()
    assert isinstance(command, CallWebhook)
    sent = orjson.loads(command.body)
    assert [s["text"] for s in sent["segments"]] == ["write to [REDACTED_EMAIL] please", "and [REDACTED_EMAIL]"]
    assert sent["tags"] == ["pii"]
    d = run.send(WebhookReply(200, b'{"decision": "approve"}'))
    assert isinstance(d, StageDecision) and d.decision is Decision.MODIFY
    assert apply_segments(body, d.rewrites) == chat("write to [REDACTED_EMAIL] please", "and [REDACTED_EMAIL]")


def test_content_hooks_judge_the_text_as_it_came() -> None:
    # The redacting hook runs first, yet the blocking hook still sees the key the address swallowed.
    rules = (
        *RULES,
        rule("URL_PASSWORD", r"://[a-z]{1,20}:(?P<v>[A-Za-z0-9]{8,40})@", "hard", "secret-leak"),
    )
    p = pipeline(
        [
            hook("pii", "pii-detector", priority=0, config={"rules": ["EMAIL"]}),
            hook("secrets", "rulepack-engine", priority=1, config={"rules": ["URL_PASSWORD"]}),
        ],
        rules,
    )
    d = p.evaluate(texts("mongodb://svc:k8Vq2LmZp9Rx@cluster0.example.net/db"))
    assert d.decision is Decision.REJECT_HARD
    assert d.rule_ids == ("EMAIL", "URL_PASSWORD")


def test_webhook_spans_in_the_masked_text_map_back() -> None:
    p = pipeline(
        [
            hook("pii", "pii-detector", priority=0),
            hook("guard", "webhook-forward", priority=1, config={"url": "https://guard.test/x"}),
        ]
    )
    text = "to bob@x.io: the launch code is 0000, bye"
    run = p.start(texts(text))
    command = run.next()
    assert isinstance(command, CallWebhook)
    seen = orjson.loads(command.body)["segments"][0]["text"]
    assert seen == "to [REDACTED_EMAIL]: the launch code is 0000, bye"
    start, end = seen.index("EMAIL]"), seen.index(", bye")
    answer = {"decision": "redact", "redactions": [{"start": start, "end": end, "ruleId": "GUARD"}]}
    d = run.send(WebhookReply(200, orjson.dumps(answer)))
    assert isinstance(d, StageDecision)
    # The webhook's span started inside the placeholder: in the original text it covers the address too.
    (span,) = d.hooks[1].spans
    assert (span.start, span.end) == (text.index("bob"), text.index(", bye"))
    assert [s.text for s in d.rewrites] == ["to [REDACTED_GUARD], bye"]


def test_overlapping_matches_of_two_rules_merge_into_one_placeholder() -> None:
    p = pipeline([hook("rp", "rulepack-engine", config={"onMatch": {"soft": "redact", "warn": "redact"}})])
    d = p.evaluate(texts("mail bob@mail.example.com and see www.example.com."))
    assert d.decision is Decision.MODIFY
    assert set(d.rule_ids) == {"EMAIL", "DOMAIN"}
    assert [s.text for s in d.rewrites] == ["mail [REDACTED_EMAIL] and see [REDACTED_DOMAIN]."]


def test_org_overrides_change_severity_or_disable() -> None:
    overrides = [
        RuleOverride(org_id="strict", rule_id="EMAIL", severity="hard"),
        RuleOverride(org_id="lax", rule_id="AWS_KEY", disabled=True),
        RuleOverride(org_id="lax", rule_id="EMAIL", severity="warn"),
    ]
    p = pipeline([hook("rp", "rulepack-engine")], overrides=overrides)
    text = f"bob@x.io {SECRET}"
    assert p.evaluate(texts("bob@x.io")).decision is Decision.BLOCK_SOFT
    assert p.evaluate(texts("bob@x.io", org_id="strict")).decision is Decision.REJECT_HARD
    lax = p.evaluate(texts(text, org_id="lax"))
    assert lax.decision is Decision.APPROVE and lax.rule_ids == ("EMAIL",)
    assert "EMAIL (pii, warn)" in lax.reasons
    assert p.evaluate(texts(text, org_id="other")).decision is Decision.REJECT_HARD


def test_stage_decision_carries_tags_constraints_and_rewrites() -> None:
    p = pipeline(
        [
            hook("pii", "pii-detector", priority=0),
            hook(
                "residency",
                "data-residency",
                priority=1,
                config={"rules": [{"classification": "pii", "allowedRegions": ["eu-*"]}]},
            ),
        ]
    )
    d = p.evaluate(texts("ping a@b.io", "nothing", classifications=frozenset({"internal"})))
    assert d.decision is Decision.MODIFY
    assert d.tags == ("internal", "pii")
    assert d.region_constraints == (("eu-*",),)
    assert [(s.locator, s.text) for s in d.rewrites] == [(("messages", 0, "content"), "ping [REDACTED_EMAIL]")]


def test_build_errors_name_the_hook() -> None:
    with pytest.raises(PolicyConfigError, match=r"'rp'.*unknown rules"):
        pipeline([hook("rp", "rulepack-engine", config={"rules": ["NOPE"]})])
    with pytest.raises(PolicyConfigError, match=r"'rp'.*unknown categories"):
        pipeline([hook("rp", "rulepack-engine", config={"categories": ["nope"]})])
    with pytest.raises(PolicyConfigError, match=r"'rp'.*selects no rules"):
        pipeline([hook("rp", "rulepack-engine", config={"rules": ["AWS_KEY"], "excludeRules": ["AWS_KEY"]})])
    with pytest.raises(PolicyConfigError, match=r"'size'.*maxByts"):
        pipeline([hook("size", "request-size-validator", config={"maxByts": 1})])


# -- redaction correctness with the real scanner ----------------------------------------------------------

_FILLER = st.text(st.characters(codec="utf-8", exclude_characters="@"), max_size=40).map(
    lambda t: t.replace("AKIA", "akia")
)
_PII = pipeline([hook("pii", "pii-detector", config={"rules": ["EMAIL"], "onMatch": "redact"})])


@settings(max_examples=200, deadline=None)
@given(st.lists(_FILLER, min_size=2, max_size=5))
def test_redaction_keeps_every_character_around_the_matches(fillers: list[str]) -> None:
    # Separate each inserted address from multi-byte neighbours by spaces so the rule's \b edges hold.
    emails = [f"user{i}@example{i}.org" for i in range(len(fillers) - 1)]
    parts = [fillers[0]]
    for email, filler in zip(emails, fillers[1:], strict=True):
        parts += [f" {email} ", filler]
    d = _PII.evaluate(texts("".join(parts)))
    out = d.rewrites[0].text
    expected = [fillers[0]]
    for filler in fillers[1:]:
        expected += [" [REDACTED_EMAIL] ", filler]
    assert out == "".join(expected)
