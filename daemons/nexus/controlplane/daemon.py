"""``nexus control-plane``: the control plane's ASGI app on in-process hypercorn."""

from __future__ import annotations

from starlette.applications import Starlette

from nexus.config import NexusConfig
from nexus.runtime import daemon
from nexus.runtime.asgi import asgi_endpoint, health_routes
from nexus.storage import clients


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    pg = clients.pg_pool(config.storage)
    valkey = clients.valkey(config.storage)
    nats = clients.nats(config.storage, "nexus-control-plane")
    deps: list[daemon.Dependency] = [pg, valkey, nats]
    app = Starlette(routes=health_routes("control-plane", deps, lambda: control.draining))
    return daemon.DaemonSpec(
        name="control-plane", endpoints=[asgi_endpoint(config.control_plane.listen, app, config.runtime.drain_timeout)],
        dependencies=deps, drain_timeout=config.runtime.drain_timeout,
    )
