"""nexus.audit.writer: emitter → JetStream → writer → PostgreSQL, exactly once through failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import orjson
import psycopg
import pytest
import trio
from psycopg.rows import dict_row

from nexus.audit.emitter import Emitter
from nexus.audit.events import SpillRef, TrafficEvent, encode, event_time
from nexus.audit.retention import PartitionKeeper
from nexus.audit.spill import FsSpillStore
from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.config.schema import AuditConfig
from nexus.devstack.services import PrivatePostgres
from nexus.net.nats.client import NatsClient
from nexus.net.nats.jetstream import JetStream, JsPublish
from nexus.storage import migrate
from nexus.storage.pgpool import PgPool

from .conftest import eventually, full_event, make_event, rollup_requests, sha, stored_ids

pytestmark = pytest.mark.slow


def writer_process(db_url: str, nats_url: str, stream: EventStream, *, ack_wait: float) -> subprocess.Popen[str]:
    script = Path(__file__).with_name("writer_process.py")
    return subprocess.Popen(
        [sys.executable, str(script), db_url, nats_url, stream.name, stream.prefix, "audit-writer", str(ack_wait)],
        stdout=subprocess.PIPE, text=True,
    )


async def start_pipeline(
    nursery: trio.Nursery, nats: NatsClient, pool: PgPool, config: AuditConfig, stream: EventStream,
    durable: str = "audit-writer", keeper: PartitionKeeper | None = None,
) -> tuple[Emitter, AuditWriter]:
    em = Emitter(nats, config, stream=stream)
    await nursery.start(em.run)
    writer = AuditWriter(pool, nats, config, stream=stream, durable=durable, keeper=keeper)
    await nursery.start(writer.run)
    return em, writer


async def test_every_event_lands_exactly_once_with_its_payloads(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    em, writer = await start_pipeline(nursery, nats, pool, audit_config, stream)
    events = [make_event(org_id, i) for i in range(3000)]
    big = os.urandom(1 << 20)
    events.append(make_event(org_id, 3000, body=big))
    for event in events:
        em.emit(event)
    ids = [e.event_id for e in events]
    await eventually(lambda: writer.inserted >= len(events), seconds=20, what="all inserted")
    assert sorted(stored_ids(db_url, ids)) == sorted(ids)
    assert writer.duplicates == 0 and writer.dead_lettered == 0

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT event_id, kind, sha256(body), size_bytes, spill_backend, spill_key, spill_size, spill_sha256"
            " FROM traffic_event_payload WHERE event_id = ANY(%s)", (ids,),
        ).fetchall()
    by_event = {(r[0], r[1]): r for r in rows}
    assert len(by_event) == 2 * len(events)
    for event in events[:-1]:
        for payload in event.payloads:
            assert payload.body is not None
            assert by_event[(event.event_id, payload.kind)][2] == sha(payload.body)
    spilled = by_event[(events[-1].event_id, "request")]
    assert spilled[2] is None and spilled[3] == 1 << 20 and spilled[4] == "fs"
    ref = SpillRef(backend="fs", key=spilled[5], size=spilled[6], sha256=bytes(spilled[7]))
    assert ref.sha256 == sha(big)
    assert FsSpillStore(audit_config.spill_dir).get(ref) == big
    assert rollup_requests(db_url, org_id) == dict.fromkeys(
        ("usage_rollup_5m", "usage_rollup_1h", "usage_rollup_1d"), len(events))


async def test_every_column_round_trips_through_the_database(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    em, writer = await start_pipeline(nursery, nats, pool, audit_config, stream)
    event = full_event(org_id)
    em.emit(event)
    await eventually(lambda: writer.inserted == 1, what="inserted")
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM traffic_event WHERE event_id = %s", (event.event_id,)).fetchone()
        payloads = conn.execute("SELECT * FROM traffic_event_payload WHERE event_id = %s ORDER BY kind",
                                (event.event_id,)).fetchall()
    assert row is not None
    assert row["ts"] == event.ts == event_time(event.event_id)
    assert datetime.now(UTC) - row["received_at"] < timedelta(minutes=1)
    expected = orjson.loads(encode(event).partition(b"\n")[0])
    skipped = {"v", "payloads", "payload_digests", "event_id", "source_ip", "cache_similarity"}
    for name, value in expected.items():
        if name in skipped:
            continue
        got = row[name]
        assert (str(got) if isinstance(got, uuid.UUID) else got) == value, name
    assert row["event_id"] == event.event_id
    assert str(row["source_ip"]) == "10.1.2.3"
    assert row["cache_similarity"] == pytest.approx(0.93)
    assert [(p["kind"], bytes(p["body"]), p["size_bytes"], p["truncated"], p["redacted"]) for p in payloads] == [
        ("request", b'{"q": "x"}', 3000, True, True), ("response", b"\x00\xff\x01\x02", 4, False, False),
    ]


async def test_redelivered_events_are_stored_and_counted_once(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    em, writer = await start_pipeline(nursery, nats, pool, audit_config, stream)
    events = [make_event(org_id, i) for i in range(300)]
    for event in events:
        em.emit(event)
    await eventually(lambda: writer.inserted == 300, what="inserted")
    # The same events again as new stream messages (no msg id: JetStream cannot drop them)...
    js = JetStream(nats)
    await js.publish_many([JsPublish(stream.subject("ai-traffic"), encode(e)) for e in events[:100]])
    await eventually(lambda: writer.duplicates == 100, what="duplicates seen")
    # ...and a second writer on a fresh durable, which reads the whole stream once more.
    second = AuditWriter(pool, nats, audit_config, stream=stream, durable="audit-writer-2")
    await nursery.start(second.run)
    await eventually(lambda: second.duplicates == 400, what="replayed as duplicates")
    assert second.inserted == 0
    ids = [e.event_id for e in events]
    assert sorted(stored_ids(db_url, ids)) == sorted(ids)
    assert rollup_requests(db_url, org_id) == dict.fromkeys(
        ("usage_rollup_5m", "usage_rollup_1h", "usage_rollup_1d"), 300)
    with psycopg.connect(db_url) as conn:
        sums = conn.execute("SELECT sum(input_tokens), sum(cost_micro_usd), sum(total_us) FROM usage_rollup_5m"
                            " WHERE org_id = %s", (org_id,)).fetchone()
    assert sums == (300 * 10, 300 * 30, sum(1000 + i for i in range(300)))


async def test_rollups_split_errors_blocks_and_cache_hits(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    em, writer = await start_pipeline(nursery, nats, pool, audit_config, stream)
    key = str(uuid.uuid4())
    events = [
        make_event(org_id, 0, virtual_key_id=key),
        make_event(org_id, 1, virtual_key_id=key, error_code="upstream_error", status_code=502),
        make_event(org_id, 2, virtual_key_id=key, request_decision="block", error_code="blocked", status_code=403),
        make_event(org_id, 3, virtual_key_id=key, cache_status="hit"),
        make_event(org_id, 4, virtual_key_id=key, cache_status="semantic"),
        make_event(org_id, 5, source="proxy", provider=None, model=None),
    ]
    for event in events:
        em.emit(event)
    await eventually(lambda: writer.inserted == len(events), what="inserted")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT source, virtual_key_id, provider, requests, errors, blocked, cache_hits, bucket"
            " FROM usage_rollup_1d WHERE org_id = %s ORDER BY source", (org_id,),
        ).fetchall()
    day = datetime.combine(events[0].ts.date(), datetime.min.time(), tzinfo=UTC)
    assert rows == [("gateway", uuid.UUID(key), "openai", 5, 1, 1, 2, day), ("proxy", None, None, 1, 0, 0, 0, day)]


async def test_poison_records_go_to_the_dlq_after_max_deliver_tries(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    config = attrs.evolve(audit_config, max_deliver=3)
    _em, writer = await start_pipeline(nursery, nats, pool, config, stream)
    good = [make_event(org_id, i) for i in range(50)]
    refused = make_event(org_id, 99)
    head, _, tail = encode(refused).partition(b"\n")
    refused_data = orjson.dumps(orjson.loads(head) | {"total_us": -5}) + b"\n" + tail  # violates a CHECK
    garbage = b"\x00 definitely not an event"
    subject = stream.subject("ai-traffic")
    js = JetStream(nats)
    messages = [JsPublish(subject, encode(e)) for e in good[:25]]
    messages += [JsPublish(subject, refused_data, headers={"X-Test": "1"}), JsPublish(subject, garbage)]
    messages += [JsPublish(subject, encode(e)) for e in good[25:]]
    messages.append(JsPublish(stream.subject("compliance"), b'{"kind": "compliance"}'))
    acks = await js.publish_many(messages)
    await eventually(lambda: writer.dead_lettered == 2, seconds=15, what="dead-lettered")
    ids = [e.event_id for e in good]
    assert sorted(stored_ids(db_url, ids)) == sorted(ids)
    assert stored_ids(db_url, [refused.event_id]) == []
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        dlq = conn.execute("SELECT * FROM traffic_event_dlq WHERE stream = %s ORDER BY stream_seq",
                           (stream.name,)).fetchall()
    assert [(d["stream_seq"], d["attempts"], bytes(d["payload"])) for d in dlq] == [
        (acks[25].seq, 3, refused_data), (acks[26].seq, 3, garbage),
    ]
    assert dlq[0]["event_id"] == refused.event_id and dlq[1]["event_id"] is None
    assert "traffic_event_total_us_check" in dlq[0]["error"] and "not JSON" in dlq[1]["error"]
    assert dlq[0]["headers"]["X-Test"] == "1" and dlq[0]["subject"] == subject
    # Terminated and acked (the server applies acks asynchronously): nothing is left to deliver.
    async def settled() -> bool:
        info = await js.consumer_info(stream.name, "audit-writer")
        return bool(info["num_pending"] == 0 and info["num_ack_pending"] == 0)

    await eventually(settled, what="every message acked or terminated")
    await trio.sleep(1.0)
    assert writer.dead_lettered == 2


async def test_writer_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    nats: NatsClient, pool: PgPool, db_url: str, nats_url: str, stream: EventStream, audit_config: AuditConfig,
    org_id: str, nursery: trio.Nursery,
) -> None:
    em = Emitter(nats, audit_config, stream=stream)
    await nursery.start(em.run)
    events = [make_event(org_id, i) for i in range(500)]
    for event in events:
        em.emit(event)
    await eventually(lambda: em.published == 500, what="published")
    app = f"audit-kill-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as blocker, psycopg.connect(db_url, autocommit=True) as watcher:
        # Holding this lock stops the writer's INSERT after its COPY into staging, inside its transaction.
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE usage_rollup_1d IN SHARE MODE")
        proc = writer_process(f"{db_url}?application_name={app}", nats_url, stream, ack_wait=2.0)
        try:
            assert proc.stdout is not None
            assert await trio.to_thread.run_sync(proc.stdout.readline) == "started\n"

            def blocked() -> bool:
                row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                      " AND wait_event_type = 'Lock' AND query LIKE 'WITH ins AS%%'", (app,)).fetchone()
                return row is not None and row[0] == 1

            await eventually(blocked, what="writer waiting inside its transaction")
            proc.send_signal(signal.SIGKILL)
            await trio.to_thread.run_sync(proc.wait)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        blocker.execute("ROLLBACK")
    ids = [e.event_id for e in events]
    await trio.sleep(0.5)
    assert stored_ids(db_url, ids) == []

    writer = AuditWriter(pool, nats, attrs.evolve(audit_config, writer_ack_wait=2.0), stream=stream)
    await nursery.start(writer.run)
    await eventually(lambda: writer.inserted == 500, seconds=15, what="redelivered and stored")
    assert sorted(stored_ids(db_url, ids)) == sorted(ids)
    assert rollup_requests(db_url, org_id) == dict.fromkeys(
        ("usage_rollup_5m", "usage_rollup_1h", "usage_rollup_1d"), 500)


async def test_postgres_outage_jetstream_holds_and_the_writer_catches_up(
    private_postgres: PrivatePostgres, nats: NatsClient, stream: EventStream, audit_config: AuditConfig,
    org_id: str, nursery: trio.Nursery,
) -> None:
    url = private_postgres.url
    await trio.to_thread.run_sync(lambda: migrate.migrate(url, log=lambda _line: None))
    pool = PgPool(url, max_size=2, reconnect_max_delay=0.5)
    await nursery.start(pool.run)
    assert await pool.wait_ready(10)
    em, writer = await start_pipeline(nursery, nats, pool, audit_config, stream)
    events: list[TrafficEvent] = []

    async def emit_steadily(seconds: float) -> None:
        for _ in range(int(seconds / 0.02)):
            for _ in range(4):
                events.append(make_event(org_id, len(events)))
                em.emit(events[-1])
            await trio.sleep(0.02)

    await emit_steadily(0.5)
    await eventually(lambda: writer.inserted == len(events), what="stored before the outage")
    await trio.to_thread.run_sync(private_postgres.stop)
    stored_before = writer.inserted
    await emit_steadily(5.0)
    await eventually(lambda: em.published == len(events), what="JetStream took them all meanwhile")
    assert writer.inserted == stored_before
    await trio.to_thread.run_sync(private_postgres.start)
    await emit_steadily(0.5)
    await eventually(lambda: writer.inserted == len(events), seconds=20, what="caught up")
    ids = [e.event_id for e in events]
    assert sorted(stored_ids(url, ids)) == sorted(ids)
    assert rollup_requests(url, org_id) == dict.fromkeys(
        ("usage_rollup_5m", "usage_rollup_1h", "usage_rollup_1d"), len(events))


async def test_a_day_without_partition_lands_in_default_then_moves(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    keeper = PartitionKeeper(db_url, retention_days=30, min_gap=0.1)
    await nursery.start(keeper.run)
    await eventually(lambda: keeper.passes >= 1, what="first maintenance pass")
    em, writer = await start_pipeline(nursery, nats, pool, audit_config, stream, keeper=keeper)
    # An agent that was offline: its event is from a day with no partition yet.
    moment = datetime.now(UTC) - timedelta(days=12)
    ms = int(moment.timestamp() * 1000)
    old_id = uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0x123 << 64) | (0b10 << 62) | 0x1234_5678)
    event = make_event(org_id, source="agent", event_id=old_id)
    em.emit(event)
    await eventually(lambda: writer.inserted == 1, what="inserted")
    day = moment.date()

    def partition() -> Any:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT tableoid::regclass::text FROM traffic_event WHERE event_id = %s",
                               (old_id,)).fetchone()
        return row[0] if row else None

    await eventually(lambda: partition() == f"traffic_event_p{day:%Y%m%d}", what="moved out of DEFAULT")
    epoch_day = (day - datetime(1970, 1, 1).date()).days
    await eventually(lambda: epoch_day in keeper.days, what="the keeper knows the new partition")
    assert stored_ids(db_url, [old_id]) == [old_id]
