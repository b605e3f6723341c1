"""Shared pieces of the audit tests: config, a stream of their own, running clients, event factories.

Every test gets its own JetStream stream and subject prefix on the shared NATS
server (deleted afterwards), its own org id (so rollup rows are its own in the
shared session database) and its own spill and spool directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from nexus.audit.events import Attempt, HookResult, Payload, TrafficEvent
from nexus.audit.stream import EventStream
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import NatsError
from nexus.net.nats.jetstream import JetStream, JsMsg
from nexus.storage.pgpool import PgPool


@pytest.fixture
def audit_config(tmp_path: Path) -> AuditConfig:
    """Production settings with short timers, so tests see batches and retries quickly."""
    return AuditConfig(
        spill_dir=str(tmp_path / "spill"), spool_dir=str(tmp_path / "spool"),
        batch_interval=0.02, publish_timeout=2.0, shutdown_timeout=3.0,
        writer_batch_interval=0.2, writer_ack_wait=5.0,
    )


@pytest.fixture
async def streams_to_delete(nats_url: str) -> AsyncIterator[list[str]]:
    """Streams deleted once the test's tasks are gone (``nursery`` depends on this, so ends first).

    Deleting while a writer still runs would not do: a writer that lost its consumer ensures
    the stream again, which would leave it behind on the shared server.
    """
    names: list[str] = []
    yield names
    for name in names:
        await delete_stream(nats_url, name)


@pytest.fixture
async def nursery(streams_to_delete: list[str]) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def start_nats(nursery: trio.Nursery, url: str, name: str = "nexus-audit-test") -> NatsClient:
    client = NatsClient(url, name=name, reconnect_max=0.5)
    await nursery.start(client.run)
    return client


@pytest.fixture
async def nats(nats_url: str, nursery: trio.Nursery) -> AsyncIterator[NatsClient]:
    client = await start_nats(nursery, nats_url)
    assert await client.wait_ready(5)
    yield client
    await client.aclose()


async def delete_stream(nats_url: str, name: str) -> None:
    """Delete a stream through a client of its own (the test's may already be gone)."""
    async with trio.open_nursery() as nursery:
        client = await start_nats(nursery, nats_url, "audit-test-cleanup")
        if await client.wait_ready(5):
            with contextlib.suppress(NatsError):
                await JetStream(client).delete_stream(name)
        await client.aclose()


@pytest.fixture
def stream(streams_to_delete: list[str]) -> EventStream:
    token = uuid.uuid4().hex[:12]
    s = EventStream(name=f"AUDIT_T_{token}", prefix=f"audit-t.{token}")
    streams_to_delete.append(s.name)
    return s


@pytest.fixture
async def pool(db_url: str, nursery: trio.Nursery) -> PgPool:
    p = PgPool(db_url, max_size=4, name="audit-test")
    await nursery.start(p.run)
    assert await p.wait_ready(5)
    return p


@pytest.fixture
def org_id() -> str:
    return str(uuid.uuid4())


def make_event(org_id: str, i: int = 0, *, body: bytes | None = None, **fields: Any) -> TrafficEvent:
    """A gateway event with a request and a response body (2 KiB of random bytes unless given)."""
    request = body if body is not None else os.urandom(2048)
    values: dict[str, Any] = {
        "source": "gateway", "org_id": org_id, "request_id": f"req-{i}", "method": "POST", "host": "gw",
        "path": "/v1/chat/completions", "endpoint_type": "chat", "ingress_format": "openai", "status_code": 200,
        "requested_model": "gpt-4o", "provider": "openai", "model": "gpt-4o", "total_us": 1000 + i,
        "input_tokens": 10, "output_tokens": 20, "cost_micro_usd": 30, "cache_status": "miss",
        "payloads": [Payload(kind="request", size_bytes=len(request), body=request, content_type="application/json"),
                     Payload(kind="response", size_bytes=5, body=b"hello", content_type="application/json")],
    }
    values.update(fields)
    return TrafficEvent(**values)


def full_event(org_id: str) -> TrafficEvent:
    """Every field away from its default, to check the whole column mapping."""
    return TrafficEvent(
        source="proxy", thing_id=str(uuid.uuid4()), org_id=org_id, project_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()), virtual_key_id=str(uuid.uuid4()), credential_id=str(uuid.uuid4()),
        provider_id=str(uuid.uuid4()), routing_rule_id=str(uuid.uuid4()), request_id="req-full",
        trace_id="trace-1", source_ip="10.1.2.3", user_agent="curl/8 ☃", process_name="python3", method="POST",
        host="api.openai.com", path="/v1/responses", endpoint_type="responses", ingress_format="responses",
        stream=True, status_code=451, error_code="blocked", error_message="response blocked by policy",
        requested_model="gpt-4o", provider="openai", model="gpt-4o-2024-08-06", attempts=2,
        attempt_log=[Attempt(provider="azure", model="gpt-4o", outcome="rate_limited", status_code=429,
                             error_code="rate_limited", credential_id=str(uuid.uuid4()), duration_us=900),
                     Attempt(provider="openai", model="gpt-4o-2024-08-06", outcome="ok", status_code=200,
                             duration_us=12_345)],
        strategy_trace={"strategy": "fallback", "chain": ["azure", "openai"]}, ab_arm="B",
        total_us=50_000, upstream_ttfb_us=9_000, upstream_total_us=40_000, request_hooks_us=120,
        response_hooks_us=340, cache_lookup_us=55, overhead_us=999, input_tokens=1200, output_tokens=340,
        reasoning_tokens=100, cached_input_tokens=800, cache_creation_tokens=50, cost_micro_usd=4321,
        cache_savings_micro_usd=1234, cache_status="semantic", cache_similarity=0.93,
        request_decision="redact", response_decision="block", decision_reason="PII in answer",
        rule_ids=["pii.ssn", "secret.aws"],
        request_hooks=[HookResult(hook="pii-detector", decision="redact", reason="ssn", rule_ids=["pii.ssn"],
                                  duration_us=80, detail={"spans": 1})],
        response_hooks=[HookResult(hook="rulepack-engine", decision="block", rule_ids=["secret.aws"],
                                   duration_us=300),
                        HookResult(hook="webhook-forward", error="timeout", duration_us=40)],
        tags=["team:red", "pilot"], passthrough_flags=["bypassCache"], kill_switch=True,
        attestation_verified=True, attested_agent_id=str(uuid.uuid4()), bump_status="bumped",
        attributes={"region": "eu", "n": 1},
        payloads=[Payload(kind="request", size_bytes=3000, body=b'{"q": "x"}', content_type="application/json",
                          truncated=True, redacted=True),
                  Payload(kind="response", size_bytes=4, body=b"\x00\xff\x01\x02")],
    )


