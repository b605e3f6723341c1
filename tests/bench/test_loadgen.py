"""bench/loadgen.py: its statistics, its request body, and its open-loop and closed-loop
behaviour against an in-process HttpServer.  Functional checks only: the server's sleeps
set lower bounds, nothing asserts how fast anything is."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from bench.loadgen import (
    LoadSpec,
    chat_body,
    core_ticks,
    core_usage,
    cpu_seconds,
    percentile,
    rss_kib,
    run_load,
    summarize,
)

from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Request, Response

JSON = [(b"content-type", b"application/json")]
ANSWER = b'{"choices":[{"message":{"content":"ok"}}]}'


@asynccontextmanager
async def serving(handler: Callable[[Request], Awaitable[Response]]) -> AsyncIterator[str]:
    """A loopback HttpServer; yields its chat-completions URL."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await nursery.start(HttpServer(handler).serve, listeners)
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
        nursery.cancel_scope.cancel()


def spec(url: str, **changes: Any) -> LoadSpec:
    return attrs.evolve(LoadSpec(url, chat_body(0.5, "m"), warmup=0.0, timeout=5.0), **changes)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 25) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_summarize_sorts_and_scales() -> None:
    s = summarize([0.003, 0.001, 0.002, 0.010], 1000)
    assert s is not None
    assert (s.count, s.p50, s.p99, s.max) == (4, 2.0, 10.0, 10.0)
    assert s.mean == 4.0
    assert summarize([]) is None


@pytest.mark.parametrize("kb", [0.25, 1, 4, 50])
def test_chat_body_has_the_asked_size(kb: float) -> None:
    body = chat_body(kb, "gpt-4o-mini", stream=True)
    assert len(body) == int(kb * 1024)
    payload = json.loads(body)
    assert payload["model"] == "gpt-4o-mini" and payload["stream"] is True
    assert [m["role"] for m in payload["messages"]] == ["system", "user"]
    assert chat_body(kb, "gpt-4o-mini", stream=True) == body  # deterministic


def test_spec_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        LoadSpec("http://127.0.0.1:1/", b"", rate=0)
    with pytest.raises(ValueError):
        LoadSpec("http://127.0.0.1:1/", b"", connections=0)
    LoadSpec("http://127.0.0.1:1/", b"", rate=0, closed=True)


async def test_open_loop_does_not_wait_for_completions() -> None:
    inflight = peak = 0

    async def slow(req: Request) -> Response:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await trio.sleep(0.2)
        inflight -= 1
        return Response(200, JSON, ANSWER)

    async with serving(slow) as url:
        result = await run_load(spec(url, rate=100, duration=0.3, connections=64))
    assert (result.count, result.ok, result.errors) == (30, 30, {})
    # 20 requests are due before the first answer comes back.
    assert peak >= 15
    assert result.latency_ms is not None and result.latency_ms.p50 >= 200


async def test_latency_counts_from_the_scheduled_time() -> None:
    """One connection, a server four times too slow for the rate: requests queue in the
    generator, and that wait is part of their latency (no coordinated omission)."""

    async def slow(req: Request) -> Response:
        await trio.sleep(0.04)
        return Response(200, JSON, ANSWER)

    async with serving(slow) as url:
        result = await run_load(spec(url, rate=100, duration=0.2, connections=1))
    assert (result.count, result.ok) == (20, 20)
    assert result.latency_ms is not None and result.service_ms is not None and result.send_lag_ms is not None
    # The last request is due at 190 ms and sent after the 19 before it, >= 760 ms in.
    assert result.send_lag_ms.max >= 500
    assert result.latency_ms.max >= result.send_lag_ms.max + 40
    assert result.latency_ms.max > 5 * result.service_ms.p50


