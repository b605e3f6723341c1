"""The semantic index on valkey-search (or RediSearch): HNSW vectors in Valkey hashes, KNN 1 per lookup.

Used where the module is loaded (``probe``: ``FT._LIST`` answers).  One index
per embedding model and vector length, created on first use::

    FT.CREATE nexus:semidx:<model tag>:<dims> ON HASH PREFIX 1 nexus:semvec:<model tag>:<dims>:
        SCHEMA part TAG vec VECTOR HNSW 6 TYPE FLOAT32 DIM <dims> DISTANCE_METRIC COSINE

An entry is the hash ``<prefix><cache key>`` with ``part`` (the partition's
hex tag) and ``vec`` (little-endian float32), expiring with its answer
(``PEXPIREAT``), so the server drops it from the index by itself.  A lookup::

    FT.SEARCH <index> "@part:{<tag>}=>[KNN 1 @vec $v AS dist]" PARAMS 2 v <bytes> RETURN 1 dist DIALECT 2

``dist`` is the cosine distance: similarity = 1 - dist.  The cache key is the
document id minus the prefix, so nothing else needs returning.

Nothing is kept in PostgreSQL or in process memory: the index survives a
gateway restart in Valkey itself, and every gateway shares it at once.

Errors: Valkey errors are logged and become "no neighbour" / "not kept".
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import trio

from nexus.gateway.cache.semantic_index import IndexRow, Neighbour
from nexus.gateway.cache.semantic_key import Partition
from nexus.gateway.cache.vectors import Vector, to_bytes
from nexus.net.resp.client import ValkeyClient, ValkeyConnectionError, ValkeyError
from nexus.runtime.dependency import DependencyState

log = logging.getLogger("nexus.gateway.cache.semantic")


async def probe(valkey: ValkeyClient) -> bool:
    """Whether the server has a search module with vector fields (valkey-search, RediSearch)."""
    try:
        await valkey.execute("FT._LIST")
    except ValkeyError:
        return False
    return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ValkeySearchIndex:
    backend = "valkey-search"

    def __init__(self, valkey: ValkeyClient, embedding_model: str, *, namespace: str = "nexus:") -> None:
        self.valkey = valkey
        self.embedding_model = embedding_model
        self.model_tag = hashlib.sha256(embedding_model.encode()).hexdigest()[:16]
        self.namespace = namespace
        self.state = DependencyState("semantic-cache", detail="valkey-search")
        self._created: set[int] = set()

    def names(self, dims: int) -> tuple[str, str]:
        """(index name, key prefix) for vectors of ``dims`` dimensions."""
        ns = self.namespace
        return f"{ns}semidx:{self.model_tag}:{dims}", f"{ns}semvec:{self.model_tag}:{dims}:"

    async def _ensure(self, dims: int) -> tuple[str, str]:
        name, prefix = self.names(dims)
        if dims not in self._created:
            try:
                await self.valkey.execute(
                    "FT.CREATE", name, "ON", "HASH", "PREFIX", 1, prefix, "SCHEMA", "part", "TAG",
                    "vec", "VECTOR", "HNSW", 6, "TYPE", "FLOAT32", "DIM", dims, "DISTANCE_METRIC", "COSINE")
            except ValkeyError as exc:
                if "exist" not in str(exc).lower():
                    raise
            self._created.add(dims)
        return name, prefix

    async def search(self, partition: Partition, vector: Vector) -> Neighbour | None:
        if partition.embedding_model != self.embedding_model:
            return None
        try:
            name, prefix = await self._ensure(int(vector.shape[0]))
            reply = await self.valkey.execute(
                "FT.SEARCH", name, f"@part:{{{partition.tag}}}=>[KNN 1 @vec $v AS dist]",
                "PARAMS", 2, "v", to_bytes(vector), "RETURN", 1, "dist", "DIALECT", 2)
        except (ValkeyConnectionError, ValkeyError) as exc:
            log.warning("valkey-search lookup failed: %s", exc)
            return None
        return _neighbour(reply, prefix)

    async def add(self, row: IndexRow) -> bool:
        if row.partition.embedding_model != self.embedding_model:
            return False
        try:
            _name, prefix = await self._ensure(int(row.vector.shape[0]))
            doc = prefix + row.cache_key
            replies = await self.valkey.pipeline([
                ("HSET", doc, "part", row.partition.tag, "vec", to_bytes(row.vector)),
                ("PEXPIREAT", doc, int(row.expires * 1000)),
            ])
        except (ValkeyConnectionError, ValkeyError) as exc:
            log.warning("valkey-search insert failed: %s", exc)
            return False
        return not any(isinstance(r, ValkeyError) for r in replies)

    async def remove(self, partition: Partition, cache_key: str) -> None:
        for dims in list(self._created):
            try:
                await self.valkey.execute("DEL", self.names(dims)[1] + cache_key)
            except (ValkeyConnectionError, ValkeyError) as exc:
                log.warning("valkey-search delete failed: %s", exc)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.state.mark_up("valkey-search")
        task_status.started()


def _neighbour(reply: Any, prefix: str) -> Neighbour | None:
    """``[total, doc id, [field, value, …], …]`` → the first document as a neighbour."""
    if not isinstance(reply, list) or len(reply) < 3 or not reply[0]:
        return None
    doc, fields = _text(reply[1]), reply[2]
    if not doc.startswith(prefix) or not isinstance(fields, list):
        return None
    values = {_text(fields[i]): _text(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}
    try:
        distance = float(values["dist"])
    except (KeyError, ValueError):
        return None
    return Neighbour(doc[len(prefix):], 1.0 - distance)