def files_in(directory: str, pattern: str = "*") -> list[Path]:
    return [path for path in Path(directory).rglob(pattern) if path.is_file()]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def eventually(check: Callable[[], Awaitable[bool] | bool], seconds: float = 10.0, what: str = "") -> None:
    """Poll ``check`` (bounded: it asks servers what they have done) until true."""
    for _ in range(int(seconds / 0.05)):
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await trio.sleep(0.05)
    raise AssertionError(f"still false after {seconds} s: {what}")


def stored_ids(db_url: str, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Event ids of ``ids`` present in traffic_event, with repeats if any (there must be none)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT event_id FROM traffic_event WHERE event_id = ANY(%s)", (ids,)).fetchall()
    return [r[0] for r in rows]


def rollup_requests(db_url: str, org_id: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return {
            table: int(conn.execute(f"SELECT coalesce(sum(requests), 0) FROM {table} WHERE org_id = %s",
                                    (org_id,)).fetchone()[0])  # type: ignore[index]
            for table in ("usage_rollup_5m", "usage_rollup_1h", "usage_rollup_1d")
        }


async def drain_stream(js: JetStream, stream: EventStream, durable: str, expected: int) -> list[JsMsg]:
    """Every message of the stream, in stream order, through a consumer of the test's own."""
    await js.ensure_consumer(stream.name, durable)
    got: list[JsMsg] = []
    for _ in range(100):
        batch = await js.fetch(stream.name, durable, 1000, 0.3)
        for msg in batch:
            await msg.ack()
        got += batch
        if len(got) >= expected and not batch:
            break
    return got


@attrs.define
class Chaos:
    """Stop a private server for a while, on a background task."""

    stop: Callable[[], None]
    start: Callable[[], None]

    async def outage(self, seconds: float) -> None:
        await trio.to_thread.run_sync(self.stop)
        await trio.sleep(seconds)
        await trio.to_thread.run_sync(self.start)

