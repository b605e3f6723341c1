"""Budgets through real gateways: two processes share one budget atomically (synchronous and write-behind); a
soft limit alerts once per window across gateways, down to the hub's ``alert`` table; the 429 names the axis in
every dialect; the downgrade action; Valkey going away and coming back empty."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats as nats_py
import orjson
import psycopg
import pytest
import redis
import trio

from nexus.audit.events import decode
from nexus.devstack import services
from tests.gateway.conftest import (
    Stack,
    daemon_env,
    extra_gateway,
    make_key,
    publish_signal,
    start_daemon,
    stop,
    wait_ready,
)


class Policies:
    """Quota policies of one test, removed afterwards (the shared stack gateway reloads on the signal)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ids: list[str] = []

    def add(self, key_id: str, *, unit: str = "requests", hard: int | None = None, soft: int | None = None,
            action: str = "block", signal: bool = True) -> str:
        with psycopg.connect(self.stack.db_url) as conn:
            row = conn.execute(
                "INSERT INTO quota_policy (name, axis, virtual_key_id, unit, window_kind, calendar_period, soft_limit,"
                " hard_limit, hard_action) VALUES (%s, 'virtual_key', %s, %s, 'calendar', 'day', %s, %s, %s)"
                " RETURNING id::text", (f"budget-{uuid.uuid4().hex[:8]}", key_id, unit, soft, hard, action),
            ).fetchone()
        assert row is not None
        self.ids.append(row[0])
        if signal:
            publish_signal(self.stack, "quota_policy")
        return str(row[0])

    def remove(self) -> None:
        with psycopg.connect(self.stack.db_url) as conn:
            conn.execute("DELETE FROM quota_policy WHERE id = ANY(%s::uuid[])", (self.ids,))


@pytest.fixture
def policies(stack: Stack) -> Iterator[Policies]:
    p = Policies(stack)
    yield p
    p.remove()


def chat(model: str = "mock-gpt", content: str = "spend", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": content}], **extra}


def post(base: str, key: str, body: dict[str, Any] | None = None, *, timeout: float = 30,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(base + "/v1/chat/completions", json=body or chat(), timeout=timeout,
                      headers={"authorization": f"Bearer {key}", **(headers or {})})


def until(check: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {what}")
        time.sleep(0.1)


def to_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1) - now).total_seconds()


async def _burst(urls: list[str], key: str, n: int, extra: Callable[[int], dict[str, str]] | None = None,
                 ) -> list[httpx.Response]:
    results: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=400)) as client:
        async def one(i: int) -> None:
            results.append(await client.post(
                urls[i % len(urls)] + "/v1/chat/completions",
                headers={"authorization": f"Bearer {key}", **(extra(i) if extra else {})}, json=chat()))

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    return results


class NatsTap:
    """nats-py on its own loop in a thread: an independent client collecting what the daemons publish."""

    def __init__(self, url: str, subject: str) -> None:
        self.messages: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, subject), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self, url: str, subject: str) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._nc = await nats_py.connect(url)

            async def on_msg(msg: Any) -> None:
                self.messages.append(msg.data)

            await self._nc.subscribe(subject, cb=on_msg)
            await self._nc.flush()
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    def decoded(self) -> list[dict[str, Any]]:
        return [orjson.loads(m) for m in list(self.messages)]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# ------------------------------------------------------------------------------------- two gateways, one budget


@pytest.mark.slow
def test_two_gateways_cannot_overspend(stack: Stack, valkey_url: str, tmp_path: Path, policies: Policies) -> None:
    key, key_id = make_key(stack, name="budget-sync")
    policies.add(key_id, soft=40, hard=50, signal=False)
    sync = {"NEXUS_QUOTA_WRITE_BEHIND": "0"}
    with contextlib.ExitStack() as stack_cm:
        a = stack_cm.enter_context(extra_gateway(stack, valkey_url, tmp_path / "a", **sync))
        b = stack_cm.enter_context(extra_gateway(stack, valkey_url, tmp_path / "b", **sync))
        results = trio.run(_burst, [a, b], key, 200)
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 50, sorted(set(statuses))
    assert statuses.count(429) == 150
    rejected = next(r for r in results if r.status_code == 429)
    assert "virtual_key" in rejected.json()["error"]["message"]
    assert int(rejected.headers["retry-after"]) > 0
    warned = [r for r in results if r.status_code == 200 and "x-nexus-quota-warning" in r.headers]
    assert len(warned) == 11  # used 40..50: past the soft limit of 40
    ok = next(r for r in results if r.status_code == 200)
    assert ok.headers["x-nexus-quota-limit"] == "50"


