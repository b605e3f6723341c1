"""Native shims: Gemini's generateContent routes and Azure's deployment route; same-family passthrough."""

from __future__ import annotations

import json

import httpx
import pytest

from nexus.mock.app import secret_hash
from tests.gateway.conftest import Stack, mock_requests

MODELS = ["mock-gemini", "mock-gpt", "mock-claude"]


@pytest.mark.parametrize("model", MODELS)
def test_gemini_generate_content(stack: Stack, model: str) -> None:
    resp = httpx.post(stack.gateway + f"/v1beta/models/{model}:generateContent", timeout=30,
                      headers={"x-goog-api-key": stack.key},
                      json={"contents": [{"role": "user", "parts": [{"text": "hello gemini route"}]}],
                            "systemInstruction": {"parts": [{"text": "be brief"}]}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    text = "".join(p.get("text", "") for p in body["candidates"][0]["content"]["parts"])
    assert "hello gemini route" in text
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert body["usageMetadata"]["promptTokenCount"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_gemini_stream_generate_content(stack: Stack, model: str) -> None:
    with httpx.stream("POST", stack.gateway + f"/v1beta/models/{model}:streamGenerateContent?alt=sse", timeout=30,
                      headers={"x-goog-api-key": stack.key},
                      json={"contents": [{"role": "user", "parts": [{"text": "stream gemini route"}]}]}) as resp:
        assert resp.status_code == 200
        frames = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    text = "".join(p.get("text", "") for f in frames for c in f.get("candidates", [])
                   for p in c.get("content", {}).get("parts", []))
    assert "stream gemini route" in text
    assert frames[-1]["usageMetadata"]["candidatesTokenCount"] > 0


def test_azure_deployment_route(stack: Stack) -> None:
    resp = httpx.post(stack.gateway + "/openai/deployments/mock-claude/chat/completions?api-version=2024-10-21",
                      headers={"api-key": stack.key}, timeout=30,
                      json={"messages": [{"role": "user", "content": "hello azure route"}]})
    assert resp.status_code == 200, resp.text
    assert "hello azure route" in resp.json()["choices"][0]["message"]["content"]


def test_same_family_passthrough_keeps_the_callers_bytes(stack: Stack) -> None:
    # Unusual key order, spacing and an unknown field: forwarded as sent, only `model` rewritten.
    raw = (b'{ "messages" : [{"role":"user","content":"byte-exact \\u00e9 passthrough"}],\n'
           b'  "x_vendor_field": {"keep": [1, 2.50, true]}, "model":"mock-gpt" }')
    resp = httpx.post(stack.v1 + "/chat/completions", content=raw, timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    seen = [r for r in mock_requests(stack) if "byte-exact" in str(r["body"])][-1]
    assert seen["body"] == raw.decode().replace('"model":"mock-gpt"', '"model":"gpt-4o-mini"')
    headers = {k.lower(): v for k, v in seen["headers"].items()}  # type: ignore[attr-defined]
    # The provider credential, decrypted from the vault, goes upstream; the caller's virtual key never does.
    assert headers["authorization"] == "Bearer " + secret_hash("mock-openai-key")
    assert stack.key not in json.dumps(seen)
