"""Admin API: nodes resources."""

from __future__ import annotations

from nexus.controlplane.api.operation import Operation


def operations() -> list[Operation]:
    return []