@pytest.mark.slow
def test_write_behind_two_gateways_budget_of_50(
    stack: Stack, valkey_url: str, tmp_path: Path, policies: Policies, checker: redis.Redis,
) -> None:
    """The bound (nexus.gateway.quota.engine, "Overshoot bound") in write-behind mode, through two gateways.

    U <= H + the excess over their estimate of requests in flight at the last grant or reconciled in the flush
    interval before it.  A request unit is estimated exactly (excess 0), so: at most H = 50 answered, whatever
    the concurrency, with every fourth request failing upstream and refunded only at the next flush; the
    counter ends equal to the successes (each reconciliation applied once), and the refunded budget comes back.
    """
    key, key_id = make_key(stack, name="budget-behind")
    policy_id = policies.add(key_id, hard=50, signal=False)
    with contextlib.ExitStack() as stack_cm:
        a = stack_cm.enter_context(extra_gateway(stack, valkey_url, tmp_path / "a"))  # write-behind: the default
        b = stack_cm.enter_context(extra_gateway(stack, valkey_url, tmp_path / "b"))
        results = trio.run(_burst, [a, b], key, 200, lambda i: {"x-mock-status": "500"} if i % 4 == 0 else {})
        statuses = Counter(r.status_code for r in results)
        ok = statuses[200]
        assert ok <= 50 and statuses[429] > 0 and ok + statuses[429] + statuses[502] == 200, statuses
        [counter_key] = checker.scan_iter(match=f"nexus:quota:c:{policy_id}:*")
        until(lambda: int(checker.get(counter_key) or 0) == ok, timeout=5, what="refunds flushed")
        more = [post([a, b][i % 2], key).status_code for i in range(60)]
        assert more.count(200) == 50 - ok and set(more) <= {200, 429} and 429 in more, more
    assert int(checker.get(counter_key) or 0) == 50


# ----------------------------------------------------------------------------------------------------- soft limit


@pytest.mark.slow
def test_soft_limit_alerts_once_per_window_across_gateways(
    stack: Stack, valkey_url: str, tmp_path: Path, policies: Policies, private_nats: services.PrivateNats,
) -> None:
    key, key_id = make_key(stack, name="soft")
    policy_id = policies.add(key_id, soft=10, hard=1000, signal=False)
    hub_port = services.free_port()
    own_nats = {"NEXUS_NATS_URL": private_nats.url}
    hub = start_daemon("hub", daemon_env(stack.db_url, valkey_url, private_nats.url, stack.secrets,
                                         NEXUS_HUB__LISTEN__PORT=str(hub_port)), tmp_path / "hub.log")
    tap = NatsTap(private_nats.url, "nexus.event.alert")

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(stack.db_url) as conn:
            return conn.execute(
                "SELECT kind, severity, status, occurrences, details->>'window', org_id::text, details->>'used'"
                " FROM alert WHERE dedup_key LIKE %s", (f"quota.soft:{policy_id}:%",)).fetchall()

    def mine() -> list[dict[str, Any]]:
        return [m for m in tap.decoded() if m["details"]["policy_id"] == policy_id]

    try:
        wait_ready(f"http://127.0.0.1:{hub_port}", hub, tmp_path / "hub.log")
        with contextlib.ExitStack() as stack_cm:
            a, b = (stack_cm.enter_context(extra_gateway(
                stack, valkey_url, tmp_path / name, NEXUS_AUDIT__SPOOL_DIR=str(tmp_path / name / "spool"),
                **own_nats)) for name in ("a", "b"))
            results = trio.run(_burst, [a, b], key, 40)
            assert [r.status_code for r in results] == [200] * 40
            warned = [r for r in results if "x-nexus-quota-warning" in r.headers]
            assert len(warned) == 31  # used 10..40
            until(lambda: bool(mine()), timeout=10, what="the alert on NATS")
            until(lambda: bool(rows()), timeout=30, what="the hub stored the alert")
            time.sleep(1.0)  # a second alert, if any, would be right behind
        alerts = mine()
        windows = Counter(m["details"]["window"] for m in alerts)
        # One per window: the burst takes a second, so it spans one day window (two only across midnight UTC).
        assert alerts and set(windows.values()) == {1}, alerts
        assert alerts[0]["dedup_key"] == f"quota.soft:{policy_id}:{key_id}:{alerts[0]['details']['window']}"
        stored = rows()
        assert sorted(r[4] for r in stored) == sorted(windows)
        assert all(r[:4] == ("quota.soft_limit", "warning", "open", 1) and r[5] == stack.org_id for r in stored)
        assert {r[6] for r in stored} == {"10"}
    finally:
        tap.close()
        stop(hub)


