"""``nexus hub``: the hub's ASGI app on in-process hypercorn, the audit and alert writers and traffic retention.

The audit writer also keeps the usage rollups (5 min, hour, day), in the transaction that stores each batch of
events: that is the "rollup job" of migration 0006's comment; no scheduled job re-reads the traffic tables."""

from __future__ import annotations

from starlette.applications import Starlette

from nexus.audit.alert_writer import AlertWriter
from nexus.audit.retention import PartitionKeeper
from nexus.audit.spill import FsSpillStore
from nexus.audit.writer import AuditWriter
from nexus.config import NexusConfig
from nexus.runtime import daemon
from nexus.runtime.asgi import asgi_endpoint, health_routes
from nexus.storage import clients


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    pg = clients.pg_pool(config.storage)
    nats = clients.nats(config.storage, "nexus-hub")
    deps: list[daemon.Dependency] = [pg, nats]
    app = Starlette(routes=health_routes("hub", deps, lambda: control.draining))
    audit = config.audit
    keeper = PartitionKeeper(
        config.storage.database_url, retention_days=audit.retention_days, interval=audit.maintenance_interval,
        spill_store=FsSpillStore(audit.spill_dir),
    )
    writer = AuditWriter(pg, nats, audit, keeper=keeper)
    alerts = AlertWriter(pg, nats, audit)
    return daemon.DaemonSpec(
        name="hub", endpoints=[asgi_endpoint(config.hub.listen, app, config.runtime.drain_timeout)],
        dependencies=deps, background=[keeper.run, writer.run, alerts.run],
        drain_timeout=config.runtime.drain_timeout,
    )
