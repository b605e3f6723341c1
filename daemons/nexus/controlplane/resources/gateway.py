"""Admin API: gateway resources, one module per concern.

- ``gateway_keys``: virtual keys (create shows the key once; revoke);
- ``gateway_catalog``: providers, credentials (write-only secrets; rotate), models and prices;
- ``gateway_routing``: routing rules (checked by the gateway's parser) and the simulator;
- ``gateway_quota``: quota policies and overrides (checked by the gateway's quota records);
- ``gateway_passthrough``: passthrough settings and the kill switch;
- ``gateway_common``: the ``crud.Resource`` extension they share.
"""

from __future__ import annotations

from nexus.controlplane.api.operation import Operation
from nexus.controlplane.resources import (
    gateway_catalog,
    gateway_keys,
    gateway_passthrough,
    gateway_quota,
    gateway_routing,
)


def operations() -> list[Operation]:
    return [
        *gateway_keys.operations(),
        *gateway_catalog.operations(),
        *gateway_routing.operations(),
        *gateway_quota.operations(),
        *gateway_passthrough.operations(),
    ]
