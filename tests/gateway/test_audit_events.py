"""Every generation request through the gateway produces exactly one traffic event, whatever happened to it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import nats as nats_py
import pytest

from nexus.audit.events import TrafficEvent, decode
from tests.gateway.conftest import Stack, make_key


class Tap:
    """nats-py, on its own loop in a thread, collecting the gateway's traffic events."""

    def __init__(self, url: str) -> None:
        self.events: list[TrafficEvent] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self, url: str) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._nc = await nats_py.connect(url)

            async def on_msg(msg: object) -> None:
                self.events.append(decode(msg.data))  # type: ignore[attr-defined]

            await self._nc.subscribe("nexus.event.ai-traffic", cb=on_msg)
            await self._nc.flush()
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    def by_request(self, request_id: str, timeout: float = 5.0) -> list[TrafficEvent]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.request_id == request_id]
            if found:
                time.sleep(0.3)  # a duplicate would arrive right behind it
                return [e for e in self.events if e.request_id == request_id]
            time.sleep(0.05)
        return []

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="module")
def tap(stack: Stack) -> Iterator[Tap]:
    t = Tap(stack.nats_url)
    yield t
    t.close()


def _post(stack: Stack, key: str | None, body: dict[str, object], **headers: str) -> tuple[str, httpx.Response]:
    rid = f"test-{uuid.uuid4().hex}"
    h = {"x-request-id": rid, **headers}
    if key:
        h["authorization"] = f"Bearer {key}"
    return rid, httpx.post(stack.v1 + "/chat/completions", json=body, headers=h, timeout=30)


def test_success_event(stack: Stack, tap: Tap) -> None:
    rid, resp = _post(stack, stack.key, {"model": "mock-gpt", "messages": [{"role": "user", "content": "audit me"}]})
    assert resp.status_code == 200
    [event] = tap.by_request(rid)
    assert event.status_code == 200 and event.outcome == "ok"
    assert event.provider == "mock-openai" and event.model == "mock-gpt" and event.requested_model == "mock-gpt"
    assert event.input_tokens > 0 and event.output_tokens > 0 and event.cost_micro_usd >= 0
    assert event.attempt_log and event.attempt_log[0].outcome == "ok"
    kinds = {p.kind: p for p in event.payloads}
    assert b"audit me" in (kinds["request"].body or b"") and b"Echo" in (kinds["response"].body or b"")


def test_stream_event_has_text_and_raw_sse(stack: Stack, tap: Tap) -> None:
    rid, resp = _post(stack, stack.key, {"model": "mock-claude", "stream": True,
                                         "messages": [{"role": "user", "content": "stream audit"}]})
    assert resp.status_code == 200
    [event] = tap.by_request(rid)
    kinds = {p.kind: p for p in event.payloads}
    assert b"stream audit" in (kinds["response"].body or b"")
    assert (kinds["response_stream"].body or b"").startswith(b"data: ")
    assert event.stream and event.output_tokens > 0


@pytest.mark.parametrize("case", ["no_key", "bad_body", "unknown_model", "upstream_error"])
def test_failure_events(stack: Stack, tap: Tap, case: str) -> None:
    body: dict[str, object] = {"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}
    key: str | None = stack.key
    headers = {}
    if case == "no_key":
        key = None
    elif case == "bad_body":
        body = {"model": "mock-gpt", "messages": "nope"}
    elif case == "unknown_model":
        body["model"] = "no-such-model"
    else:
        headers["x-mock-status"] = "500"
    rid, resp = _post(stack, key, body, **headers)
    assert resp.status_code >= 400
    [event] = tap.by_request(rid)
    assert event.status_code == resp.status_code and event.outcome == "error"
    assert event.error_code


def test_client_disconnect_event(stack: Stack, tap: Tap) -> None:
    rid = f"test-{uuid.uuid4().hex}"
    body = b'{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"bye"}]}'
    port = int(stack.gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + stack.key.encode() + b"\r\nx-request-id: " + rid.encode() +
                     b"\r\nx-mock-chunks: 40\r\nx-mock-chunk-delay-ms: 100\r\ncontent-length: " +
                     str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    [event] = tap.by_request(rid)
    assert event.client_closed and event.outcome == "client_closed"


def test_revoked_key_event_names_no_key(stack: Stack, tap: Tap) -> None:
    key, _ = make_key(stack, revoked=True)
    rid, resp = _post(stack, key, {"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 401
    [event] = tap.by_request(rid)
    assert event.virtual_key_id is None and event.error_code == "auth_failed"


def test_embeddings_event(stack: Stack, tap: Tap) -> None:
    rid = f"test-{uuid.uuid4().hex}"
    resp = httpx.post(stack.v1 + "/embeddings", json={"model": "mock-embedding", "input": "embed me"},
                      headers={"authorization": f"Bearer {stack.key}", "x-request-id": rid}, timeout=30)
    assert resp.status_code == 200
    [event] = tap.by_request(rid)
    assert event.endpoint_type == "embeddings" and event.model == "mock-embedding" and event.input_tokens > 0
    assert event.status_code == 200 and event.outcome == "ok"