async def test_errors_by_kind_and_the_overhead_header() -> None:
    n = 0

    async def flaky(req: Request) -> Response:
        nonlocal n
        n += 1
        if n % 2:
            return Response(503, JSON, b'{"error":{}}')
        return Response(200, [*JSON, (b"x-nexus-overhead-ms", b"0.25")], ANSWER)

    async with serving(flaky) as url:
        result = await run_load(spec(url, rate=200, duration=0.1, connections=1))
    assert result.count == 20
    assert result.ok == 10 and result.errors == {"http_503": 10}
    assert result.overhead_header_ms is not None
    assert (result.overhead_header_ms.count, result.overhead_header_ms.mean) == (10, 0.25)


async def test_requests_past_their_deadline_are_timeouts() -> None:
    async def hang(req: Request) -> Response:
        await trio.sleep(30)
        return Response(200, JSON, ANSWER)

    async with serving(hang) as url:
        with trio.fail_after(10):
            result = await run_load(spec(url, rate=20, duration=0.2, connections=2, timeout=0.2))
    assert result.count == 4 and result.ok == 0
    assert "timeout" in result.errors
    assert set(result.errors) <= {"timeout", "timeout_queued"}
    assert sum(result.errors.values()) == 4
    assert result.latency_ms is None


async def test_warmup_requests_are_sent_but_not_measured() -> None:
    seen = 0

    async def count(req: Request) -> Response:
        nonlocal seen
        seen += 1
        return Response(200, JSON, ANSWER)

    async with serving(count) as url:
        result = await run_load(spec(url, rate=100, duration=0.1, warmup=0.1))
    assert seen == 20
    assert result.count == result.ok == 10


async def test_stream_ttft_is_the_first_event() -> None:
    """A comment goes out at once, the first event 100 ms later: TTFT is the event."""

    async def events() -> AsyncIterator[bytes]:
        yield b": keep-alive\n\n"
        await trio.sleep(0.1)
        yield b'data: {"choices":[]}\n\n'
        await trio.sleep(0.1)
        yield b"data: [DONE]\n\n"

    async def sse(req: Request) -> Response:
        return Response(200, [(b"content-type", b"text/event-stream")], events())

    async with serving(sse) as url:
        result = await run_load(spec(url, rate=50, duration=0.1, stream=True))
    assert (result.count, result.ok, result.errors) == (5, 5, {})
    assert result.ttft_ms is not None and result.latency_ms is not None
    assert result.ttft_ms.p50 >= 100
    assert result.latency_ms.p50 >= result.ttft_ms.p50 + 100 - 1


async def test_closed_loop_reports_rate_and_cpu_per_request() -> None:
    async def fast(req: Request) -> Response:
        return Response(200, JSON, ANSWER)

    async with serving(fast) as url:
        result = await run_load(spec(url, closed=True, duration=0.3, warmup=0.1, connections=4, cpu_pid=os.getpid()))
    assert result.mode == "closed" and result.target_rate is None and result.send_lag_ms is None
    assert result.count > 0 and result.ok == result.count and result.errors == {}
    assert result.achieved_rate > 0
    # This process serves and loads at once, so it spent CPU on every request.
    assert result.cpu is not None and result.cpu.seconds > 0
    assert result.cpu.ms_per_request is not None and result.cpu.ms_per_request > 0
    assert result.as_json()["cpu"]["pid"] == os.getpid()
    assert "cpu0" in result.cores


def test_proc_readers_see_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    mem = rss_kib(os.getpid())
    assert mem["VmRSS"] > 1000 and mem["VmHWM"] >= mem["VmRSS"]
    ticks = core_ticks()
    assert "cpu0" in ticks and all(len(v) == 8 for v in ticks.values())


def test_core_usage_splits_busy_idle_and_steal() -> None:
    # user nice system idle iowait irq softirq steal
    before = {"cpu0": [100, 0, 50, 1000, 0, 0, 0, 0], "cpu1": [0] * 8}
    after = {"cpu0": [130, 0, 60, 1050, 0, 0, 0, 10], "cpu1": [0] * 8, "cpu2": [5] * 8}
    usage = core_usage(before, after)
    assert set(usage) == {"cpu0"}  # cpu1 saw no ticks, cpu2 has no first sample
    assert (usage["cpu0"].busy_pct, usage["cpu0"].steal_pct) == (40.0, 10.0)
