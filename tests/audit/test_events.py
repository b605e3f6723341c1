"""nexus.audit.events: ids, the record's wire round trip, validation, and the COPY row mapping."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from nexus.audit import events as ev
from nexus.audit.events import DecodeError, Payload, PayloadDigest, SpillRef, TrafficEvent

from .conftest import full_event, make_event

ORG = "5b0e2c1e-0000-4000-8000-000000000001"


def test_new_event_id_is_a_uuid7_of_now_and_strictly_increasing() -> None:
    before = datetime.now(UTC)
    ids = [ev.new_event_id() for _ in range(50_000)]
    after = datetime.now(UTC)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids[::997])
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= ev.event_time(ids[0])
    assert ev.event_time(ids[-1]) <= after
    with pytest.raises(ValueError, match="not a UUIDv7"):
        ev.event_time(uuid.uuid4())


def test_new_event_id_counts_up_when_the_clock_stands_still(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = time.time_ns()
    monkeypatch.setattr(ev.time, "time_ns", lambda: frozen)
    monkeypatch.setattr(ev.random, "getrandbits", lambda bits: 0)
    first = ev.new_event_id()
    second = ev.new_event_id()
    assert second > first
    assert ev.event_time(second) >= ev.event_time(first)
    assert second.version == 7 and second.variant == uuid.RFC_4122


def test_round_trip_keeps_every_field() -> None:
    event = full_event(ORG)
    event.payloads.append(Payload(kind="response_stream", size_bytes=10 << 20, content_type="text/event-stream",
                                  spill=SpillRef(backend="fs", key="ab" * 32, size=10 << 20, sha256=b"\x01" * 32)))
    event.payload_digests.append(PayloadDigest(kind="request", size_bytes=9, sha256="cd" * 32))
    data = ev.encode(event)
    assert ev.decode(data) == event


def test_encoding_is_compact_json_then_raw_bodies() -> None:
    event = TrafficEvent(source="agent", payloads=[Payload(kind="request", size_bytes=3, body=b"a\nb")])
    data = ev.encode(event)
    head, _, tail = data.partition(b"\n")
    assert orjson.loads(head) == {
        "v": 1, "event_id": str(event.event_id), "source": "agent",
        "payloads": [{"kind": "request", "size_bytes": 3, "body_len": 3}],
    }
    assert tail == b"a\nb"
    assert event.kind == ev.KIND_AGENT
    bare = TrafficEvent(source="gateway")
    assert b"\n" not in ev.encode(bare)
    assert ev.decode(ev.encode(bare)) == bare


def test_decode_ignores_keys_it_does_not_know() -> None:
    event = make_event(ORG)
    head, _, tail = ev.encode(event).partition(b"\n")
    newer = orjson.loads(head) | {"a_field_from_a_newer_agent": [1, 2], "v": 9}
    assert ev.decode(orjson.dumps(newer) + b"\n" + tail) == event


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[1, 2]", b'{"source": "gateway"}',
    b'{"event_id": "0190c1d2-8a5b-7000-8000-000000000000", "source": "mainframe"}',
    b'{"event_id": "0190c1d2-8a5b-7000-8000-000000000000", "source": "gateway",'
    b' "payloads": [{"kind": "request", "size_bytes": 4, "body_len": 4}]}\nab',
    b'{"event_id": "0190c1d2-8a5b-7000-8000-000000000000", "source": "gateway"}\nextra',
])
def test_decode_refuses_what_is_not_an_event(data: bytes) -> None:
    with pytest.raises(DecodeError):
        ev.decode(data)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("source", "mainframe", "source"),
    ("cache_status", "warm", "cache_status"),
    ("ingress_format", "soap", "ingress_format"),
    ("request_decision", "maybe", "request_decision"),
    ("status_code", 99, "status_code"),
    ("cache_similarity", 1.5, "cache_similarity"),
    ("total_us", -1, "total_us"),
    ("input_tokens", 2**31, "input_tokens"),
    ("event_id", uuid.uuid4(), "UUIDv7"),
])
def test_encode_validates_closed_sets_and_ranges(field: str, value: object, message: str) -> None:
    event = make_event(ORG)
    setattr(event, field, value)
    with pytest.raises(ValueError, match=message):
        ev.encode(event)


def test_encode_refuses_a_payload_with_both_or_neither_store() -> None:
    ref = SpillRef(backend="fs", key="ab" * 32, size=1, sha256=b"\x00" * 32)
    for payload in (Payload(kind="request", size_bytes=1), Payload(kind="request", size_bytes=1, body=b"x", spill=ref)):
        with pytest.raises(ValueError, match="exactly one of body and spill"):
            ev.encode(TrafficEvent(source="gateway", payloads=[payload]))
    twice = [Payload(kind="request", size_bytes=1, body=b"x"), Payload(kind="request", size_bytes=1, body=b"y")]
    with pytest.raises(ValueError, match="repeated"):
        ev.encode(TrafficEvent(source="gateway", payloads=twice))


def test_outcome_and_client_closed() -> None:
    event = make_event(ORG)
    assert event.outcome == "ok"
    event.mark_client_closed()
    assert event.client_closed and event.status_code == 499 and event.outcome == "client_closed"
    assert ev.decode(ev.encode(event)).client_closed
    event.response_decision = ev.BLOCK
    assert event.blocked and event.outcome == "blocked"
    assert make_event(ORG, error_code="upstream_error", status_code=502).outcome == "error"


def test_stage_rows_follow_the_column_order() -> None:
    event = full_event(ORG)
    event.payload_digests.append(PayloadDigest(kind="response_stream", size_bytes=7, sha256="ef" * 32))
    staged = ev.stage_rows(ev.encode(event))
    row = dict(zip(ev.STAGE_EVENT_COLUMNS, staged.event, strict=True))
    assert len(ev.STAGE_EVENT_COLUMNS) == len(ev.STAGE_EVENT_TYPES) == len(staged.event)
    assert staged.event_id == row["event_id"] == str(event.event_id)
    assert staged.ms == event.event_id.int >> 80
    assert row["ts"] == staged.ts == event.ts
    for name in ("source", "org_id", "source_ip", "status_code", "total_us", "cache_similarity", "rule_ids", "tags",
                 "kill_switch", "stream", "attested_agent_id", "cost_micro_usd"):
        assert row[name] == getattr(event, name), name
    assert orjson.loads(row["attempt_log"])[1]["duration_us"] == 12_345
    assert orjson.loads(row["response_hooks"])[1] == {"hook": "webhook-forward", "error": "timeout",
                                                      "duration_us": 40}
    assert orjson.loads(row["strategy_trace"]) == event.strategy_trace
    assert orjson.loads(row["attributes"]) == {
        "region": "eu", "n": 1, "payload_digests": [{"kind": "response_stream", "size_bytes": 7, "sha256": "ef" * 32}],
    }
    rows = staged.payload_rows()
    assert [r[:8] for r in rows] == [
        (event.event_id, event.ts, "request", "application/json", 3000, True, True, b'{"q": "x"}'),
        (event.event_id, event.ts, "response", None, 4, False, False, b"\x00\xff\x01\x02"),
    ]
    assert len(rows[0]) == len(ev.PAYLOAD_COLUMNS) == len(ev.PAYLOAD_TYPES)


def test_stage_rows_fill_defaults_and_count_attempts() -> None:
    event = TrafficEvent(source="gateway", attempt_log=[ev.Attempt(provider="p", model="m", outcome="ok")] * 3)
    row = dict(zip(ev.STAGE_EVENT_COLUMNS, ev.stage_rows(ev.encode(event)).event, strict=True))
    assert row["attempts"] == 3
    assert row["rule_ids"] == [] and row["tags"] == [] and row["kill_switch"] is False
    assert row["input_tokens"] == 0 and row["attributes"] == "{}" and row["status_code"] is None


@pytest.mark.parametrize("change", [
    {"status_code": "200"}, {"input_tokens": 1.5}, {"stream": 1}, {"rule_ids": ["a", 2]}, {"org_id": 7},
    {"status_code": 70_000}, {"event_id": str(uuid.uuid4())}, {"attributes": [1]} | {"payload_digests": [{}]},
])
def test_stage_rows_refuse_values_of_the_wrong_type(change: dict[str, object]) -> None:
    head, _, tail = ev.encode(make_event(ORG)).partition(b"\n")
    bad = orjson.dumps(orjson.loads(head) | change) + b"\n" + tail
    with pytest.raises(DecodeError):
        ev.stage_rows(bad)


def test_peek_event_id_reads_broken_events_when_it_can() -> None:
    event = make_event(ORG)
    assert ev.peek_event_id(ev.encode(event)) == str(event.event_id)
    assert ev.peek_event_id(b'{"event_id": "nope"}') is None
    assert ev.peek_event_id(b"\xff garbage") is None


def test_pure_modules_load_no_trio() -> None:
    modules = ["nexus.audit.events", "nexus.audit.capture", "nexus.audit.spill", "nexus.audit.spool",
               "nexus.audit.stream"]
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in modules)
        + "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'socket', 'ssl', 'asyncio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
