"""The one interface of the semantic cache's nearest-neighbour backends.

Two implementations: ``builtin_index.BuiltinIndex`` (vectors in PostgreSQL's
``semantic_cache_entry``, an in-memory matrix per process) and
``valkey_index.ValkeySearchIndex`` (``FT.CREATE … VECTOR HNSW … COSINE`` where
the valkey-search or RediSearch module is loaded).  ``semantic.open_index``
picks one at start.

An index stores only pointers: a unit vector, the partition it belongs to,
the exact-cache key its answer lives under, and when it expires (with the
answer).  Every method swallows its storage errors (logged, counted): the
semantic cache is an optimisation and never fails a request.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from nexus.gateway.cache.semantic_key import Partition
from nexus.gateway.cache.vectors import Vector
from nexus.runtime.dependency import DependencyState


@attrs.frozen(slots=True)
class Neighbour:
    cache_key: str
    similarity: float


@attrs.frozen(slots=True, eq=False)
class IndexRow:
    partition: Partition
    cache_key: str
    vector: Vector  # unit length, float32
    expires: float  # epoch seconds


class SemanticIndex(Protocol):
    """Nearest-neighbour search within a partition."""

    backend: str  # "builtin" or "valkey-search", for logs, metrics and /readyz
    state: DependencyState

    async def search(self, partition: Partition, vector: Vector) -> Neighbour | None:
        """The most similar unexpired entry of ``partition`` (any similarity), or None."""
        ...

    async def add(self, row: IndexRow) -> bool:
        """Remember ``row`` (replacing one with the same cache key); False when it was not kept."""
        ...

    async def remove(self, partition: Partition, cache_key: str) -> None:
        """Forget an entry whose answer is gone from the exact cache."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background upkeep (loading, change signals, expiry); ``started()`` once lookups can find old entries."""
        ...
