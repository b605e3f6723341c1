"""``nexus agent``: the endpoint agent's local explicit-proxy listener; it has no storage dependencies
because it must keep working while the laptop is offline."""

from __future__ import annotations

from nexus.config import NexusConfig
from nexus.config.schema import HttpLimits
from nexus.net.http1.types import Request, Response
from nexus.runtime import daemon
from nexus.runtime.http import endpoint, with_health


async def _not_enabled(req: Request) -> Response:
    return Response(501, [(b"content-type", b"application/json")],
                    b'{"error":{"type":"not_implemented","message":"interception is not enabled in this build"}}')


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    handler = with_health("agent", _not_enabled, [], lambda: control.draining)
    return daemon.DaemonSpec(
        name="agent", endpoints=[endpoint(config.agent.listen, handler, HttpLimits())],
        drain_timeout=config.runtime.drain_timeout,
    )
