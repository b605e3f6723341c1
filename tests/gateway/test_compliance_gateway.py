"""Compliance through the real gateway with the official SDKs: a card number in a prompt is blocked or redacted
(the upstream never sees it), an AWS secret in an answer is redacted in streams and whole answers, and
passthrough bypasses the hooks visibly."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import openai
import orjson
import psycopg
import pytest

from tests.gateway.conftest import Stack, make_key, mock_requests, publish_signal

CARD = "4526 0181 5908 3012"
SECRET = "Zx9QmT4vLp2Wn8RcYb6Hs3Jd5Kf7Ga1Ue0Io4PqX"  # random, not a documented example key
LEAK = f"here you go: aws_secret_access_key = {SECRET} keep it safe"


def _hook(conn: psycopg.Connection, key_id: str, name: str, implementation: str, stage: str, config: dict[str, object],
          stream_mode: str = "observe") -> None:
    conn.execute(
        "INSERT INTO hook_config (name, implementation, stage, stream_mode, config, scope_kind, virtual_key_id) "
        "VALUES (%s, %s, %s, %s, %s, 'virtual_key', %s)",
        (name, implementation, stage, stream_mode, orjson.dumps(config).decode(), key_id))


@pytest.fixture(scope="module")
def keys(stack: Stack) -> Iterator[dict[str, str]]:
    """Keys with their own hooks (scoped to the key, so other tests are unaffected)."""
    tag = uuid.uuid4().hex[:6]
    made = {name: make_key(stack, name=f"{name}-{tag}")
            for name in ("block", "redact", "answers", "bypass", "stopper")}
    with psycopg.connect(stack.db_url) as conn:
        _hook(conn, made["block"][1], f"pii-block-{tag}", "pii-detector", "request", {"onMatch": "block"})
        _hook(conn, made["redact"][1], f"pii-redact-{tag}", "pii-detector", "request", {"onMatch": "redact"})
        _hook(conn, made["answers"][1], f"secrets-out-{tag}", "rulepack-engine", "response",
              {"categories": ["secret-leak"], "onMatch": "redact"}, stream_mode="incremental")
        _hook(conn, made["bypass"][1], f"pii-bypass-{tag}", "pii-detector", "request", {"onMatch": "block"})
        _hook(conn, made["stopper"][1], f"secrets-stop-{tag}", "rulepack-engine", "response",
              {"categories": ["secret-leak"], "onMatch": "block", "holdBackChars": 64}, stream_mode="incremental")
    publish_signal(stack, "hook_config")
    client = openai.OpenAI(base_url=stack.v1, api_key=made["block"][0], max_retries=0)
    deadline = time.monotonic() + 90  # the first build compiles every rule (later starts load the disk cache)
    while True:
        try:
            client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": f"card {CARD}"}])
        except openai.PermissionDeniedError:
            break
        assert time.monotonic() < deadline, "hooks never became active"
        time.sleep(0.5)
    yield {name: key for name, (key, _id) in made.items()}
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("DELETE FROM hook_config WHERE name LIKE %s", (f"%-{tag}",))
        conn.execute("DELETE FROM passthrough_setting WHERE reason = %s", (f"test {tag}",))
    publish_signal(stack, "hook_config")


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0, timeout=30)


def _upstream_saw(stack: Stack, marker: str) -> list[str]:
    return [str(r["body"]) for r in mock_requests(stack) if marker in str(r["body"])]


def test_card_number_is_blocked_and_never_reaches_upstream(stack: Stack, keys: dict[str, str]) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(openai.PermissionDeniedError) as info:
        _client(stack, keys["block"]).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": f"{marker} charge my card {CARD} please"}])
    assert info.value.status_code == 403
    assert "PII_CREDIT_CARD" in info.value.message
    assert info.value.response.headers["x-nexus-hook"] == "block"
    assert _upstream_saw(stack, marker) == []


@pytest.mark.parametrize("model", ["mock-gpt", "mock-claude"])
def test_card_number_is_redacted_before_upstream(stack: Stack, keys: dict[str, str], model: str) -> None:
    marker = uuid.uuid4().hex
    raw = _client(stack, keys["redact"]).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"{marker} charge my card {CARD} please"}])
    assert raw.headers["x-nexus-hook"] == "modify"
    seen = _upstream_saw(stack, marker)
    assert len(seen) == 1
    assert "4526" not in seen[0] and "3012" not in seen[0]
    assert "[REDACTED_PII_CREDIT_CARD]" in seen[0]
    assert "please" in seen[0]  # the text around the card is intact


def test_clean_prompt_passes(stack: Stack, keys: dict[str, str]) -> None:
    raw = _client(stack, keys["block"]).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "what is the capital of France?"}])
    assert raw.headers["x-nexus-hook"] in ("approve", "abstain")


@pytest.mark.parametrize("model", ["mock-gpt", "mock-claude", "mock-gemini"])
def test_secret_in_answer_is_redacted(stack: Stack, keys: dict[str, str], model: str) -> None:
    resp = _client(stack, keys["answers"]).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "give me the key"}], extra_headers={"x-mock-answer": LEAK})
    text = resp.choices[0].message.content or ""
    assert SECRET not in text and "[REDACTED_SECRET_AWS_SECRET_ACCESS_KEY]" in text
    assert text.startswith("here you go") and text.endswith("keep it safe")


@pytest.mark.parametrize("model", ["mock-gpt", "mock-claude", "mock-gemini"])
def test_secret_in_streamed_answer_is_redacted(stack: Stack, keys: dict[str, str], model: str) -> None:
    stream = _client(stack, keys["answers"]).chat.completions.create(
        model=model, stream=True, messages=[{"role": "user", "content": "give me the key"}],
        extra_headers={"x-mock-answer": LEAK, "x-mock-chunks": "12"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert SECRET not in text and "[REDACTED_SECRET_AWS_SECRET_ACCESS_KEY]" in text
    assert text.startswith("here you go") and text.endswith("keep it safe")


def test_passthrough_bypasses_hooks_visibly(stack: Stack, keys: dict[str, str]) -> None:
    tag = next(iter(keys.values()))[-6:]
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("INSERT INTO passthrough_setting (tier, bypass_hooks, reason, expires_at) "
                     "VALUES ('global', true, %s, %s)",
                     (f"test {tag}", dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    publish_signal(stack, "passthrough")
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                raw = _client(stack, keys["bypass"]).chat.completions.with_raw_response.create(
                    model="mock-gpt", messages=[{"role": "user", "content": f"card {CARD}"}])
                break
            except openai.PermissionDeniedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert raw.headers["x-nexus-hook"] == "bypassed"
    finally:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM passthrough_setting WHERE reason = %s", (f"test {tag}",))
        publish_signal(stack, "passthrough")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # hooks apply again once the gateway reloaded
            try:
                _client(stack, keys["bypass"]).chat.completions.create(
                    model="mock-gpt", messages=[{"role": "user", "content": f"card {CARD}"}])
            except openai.PermissionDeniedError:
                break
            time.sleep(0.1)


def test_block_is_recorded_with_its_rules(stack: Stack, keys: dict[str, str]) -> None:
    from tests.gateway.test_audit_events import Tap

    tap = Tap(stack.nats_url)
    try:
        rid = f"test-{uuid.uuid4().hex}"
        with pytest.raises(openai.PermissionDeniedError):
            _client(stack, keys["block"]).chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": f"card {CARD}"}],
                extra_headers={"x-request-id": rid})
        [event] = tap.by_request(rid)
        assert event.request_decision == "block" and event.outcome == "blocked"
        assert "PII_CREDIT_CARD" in event.rule_ids
        assert event.request_hooks and event.request_hooks[0].decision in ("reject_hard", "block_soft")
        rid = f"test-{uuid.uuid4().hex}"
        _client(stack, keys["redact"]).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": f"card {CARD}"}],
            extra_headers={"x-request-id": rid})
        [event] = tap.by_request(rid)
        assert event.request_decision == "redact"
        request = next(p for p in event.payloads if p.kind == "request")
        assert request.redacted and b"4526" not in (request.body or b"")
    finally:
        tap.close()


@pytest.mark.parametrize("model", ["mock-gpt", "mock-claude"])
def test_hard_match_before_the_first_byte_is_a_403(stack: Stack, keys: dict[str, str], model: str) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        list(_client(stack, keys["stopper"]).chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": "key?"}],
            extra_headers={"x-mock-answer": LEAK, "x-mock-chunks": "12"}))


@pytest.mark.parametrize("model", ["mock-gpt", "mock-claude"])
def test_hard_match_mid_stream_ends_with_an_error_frame(stack: Stack, keys: dict[str, str], model: str) -> None:
    import httpx

    long_answer = "Here is a long and harmless preamble about rotating credentials safely. " * 4 + LEAK
    with httpx.stream("POST", stack.v1 + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {keys['stopper']}", "x-mock-answer": long_answer,
                               "x-mock-chunks": "40", "x-mock-chunk-delay-ms": "15"},
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "key?"}]}
                      ) as resp:
        assert resp.status_code == 200
        body = resp.read().decode()
    assert SECRET not in body
    assert '"content"' in body  # text went out before the secret arrived
    last = body.strip().split("\n\n")[-1]
    assert '"error"' in last and "blocked by compliance policy" in last
    assert "[DONE]" not in body


def test_a_disabled_rule_pack_stops_matching(stack: Stack, keys: dict[str, str]) -> None:
    def answer() -> str:
        reply = _client(stack, keys["answers"]).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": LEAK}])
        return reply.choices[0].message.content or ""

    def set_enabled(enabled: bool) -> None:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("INSERT INTO rule_pack (name, version, enabled) VALUES ('secret-leak', 'test', %s) "
                         "ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled", (enabled,))
        publish_signal(stack, "rule_pack")

    assert SECRET not in answer()
    set_enabled(False)
    try:
        deadline = time.monotonic() + 60  # a different rule set compiles anew
        while SECRET not in answer():
            assert time.monotonic() < deadline, "disabling the pack never took effect"
            time.sleep(0.3)
    finally:
        set_enabled(True)
    deadline = time.monotonic() + 60
    while SECRET in answer():
        assert time.monotonic() < deadline, "re-enabling the pack never took effect"
        time.sleep(0.3)
