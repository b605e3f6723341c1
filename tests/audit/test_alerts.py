"""nexus.audit.alerts and alert_writer: alert events from the emitter through JetStream into the ``alert`` table."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import trio

from nexus.audit.alert_writer import AlertWriter
from nexus.audit.alerts import KIND_ALERT, Alert, decode_alert, encode_alert
from nexus.audit.emitter import Emitter
from nexus.audit.events import DecodeError
from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.jetstream import JetStream, JsPublish
from nexus.storage.pgpool import PgPool

from .conftest import eventually


def _alert(dedup: str, org_id: str | None = None, **fields: object) -> Alert:
    values: dict[str, object] = {"kind": "quota.soft_limit", "severity": "warning", "dedup_key": dedup,
                                 "title": "Soft quota limit reached: team", "message": "40 of 40 requests",
                                 "org_id": org_id, "details": {"used": 40}, "at": time.time()}
    values.update(fields)
    return Alert(**values)  # type: ignore[arg-type]


def test_codec_round_trip_and_refusals() -> None:
    a = _alert("k1", str(uuid.uuid4()))
    assert decode_alert(encode_alert(a)) == a
    assert decode_alert(encode_alert(a)[:-1] + b',"from_a_newer_daemon":1}') == a
    for bad in (b"not json", b"[]", b'{"kind": "x"}', encode_alert(a).replace(a.event_id.encode(), b"nope")):
        with pytest.raises(DecodeError):
            decode_alert(bad)
    with pytest.raises(ValueError, match="kind"):
        _alert("k", kind="Quota Soft")
    with pytest.raises(ValueError):
        _alert("k", severity="loud")


def _rows(db_url: str, dedup: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT kind, severity, status, title, org_id::text, occurrences, details->>'used' FROM alert"
            " WHERE dedup_key = %s", (dedup,)).fetchall()


async def test_alerts_are_stored_once_per_event_and_counted_per_key(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig,
    nursery: trio.Nursery,
) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("INSERT INTO organization (slug, path, name) VALUES (%s, %s, 'alerts test') RETURNING"
                           " id::text", (f"al-{uuid.uuid4().hex[:8]}",) * 2).fetchone()
    assert row is not None
    org = row[0]
    emitter = Emitter(nats, audit_config, stream=stream)
    await nursery.start(emitter.run)
    writer = AlertWriter(pool, nats, audit_config, stream=stream, durable="alerts-test")
    await nursery.start(writer.run)
    # The traffic writer on the same stream acks alerts without a row and is not disturbed by them.
    traffic = AuditWriter(pool, nats, audit_config, stream=stream, durable="traffic-test")
    await nursery.start(traffic.run)
    key, gone = f"quota.soft:{uuid.uuid4()}", f"quota.soft:{uuid.uuid4()}"
    first, repeat = _alert(key, org), _alert(key, org, details={"used": 41})
    emitter.emit_message(KIND_ALERT, first.event_id, encode_alert(first))
    await eventually(lambda: writer.stored == 1, what="first alert stored")
    # Poison, and a redelivery of `first` under another message id (as after a hub crash before its ack).
    await JetStream(nats).publish_many([JsPublish(stream.subject(KIND_ALERT), b"garbage", "poison-1"),
                                        JsPublish(stream.subject(KIND_ALERT), encode_alert(first), "again-1")])
    await eventually(lambda: writer.stored == 2 and writer.refused == 1, what="redelivery and poison handled")
    assert _rows(db_url, key)[0][5] == 1
    for a in (repeat, _alert(gone, str(uuid.uuid4()))):
        emitter.emit_message(KIND_ALERT, a.event_id, encode_alert(a))
    await eventually(lambda: writer.stored == 4, what="alerts stored")
    assert _rows(db_url, key) == [("quota.soft_limit", "warning", "open", "Soft quota limit reached: team", org, 2,
                                   "41")]
    assert _rows(db_url, gone) == [("quota.soft_limit", "warning", "open", "Soft quota limit reached: team", None, 1,
                                    "40")]  # an org that does not exist (any more): stored without one
    assert traffic.inserted == 0 and traffic.dead_lettered == 0
