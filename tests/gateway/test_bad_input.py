"""Bad input: each case answered with the right status and the caller's error shape, never a traceback."""

from __future__ import annotations

import socket
import time

import httpx
import nats as nats_py
import psycopg
import pytest
import trio

from nexus import signals
from tests.gateway.conftest import Stack, make_key

CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def post(stack: Stack, path: str, *, key: str | None = None, body: object = CHAT, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(headers or {})
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    if content is not None:
        return httpx.post(stack.gateway + path, content=content, headers={"content-type": "application/json", **h})
    return httpx.post(stack.gateway + path, json=body, headers=h)


def openai_error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"}
    assert "Traceback" not in resp.text
    return err  # type: ignore[no-any-return]


def test_malformed_json(stack: Stack) -> None:
    err = openai_error(post(stack, "/v1/chat/completions", key=stack.key, content=b'{"model": "mock-gpt",'), 400)
    assert "not valid JSON" in str(err["message"])


def test_body_not_an_object(stack: Stack) -> None:
    openai_error(post(stack, "/v1/chat/completions", key=stack.key, body=[1, 2]), 400)


@pytest.mark.parametrize("body,param", [
    ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "mock-gpt", "messages": "hello"}, "messages"),
    ({"model": "mock-gpt", "messages": []}, "messages"),
    ({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
])
def test_wrong_types(stack: Stack, body: dict[str, object], param: str) -> None:
    err = openai_error(post(stack, "/v1/chat/completions", key=stack.key, body=body), 400)
    assert err["param"] == param


def test_missing_model(stack: Stack) -> None:
    err = openai_error(post(stack, "/v1/chat/completions", key=stack.key,
                            body={"messages": [{"role": "user", "content": "x"}]}), 400)
    assert err["param"] == "model"


def test_unknown_model(stack: Stack) -> None:
    err = openai_error(post(stack, "/v1/chat/completions", key=stack.key, body={**CHAT, "model": "gpt-9"}), 404)
    assert err["code"] == "model_not_found"


def test_model_outside_the_keys_scope(stack: Stack) -> None:
    key, _ = make_key(stack, allowed_models=["mock-claude*"])
    err = openai_error(post(stack, "/v1/chat/completions", key=key), 404)
    assert err["code"] == "model_not_found"
    ok = post(stack, "/v1/chat/completions", key=key, body={**CHAT, "model": "mock-claude"})
    assert ok.status_code == 200
    listed = httpx.get(stack.v1 + "/models", headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert [m["id"] for m in listed] == ["mock-claude"]


def test_no_key(stack: Stack) -> None:
    err = openai_error(post(stack, "/v1/chat/completions"), 401)
    assert err["code"] == "auth_failed"


def test_bad_key(stack: Stack) -> None:
    openai_error(post(stack, "/v1/chat/completions", key="nvk_" + "x" * 43), 401)
    openai_error(post(stack, "/v1/chat/completions", key="sk-not-a-virtual-key"), 401)


def test_expired_key(stack: Stack) -> None:
    key, _ = make_key(stack, expires_in=-60)
    assert "expired" in str(openai_error(post(stack, "/v1/chat/completions", key=key), 401)["message"])


def test_revoked_key(stack: Stack) -> None:
    key, _ = make_key(stack, revoked=True)
    assert "revoked" in str(openai_error(post(stack, "/v1/chat/completions", key=key), 401)["message"])


def test_revocation_reaches_the_gateway_within_a_second(stack: Stack) -> None:
    key, key_id = make_key(stack)
    assert post(stack, "/v1/chat/completions", key=key).status_code == 200  # now cached in the gateway
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("UPDATE virtual_key SET revoked_at = now() WHERE id = %s", (key_id,))

    async def publish() -> None:
        nc = await nats_py.connect(stack.nats_url)
        await nc.publish(signals.subject("virtual_key"), signals.encode(key_id))
        await nc.flush()
        await nc.close()

    import asyncio

    asyncio.run(publish())
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if post(stack, "/v1/chat/completions", key=key).status_code == 401:
            return
        time.sleep(0.02)
    pytest.fail("revoked key still accepted one second after the change signal")


def test_key_in_query_string(stack: Stack) -> None:
    resp = httpx.post(stack.v1 + f"/chat/completions?key={stack.key}", json=CHAT)
    assert "URL" in str(openai_error(resp, 400)["message"])
    resp = httpx.post(stack.v1 + f"/chat/completions?api_key={stack.key}", json=CHAT,
                      headers={"authorization": f"Bearer {stack.key}"})
    openai_error(resp, 400)


def test_anthropic_dialect_errors(stack: Stack) -> None:
    resp = httpx.post(stack.v1 + "/messages", json={"model": "nope", "max_tokens": 5,
                                                     "messages": [{"role": "user", "content": "x"}]},
                      headers={"x-api-key": stack.key})
    assert resp.status_code == 404
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    resp = httpx.post(stack.v1 + "/messages", json={"model": "mock-claude", "messages": []},
                      headers={"x-api-key": "nvk_wrong" + "x" * 40})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_gemini_dialect_errors(stack: Stack) -> None:
    resp = httpx.post(stack.gateway + "/v1beta/models/nope:generateContent",
                      json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
                      headers={"x-goog-api-key": stack.key})
    assert resp.status_code == 404
    assert resp.json()["error"]["status"] == "NOT_FOUND"


def test_oversized_body(stack: Stack) -> None:
    # The default limit is 32 MiB; announce more than that and the server answers before reading it.
    with socket.create_connection(("127.0.0.1", int(stack.gateway.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 40000000\r\n\r\n")
        sock.settimeout(5)
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")
    assert b'"error"' in head


def test_slowloris_headers_get_408(stack: Stack) -> None:
    port = int(stack.gateway.rsplit(":", 1)[1])

    async def slow() -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            with trio.fail_after(20):
                data = b""
                # Keep dribbling a header byte by byte until the server gives up on us.
                while True:
                    try:
                        await stream.send_all(b"x")
                    except trio.BrokenResourceError:
                        break
                    with trio.move_on_after(0.5):
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            break
                        data += chunk
            return data

    started = time.monotonic()
    answer = trio.run(slow)
    assert time.monotonic() - started < 15  # the default header timeout is 10 s
    assert answer.startswith(b"HTTP/1.1 408")


def test_unknown_route_and_method(stack: Stack) -> None:
    openai_error(httpx.get(stack.v1 + "/nope"), 404)
    openai_error(httpx.get(stack.v1 + "/chat/completions", headers={"authorization": f"Bearer {stack.key}"}), 405)