# ----------------------------------------------------------------------------------------------------- hard limit


def _dialect_request(stack: Stack, dialect: str, key: str, model: str = "mock-gpt") -> httpx.Response:
    content = [{"role": "user", "content": "spend"}]
    if dialect == "openai":
        return post(stack.gateway, key, chat(model))
    if dialect == "responses":
        return httpx.post(stack.v1 + "/responses", json={"model": model, "input": "spend"}, timeout=30,
                          headers={"authorization": f"Bearer {key}"})
    if dialect == "anthropic":
        return httpx.post(stack.v1 + "/messages", json={"model": model, "max_tokens": 16, "messages": content},
                          timeout=30, headers={"x-api-key": key})
    return httpx.post(stack.gateway + f"/v1beta/models/{model}:generateContent", timeout=30,
                      json={"contents": [{"role": "user", "parts": [{"text": "spend"}]}]},
                      headers={"x-goog-api-key": key})


def test_hard_limit_429_names_the_axis_in_every_dialect(stack: Stack, policies: Policies) -> None:
    key, key_id = make_key(stack, name="hard")
    policies.add(key_id, hard=0)
    until(lambda: post(stack.gateway, key).status_code == 429, what="the gateway loaded the policy")
    shapes = {"openai": '"type":"rate_limit_error"', "responses": '"type":"rate_limit_error"',
              "anthropic": '"type":"rate_limit_error"', "gemini": '"status":"RESOURCE_EXHAUSTED"'}
    for dialect, marker in shapes.items():
        resp = _dialect_request(stack, dialect, key)
        assert resp.status_code == 429, (dialect, resp.text)
        assert marker in resp.text, (dialect, resp.text)
        message = resp.json()["error"]["message"]
        assert "quota exceeded on axis virtual_key" in message and "0 requests per day" in message, message
        # Retry-After: when the day window resets (midnight UTC).
        assert abs(int(resp.headers["retry-after"]) - math.ceil(to_midnight())) <= 2, resp.headers


def test_downgrade_serves_a_cheaper_model_instead_of_refusing(stack: Stack, policies: Policies) -> None:
    """mock-claude reserves ~16 x 15 µ$ of output; under a 100 µ$ budget with ``downgrade`` the request goes to
    the cheapest model the key may use (mock-gpt), is recorded as such, and is refused only when none fits."""
    models = ["mock-claude", "mock-gpt", "mock-gemini"]
    key, key_id = make_key(stack, name="downgrade", allowed_models=models)
    tight, tight_id = make_key(stack, name="downgrade-none", allowed_models=models)
    policies.add(key_id, unit="cost_micro_usd", hard=100, action="downgrade", signal=False)
    policies.add(tight_id, unit="cost_micro_usd", hard=1, action="downgrade")
    tap = NatsTap(stack.nats_url, "nexus.event.ai-traffic")
    try:
        until(lambda: "x-nexus-downgraded-from" in post(stack.gateway, key, chat("mock-claude")).headers,
              what="the gateway loaded the policy")
        rid = f"downgrade-{uuid.uuid4().hex[:8]}"
        resp = post(stack.gateway, key, chat("mock-claude"), headers={"x-request-id": rid})
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-nexus-downgraded-from"] == "mock-claude"
        assert resp.headers["x-nexus-model"] == "mock-gpt"
        assert resp.json()["choices"][0]["message"]["content"]
        # The Anthropic dialect too: translated to the cheaper model's family and back.
        msg = _dialect_request(stack, "anthropic", key, "mock-claude")
        assert msg.status_code == 200 and msg.headers["x-nexus-downgraded-from"] == "mock-claude", msg.text
        assert msg.json()["type"] == "message"
        until(lambda: any(decode(m).request_id == rid for m in tap.messages), timeout=10, what="the traffic event")
        event = next(e for e in map(decode, tap.messages) if e.request_id == rid)
        assert (event.requested_model, event.model) == ("mock-claude", "mock-gpt")
        assert "downgraded to mock-gpt" in event.strategy_trace[0]
        refused = post(stack.gateway, tight, chat("mock-claude"))
        assert refused.status_code == 429 and "axis virtual_key" in refused.json()["error"]["message"]
        assert "x-nexus-downgraded-from" not in refused.headers
    finally:
        tap.close()


