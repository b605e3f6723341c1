"""``nexus hub`` runs the audit writer and the retention job next to its health routes."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import httpx
import psycopg
import trio

from nexus.audit.emitter import Emitter
from nexus.audit.events import Payload, TrafficEvent
from nexus.config.schema import AuditConfig, HubConfig, Listen, NexusConfig, StorageConfig
from nexus.devstack.services import PrivateNats
from nexus.hub import daemon as hub
from nexus.net.nats.client import NatsClient
from nexus.runtime import daemon


async def test_hub_stores_what_an_emitter_publishes(private_nats: PrivateNats, db_url: str, tmp_path: Path) -> None:
    # A private NATS: the hub uses the real stream and durable names, which a shared server may be serving.
    audit = AuditConfig(spill_dir=str(tmp_path / "spill"), spool_dir=str(tmp_path / "spool"),
                        batch_interval=0.02, writer_batch_interval=0.2)
    config = NexusConfig(storage=StorageConfig(database_url=db_url, nats_url=private_nats.url),
                         hub=HubConfig(listen=Listen(port=0)), audit=audit)
    control = daemon.Control()
    spec = hub.build(config, control)
    assert {"AuditWriter", "PartitionKeeper"} <= {type(getattr(task, "__self__", None)).__name__
                                                  for task in spec.background}
    event = TrafficEvent(source="gateway", org_id=str(uuid.uuid4()), status_code=200,
                         payloads=[Payload(kind="request", size_bytes=2, body=b"{}")])
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(daemon.serve_daemon, spec, environ={}, control=control))
        with trio.fail_after(10):
            await control.ready.wait()
        client = NatsClient(private_nats.url)
        await nursery.start(client.run)
        emitter = Emitter(client, audit)
        await nursery.start(emitter.run)
        emitter.emit(event)
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://{control.addresses['http']}/healthz")
        assert health.status_code == 200
        stored = None
        for _ in range(200):
            with psycopg.connect(db_url) as conn:
                stored = conn.execute("SELECT status_code FROM traffic_event WHERE event_id = %s",
                                      (event.event_id,)).fetchone()
            if stored:
                break
            await trio.sleep(0.05)
        assert stored == (200,)
        await emitter.aclose()
        await client.aclose()
        control.stop()
