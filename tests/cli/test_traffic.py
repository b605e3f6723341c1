"""``nexus traffic tail | show`` against real NATS and PostgreSQL, events made by the real pipeline."""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trio

from nexus.audit.emitter import Emitter
from nexus.audit.events import HookResult, Payload, TrafficEvent
from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.cli import traffic
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import NatsError
from nexus.net.nats.jetstream import JetStream
from nexus.storage.pgpool import PgPool


@pytest.fixture
async def streams_to_delete(nats_url: str) -> AsyncIterator[list[str]]:
    """Deleted after ``nursery`` ends: a writer still running would create its stream again."""
    names: list[str] = []
    yield names
    async with trio.open_nursery() as cleanup:
        client = NatsClient(nats_url, name="traffic-cli-cleanup")
        await cleanup.start(client.run)
        if await client.wait_ready(5):
            for name in names:
                with contextlib.suppress(NatsError):
                    await JetStream(client).delete_stream(name)
        await client.aclose()


@pytest.fixture
async def nursery(streams_to_delete: list[str]) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


@pytest.fixture
async def nats(nats_url: str, nursery: trio.Nursery) -> AsyncIterator[NatsClient]:
    client = NatsClient(nats_url, name="traffic-cli-test")
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    yield client
    await client.aclose()


@pytest.fixture
def stream(streams_to_delete: list[str]) -> EventStream:
    token = uuid.uuid4().hex[:12]
    s = EventStream(name=f"CLI_T_{token}", prefix=f"cli-t.{token}")
    streams_to_delete.append(s.name)
    return s


@pytest.fixture
def config(tmp_path: Path) -> AuditConfig:
    return AuditConfig(spill_dir=str(tmp_path / "spill"), spool_dir=str(tmp_path / "spool"), batch_interval=0.02,
                       writer_batch_interval=0.2)


def event(i: int, **fields: object) -> TrafficEvent:
    values: dict[str, object] = {
        "source": "gateway", "org_id": str(uuid.uuid4()), "method": "POST", "host": "gw",
        "path": "/v1/chat/completions", "status_code": 200, "provider": "openai", "model": "gpt-4o",
        "input_tokens": 11, "output_tokens": 22, "cost_micro_usd": 1500, "total_us": 2500 + i,
        "payloads": [Payload(kind="request", size_bytes=9, body=b'{"q":"?"}', content_type="application/json")],
    }
    values.update(fields)
    return TrafficEvent(**values)  # type: ignore[arg-type]


def remove_files(directory: str) -> None:
    for path in Path(directory).rglob("*"):
        if path.is_file():
            path.unlink()


