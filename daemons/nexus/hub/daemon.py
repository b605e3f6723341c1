"""``nexus hub``: the hub's ASGI app on in-process hypercorn."""

from __future__ import annotations

from starlette.applications import Starlette

from nexus.config import NexusConfig
from nexus.runtime import daemon
from nexus.runtime.asgi import asgi_endpoint, health_routes
from nexus.storage import clients


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    pg = clients.pg_pool(config.storage)
    nats = clients.nats(config.storage, "nexus-hub")
    deps: list[daemon.Dependency] = [pg, nats]
    app = Starlette(routes=health_routes("hub", deps, lambda: control.draining))
    return daemon.DaemonSpec(
        name="hub", endpoints=[asgi_endpoint(config.hub.listen, app, config.runtime.drain_timeout)],
        dependencies=deps, drain_timeout=config.runtime.drain_timeout,
    )
