"""``nexus proxy``: the compliance proxy's listener and its admin/health listener."""

from __future__ import annotations

from nexus.config import NexusConfig
from nexus.net.http1.types import Handler, Request, Response
from nexus.runtime import daemon
from nexus.runtime.http import endpoint, with_health
from nexus.storage import clients

_JSON = [(b"content-type", b"application/json")]


def _not_yet(kind: bytes) -> Handler:
    async def handle(req: Request) -> Response:
        return Response(501, _JSON, b'{"error":{"type":"not_implemented","message":"' + kind + b'"}}')

    return handle


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    pg = clients.pg_pool(config.storage)
    nats = clients.nats(config.storage, "nexus-proxy")
    deps: list[daemon.Dependency] = [pg, nats]
    px = config.proxy
    admin = with_health("proxy", _not_yet(b"no admin route"), deps, lambda: control.draining)
    return daemon.DaemonSpec(
        name="proxy",
        endpoints=[
            endpoint(px.listen, _not_yet(b"CONNECT interception is not enabled in this build"), px.http),
            endpoint(px.admin, admin, px.http),
        ],
        dependencies=deps, drain_timeout=config.runtime.drain_timeout,
    )
