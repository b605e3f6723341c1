"""JetStream over NatsClient against real servers, cross-checked with nats-py.

Every test uses a stream of its own (a random name) and deletes it afterwards;
the restart test runs a private server, whose store survives the restart.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
from nats.js.api import AckPolicy, ConsumerConfig

from nexus.devstack import services
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import (
    JetStreamError,
    NatsError,
    NatsNoResponders,
    NatsPayloadTooLarge,
)
from nexus.net.nats.jetstream import (
    JetStream,
    JetStreamPublishError,
    JsMsg,
    JsPublish,
    PubAck,
)
from nexus.net.nats.protocol import Msg


@attrs.frozen
class Stream:
    name: str
    prefix: str  # the stream captures ``prefix.>``

    @property
    def subjects(self) -> list[str]:
        return [f"{self.prefix}.>"]


@pytest.fixture
def js(client: NatsClient) -> JetStream:
    return JetStream(client)


@pytest.fixture
async def stream(js: JetStream) -> AsyncIterator[Stream]:
    token = uuid.uuid4().hex[:12]
    s = Stream(f"T_{token}", f"js.{token}")
    yield s
    with contextlib.suppress(JetStreamError):
        await js.delete_stream(s.name)


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    # Polls, because the check asks the server what it has processed.
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await trio.sleep(0.02)
    raise AssertionError(f"still false after {seconds} s")


async def test_ensure_stream_is_idempotent_and_updates(js: JetStream, stream: Stream, peer: Any) -> None:
    first = await js.ensure_stream(stream.name, stream.subjects, max_age=3600, max_bytes=1 << 20)
    again = await js.ensure_stream(stream.name, stream.subjects, max_age=3600, max_bytes=1 << 20)
    assert again["created"] == first["created"]
    assert again["config"] == first["config"]
    assert first["config"]["duplicate_window"] == 120 * 10**9

    await js.ensure_stream(stream.name, [*stream.subjects, f"{stream.prefix}-extra"], max_age=60)
    info = await peer.do(peer.nc.jetstream().stream_info(stream.name))
    assert info.config.subjects == [*stream.subjects, f"{stream.prefix}-extra"]
    assert info.config.max_age == 60
    assert info.config.max_bytes == -1
    # The duplicate window is clamped to the retention, which the server demands.
    assert info.config.duplicate_window == 60

    with pytest.raises(JetStreamError) as refused:
        await js.ensure_stream(stream.name, stream.subjects, storage="memory")
    assert refused.value.code >= 400 and refused.value.err_code != 0

    with pytest.raises(JetStreamError) as missing:
        await js.stream_info(f"{stream.name}_missing")
    assert (missing.value.code, missing.value.err_code) == (404, 10059)
    with pytest.raises(ValueError, match="stream name"):
        await js.ensure_stream("bad.name", stream.subjects)


async def test_ensure_consumer_is_idempotent_and_updates(js: JetStream, stream: Stream, peer: Any) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    first = await js.ensure_consumer(stream.name, "writer", filter_subject=f"{stream.prefix}.audit")
    again = await js.ensure_consumer(stream.name, "writer", filter_subject=f"{stream.prefix}.audit")
    assert again["created"] == first["created"]
    assert again["config"] == first["config"]
    assert first["config"]["ack_policy"] == "explicit"
    assert "deliver_subject" not in first["config"]

    await js.ensure_consumer(
        stream.name, "writer", filter_subject=f"{stream.prefix}.audit", ack_wait=5, max_deliver=7,
        max_ack_pending=100,
    )
    info = await peer.do(peer.nc.jetstream().consumer_info(stream.name, "writer"))
    assert (info.config.ack_wait, info.config.max_deliver, info.config.max_ack_pending) == (5, 7, 100)
    assert info.config.filter_subject == f"{stream.prefix}.audit"

    await js.delete_consumer(stream.name, "writer")
    with pytest.raises(JetStreamError) as missing:
        await js.consumer_info(stream.name, "writer")
    assert missing.value.code == 404


async def test_publish_acks_and_deduplicates(js: JetStream, stream: Stream, peer: Any) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    subject = f"{stream.prefix}.events"
    assert await js.publish(subject, b"one", msg_id="id-1", headers={"Kind": "a"}) == PubAck(stream.name, 1)
    assert await js.publish(subject, b"one again", msg_id="id-1") == PubAck(stream.name, 1, duplicate=True)
    assert await js.publish(subject, b"two", msg_id="id-2") == PubAck(stream.name, 2)
    assert await js.publish(subject, b"three") == PubAck(stream.name, 3)

    stored = await peer.do(peer.nc.jetstream().get_msg(stream.name, 1))
    assert stored.data == b"one"
    assert stored.headers == {"Kind": "a", "Nats-Msg-Id": "id-1"}
    info = await peer.do(peer.nc.jetstream().stream_info(stream.name))
    assert info.state.messages == 3

    with pytest.raises(NatsNoResponders):
        await js.publish(f"uncaptured.{stream.prefix}", b"lost")


async def test_publish_many_keeps_order_and_deduplicates(js: JetStream, stream: Stream, peer: Any) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    batch = [JsPublish(f"{stream.prefix}.audit", b"event %d" % i, msg_id=f"e-{i}") for i in range(1000)]
    acks = await js.publish_many(batch, window=32)
    assert acks == [PubAck(stream.name, i + 1) for i in range(1000)]
    # The whole batch again, as after a lost ack: all duplicates, nothing stored twice.
    again = await js.publish_many(batch, window=64)
    assert again == [PubAck(stream.name, i + 1, duplicate=True) for i in range(1000)]
    info = await peer.do(peer.nc.jetstream().stream_info(stream.name))
    assert (info.state.messages, info.state.last_seq) == (1000, 1000)
    stored = await peer.do(peer.nc.jetstream().get_msg(stream.name, 500))
    assert (stored.data, stored.headers) == (b"event 499", {"Nats-Msg-Id": "e-499"})

    limit = int(js._client.server_info["max_payload"])
    mixed = [
        JsPublish(f"{stream.prefix}.ok", b"a", msg_id="m-a"),
        JsPublish(f"uncaptured.{stream.prefix}", b"b"),
        JsPublish(f"{stream.prefix}.ok", b"x" * (limit + 1)),
        JsPublish(f"{stream.prefix}.ok", b"d", headers={"K": "v"}),
    ]
    with pytest.raises(JetStreamPublishError) as failed:
        await js.publish_many(mixed, window=2)
    results = failed.value.results
    assert results[0] == PubAck(stream.name, 1001)
    assert isinstance(results[1], NatsNoResponders)
    assert isinstance(results[2], NatsPayloadTooLarge)
    assert results[3] == PubAck(stream.name, 1002)


async def test_fetch_metadata_and_ack(js: JetStream, stream: Stream, peer: Any) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    await js.ensure_consumer(stream.name, "reader", ack_wait=30)
    producer = peer.nc.jetstream()
    for i in range(10):
        await peer.do(producer.publish(f"{stream.prefix}.m", b"%d" % i, headers={"N": str(i)}))

    start = trio.current_time()
    first = await js.fetch(stream.name, "reader", batch=4, expires=5)
    assert trio.current_time() - start < 1.0  # a full batch returns at once, not at expiry
    assert [m.data for m in first] == [b"0", b"1", b"2", b"3"]
    m0 = first[0]
    assert (m0.subject, m0.headers) == (f"{stream.prefix}.m", {"N": "0"})
    assert (m0.stream, m0.consumer) == (stream.name, "reader")
    assert [(m.stream_seq, m.consumer_seq, m.num_delivered) for m in first] == [
        (1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 1),
    ]
    assert [m.num_pending for m in first] == [9, 8, 7, 6]
    assert abs(m0.timestamp - time.time()) < 60
    for m in first[:-1]:
        await m.ack()
    await first[-1].ack_sync()
    with pytest.raises(NatsError, match="already acknowledged"):
        await m0.ack()

    rest = await js.fetch(stream.name, "reader", batch=100, expires=0.5)
    assert [m.data for m in rest] == [b"%d" % i for i in range(4, 10)]
    for m in rest:
        await m.ack()
    await js._client.flush()

    async def all_acked() -> bool:
        info = await js.consumer_info(stream.name, "reader")
        return bool(info["num_ack_pending"] == 0 and info["num_pending"] == 0)

    await _eventually(all_acked)


async def test_fetch_expiry_returns_empty(js: JetStream, stream: Stream) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    await js.ensure_consumer(stream.name, "idle")
    start = trio.current_time()
    assert await js.fetch(stream.name, "idle", batch=5, expires=0.3) == []
    assert 0.25 <= trio.current_time() - start < 1.5


async def test_nak_term_and_in_progress(js: JetStream, stream: Stream) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    await js.ensure_consumer(stream.name, "worker", ack_wait=0.6)
    await js.publish(f"{stream.prefix}.job", b"job")

    (msg,) = await js.fetch(stream.name, "worker", 1, 1.0)
    await msg.nak()
    (again,) = await js.fetch(stream.name, "worker", 1, 1.0)
    assert (again.stream_seq, again.num_delivered) == (msg.stream_seq, 2)

    await again.nak(delay=0.4)
    assert await js.fetch(stream.name, "worker", 1, 0.1) == []
    (delayed,) = await js.fetch(stream.name, "worker", 1, 2.0)
    assert delayed.num_delivered == 3

    # Progress reports hold the message past its ack_wait; silence lets it go.
    for _ in range(3):
        await trio.sleep(0.3)
        await delayed.in_progress()
    assert await js.fetch(stream.name, "worker", 1, 0.1) == []
    (expired,) = await js.fetch(stream.name, "worker", 1, 2.0)
    assert expired.num_delivered == 4

    await expired.term()
    assert await js.fetch(stream.name, "worker", 1, 0.9) == []


async def test_pull_refused_with_409(js: JetStream, stream: Stream, peer: Any) -> None:
    await js.ensure_stream(stream.name, stream.subjects)
    config = ConsumerConfig(durable_name="narrow", ack_policy=AckPolicy.EXPLICIT, max_waiting=1)
    await peer.do(peer.nc.jetstream().add_consumer(stream.name, config))
    async with trio.open_nursery() as nursery:
        waiting: list[list[JsMsg]] = []

        async def first_pull() -> None:
            waiting.append(await js.fetch(stream.name, "narrow", 1, 5.0))

        nursery.start_soon(first_pull)
        await trio.sleep(0.2)
        with pytest.raises(JetStreamError) as refused:
            await js.fetch(stream.name, "narrow", 1, 5.0)
        assert refused.value.code == 409
        assert "MaxWaiting" in refused.value.description
        await js.publish(f"{stream.prefix}.x", b"unblocks the first pull")
    assert [m.data for m in waiting[0]] == [b"unblocks the first pull"]


def test_ack_subject_forms() -> None:
    client = NatsClient("nats://127.0.0.1:4222")
    v1 = Msg("s", "$JS.ACK.ORDERS.w.3.41.17.1700000000123456789.5", None, b"")
    m = JsMsg.from_msg(v1, client)
    assert (m.stream, m.consumer, m.num_delivered, m.stream_seq, m.consumer_seq, m.num_pending) == (
        "ORDERS", "w", 3, 41, 17, 5,
    )
    assert m.timestamp_ns == 1700000000123456789
    v2 = Msg("s", "$JS.ACK.hub.ACCHASH.ORDERS.w.1.2.3.1700000000000000000.0.r4nd", None, b"")
    m2 = JsMsg.from_msg(v2, client)
    assert (m2.stream, m2.consumer, m2.num_delivered, m2.stream_seq, m2.consumer_seq) == (
        "ORDERS", "w", 1, 2, 3,
    )
    for reply in (None, "_INBOX.x", "$JS.ACK.a.b.c", "$JS.ACK.S.c.x.2.3.4.5"):
        with pytest.raises(NatsError):
            JsMsg.from_msg(Msg("s", reply, None, b""), client)


async def test_streams_and_dedup_survive_restart(
    private_nats: services.PrivateNats, nursery: trio.Nursery
) -> None:
    client = NatsClient(private_nats.url, reconnect_min=0.05, reconnect_max=0.5)
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    js = JetStream(client)
    await js.ensure_stream("DURABLE", ["dur.>"])
    await js.ensure_consumer("DURABLE", "w")
    assert await js.publish_many([JsPublish("dur.x", b"%d" % i, msg_id=f"d{i}") for i in range(3)]) == [
        PubAck("DURABLE", i) for i in (1, 2, 3)
    ]

    await js.ensure_consumer("DURABLE", "idle", filter_subject="dur.none")

    async def pending_pull() -> None:
        # A pull waiting when the server goes away ends at once, not at its expiry.
        start = trio.current_time()
        assert await js.fetch("DURABLE", "idle", 5, 30) == []
        assert trio.current_time() - start < 5

    # A clean shutdown ends pulls with "409 Server Shutdown".
    async with trio.open_nursery() as pulls:
        pulls.start_soon(pending_pull)
        await trio.sleep(0.1)
        await trio.to_thread.run_sync(private_nats.restart)
    assert await client.wait_ready(10)
    # Ensuring again after the restart changes nothing.
    info = await js.ensure_stream("DURABLE", ["dur.>"])
    assert info["state"]["messages"] == 3
    assert await js.publish("dur.x", b"late copy", msg_id="d2") == PubAck("DURABLE", 3, duplicate=True)
    assert await js.publish("dur.x", b"3", msg_id="d3") == PubAck("DURABLE", 4)
    got = await js.fetch("DURABLE", "w", 10, 0.5)
    assert [m.data for m in got] == [b"0", b"1", b"2", b"3"]
    for m in got:
        await m.ack()
    await client.flush()

    # A crash sends nothing: the lost connection ends the pull.
    async with trio.open_nursery() as pulls:
        pulls.start_soon(pending_pull)
        await trio.sleep(0.1)
        proc = private_nats.proc
        assert proc is not None
        proc.kill()
        await trio.to_thread.run_sync(proc.wait)
        await trio.to_thread.run_sync(private_nats.start)
    assert await client.wait_ready(10)
    await client.aclose()
