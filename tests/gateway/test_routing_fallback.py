"""Routing through the real gateway against failing upstreams: fallback on 429, 5xx, timeout, connection refused
and an error frame before the first byte; no retry once bytes reached the client; policy deny."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import psycopg
import pytest

from nexus.crypto import secretfiles
from nexus.devstack import services
from tests.gateway.conftest import Stack, daemon_env, mock_requests, publish_signal, start_daemon, stop, wait_ready

FAILURES = {
    "429": {"NEXUS_MOCK_PROVIDER__STATUS": "429"},
    "503": {"NEXUS_MOCK_PROVIDER__STATUS": "503"},
    "err200": {"NEXUS_MOCK_PROVIDER__ERROR_ON_200": "true"},
    "hang": {"NEXUS_MOCK_PROVIDER__HANG": "30"},
}


@pytest.fixture(scope="module")
def failing(stack: Stack, valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One mock provider process per failure kind, registered as providers, plus a dead address; a fallback rule
    per kind: first the failing provider, then the healthy demo provider."""
    logs = tmp_path_factory.mktemp("failing")
    procs, names = [], {}
    tag = uuid.uuid4().hex[:6]
    with psycopg.connect(stack.db_url) as conn:
        for kind, env in [*FAILURES.items(), ("dead", None)]:
            port = services.free_port()
            if env is not None:
                full = daemon_env(stack.db_url, valkey_url, stack.nats_url, stack.secrets,
                                  NEXUS_MOCK_PROVIDER__LISTEN__PORT=str(port), **env)
                proc = start_daemon("mock-provider", full, logs / f"{kind}.log")
                procs.append(proc)
                wait_ready(f"http://127.0.0.1:{port}", proc, logs / f"{kind}.log")
            name = f"fb-{kind}-{tag}"
            pid = conn.execute(
                "INSERT INTO provider (name, adapter, base_url, timeout_ms) VALUES (%s, 'openai', %s, 1000) "
                "RETURNING id", (name, f"http://127.0.0.1:{port}/v1")).fetchone()[0]  # type: ignore[index]
            conn.execute("INSERT INTO model (provider_id, code, provider_model_id) VALUES (%s, %s, 'gpt-4o-mini')",
                         (pid, f"fb-model-{kind}-{tag}"))
            strategy = {"type": "fallback", "targets": [
                {"type": "single", "provider": name, "model": f"fb-model-{kind}-{tag}"},
                {"type": "single", "provider": "mock-openai", "model": "mock-gpt"}]}
            conn.execute(
                "INSERT INTO routing_rule (name, stage, priority, match_conditions, strategy, retry_policy) "
                "VALUES (%s, 1, 100, %s, %s, %s)",
                (f"fb-rule-{kind}-{tag}", orjson.dumps({"model": {"$eq": f"fb-{kind}-{tag}"}}).decode(),
                 orjson.dumps(strategy).decode(), orjson.dumps({"max_retries": 0}).decode()))
            names[kind] = f"fb-{kind}-{tag}"
        conn.execute(
            "INSERT INTO routing_rule (name, stage, priority, match_conditions, strategy) "
            "VALUES (%s, 0, 100, '{}', %s)",
            (f"fb-deny-{tag}", orjson.dumps({"type": "policy", "denyModels": [f"fb-denied-{tag}*"]}).decode()))
        conn.execute("INSERT INTO provider (name, adapter, base_url) VALUES (%s, 'openai', %s)",
                     (f"fb-denyp-{tag}", stack.mock + "/v1"))
        conn.execute("INSERT INTO model (provider_id, code, provider_model_id) SELECT id, %s, 'gpt-4o-mini' "
                     "FROM provider WHERE name = %s", (f"fb-denied-{tag}-m", f"fb-denyp-{tag}"))
        names["denied"] = f"fb-denied-{tag}-m"
    publish_signal(stack, "provider", "model", "routing_rule")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _chat(stack, names["503"]).status_code == 200:
            break
        time.sleep(0.1)
    yield names
    for proc in procs:
        stop(proc)
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("DELETE FROM routing_rule WHERE name LIKE %s", (f"fb-%-{tag}",))
        conn.execute("DELETE FROM provider WHERE name LIKE %s", (f"fb-%-{tag}",))
    publish_signal(stack, "provider", "routing_rule")


def _chat(stack: Stack, model: str, *, stream: bool = False, headers: dict[str, str] | None = None,
          content: str = "route me") -> httpx.Response:
    return httpx.post(stack.v1 + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", **(headers or {})},
                      json={"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]})


def _content(resp: httpx.Response, stream: bool) -> str:
    if not stream:
        return str(resp.json()["choices"][0]["message"]["content"])
    frames = [orjson.loads(f[5:]) for f in resp.text.split("\n\n") if f.startswith("data: {")]
    return "".join(c["delta"].get("content") or "" for f in frames for c in f["choices"])


@pytest.mark.parametrize("kind", ["429", "503", "err200", "hang", "dead"])
@pytest.mark.parametrize("stream", [False, True])
def test_falls_back_before_the_first_byte(stack: Stack, failing: dict[str, str], kind: str, stream: bool) -> None:
    resp = _chat(stack, failing[kind], stream=stream)
    assert resp.status_code == 200, resp.text
    assert "route me" in _content(resp, stream)
    assert resp.headers["x-nexus-provider"] == "mock-openai"
    attempts = resp.headers["x-nexus-attempts"].split(", ")
    assert len(attempts) == 2
    expected = {"429": "outcome=status;status=429", "503": "outcome=status;status=503", "err200": "outcome=error_frame",
                "hang": "outcome=timeout", "dead": "outcome=connect"}[kind]
    assert expected in attempts[0] and "outcome=ok" in attempts[1]


def test_no_retry_after_bytes_reached_the_client(stack: Stack, failing: dict[str, str]) -> None:
    marker = f"late-{uuid.uuid4().hex}"
    # The healthy target fails mid-stream (after two chunks went out): the client gets the error frame, and
    # nothing else is tried.
    resp = _chat(stack, "mock-gpt", stream=True, content=f"{marker} a b c d", headers={"x-mock-error-after": "2"})
    assert resp.status_code == 200
    assert '"error"' in resp.text.strip().split("\n\n")[-1]
    assert len([r for r in mock_requests(stack) if marker in str(r["body"])]) == 1


def test_policy_deny_wins(stack: Stack, failing: dict[str, str]) -> None:
    resp = _chat(stack, failing["denied"])
    assert resp.status_code == 403
    assert "denied by routing policy" in resp.json()["error"]["message"]


def test_simulate_needs_the_service_token(stack: Stack, failing: dict[str, str]) -> None:
    url = stack.gateway + "/internal/routing/simulate"
    assert httpx.post(url, json={"model": "mock-gpt"}).status_code == 401
    assert httpx.post(url, json={"model": "mock-gpt"}, headers={"authorization": "Bearer wrong"}).status_code == 401
    token = secretfiles.service_token(stack.secrets).decode()
    resp = httpx.post(url, json={"model": failing["503"]}, headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert "mock-openai" in resp.text and "fb-503" in resp.text
