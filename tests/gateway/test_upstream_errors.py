"""Upstream failures in the caller's dialect: statuses, error frames mid-stream, errors after a 200,
timeouts, and a client that goes away cancelling the upstream call."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.gateway.conftest import Stack, extra_gateway, mock_requests

MODELS = ["mock-gpt", "mock-claude", "mock-gemini"]


@pytest.fixture(scope="module")
def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key=stack.key, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", MODELS)
def test_rate_limit_passes_through_with_retry_after(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"})
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.response.headers["x-nexus-provider"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("status,expected", [(500, 502), (503, 502), (400, 400)])
def test_upstream_status_maps(oai: openai.OpenAI, model: str, status: int, expected: int) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"x-mock-status": str(status)})
    assert info.value.status_code == expected
    assert "Traceback" not in info.value.response.text


@pytest.mark.parametrize("model", MODELS)
def test_error_frame_right_after_200_is_an_http_error(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        list(oai.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "x"}],
                                         extra_headers={"x-mock-error-on-200": "true"}))
    assert info.value.status_code >= 400


@pytest.mark.parametrize("model", MODELS)
def test_error_body_with_200_is_an_http_error(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"x-mock-error-on-200": "true"})


@pytest.mark.parametrize("model", MODELS)
def test_mid_stream_error_becomes_openai_error_frame(stack: Stack, model: str) -> None:
    with httpx.stream("POST", stack.v1 + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "x-mock-error-after": "2"},
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]}
                      ) as resp:
        assert resp.status_code == 200
        body = resp.read().decode()
    frames = [f for f in body.split("\n\n") if f.strip()]
    assert '"error"' in frames[-1]
    assert "[DONE]" not in body
    assert any('"content"' in f for f in frames[:-1])


@pytest.mark.parametrize("model", MODELS)
def test_mid_stream_error_becomes_anthropic_error_event(stack: Stack, model: str) -> None:
    client = anthropic.Anthropic(base_url=stack.gateway, api_key=stack.key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError), client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "a b c d e"}],
        extra_headers={"x-mock-error-after": "2"},
    ) as stream:
        for _ in stream:
            pass


@pytest.mark.parametrize("model", MODELS)
def test_mid_stream_error_becomes_response_failed(stack: Stack, model: str) -> None:
    with httpx.stream("POST", stack.v1 + "/responses", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "x-mock-error-after": "2"},
                      json={"model": model, "stream": True, "input": "a b c d e"}) as resp:
        body = resp.read().decode()
    assert "event: response.failed" in body


@pytest.mark.parametrize("model", MODELS)
def test_abrupt_upstream_close_ends_with_error_frame(stack: Stack, model: str) -> None:
    with httpx.stream("POST", stack.v1 + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "x-mock-close-after": "2"},
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
                      ) as resp:
        body = resp.read().decode()
    assert '"error"' in body.strip().split("\n\n")[-1]


def test_client_disconnect_cancels_the_upstream_call(stack: Stack) -> None:
    port = int(stack.gateway.rsplit(":", 1)[1])
    before = _mock_connections(stack)
    marker = f"disconnect-{time.monotonic_ns()}"
    body = (b'{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"' + marker.encode() + b'"}]}')
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + stack.key.encode() + b"\r\nx-mock-chunks: 50\r\n"
                     b"x-mock-chunk-delay-ms: 100\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    # The mock would stream for 5 s; the gateway must drop that upstream connection as soon as its client left.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = [r for r in mock_requests(stack) if marker in str(r.get("body"))]
        if seen:
            break
        time.sleep(0.05)
    assert seen
    time.sleep(0.5)
    assert _mock_connections(stack) <= before


def _mock_connections(stack: Stack) -> int:
    """Established connections into the mock (the gateway's upstream pool plus any live stream)."""
    port = stack.mock.rsplit(":", 1)[1]
    with open("/proc/net/tcp") as f:
        lines = f.read().splitlines()[1:]
    established = 0
    for line in lines:
        parts = line.split()
        local_port = int(parts[1].split(":")[1], 16)
        if local_port == int(port) and parts[3] == "01":
            established += 1
    return established


@pytest.fixture(scope="module")
def impatient_gateway(stack: Stack, valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway whose upstream first-byte and read timeouts are one second."""
    with extra_gateway(stack, valkey_url, tmp_path_factory.mktemp("impatient"),
                       NEXUS_GATEWAY__UPSTREAM_FIRST_BYTE_TIMEOUT="1.0", NEXUS_GATEWAY__UPSTREAM_READ_TIMEOUT="1.0"
                       ) as url:
        yield url


@pytest.mark.parametrize("model", MODELS)
def test_upstream_first_byte_timeout_is_504(stack: Stack, impatient_gateway: str, model: str) -> None:
    started = time.monotonic()
    resp = httpx.post(impatient_gateway + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "x-mock-hang": "10"},
                      json={"model": model, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "timeout"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("model", MODELS)
def test_stalled_stream_ends_with_timeout_frame(stack: Stack, impatient_gateway: str, model: str) -> None:
    with httpx.stream("POST", impatient_gateway + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "x-mock-chunks": "4",
                               "x-mock-chunk-delay-ms": "3000"},
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
                      ) as resp:
        body = resp.read().decode()
    last = body.strip().split("\n\n")[-1]
    assert '"error"' in last and "timeout" in last
