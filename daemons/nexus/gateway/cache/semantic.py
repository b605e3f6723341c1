"""The semantic cache: a prompt that means the same as an answered one gets that answer.

Use (after an exact-cache miss; see ``request.serve``)::

    look = await semantic.lookup(provider, upstream_model, scope_tag, chat)
    if look is not None and look.entry is not None:     # X-Nexus-Cache: semantic
        ... replay look.entry (similarity in look.neighbour) ...
    ... call upstream; once the answer is stored in the exact cache under cache_key:
    await semantic.remember(look, cache_key, entry, ttl, flagged=...)

A lookup embeds the last user message (``semantic_key``) with the configured
embedding model (``embedder``) and asks the index for the nearest entry of the
same partition (provider, model, scope, exact context, embedding model).  A
neighbour at or above ``threshold`` cosine similarity is a hit: its answer is
read from the exact cache under the neighbour's key (entries point at exact
cache entries, which hold the answer, stream recordings included).  An answer
that is gone (expired, evicted) makes the lookup a miss and the entry is
forgotten.

Budget: embedding plus search must finish within ``budget_ms`` (default 20);
past it the lookup is a miss, counted as ``over_budget``.  A circuit breaker
guards the embedding endpoint (``breaker``): failures and overruns count
against it; while it is open, lookups are misses without a call
(``breaker_open``).  Nothing here ever fails a request.

The vector computed by the lookup is what ``remember`` stores, so a request is
embedded once.  ``remember`` applies the semantic poison guard
(``policy.semantic_poison_reason``) on top of the exact cache's.

Backend (``open_index``): valkey-search when the server has the module
(``auto``), else the built-in index (PostgreSQL + memory).  ``run`` picks and
starts it, and reports started once old entries can be found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs
import trio
from prometheus_client import Counter, Gauge

from nexus.config.schema import SemanticCacheConfig
from nexus.gateway.cache.breaker import Breaker
from nexus.gateway.cache.builtin_index import BuiltinIndex
from nexus.gateway.cache.embedder import Embedder, EmbeddingFailed
from nexus.gateway.cache.entry import CacheEntry
from nexus.gateway.cache.exact import ExactCache
from nexus.gateway.cache.policy import SemanticPolicy, semantic_poison_reason
from nexus.gateway.cache.semantic_index import IndexRow, Neighbour, SemanticIndex
from nexus.gateway.cache.semantic_key import Partition, partition, semantic_query
from nexus.gateway.cache.valkey_index import ValkeySearchIndex, probe
from nexus.gateway.cache.vectors import Vector
from nexus.gateway.catalog import CatalogHolder
from nexus.net.http1 import client as http
from nexus.net.nats.client import NatsClient
from nexus.net.resp.client import ValkeyConnectionError
from nexus.runtime.dependency import DependencyState
from nexus.runtime.metrics import REGISTRY
from nexus.storage.pgpool import PgPool

log = logging.getLogger("nexus.gateway.cache.semantic")

Backend = Literal["auto", "builtin", "valkey-search"]
Outcome = Literal["hit", "miss", "stale", "over_budget", "breaker_open", "embed_failed"]

_LOOKUPS = Counter("nexus_semantic_cache_lookups", "Semantic-cache lookups by outcome", ["result"], registry=REGISTRY)
_STORES = Counter("nexus_semantic_cache_stores", "Semantic-cache stores by outcome", ["result"], registry=REGISTRY)
_BREAKER_OPEN = Gauge("nexus_semantic_breaker_open", "1 while the embedding endpoint's circuit breaker is open",
                      registry=REGISTRY)
_LOG_EVERY: Final = 10.0  # seconds between two warnings about the embedding endpoint


@attrs.define(slots=True)
class SemanticLookup:
    """One request's semantic lookup: what ``remember`` needs afterwards, and the hit if there was one."""

    partition: Partition
    outcome: Outcome
    vector: Vector | None = None
    neighbour: Neighbour | None = None
    entry: CacheEntry | None = None
    elapsed_ms: float = 0.0


