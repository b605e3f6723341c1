"""nexus.audit.emitter against real NATS servers: batches, spill, and every loss mode through outages."""

from __future__ import annotations

import os
import uuid

import attrs
import pytest
import trio

from nexus.audit.emitter import Emitter, QueueFull
from nexus.audit.events import TrafficEvent, decode
from nexus.audit.spill import FsSpillStore
from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.config.schema import AuditConfig
from nexus.devstack.services import PrivateNats
from nexus.net.nats.client import NatsClient
from nexus.net.nats.jetstream import JetStream
from nexus.runtime.metrics import REGISTRY
from nexus.storage.pgpool import PgPool

from .conftest import drain_stream, eventually, files_in, make_event, start_nats, stored_ids

pytestmark = pytest.mark.slow


def private_stream() -> EventStream:
    return EventStream(name=f"AUDIT_P_{uuid.uuid4().hex[:8]}", prefix="nexus.event")


async def test_events_reach_the_stream_in_order_with_their_id_as_msg_id(
    nats: NatsClient, stream: EventStream, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    em = Emitter(nats, audit_config, stream=stream)
    await nursery.start(em.run)
    events = [make_event(org_id, i) for i in range(1200)]
    for event in events:
        em.emit(event)
    em.emit(events[0])  # the same event again: JetStream keeps one
    await eventually(lambda: em.published == 1201, what="all published")
    msgs = await drain_stream(JetStream(nats), stream, "check", 1200)
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in msgs] == [str(e.event_id) for e in events]
    assert decode(msgs[7].data) == events[7]
    assert {m.subject for m in msgs} == {stream.subject("ai-traffic")}
    assert em.lost == 0 and em.spooled == 0 and em.held_bytes == 0
    await em.aclose()


