"""The admin API's resources, one module per area; ``all_operations()`` is the route table."""

from __future__ import annotations

import importlib

from nexus.controlplane.api.operation import Operation

AREAS = ("platform", "identity", "gateway", "compliance", "nodes", "observability", "my")


def all_operations() -> list[Operation]:
    ops: list[Operation] = []
    for area in AREAS:
        ops += importlib.import_module(f"nexus.controlplane.resources.{area}").operations()
    return ops