class SemanticCache:
    """See the module docstring.  ``index`` is set by ``run`` (tests may set it directly)."""

    def __init__(self, policy: SemanticPolicy, embedder: Embedder, exact: ExactCache, *,
                 pool: PgPool | None = None, nats: NatsClient | None = None, backend: Backend = "auto",
                 max_entries: int = 50_000, breaker: Breaker | None = None) -> None:
        self.policy = policy
        self.embedder = embedder
        self.exact = exact
        self.pool = pool
        self.nats = nats
        self.backend = backend
        self.max_entries = max_entries
        self.breaker = breaker or Breaker()
        self.index: SemanticIndex | None = None
        self.outcomes: dict[str, int] = {}
        self._starting = DependencyState("semantic-cache", detail="starting")
        self._last_warning = -_LOG_EVERY

    @property
    def state(self) -> DependencyState:
        """The index's state for /readyz (the breaker shows in the detail: an open one does not make it unready)."""
        if self.index is None:
            return self._starting
        state = self.index.state
        if self.breaker.state != "closed":
            return attrs.evolve(state, detail=f"{state.detail}; embedding breaker {self.breaker.state}")
        return state

    # -- start -----------------------------------------------------------------------------------

    async def open_index(self) -> SemanticIndex:
        """The backend: valkey-search if configured or (``auto``) found, else the built-in index."""
        model = self.policy.embedding_model
        if self.backend != "builtin":
            try:
                found = await probe(self.exact.valkey)
            except ValkeyConnectionError as exc:
                log.warning("cannot probe Valkey for a search module: %s", exc)
                found = False
            if found:
                log.info("semantic cache: valkey-search backend")
                return ValkeySearchIndex(self.exact.valkey, model)
            if self.backend == "valkey-search":
                log.error("semantic cache: backend valkey-search configured but the server has no search module; "
                          "using the built-in index")
        if self.pool is None:
            raise RuntimeError("the built-in semantic index needs PostgreSQL")
        log.info("semantic cache: built-in backend")
        return BuiltinIndex(self.pool, self.nats, model, max_entries=self.max_entries)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        index = await self.open_index()
        async with trio.open_nursery() as nursery:
            await nursery.start(index.run)
            self.index = index
            task_status.started()

    # -- lookup and store -------------------------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        _LOOKUPS.labels(outcome).inc()

    def _warn(self, message: str, *args: Any) -> None:
        now = trio.current_time()
        if now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            log.warning(message, *args)

    def _record(self, ok: bool) -> None:
        before = self.breaker.opened
        self.breaker.record(ok, trio.current_time())
        if self.breaker.opened != before:
            log.warning("semantic cache: embedding endpoint breaker open for %.0f s", self.breaker.open_seconds)
        _BREAKER_OPEN.set(1 if self.breaker.state == "open" else 0)

    async def lookup(self, provider: str, model: str, scope_tag: str, chat: Mapping[str, Any]
                     ) -> SemanticLookup | None:
        """The lookup of one request (None: it cannot use the semantic cache); never raises but ``Cancelled``."""
        index = self.index
        if index is None:
            self._count("not_started")
            return None
        query = semantic_query(chat, self.policy.max_chars)
        if isinstance(query, str):
            self._count("ineligible")
            return None
        part = partition(provider, model, scope_tag, query, self.policy.embedding_model)
        started = time.perf_counter()
        if not self.breaker.allow(trio.current_time()):
            self._count("breaker_open")
            return SemanticLookup(part, "breaker_open")
        budget = self.policy.budget_ms / 1000
        deadline = trio.current_time() + budget
        vector: Vector | None = None
        try:
            with trio.move_on_at(deadline):
                vector = await self.embedder.embed(query.text, budget)
        except EmbeddingFailed as exc:
            self._record(False)
            self._warn("semantic cache: %s", exc)
            self._count("embed_failed")
            return SemanticLookup(part, "embed_failed", elapsed_ms=(time.perf_counter() - started) * 1000)
        except BaseException:
            self.breaker.abandon()
            raise
        if vector is None:
            self._record(False)
            self._warn("semantic cache: embedding took longer than the %.0f ms budget", self.policy.budget_ms)
            self._count("over_budget")
            return SemanticLookup(part, "over_budget", elapsed_ms=(time.perf_counter() - started) * 1000)
        self._record(True)
        neighbour = None
        with trio.move_on_at(deadline):
            neighbour = await index.search(part, vector)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms > self.policy.budget_ms:
            self._count("over_budget")
            return SemanticLookup(part, "over_budget", vector, elapsed_ms=elapsed_ms)
        if neighbour is None or neighbour.similarity < self.policy.threshold:
            self._count("miss")
            return SemanticLookup(part, "miss", vector, neighbour, elapsed_ms=elapsed_ms)
        bypassed = self.exact.bypassed
        entry = await self.exact.get(neighbour.cache_key)
        if entry is None:
            if self.exact.bypassed == bypassed:  # gone (expired, evicted, corrupt), not merely unreachable
                await index.remove(part, neighbour.cache_key)
            self._count("stale")
            return SemanticLookup(part, "stale", vector, elapsed_ms=elapsed_ms)
        self._count("hit")
        return SemanticLookup(part, "hit", vector, neighbour, entry, elapsed_ms)

    async def remember(self, look: SemanticLookup, cache_key: str, entry: CacheEntry, ttl: int, *,
                       flagged: bool = False) -> bool:
        """Index ``entry`` (already stored in the exact cache under ``cache_key``) for similar prompts."""
        index = self.index
        if look.vector is None or index is None:
            return False
        reason = semantic_poison_reason(entry.as_response(), flagged=flagged)
        if reason is not None:
            _STORES.labels("refused").inc()
            log.debug("answer not indexed for similar prompts: %s", reason)
            return False
        kept = await index.add(IndexRow(look.partition, cache_key, look.vector, time.time() + ttl))
        _STORES.labels("stored" if kept else "full").inc()
        return kept


def from_config(cfg: SemanticCacheConfig, exact: ExactCache, client: http.HttpClient, catalog: CatalogHolder,
                pool: PgPool, nats: NatsClient) -> SemanticCache:
    """The semantic cache ``gateway.cache.semantic`` describes (the caller checked ``enabled``)."""
    policy = SemanticPolicy(cfg.embedding_model, threshold=cfg.threshold, budget_ms=cfg.budget_ms,
                            default_on=cfg.default_on, models=tuple(cfg.models), keys=frozenset(cfg.keys),
                            dimensions=cfg.dimensions, max_chars=cfg.max_chars)
    return SemanticCache(policy, Embedder(client, catalog, cfg.embedding_model, cfg.dimensions), exact, pool=pool,
                         nats=nats, backend=cfg.backend, max_entries=cfg.max_entries,
                         breaker=Breaker(cfg.breaker_failures, cfg.breaker_open_seconds))