async def test_large_bodies_go_to_the_spill_store_before_publishing(
    nats: NatsClient, stream: EventStream, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    em = Emitter(nats, audit_config, stream=stream)
    await nursery.start(em.run)
    big = os.urandom(1 << 20)
    event = make_event(org_id, body=big)
    em.emit(event)
    await eventually(lambda: em.published == 1)
    (msg,) = await drain_stream(JetStream(nats), stream, "check", 1)
    assert len(msg.data) < 16 * 1024
    request = decode(msg.data).payloads[0]
    assert request.body is None and request.spill is not None and request.size_bytes == 1 << 20
    assert FsSpillStore(audit_config.spill_dir).get(request.spill) == big
    await em.aclose()


async def test_nats_outage_spools_then_replays_in_order_and_every_event_lands_once(
    private_nats: PrivateNats, db_url: str, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    stream = private_stream()
    nats = await start_nats(nursery, private_nats.url)
    assert await nats.wait_ready(5)
    pool = PgPool(db_url, max_size=2)
    await nursery.start(pool.run)
    em = Emitter(nats, audit_config, stream=stream)
    await nursery.start(em.run)
    writer = AuditWriter(pool, nats, audit_config, stream=stream)
    await nursery.start(writer.run)

    events: list[TrafficEvent] = []
    spool_peak = 0

    async def emit_steadily(seconds: float) -> None:
        nonlocal spool_peak
        for _ in range(int(seconds / 0.02)):
            for _ in range(5):
                event = make_event(org_id, len(events))
                events.append(event)
                em.emit(event)
            spool_peak = max(spool_peak, em.spool_bytes)
            await trio.sleep(0.02)

    await emit_steadily(0.5)
    await trio.to_thread.run_sync(private_nats.stop)
    before_outage = len(events)
    await emit_steadily(5.0)
    during_outage = len(events) - before_outage
    spooled_during_outage = em.spooled
    await trio.to_thread.run_sync(private_nats.start)
    await emit_steadily(0.5)

    # All but the last not-yet-due batch went to disk, and the spool held them at once.
    assert during_outage > 200
    assert spooled_during_outage >= during_outage - 50
    assert spool_peak >= (during_outage - 50) * 2048
    await eventually(lambda: em.spool_bytes == 0 and em.queued == 0, seconds=15, what="spool replayed")
    assert files_in(audit_config.spool_dir) == []
    msgs = await drain_stream(JetStream(nats), stream, "check", len(events))
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in msgs] == [str(e.event_id) for e in events]
    ids = [e.event_id for e in events]
    await eventually(lambda: len(stored_ids(db_url, ids)) >= len(ids), seconds=15, what="all stored")
    stored = stored_ids(db_url, ids)
    assert sorted(stored) == sorted(ids)
    assert em.lost == 0


async def test_queue_overflow_in_spill_mode_goes_to_the_spool_without_waiting(
    private_nats: PrivateNats, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    await trio.to_thread.run_sync(private_nats.stop)
    stream = private_stream()
    nats = await start_nats(nursery, private_nats.url)
    config = attrs.evolve(audit_config, queue_max_bytes=64 * 1024, batch_interval=5.0)
    em = Emitter(nats, config, stream=stream)
    await nursery.start(em.run)
    events = [make_event(org_id, i) for i in range(200)]
    for event in events:
        em.emit(event)  # synchronous: returns whatever the state of NATS
    assert em.held_bytes <= 64 * 1024 and em.spooled >= 150 and em.lost == 0
    await trio.to_thread.run_sync(private_nats.start)
    await eventually(lambda: em.spool_bytes == 0 and em.queued == 0, what="drained")
    msgs = await drain_stream(JetStream(nats), stream, "check", 200)
    assert sorted(m.headers["Nats-Msg-Id"] for m in msgs if m.headers) == sorted(str(e.event_id) for e in events)


def lost(reason: str) -> float:
    return REGISTRY.get_sample_value("nexus_audit_events_lost_total", {"reason": reason}) or 0.0


async def test_block_mode_answers_once_durable_then_holds_and_makes_callers_wait(
    private_nats: PrivateNats, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    stream = private_stream()
    nats = await start_nats(nursery, private_nats.url)
    assert await nats.wait_ready(5)
    config = attrs.evolve(audit_config, loss_mode="block", queue_max_bytes=64 * 1024, spool_max_bytes=64 * 1024)
    em = Emitter(nats, config, stream=stream)
    await nursery.start(em.run)
    # NATS up: emit_wait returns once JetStream acknowledged the event.
    first = make_event(org_id, 0)
    await em.emit_wait(first)
    assert em.published == 1
    await trio.to_thread.run_sync(private_nats.stop)
    # NATS down, spool not full: it returns once the event is in the spool and fsync'd.
    second = make_event(org_id, 1)
    with trio.fail_after(5):
        await em.emit_wait(second)
    assert em.spooled == 1 and files_in(config.spool_dir, "*.spool")
    events = [make_event(org_id, i) for i in range(2, 202)]
    finished = 0

    async def caller(mine: list[TrafficEvent]) -> None:
        nonlocal finished
        for event in mine:
            await em.emit_wait(event)
        finished += 1

    async with trio.open_nursery() as callers:
        # Each caller waits for its event, so it takes more callers than the queue holds events to fill it.
        for k in range(50):
            callers.start_soon(caller, events[k::50])
        await trio.sleep(1.5)
        # The spool (64 KiB) and the queue (64 KiB) are full: callers wait, nothing is lost.
        assert finished < 50
        assert 20 <= em.spooled < 40 and em.queued > 10
        assert em.spool_bytes <= 64 * 1024 and em.held_bytes <= 64 * 1024 and em.lost == 0
        with pytest.raises(QueueFull):
            em.emit(make_event(org_id))
        await trio.to_thread.run_sync(private_nats.start)
    assert finished == 50
    await eventually(lambda: em.spool_bytes == 0 and em.queued == 0, what="all published")
    msgs = await drain_stream(JetStream(nats), stream, "check", 202)
    ids = [m.headers["Nats-Msg-Id"] for m in msgs if m.headers]
    assert sorted(ids) == sorted(str(e.event_id) for e in [first, second, *events])
    assert em.lost == 0 and files_in(config.spool_dir, "*.spool") == []


async def test_spill_mode_keeps_the_oldest_when_spool_and_queue_are_full_and_counts_the_rest(
    private_nats: PrivateNats, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = private_stream()
    nats = await start_nats(nursery, private_nats.url)
    assert await nats.wait_ready(5)
    config = attrs.evolve(audit_config, queue_max_bytes=64 * 1024, spool_max_bytes=128 * 1024)
    em = Emitter(nats, config, stream=stream)
    await nursery.start(em.run)
    await trio.to_thread.run_sync(private_nats.stop)
    before = lost("spool_full")
    events = [make_event(org_id, i) for i in range(300)]
    for k in range(0, 300, 10):
        for event in events[k : k + 10]:
            em.emit(event)  # never waits, whatever happens
        await trio.sleep(0.03)
    await trio.sleep(0.5)
    kept = em.accepted
    # ~128 KiB of 2 KiB events in the spool, ~64 KiB in memory behind it; the newest are lost, every one counted.
    assert 60 < kept < 120 and em.spooled < kept
    assert em.lost == 300 - kept and lost("spool_full") - before == 300 - kept
    assert any("audit events lost" in r.message and "spool_full" in r.message and r.levelname == "ERROR"
               for r in caplog.records)
    await trio.to_thread.run_sync(private_nats.start)
    await eventually(lambda: em.published + em.replayed == kept and em.spool_bytes == 0, what="replayed")
    msgs = await drain_stream(JetStream(nats), stream, "check", kept)
    # The record of the outage is whole from its start: the oldest events, in order.
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in msgs] == [str(e.event_id) for e in events[:kept]]


async def test_drop_mode_counts_what_it_drops(
    private_nats: PrivateNats, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    stream = private_stream()
    nats = await start_nats(nursery, private_nats.url)
    assert await nats.wait_ready(5)
    config = attrs.evolve(audit_config, loss_mode="drop", queue_max_bytes=64 * 1024)
    em = Emitter(nats, config, stream=stream)
    await nursery.start(em.run)
    await trio.to_thread.run_sync(private_nats.stop)
    before = lost("overflow")
    events = [make_event(org_id, i) for i in range(100)]
    for event in events:
        em.emit(event)
    kept = em.accepted
    assert 10 < kept < 100
    assert em.lost == 100 - kept
    assert lost("overflow") - before == 100 - kept
    await trio.to_thread.run_sync(private_nats.start)
    await eventually(lambda: em.published == kept, what="the kept ones published")
    msgs = await drain_stream(JetStream(nats), stream, "check", kept)
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in msgs] == [str(e.event_id) for e in events[:kept]]
    assert files_in(config.spool_dir, "*.spool") == []


async def test_shutdown_publishes_the_queue_or_spools_it_for_the_next_start(
    private_nats: PrivateNats, audit_config: AuditConfig, org_id: str, nursery: trio.Nursery,
) -> None:
    stream = private_stream()
    nats = await start_nats(nursery, private_nats.url)
    assert await nats.wait_ready(5)
    config = attrs.evolve(audit_config, batch_interval=30.0, loss_mode="drop")
    first = Emitter(nats, config, stream=stream)
    await nursery.start(first.run)
    published = [make_event(org_id, i) for i in range(10)]
    for event in published:
        first.emit(event)
    with trio.fail_after(5):
        await first.aclose()  # NATS is up: the queue is published before it returns
    assert first.published == 10 and first.spooled == 0

    await trio.to_thread.run_sync(private_nats.stop)
    second = Emitter(nats, config, stream=stream)
    await nursery.start(second.run)
    spooled = [make_event(org_id, 100 + i) for i in range(10)]
    for event in spooled:
        second.emit(event)
    with trio.fail_after(5):
        await second.aclose()  # NATS is down: even drop mode keeps a clean shutdown's events on disk
    assert second.spooled == 10 and second.lost == 0
    late = make_event(org_id, 999)
    second.emit(late)  # after run ended: straight to the spool
    assert second.spooled == 11

    await trio.to_thread.run_sync(private_nats.start)
    third = Emitter(nats, config, stream=stream)
    await nursery.start(third.run)
    await eventually(lambda: third.replayed == 11, what="replayed at start")
    msgs = await drain_stream(JetStream(nats), stream, "check", 21)
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in msgs] == [
        str(e.event_id) for e in [*published, *spooled, late]
    ]
    await third.aclose()
