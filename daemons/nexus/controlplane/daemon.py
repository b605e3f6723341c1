"""``nexus control-plane``: admin API, sign-in and OpenAPI on in-process hypercorn."""

from __future__ import annotations

from nexus.audit.spill import FsSpillStore
from nexus.config import NexusConfig
from nexus.controlplane import auth
from nexus.controlplane.app import build_app
from nexus.controlplane.resources import all_operations
from nexus.controlplane.services import Services
from nexus.crypto import secretfiles
from nexus.runtime import daemon
from nexus.runtime.asgi import asgi_endpoint, health_routes
from nexus.storage import clients


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    pg = clients.pg_pool(config.storage)
    valkey = clients.valkey(config.storage)
    nats = clients.nats(config.storage, "nexus-control-plane")
    deps: list[daemon.Dependency] = [pg, valkey, nats]
    secrets_dir = secretfiles.directory(config.secrets.dir)
    vault = secretfiles.vault(secrets_dir)
    public_url = config.control_plane.public_url.rstrip("/")
    sign_in = auth.build(pg, valkey, vault, secrets_dir, public_url, config.control_plane.auth)
    services = Services(pg=pg, valkey=valkey, nats=nats, vault=vault, key_hmac=secretfiles.key_hmac_secret(secrets_dir),
                        secrets_dir=secrets_dir, authenticator=sign_in.authenticator, public_url=public_url,
                        spill=FsSpillStore(config.audit.spill_dir))
    app = build_app(services, all_operations(), extra_routes=sign_in.routes(),
                    health_routes=health_routes("control-plane", deps, lambda: control.draining))
    return daemon.DaemonSpec(
        name="control-plane", endpoints=[asgi_endpoint(config.control_plane.listen, app, config.runtime.drain_timeout)],
        dependencies=deps, drain_timeout=config.runtime.drain_timeout,
    )
