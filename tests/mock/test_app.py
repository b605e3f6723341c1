"""The handler's shared flow over a real socket: fault knobs, auth, routing, introspection."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from nexus.mock.app import secret_hash
from tests.mock.conftest import ServeMock, in_thread

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "fault please"}]}
MESSAGES = {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "fault please"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "fault please"}]}]}
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
GEN_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def oai(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=kw.pop("api_key", "sk-test"), max_retries=0, **kw)


def claude(url: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=kw.pop("api_key", "sk-ant"), max_retries=0, **kw)


# ------------------------------------------------------------------------------------------ status


async def test_status_knob_returns_each_dialects_error_shape(mock_url: str) -> None:
    with oai(mock_url) as c:
        with pytest.raises(openai.RateLimitError) as rate:
            await in_thread(
                lambda: c.chat.completions.create(
                    **CHAT, extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"}
                )
            )
        with pytest.raises(openai.InternalServerError) as down:
            await in_thread(lambda: c.embeddings.create(model="m", input="x", extra_headers={"x-mock-status": "503"}))
        with pytest.raises(openai.BadRequestError):
            await in_thread(lambda: c.responses.create(model="m", input="x", extra_headers={"x-mock-status": "400"}))
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.body == {  # type: ignore[comparison-overlap]
        "message": "Rate limit reached for requests.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert down.value.status_code == 503 and down.value.response.headers["retry-after"] == "1"
    with claude(mock_url) as c:
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await in_thread(lambda: c.messages.create(**MESSAGES, extra_headers={"x-mock-status": "529"}))  # type: ignore[arg-type]
        with pytest.raises(anthropic.InternalServerError) as internal:
            await in_thread(lambda: c.messages.create(**MESSAGES, extra_headers={"x-mock-status": "500"}))  # type: ignore[arg-type]
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert internal.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    async with httpx.AsyncClient(base_url=mock_url) as http:
        resp = await http.post(GEN, json=GEMINI, headers={"x-mock-status": "429"})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert resp.json() == {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
        }
    }


async def test_process_defaults_apply_and_headers_override(serve_mock: ServeMock) -> None:
    url = await serve_mock(status=503, answer="configured answer")
    async with httpx.AsyncClient(base_url=url) as http:
        failing = await http.post("/v1/chat/completions", json=CHAT)
        overridden = await http.post("/v1/chat/completions", json=CHAT, headers={"x-mock-status": "0"})
    assert failing.status_code == 503 and failing.json()["error"]["type"] == "server_error"
    assert overridden.json()["choices"][0]["message"]["content"] == "configured answer"


async def test_bad_knob_headers_are_400s_naming_the_header(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        bad = await http.post("/v1/messages", json=MESSAGES, headers={"x-mock-chunks": "many"})
        unknown = await http.post("/v1/chat/completions", json=CHAT, headers={"x-mock-colour": "red"})
    assert bad.status_code == 400 and "x-mock-chunks" in bad.json()["error"]["message"]
    assert bad.json()["type"] == "error"
    assert unknown.status_code == 400 and "x-mock-colour" in unknown.json()["error"]["message"]


# ------------------------------------------------------------------------------------------ mid-stream


async def test_mid_stream_error_frame_openai_chat_and_responses(mock_url: str) -> None:
    headers = {"x-mock-chunks": "5", "x-mock-error-after": "2"}
    with oai(mock_url, default_headers=headers) as c:

        def chat() -> tuple[list[str], BaseException | None]:
            got: list[str] = []
            try:
                for ch in c.chat.completions.create(**CHAT, stream=True):  # type: ignore[call-overload]
                    if ch.choices and ch.choices[0].delta.content:
                        got.append(ch.choices[0].delta.content)
            except openai.APIError as exc:
                return got, exc
            return got, None

        got, exc = await in_thread(chat)
        events = await in_thread(lambda: [ev.type for ev in c.responses.create(model="m", input="x", stream=True)])
    assert len(got) == 2
    assert isinstance(exc, openai.APIError) and "error" in str(exc.message).lower()
    assert events.count("response.output_text.delta") == 2
    assert events[-1] == "error" and "response.completed" not in events


async def test_mid_stream_error_frame_anthropic(mock_url: str) -> None:
    with claude(mock_url, default_headers={"x-mock-chunks": "4", "x-mock-error-after": "3"}) as c:

        def run() -> tuple[str, BaseException | None]:
            text = ""
            try:
                with c.messages.stream(**MESSAGES) as stream:  # type: ignore[arg-type]
                    for piece in stream.text_stream:
                        text += piece
            except anthropic.APIStatusError as exc:
                return text, exc
            return text, None

        text, exc = await in_thread(run)
    assert text and "Echo: fault please".startswith(text) and text != "Echo: fault please"
    assert isinstance(exc, anthropic.APIStatusError)
    assert exc.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_mid_stream_error_frame_gemini_sse_and_array(mock_url: str) -> None:
    headers = {"x-mock-chunks": "4", "x-mock-error-after": "1"}
    async with httpx.AsyncClient(base_url=mock_url, headers=headers) as http:
        sse = await http.post(GEN_STREAM, params={"alt": "sse"}, json=GEMINI)
        array = await http.post(GEN_STREAM, json=GEMINI)
        first = await http.post(GEN_STREAM, json=GEMINI, headers={"x-mock-error-after": "0"})
    frames = [json.loads(b[6:]) for b in sse.text.split("\r\n\r\n") if b]
    assert len(frames) == 2 and "candidates" in frames[0]
    assert frames[1]["error"]["status"] == "INTERNAL"
    items = json.loads(array.text)
    assert len(items) == 2 and items[1]["error"]["code"] == 500
    assert json.loads(first.text) == [{"error": items[1]["error"]}]


async def test_error_on_200_sends_the_error_first(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url, headers={"x-mock-error-on-200": "true"}) as http:
        plain = await http.post("/v1/chat/completions", json=CHAT)
        streamed = await http.post("/v1/messages", json={**MESSAGES, "stream": True})
    assert plain.status_code == 200 and plain.json()["error"]["type"] == "server_error"
    assert streamed.status_code == 200
    assert streamed.text.startswith("event: error\ndata: ")
    assert streamed.text.count("event:") == 1


async def test_close_after_truncates_the_stream(mock_url: str) -> None:
    headers = {"x-mock-chunks": "5", "x-mock-close-after": "2", "x-mock-chunk-delay-ms": "5"}
    with oai(mock_url, default_headers=headers) as c:

        def chat() -> tuple[int, BaseException | None]:
            got = 0
            try:
                for ch in c.chat.completions.create(**CHAT, stream=True):  # type: ignore[call-overload]
                    got += bool(ch.choices and ch.choices[0].delta.content)
            except openai.APIConnectionError as exc:
                return got, exc
            return got, None

        got, exc = await in_thread(chat)
    assert got == 2 and isinstance(exc, openai.APIConnectionError)
    async with httpx.AsyncClient(base_url=mock_url, headers=headers) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(GEN_STREAM, params={"alt": "sse"}, json=GEMINI)
        # The server is still fine after dropping that connection.
        assert (await http.post(GEN, json=GEMINI, headers={"x-mock-close-after": "-1"})).status_code == 200


# ------------------------------------------------------------------------------------------ timing


async def test_hang_until_the_client_gives_up(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url, timeout=0.3) as http:
        start = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=CHAT, headers={"x-mock-hang": "true"})
        assert trio.current_time() - start >= 0.3
        assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_hang_past_its_limit_is_a_504(serve_mock: ServeMock) -> None:
    url = await serve_mock(hang_limit=0.2)
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        resp = await http.post("/v1/messages", json=MESSAGES, headers={"x-mock-hang": "forever"})
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "timeout_error"


async def test_slow_body_dribbles_a_valid_body(mock_url: str) -> None:
    headers = {"x-mock-slow-body-ms": "80", "x-mock-chunks": "4"}
    async with httpx.AsyncClient(base_url=mock_url) as http:
        start = trio.current_time()
        async with http.stream("POST", "/v1/chat/completions", json=CHAT, headers=headers) as resp:
            pieces = [p async for p in resp.aiter_raw()]
        elapsed = trio.current_time() - start
    assert resp.headers["transfer-encoding"] == "chunked"
    # Four slices were written 80 ms apart; a busy reader may still see two of them in one read.
    assert 2 <= len(pieces) <= 4
    assert elapsed >= 0.24
    assert json.loads(b"".join(pieces))["choices"][0]["message"]["content"] == "Echo: fault please"


async def test_ttft_and_chunk_delay(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        start = trio.current_time()
        plain = await http.post("/v1/chat/completions", json=CHAT, headers={"x-mock-ttft-ms": "150"})
        assert trio.current_time() - start >= 0.15 and plain.status_code == 200
        headers = {"x-mock-ttft-ms": "100", "x-mock-chunk-delay-ms": "60", "x-mock-chunks": "4"}
        start = trio.current_time()
        arrivals = []
        async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers) as r:
            first_byte = trio.current_time() - start
            async for piece in r.aiter_raw():
                arrivals.append((trio.current_time() - start, piece))
    assert first_byte >= 0.1
    assert 2 <= len(arrivals) <= 4
    assert arrivals[-1][0] - arrivals[0][0] >= 3 * 0.06
    assert arrivals[-1][1].endswith(b"data: [DONE]\n\n")


# ------------------------------------------------------------------------------------------ auth


async def test_auth_when_a_key_is_configured(serve_mock: ServeMock) -> None:
    url = await serve_mock(api_key="s3cret")
    with oai(url, api_key="wrong") as bad, oai(url, api_key="s3cret") as good:
        with pytest.raises(openai.AuthenticationError) as denied:
            await in_thread(lambda: bad.chat.completions.create(**CHAT))  # type: ignore[call-overload]
        with pytest.raises(openai.AuthenticationError):
            await in_thread(lambda: list(bad.models.list()))
        ok = await in_thread(lambda: good.chat.completions.create(**CHAT))  # type: ignore[call-overload]
    assert denied.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    assert ok.choices[0].message.content == "Echo: fault please"
    with claude(url, api_key="wrong") as bad_c, claude(url, api_key="s3cret") as good_c:
        with pytest.raises(anthropic.AuthenticationError) as denied_c:
            await in_thread(lambda: bad_c.messages.create(**MESSAGES))  # type: ignore[arg-type]
        assert (await in_thread(lambda: good_c.messages.create(**MESSAGES))).content  # type: ignore[arg-type]
    assert denied_c.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    async with httpx.AsyncClient(base_url=url) as http:
        missing = await http.post(GEN, json=GEMINI)
        by_header = await http.post(GEN, json=GEMINI, headers={"x-goog-api-key": "s3cret"})
        by_query = await http.post(GEN, json=GEMINI, params={"key": "s3cret"})
        wrong_query = await http.post(GEN, json=GEMINI, params={"key": "nope"})
        bearer_for_gemini = await http.post(GEN, json=GEMINI, headers={"authorization": "Bearer s3cret"})
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert by_header.status_code == 200 and by_query.status_code == 200
    assert wrong_query.status_code == 401 and bearer_for_gemini.status_code == 401


async def test_without_a_key_configured_anything_goes(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        bare = await http.post("/v1/chat/completions", json=CHAT)
        odd = await http.post("/v1/messages", json=MESSAGES, headers={"x-api-key": "whatever"})
    assert bare.status_code == 200 and odd.status_code == 200


# ------------------------------------------------------------------------------------------ routing


async def test_unknown_paths_and_methods(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        missing = await http.post("/v2/whatever", json={})
        wrong = await http.get("/v1/chat/completions")
        wrong_anthropic = await http.get("/v1/messages")
        junk = await http.post("/v1/chat/completions", content=b"\xff not json")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong.status_code == 405
    assert wrong_anthropic.status_code == 405 and wrong_anthropic.json()["type"] == "error"
    assert junk.status_code == 400 and "JSON" in junk.json()["error"]["message"]


# ------------------------------------------------------------------------------------------ introspection


async def test_introspection_records_masks_limits_and_clears(serve_mock: ServeMock) -> None:
    url = await serve_mock(record_limit=3)
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-live-123"})
        await http.post("/v1/messages", json=MESSAGES, headers={"x-api-key": "ant-key"})
        await http.post(GEN, json=GEMINI, params={"key": "goog-key"})
        await http.post(GEN, json=GEMINI, headers={"x-goog-api-key": "goog-key", "x-trace": "t1"})
        listed = (await http.get("/_mock/requests")).json()
        last = (await http.get("/_mock/requests", params={"limit": "1"})).json()
        cleared = await http.delete("/_mock/requests")
        after = (await http.get("/_mock/requests")).json()
    records = listed["requests"]
    assert listed["recording"] is True
    assert [r["path"] for r in records] == ["/v1/messages", GEN, GEN]
    assert records[0]["headers"]["x-api-key"] == secret_hash("ant-key")
    assert "ant-key" not in json.dumps(listed) and "goog-key" not in json.dumps(listed)
    assert records[1]["query"] == f"key={secret_hash('goog-key')}"
    assert records[2]["headers"]["x-goog-api-key"] == secret_hash("goog-key")
    assert records[2]["headers"]["x-trace"] == "t1"
    assert json.loads(records[0]["body"]) == MESSAGES
    assert records[0]["method"] == "POST" and records[0]["time"] > 0
    assert last["requests"] == records[-1:]
    assert cleared.status_code == 204 and after["requests"] == []


async def test_introspection_masks_bearer_and_can_be_switched_off(mock_url: str, serve_mock: ServeMock) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        await http.delete("/_mock/requests")
        await http.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-live-123"})
        seen = (await http.get("/_mock/requests")).json()["requests"]
    assert seen[0]["headers"]["authorization"] == f"Bearer {secret_hash('sk-live-123')}"
    assert seen[0]["body_bytes"] == len(seen[0]["body"].encode())
    async with httpx.AsyncClient(base_url=mock_url) as http:
        await http.post("/v1/upload-something-big", content=b"a" * (3 << 19))
        big = (await http.get("/_mock/requests", params={"limit": "1"})).json()["requests"][0]
    assert big["body_bytes"] == 3 << 19 and len(big["body"]) == 1 << 20
    off = await serve_mock(record_requests=False)
    async with httpx.AsyncClient(base_url=off) as http:
        await http.post("/v1/chat/completions", json=CHAT)
        listed = (await http.get("/_mock/requests")).json()
    assert listed == {"recording": False, "requests": []}