# ------------------------------------------------------------------------------------------------- Valkey down


@pytest.mark.slow
def test_valkey_down_fails_closed_and_counters_come_back_from_rollups(
    stack: Stack, tmp_path: Path, policies: Policies, private_valkey: services.PrivateValkey,
) -> None:
    limited, limited_id = make_key(stack, name="valkey-down")
    free, _ = make_key(stack, name="valkey-down-free")
    policies.add(limited_id, hard=10, signal=False)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with psycopg.connect(stack.db_url) as conn:  # what the hub's rollups say this key used today
        conn.execute("INSERT INTO usage_rollup_1d (bucket, source, org_id, project_id, virtual_key_id, provider, model,"
                     " requests) VALUES (%s, 'gateway', %s, %s, %s, 'mock-openai', 'mock-gpt', 7)",
                     (today, stack.org_id, stack.project_id, limited_id))
    try:
        with extra_gateway(stack, private_valkey.url, tmp_path / "gw") as gw:
            first = post(gw, limited)
            assert first.status_code == 200 and first.headers["x-nexus-quota-used"] == "8"  # 7 rebuilt + this one

            private_valkey.stop()
            started = time.monotonic()
            down = post(gw, limited, timeout=10)
            assert down.status_code == 503, down.text
            assert "quota counters are unavailable" in down.json()["error"]["message"]
            assert down.headers["retry-after"] == "1"
            assert time.monotonic() - started < 5
            anthropic = httpx.post(gw + "/v1/messages", timeout=10, headers={"x-api-key": limited},
                                   json={"model": "mock-gpt", "max_tokens": 16,
                                         "messages": [{"role": "user", "content": "x"}]})
            assert anthropic.status_code == 503 and anthropic.json()["type"] == "error", anthropic.text
            assert post(gw, free).status_code == 200  # no policy: never touches Valkey
            ready = httpx.get(gw + "/readyz", timeout=5)
            deps = ready.json()["dependencies"]
            assert ready.status_code == 503 and not deps["valkey"]["ok"] and not deps["quota"]["ok"], deps
            assert "failing closed" in deps["quota"]["detail"]

            private_valkey.start()  # empty: every counter is gone
            until(lambda: httpx.get(gw + "/readyz", timeout=5).status_code == 200, timeout=30,
                  what="ready again without a request")
            after = [post(gw, limited) for _ in range(4)]
            assert [r.status_code for r in after] == [200, 200, 200, 429]
            assert [r.headers.get("x-nexus-quota-used") for r in after[:3]] == ["8", "9", "10"]
    finally:
        with psycopg.connect(stack.db_url) as conn:
            conn.execute("DELETE FROM usage_rollup_1d WHERE virtual_key_id = %s", (limited_id,))


def test_usage_reports_the_keys_budget(stack: Stack, policies: Policies) -> None:
    key, key_id = make_key(stack, name="usage")
    policies.add(key_id, soft=40, hard=50)

    def listed() -> bool:
        post(stack.gateway, key)
        body = httpx.get(stack.v1 + "/usage", headers={"authorization": f"Bearer {key}"}).json()
        return bool(body.get("policies")) and body["policies"][0]["hard_limit"] == 50

    until(listed, what="the shared gateway picked the new policy up")
    assert httpx.get(stack.v1 + "/usage").status_code == 401
