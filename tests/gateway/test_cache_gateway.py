"""The exact and semantic caches through real gateways.

Exact: hit and miss, scope isolation between keys, the no-cache header, hits replayed as streams, streamed misses
recorded and replayed byte for byte (a plain answer from a recorded stream too), broken or abandoned streams never
stored, and 50 identical concurrent requests — plain or streamed — across two gateways reaching the upstream once.

Semantic: a paraphrase hits above the threshold and another question misses, on the same gateway and on another
(NATS), never across keys; the built-in index survives a restart; a failing embedding endpoint opens the breaker
while requests still succeed as misses; errored, blocked and redacted answers are never indexed.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import psycopg
import pytest
import trio

from nexus.devstack import services
from nexus.mock.embeddings import embed
from tests.gateway.conftest import (
    Stack,
    daemon_env,
    extra_gateway,
    make_key,
    mock_requests,
    publish_signal,
    start_daemon,
    stop,
    wait_ready,
)

CACHE_ON = {"NEXUS_GATEWAY__CACHE__ENABLED": "true"}


@pytest.fixture(scope="module")
def cached(stack: Stack, valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("cache")
    with contextlib.ExitStack() as cm:
        a = cm.enter_context(extra_gateway(stack, valkey_url, root / "a", **CACHE_ON))
        b = cm.enter_context(extra_gateway(stack, valkey_url, root / "b", **CACHE_ON))
        yield a, b


def _chat(url: str, key: str, text: str, *, stream: bool = False, headers: dict[str, str] | None = None,
          system: str | None = None) -> httpx.Response:
    messages = [{"role": "system", "content": system}] if system is not None else []
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", **(headers or {})},
                      json={"model": "mock-gpt", "stream": stream,
                            "messages": [*messages, {"role": "user", "content": text}]})


def _upstream_count(stack: Stack, marker: str) -> int:
    return len([r for r in mock_requests(stack) if marker in str(r["body"])])


def test_miss_then_hit(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    first = _chat(cached[0], stack.key, marker)
    second = _chat(cached[0], stack.key, marker)
    assert (first.headers["x-nexus-cache"], second.headers["x-nexus-cache"]) == ("miss", "hit")
    assert first.json()["choices"][0]["message"]["content"] == second.json()["choices"][0]["message"]["content"]
    assert _upstream_count(stack, marker) == 1
    # The other gateway shares the cache.
    assert _chat(cached[1], stack.key, marker).headers["x-nexus-cache"] == "hit"


def test_scope_isolates_keys(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    other, _ = make_key(stack)
    _chat(cached[0], stack.key, marker)
    assert _chat(cached[0], other, marker).headers["x-nexus-cache"] == "miss"


def test_no_cache_header(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    _chat(cached[0], stack.key, marker)
    again = _chat(cached[0], stack.key, marker, headers={"x-nexus-no-cache": "1"})
    assert again.headers["x-nexus-cache"] == "bypass"
    assert _upstream_count(stack, marker) == 2


def test_hit_replayed_as_a_stream(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    plain = _chat(cached[0], stack.key, marker).json()["choices"][0]["message"]["content"]
    streamed = _chat(cached[0], stack.key, marker, stream=True)
    assert streamed.headers["x-nexus-cache"] == "hit"
    assert streamed.text.strip().endswith("data: [DONE]")
    frames = [orjson.loads(f[6:]) for f in streamed.text.split("\n\n") if f.startswith("data: {")]
    assert "".join(c["delta"].get("content") or "" for f in frames for c in f["choices"]) == plain
    assert _upstream_count(stack, marker) == 1


def test_errors_are_not_cached(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    assert _chat(cached[0], stack.key, marker, headers={"x-mock-status": "500"}).status_code == 502
    assert _chat(cached[0], stack.key, marker).headers["x-nexus-cache"] == "miss"


def test_fifty_identical_requests_on_two_gateways_call_upstream_once(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex

    async def burst() -> list[httpx.Response]:
        out: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> None:
                out.append(await client.post(
                    cached[i % 2] + "/v1/chat/completions", headers={"authorization": f"Bearer {stack.key}",
                                                                     "x-mock-ttft-ms": "300"},
                    json={"model": "mock-gpt", "messages": [{"role": "user", "content": marker}]}))

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        return out

    results = trio.run(burst)
    assert all(r.status_code == 200 for r in results)
    assert _upstream_count(stack, marker) == 1
    assert sorted(r.headers["x-nexus-cache"] for r in results).count("miss") == 1


def test_passthrough_bypass_cache(stack: Stack, cached: tuple[str, str]) -> None:
    import datetime as dt
    import time

    import psycopg

    from tests.gateway.conftest import publish_signal

    marker = uuid.uuid4().hex
    _chat(cached[0], stack.key, marker)
    reason = f"cache bypass {marker}"
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("INSERT INTO passthrough_setting (tier, bypass_cache, reason, expires_at) VALUES "
                     "('global', true, %s, %s)", (reason, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    publish_signal(stack, "passthrough")
    try:
        deadline = time.monotonic() + 5
        while _chat(cached[0], stack.key, marker).headers["x-nexus-cache"] != "bypass":
            assert time.monotonic() < deadline, "passthrough bypassCache never applied"
            time.sleep(0.1)
    finally:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM passthrough_setting WHERE reason = %s", (reason,))
        publish_signal(stack, "passthrough")
    deadline = time.monotonic() + 5
    while _chat(cached[0], stack.key, marker).headers["x-nexus-cache"] != "hit":
        assert time.monotonic() < deadline, "cache never came back"
        time.sleep(0.1)


# -- streamed misses ------------------------------------------------------------------------------------------------

def _frames(body: bytes) -> list[bytes]:
    return [f for f in body.split(b"\n\n") if f]


def _streamed_text(body: bytes) -> str:
    frames = [orjson.loads(f[6:]) for f in _frames(body) if f.startswith(b"data: {")]
    return "".join(c["delta"].get("content") or "" for f in frames for c in f.get("choices") or ())


def test_stream_miss_is_recorded_and_replayed_byte_identical(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    knobs = {"x-mock-chunks": "7"}
    first = _chat(cached[0], stack.key, marker, stream=True, headers=knobs)
    assert first.status_code == 200 and first.headers["x-nexus-cache"] == "miss"
    assert len(_frames(first.content)) >= 9 and first.content.endswith(b"data: [DONE]\n\n")
    again = _chat(cached[0], stack.key, marker, stream=True)
    elsewhere = _chat(cached[1], stack.key, marker, stream=True)
    assert (again.headers["x-nexus-cache"], elsewhere.headers["x-nexus-cache"]) == ("hit", "hit")
    # What the first client got, byte for byte: same frames, same ids, same boundaries.
    assert again.content == first.content and elsewhere.content == first.content
    assert _frames(again.content) == _frames(first.content)
    # A plain request for the same thing gets the answer assembled from the recorded stream.
    plain = _chat(cached[0], stack.key, marker)
    assert plain.headers["x-nexus-cache"] == "hit"
    body = plain.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == _streamed_text(first.content)
    assert _upstream_count(stack, marker) == 1


def test_anthropic_stream_replayed_byte_identical_and_as_a_message(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex

    def messages(stream: bool) -> httpx.Response:
        return httpx.post(cached[0] + "/v1/messages", timeout=30,
                          headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"},
                          json={"model": "mock-claude", "max_tokens": 200, "stream": stream,
                                "messages": [{"role": "user", "content": marker}]})

    first = messages(True)
    assert first.headers["x-nexus-cache"] == "miss" and b"event: message_stop" in first.content
    again = messages(True)
    assert again.headers["x-nexus-cache"] == "hit" and again.content == first.content
    plain = messages(False)
    assert plain.headers["x-nexus-cache"] == "hit"
    message = plain.json()
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    deltas = [orjson.loads(line[6:]) for line in first.text.splitlines() if line.startswith("data: {")]
    text = "".join(d["delta"].get("text", "") for d in deltas if d.get("type") == "content_block_delta")
    assert message["content"][0]["text"] == text and marker in text
    assert _upstream_count(stack, marker) == 1


def test_broken_streams_are_not_stored(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    broken = _chat(cached[0], stack.key, marker, stream=True, headers={"x-mock-error-after": "2"})
    assert broken.status_code == 200 and b'"error"' in _frames(broken.content)[-1]
    assert _chat(cached[0], stack.key, marker, stream=True).headers["x-nexus-cache"] == "miss"
    # A client that goes away mid-stream leaves nothing behind either.
    gone = uuid.uuid4().hex
    with httpx.stream("POST", cached[0] + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "x-mock-chunks": "20",
                               "x-mock-chunk-delay-ms": "50"},
                      json={"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": gone}]}
                      ) as resp:
        assert resp.headers["x-nexus-cache"] == "miss"
        next(resp.iter_bytes())
    time.sleep(0.3)
    assert _chat(cached[0], stack.key, gone, stream=True).headers["x-nexus-cache"] == "miss"


def test_fifty_identical_streams_on_two_gateways_call_upstream_once(stack: Stack, cached: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex

    async def burst() -> list[httpx.Response]:
        out: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> None:
                out.append(await client.post(
                    cached[i % 2] + "/v1/chat/completions",
                    headers={"authorization": f"Bearer {stack.key}", "x-mock-ttft-ms": "300",
                             "x-mock-chunk-delay-ms": "20"},
                    json={"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": marker}]}))

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        return out

    results = trio.run(burst)
    assert all(r.status_code == 200 for r in results)
    assert _upstream_count(stack, marker) == 1
    assert sorted(r.headers["x-nexus-cache"] for r in results).count("miss") == 1
    # Every follower replayed the leader's stream exactly.
    assert len({r.content for r in results}) == 1


# -- semantic cache -------------------------------------------------------------------------------------------------

QUESTION = "What is the capital city of France and what is its population?"
PARAPHRASE = "Tell me: what is the capital city of France and what is its population?"
OTHER = "What is the capital city of Germany and what is its population?"
THRESHOLD = 0.94
SEMANTIC_ON = {"x-nexus-semantic-cache": "on"}


def _semantic_env(**extra: str) -> dict[str, str]:
    # A generous budget: the shared 2-core box stalls for tens of milliseconds at times (the 20 ms default is
    # tested with a slow embedding endpoint in tests/gateway/cache/test_semantic.py).
    return {**CACHE_ON, "NEXUS_GATEWAY__CACHE__SEMANTIC__ENABLED": "true",
            "NEXUS_GATEWAY__CACHE__SEMANTIC__EMBEDDING_MODEL": "mock-embedding",
            "NEXUS_GATEWAY__CACHE__SEMANTIC__THRESHOLD": str(THRESHOLD),
            "NEXUS_GATEWAY__CACHE__SEMANTIC__BUDGET_MS": "1000", **extra}


def _similarity(a: str, b: str) -> float:
    return float(np.dot(embed(a, 1536), embed(b, 1536)))


@pytest.fixture(scope="module")
def semantic(stack: Stack, valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    assert _similarity(QUESTION, PARAPHRASE) >= THRESHOLD > _similarity(QUESTION, OTHER)
    root = tmp_path_factory.mktemp("semantic")
    with contextlib.ExitStack() as cm:
        a = cm.enter_context(extra_gateway(stack, valkey_url, root / "a", **_semantic_env()))
        b = cm.enter_context(extra_gateway(stack, valkey_url, root / "b", **_semantic_env()))
        yield a, b


def _answer(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def _scope_rows(stack: Stack, key_id: str) -> int:
    with psycopg.connect(stack.db_url) as conn:
        row = conn.execute("SELECT count(*) FROM semantic_cache_entry WHERE scope LIKE %s", (f"vk:{key_id}|policy=%",)
                           ).fetchone()
    assert row is not None
    return int(row[0])


def _eventually_rows(stack: Stack, key_id: str, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _scope_rows(stack, key_id) != expected:
        assert time.monotonic() < deadline, f"expected {expected} semantic rows for key {key_id}"
        time.sleep(0.05)


def test_semantic_hit_above_the_threshold_and_miss_below(stack: Stack, semantic: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex  # in the system prompt: a partition of this test's own
    first = _chat(semantic[0], stack.key, QUESTION, system=marker, headers=SEMANTIC_ON)
    assert first.headers["x-nexus-cache"] == "miss"
    hit = _chat(semantic[0], stack.key, PARAPHRASE, system=marker, headers=SEMANTIC_ON)
    assert hit.headers["x-nexus-cache"] == "semantic"
    assert float(hit.headers["x-nexus-cache-similarity"]) == pytest.approx(_similarity(QUESTION, PARAPHRASE),
                                                                          abs=1e-3)
    assert _answer(hit) == _answer(first) and QUESTION in _answer(hit)  # the mock echoed the first phrasing
    streamed = _chat(semantic[0], stack.key, PARAPHRASE, system=marker, headers=SEMANTIC_ON, stream=True)
    assert streamed.headers["x-nexus-cache"] == "semantic" and _streamed_text(streamed.content) == _answer(first)
    other = _chat(semantic[0], stack.key, OTHER, system=marker, headers=SEMANTIC_ON)
    assert other.headers["x-nexus-cache"] == "miss" and "Germany" in _answer(other)
    # Opt-in: without the header (and no config opting in) the paraphrase goes upstream.
    plain = _chat(semantic[0], stack.key, PARAPHRASE, system=marker)
    assert plain.headers["x-nexus-cache"] == "miss"
    assert _upstream_count(stack, marker) == 3
    bad = _chat(semantic[0], stack.key, PARAPHRASE, system=marker, headers={"x-nexus-semantic-cache": "maybe"})
    assert bad.status_code == 400 and "x-nexus-semantic-cache" in bad.json()["error"]["message"]


def test_semantic_entries_reach_the_other_gateway(stack: Stack, semantic: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    _chat(semantic[0], stack.key, QUESTION, system=marker, headers=SEMANTIC_ON)
    deadline = time.monotonic() + 15  # generous: the entry is stored after the answer, then published
    while True:
        resp = _chat(semantic[1], stack.key, PARAPHRASE + " " * int(time.monotonic() * 1000 % 7), system=marker,
                     headers=SEMANTIC_ON)
        if resp.headers["x-nexus-cache"] == "semantic":
            break
        assert time.monotonic() < deadline, "the other gateway never learnt the entry"
        time.sleep(0.05)
    assert QUESTION in _answer(resp)


def test_semantic_scope_isolates_keys(stack: Stack, semantic: tuple[str, str]) -> None:
    marker = uuid.uuid4().hex
    other, other_id = make_key(stack)
    _chat(semantic[0], stack.key, QUESTION, system=marker, headers=SEMANTIC_ON)
    resp = _chat(semantic[0], other, PARAPHRASE, system=marker, headers=SEMANTIC_ON)
    assert resp.headers["x-nexus-cache"] == "miss" and PARAPHRASE in _answer(resp)
    _eventually_rows(stack, other_id, 1)  # its own answer, in its own scope


def test_semantic_index_survives_a_restart(stack: Stack, valkey_url: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    key, key_id = make_key(stack)
    with extra_gateway(stack, valkey_url, tmp_path / "before", **_semantic_env()) as gw:
        assert _chat(gw, key, QUESTION, system=marker, headers=SEMANTIC_ON).headers["x-nexus-cache"] == "miss"
        _eventually_rows(stack, key_id, 1)
    with extra_gateway(stack, valkey_url, tmp_path / "after", **_semantic_env()) as gw:
        resp = _chat(gw, key, PARAPHRASE, system=marker, headers=SEMANTIC_ON)
        assert resp.headers["x-nexus-cache"] == "semantic" and QUESTION in _answer(resp)
        ready = httpx.get(gw + "/readyz").json()
        assert ready["dependencies"]["semantic-cache"]["ok"]
        assert ready["dependencies"]["semantic-cache"]["detail"].startswith("builtin")
    assert _upstream_count(stack, marker) == 1


def test_semantic_errors_and_hooks_are_never_indexed(stack: Stack, semantic: tuple[str, str]) -> None:
    tag = uuid.uuid4().hex[:6]
    plain, plain_id = make_key(stack, name=f"sem-plain-{tag}")
    redact, redact_id = make_key(stack, name=f"sem-redact-{tag}")
    block, block_id = make_key(stack, name=f"sem-block-{tag}")
    leak = "here you go: aws_secret_access_key = Zx9QmT4vLp2Wn8RcYb6Hs3Jd5Kf7Ga1Ue0Io4PqX keep it safe"
    with psycopg.connect(stack.db_url) as conn:
        for key_id, name, on_match in ((redact_id, f"sem-redact-{tag}", "redact"),
                                       (block_id, f"sem-block-{tag}", "block")):
            conn.execute(
                "INSERT INTO hook_config (name, implementation, stage, stream_mode, config, scope_kind, "
                "virtual_key_id) VALUES (%s, 'rulepack-engine', 'response', 'incremental', %s, 'virtual_key', %s)",
                (name, orjson.dumps({"categories": ["secret-leak"], "onMatch": on_match}).decode(), key_id))
    publish_signal(stack, "hook_config")
    try:
        deadline = time.monotonic() + 90  # the first build compiles every rule
        # (A new prompt each time: an answer from before the hooks applied would be an exact hit.)
        while _chat(semantic[0], block, uuid.uuid4().hex, headers={"x-mock-answer": leak}).status_code != 403:
            assert time.monotonic() < deadline, "hooks never became active"
            time.sleep(0.5)
        for stream in (False, True):
            marker = uuid.uuid4().hex
            redacted = _chat(semantic[0], redact, QUESTION, system=marker, stream=stream,
                             headers={**SEMANTIC_ON, "x-mock-answer": leak})
            assert redacted.status_code == 200 and b"REDACTED" in redacted.content
            blocked = _chat(semantic[0], block, QUESTION, system=marker, stream=stream,
                            headers={**SEMANTIC_ON, "x-mock-answer": leak})
            assert blocked.status_code == 403 or b"blocked by compliance policy" in blocked.content
            failed = _chat(semantic[0], plain, QUESTION, system=marker, stream=stream,
                           headers={**SEMANTIC_ON, "x-mock-status": "500"})
            assert failed.status_code == 502
            clean = _chat(semantic[0], plain, QUESTION, system=marker + "-clean", stream=stream, headers=SEMANTIC_ON)
            assert clean.status_code == 200
        _eventually_rows(stack, plain_id, 2)  # the two clean answers: the counting works
        time.sleep(0.5)  # and nothing else arrives late
        assert (_scope_rows(stack, redact_id), _scope_rows(stack, block_id), _scope_rows(stack, plain_id)) == (0, 0, 2)
    finally:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM hook_config WHERE name LIKE %s", (f"sem-%-{tag}",))
        publish_signal(stack, "hook_config")


def _metric(gateway: str, name: str, result: str) -> float:
    text = httpx.get(gateway + "/metrics").text
    m = re.search(rf'^{name}_total{{result="{result}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_breaker_opens_on_a_failing_embedding_endpoint(stack: Stack, valkey_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    port = services.free_port()
    env = daemon_env(stack.db_url, valkey_url, stack.nats_url, stack.secrets,
                     NEXUS_MOCK_PROVIDER__LISTEN__PORT=str(port), NEXUS_MOCK_PROVIDER__STATUS="503")
    broken = start_daemon("mock-provider", env, tmp_path / "broken-mock.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", broken, tmp_path / "broken-mock.log")
        with psycopg.connect(stack.db_url) as conn:
            provider_id = conn.execute(
                "INSERT INTO provider (name, display_name, adapter, base_url) VALUES (%s, 'failing embeddings', "
                "'openai', %s) RETURNING id", (f"broken-{tag}", f"http://127.0.0.1:{port}/v1")).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO model (provider_id, code, provider_model_id, display_name, modality, "
                "input_micro_usd_per_mtok, output_micro_usd_per_mtok, context_window, default_max_tokens) "
                "VALUES (%s, %s, 'text-embedding-3-small', 'broken', 'embedding', 0, 0, 8192, 4096)",
                (provider_id, f"broken-embedding-{tag}"))
        overrides = _semantic_env(NEXUS_GATEWAY__CACHE__SEMANTIC__EMBEDDING_MODEL=f"broken-embedding-{tag}",
                                  NEXUS_GATEWAY__CACHE__SEMANTIC__BREAKER_FAILURES="3",
                                  NEXUS_GATEWAY__CACHE__SEMANTIC__BREAKER_OPEN_SECONDS="600")
        with extra_gateway(stack, valkey_url, tmp_path / "gw", **overrides) as gw:
            marker = uuid.uuid4().hex
            for i in range(6):
                resp = _chat(gw, stack.key, f"{QUESTION} {i}", system=marker, headers=SEMANTIC_ON)
                assert resp.status_code == 200 and resp.headers["x-nexus-cache"] == "miss"
            embedding_calls = [r for r in httpx.get(f"http://127.0.0.1:{port}/_mock/requests").json()["requests"]
                               if r["path"] == "/v1/embeddings"]
            assert len(embedding_calls) == 3  # then the breaker stopped calling it
            assert (_metric(gw, "nexus_semantic_cache_lookups", "embed_failed"),
                    _metric(gw, "nexus_semantic_cache_lookups", "breaker_open")) == (3.0, 3.0)
            detail = httpx.get(gw + "/readyz").json()["dependencies"]["semantic-cache"]
            assert detail["ok"] and "breaker open" in detail["detail"]
            assert _upstream_count(stack, marker) == 6
    finally:
        stop(broken)
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM model WHERE code = %s", (f"broken-embedding-{tag}",))
            conn.execute("DELETE FROM provider WHERE name = %s", (f"broken-{tag}",))


def test_a_new_response_hook_is_not_bypassed_by_cached_answers(stack: Stack, cached: tuple[str, str]) -> None:
    import time

    import orjson
    import psycopg

    from tests.gateway.conftest import publish_signal

    secret = "Zx9QmT4vLp2Wn8RcYb6Hs3Jd5Kf7Ga1Ue0Io4PqX"
    text = f"{uuid.uuid4().hex} aws_secret_access_key = {secret}"
    key, key_id = make_key(stack)
    assert _chat(cached[0], key, text).headers["x-nexus-cache"] == "miss"
    assert _chat(cached[0], key, text).headers["x-nexus-cache"] == "hit"
    name = f"late-secrets-{key_id}"
    with psycopg.connect(stack.db_url) as conn:
        conn.execute(
            "INSERT INTO hook_config (name, implementation, stage, stream_mode, config, scope_kind, virtual_key_id) "
            "VALUES (%s, 'rulepack-engine', 'response', 'observe', %s, 'virtual_key', %s)",
            (name, orjson.dumps({"categories": ["secret-leak"], "onMatch": "redact"}).decode(), key_id))
    publish_signal(stack, "hook_config")
    try:
        deadline = time.monotonic() + 60  # the first hook compiles the rule packs (seconds, cold)
        while True:
            resp = _chat(cached[0], key, text)
            if resp.headers["x-nexus-cache"] != "hit":
                break
            assert time.monotonic() < deadline, "the cached answer kept being served past the new hook"
            time.sleep(0.1)
        assert secret not in resp.text, "the answer cached before the hook came back unredacted"
    finally:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM hook_config WHERE name = %s", (name,))
        publish_signal(stack, "hook_config")