def test_the_commands_load_no_trio_or_psycopg_until_run() -> None:
    code = ("import sys, nexus.cli.traffic\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'psycopg'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_add_parser_wires_tail_and_show() -> None:
    parser = argparse.ArgumentParser()
    traffic.add_parser(parser.add_subparsers(dest="command"))
    tail = parser.parse_args(["traffic", "tail", "--json", "--count", "3"])
    assert tail.func is traffic._tail_command and tail.json and tail.count == 3 and tail.subject == "nexus.event.>"
    show = parser.parse_args(["traffic", "show", "0190c1d2-8a5b-7000-8000-000000000000", "--max-body", "-1"])
    assert show.func is traffic._show_command and show.max_body == -1


async def test_tail_prints_one_line_per_event(
    nats_url: str, nats: NatsClient, stream: EventStream, config: AuditConfig, nursery: trio.Nursery,
) -> None:
    lines, raw = io.StringIO(), io.StringIO()
    # The tails end on their own after three events each.
    with trio.fail_after(10):
        async with trio.open_nursery() as tails:
            await tails.start(traffic.follow, nats_url, f"{stream.prefix}.>", lines, False, 3)
            await tails.start(traffic.follow, nats_url, f"{stream.prefix}.>", raw, True, 3)
            em = Emitter(nats, config, stream=stream)
            await nursery.start(em.run)
            events = [event(0), event(1, request_decision="block", status_code=403, error_code="blocked"), event(2)]
            events[2].mark_client_closed()
            for e in events:
                em.emit(e)
    out = lines.getvalue().splitlines()
    assert len(out) == 3
    assert all(str(e.event_id) in line for e, line in zip(events, out, strict=True))
    assert " gateway ok " in out[0]
    assert "POST gw/v1/chat/completions openai/gpt-4o in=11 out=22 $0.001500 2.5ms" in out[0]
    assert " blocked " in out[1] and " 403 " in out[1]
    assert " client_closed " in out[2] and " 499 " in out[2]
    heads = [orjson.loads(line) for line in raw.getvalue().splitlines()]
    assert [h["event_id"] for h in heads] == [str(e.event_id) for e in events]
    assert heads[0]["payloads"] == [{"kind": "request", "size_bytes": 9, "body_len": 9,
                                     "content_type": "application/json"}]
    assert traffic.format_event(stream.subject("compliance"), b"{}") == f"{stream.subject('compliance')} 2 bytes"


async def test_show_prints_the_row_the_payloads_and_the_hook_trace(
    db_url: str, nats: NatsClient, stream: EventStream, config: AuditConfig, nursery: trio.Nursery,
) -> None:
    pool = PgPool(db_url, max_size=2)
    await nursery.start(pool.run)
    em = Emitter(nats, config, stream=stream)
    await nursery.start(em.run)
    writer = AuditWriter(pool, nats, config, stream=stream)
    await nursery.start(writer.run)
    big = os.urandom(300 * 1024)
    e = event(0, request_decision="redact", rule_ids=["pii.ssn"],
              request_hooks=[HookResult(hook="pii-detector", decision="redact", rule_ids=["pii.ssn"], duration_us=42,
                                        reason="ssn found")],
              payloads=[Payload(kind="request", size_bytes=20, body=b'{"q":"[REDACTED_pii.ssn]"}', redacted=True),
                        Payload(kind="response", size_bytes=len(big), body=big)])
    em.emit(e)
    for _ in range(200):
        if writer.inserted:
            break
        await trio.sleep(0.05)
    assert writer.inserted == 1

    out = io.StringIO()
    assert traffic.show(db_url, config.spill_dir, str(e.event_id), out, max_body=64) == 0
    text = out.getvalue()
    assert text.startswith(f"event {e.event_id}")
    assert "request_decision         redact" in text and '["pii.ssn"]' in text
    assert "request hooks:" in text and "pii-detector" in text and "42 µs" in text and "reason=ssn found" in text
    assert "payload request: 20 bytes  inline redacted" in text and '{"q":"[REDACTED_pii.ssn]"}' in text
    assert f"payload response: {len(big)} bytes  spilled (fs:" in text and f"{len(big) - 64} more bytes" in text

    out = io.StringIO()
    assert traffic.show(db_url, config.spill_dir, str(e.event_id), out, as_json=True) == 0
    doc = orjson.loads(out.getvalue())
    assert doc["event_id"] == str(e.event_id) and doc["request_hooks"][0]["hook"] == "pii-detector"
    response = doc["payloads"][1]
    assert response["kind"] == "response" and response["body_encoding"] == "base64"
    assert base64.b64decode(response["body"]) == big

    # The spilled body went missing: show says so for that payload and still prints the rest.
    remove_files(config.spill_dir)
    out = io.StringIO()
    assert traffic.show(db_url, config.spill_dir, str(e.event_id), out) == 0
    assert "(body unavailable: spilled body" in out.getvalue()


def test_show_refuses_bad_ids_and_reports_missing_events(db_url: str, tmp_path: Path) -> None:
    out = io.StringIO()
    assert traffic.show(db_url, str(tmp_path), "nope", out) == 2
    assert traffic.show(db_url, str(tmp_path), str(uuid.uuid4()), out) == 2
    assert traffic.show(db_url, str(tmp_path), "0190c1d2-8a5b-7000-8000-000000000000", out) == 1
    assert out.getvalue() == ""
