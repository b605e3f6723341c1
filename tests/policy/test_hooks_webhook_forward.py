"""webhook-forward: one CallWebhook command and the answer's decision (nexus/policy/hooks/webhook_forward.py)."""

from __future__ import annotations

import orjson
import pytest

from nexus.policy.commands import CallWebhook, WebhookReply
from nexus.policy.config import PolicyConfigError
from nexus.policy.exchange import Exchange, apply_segments
from nexus.policy.verdict import Decision, StageDecision
from tests.policy.hookkit import chat, hook, pipeline

URL = "https://guard.example.test/v1/check"
BODY = chat("héllo wörld", "second text")


def run_with(answer: bytes, status: int = 200, fail: str = "fail-open", **config: object) -> StageDecision:
    p = pipeline([hook("guard", "webhook-forward", config={"url": URL, **config}, fail_behavior=fail, timeout_ms=1500)])
    run = p.start(Exchange.for_request(BODY, ingress="agent", org_id="o1", source_ip="192.0.2.9", request_id="r1"))
    command = run.next()
    assert isinstance(command, CallWebhook)
    d = run.send(WebhookReply(status, answer))
    assert isinstance(d, StageDecision)
    return d


def test_the_request_carries_metadata_and_text() -> None:
    p = pipeline([hook("guard", "webhook-forward", config={"url": URL, "headers": {"authorization": "Bearer t"}})])
    command = p.start(Exchange.for_request(BODY, ingress="agent", org_id="o1", source_ip="192.0.2.9")).next()
    assert isinstance(command, CallWebhook)
    assert (command.url, command.timeout_s, command.hook_id) == (URL, 1.0, "id-guard")
    assert command.headers == (("content-type", "application/json"), ("authorization", "Bearer t"))
    sent = orjson.loads(command.body)
    assert sent["stage"] == "request" and sent["ingress"] == "agent" and sent["orgId"] == "o1"
    assert sent["sourceIp"] == "192.0.2.9" and sent["model"] == "m"
    assert sent["segments"] == [
        {"locator": ["messages", 0, "content"], "text": "héllo wörld"},
        {"locator": ["messages", 1, "content"], "text": "second text"},
    ]
    quiet = pipeline([hook("guard", "webhook-forward", config={"url": URL, "sendText": False})])
    command = quiet.start(Exchange.for_request(BODY, ingress="agent")).next()
    assert isinstance(command, CallWebhook) and "segments" not in orjson.loads(command.body)


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        ("approve", Decision.APPROVE),
        ("ALLOW", Decision.APPROVE),
        ("block", Decision.REJECT_HARD),
        ("reject_hard", Decision.REJECT_HARD),
        ("block_soft", Decision.BLOCK_SOFT),
        ("abstain", Decision.ABSTAIN),
        ("redact", Decision.APPROVE),
    ],
)
def test_decisions(decision: str, expected: Decision) -> None:
    d = run_with(orjson.dumps({"decision": decision, "reason": "because", "reasonCode": "EXT"}))
    assert d.decision is expected
    if expected.blocks:
        assert d.reasons == ("because",) and d.reason_code == "EXT"


def test_redactions_index_segments_in_characters() -> None:
    answer = {
        "decision": "redact",
        "redactions": [
            {"segment": 0, "start": 6, "end": 11, "ruleId": "WORLD"},
            {"segment": 1, "start": 0, "end": 6, "replacement": "[X]"},
        ],
    }
    d = run_with(orjson.dumps(answer))
    assert d.decision is Decision.MODIFY and d.rule_ids == ("WORLD", "WEBHOOK")
    assert apply_segments(BODY, d.rewrites) == chat("héllo [REDACTED_WORLD]", "[X] text")


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (b"{}", 500, "webhook answered 500"),
        (b"not json", 200, "not JSON"),
        (b"[1]", 200, "not an object"),
        (b'{"decision": "maybe"}', 200, "is not one of"),
        (b'{"decision": "redact", "redactions": {"a": 1}}', 200, "must be a list"),
        (b'{"decision": "redact", "redactions": [{"start": 0, "end": 99}]}', 200, "outside the text"),
        (b'{"decision": "redact", "redactions": [{"segment": 5, "start": 0, "end": 1}]}', 200, "outside the text"),
        (b'{"decision": "redact", "redactions": [{"start": "0", "end": 1}]}', 200, "integer"),
    ],
)
@pytest.mark.parametrize("fail", ["fail-open", "fail-closed"])
def test_bad_answers_go_through_fail_behavior(answer: bytes, status: int, error: str, fail: str) -> None:
    d = run_with(answer, status, fail)
    assert error in (d.hooks[0].error or "")
    assert d.decision is (Decision.REJECT_HARD if fail == "fail-closed" else Decision.ABSTAIN)


@pytest.mark.parametrize("config", [{}, {"url": "ftp://x"}, {"url": "https://"}, {"url": URL, "extra": 1}])
def test_config_errors(config: dict[str, object]) -> None:
    with pytest.raises(PolicyConfigError):
        pipeline([hook("guard", "webhook-forward", config=config)])
