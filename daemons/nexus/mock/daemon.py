"""``nexus mock-provider``: the mock LLM upstream on the hot-path HTTP server."""

from __future__ import annotations

from nexus.config import NexusConfig
from nexus.mock.app import make_handler
from nexus.runtime import daemon
from nexus.runtime.http import endpoint, with_health


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    mp = config.mock_provider
    handler = with_health("mock-provider", make_handler(mp), [], lambda: control.draining)
    return daemon.DaemonSpec(
        name="mock-provider", endpoints=[endpoint(mp.listen, handler, mp.http)],
        drain_timeout=config.runtime.drain_timeout,
    )
