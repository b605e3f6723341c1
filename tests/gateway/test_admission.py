"""Admission control: past the in-flight limit the gateway answers 429 with Retry-After at once, in the
OpenAI error shape, and recovers when the load passes."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.gateway.conftest import Stack, extra_gateway


def test_in_flight_limit(stack: Stack, valkey_url: str, tmp_path: Path) -> None:
    with extra_gateway(stack, valkey_url, tmp_path, NEXUS_GATEWAY__HTTP__MAX_INFLIGHT="2") as url:
        results: list[httpx.Response] = []

        def call() -> None:
            results.append(httpx.post(url + "/v1/chat/completions", timeout=30,
                                      headers={"authorization": f"Bearer {stack.key}", "x-mock-ttft-ms": "1500"},
                                      json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        statuses = sorted(r.status_code for r in results)
        assert statuses.count(200) == 2 and statuses.count(429) == 4, statuses
        rejected = next(r for r in results if r.status_code == 429)
        assert rejected.headers["retry-after"] == "1"
        assert rejected.json()["error"]["type"]
        again = httpx.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {stack.key}"},
                           json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}, timeout=30)
        assert again.status_code == 200
