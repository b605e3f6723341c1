"""The response caches: exact (same request, same answer, from Valkey) and semantic (a prompt that means the same).

Exact: ``key`` (pure) hashes what decides the answer; ``policy`` (pure) says
whether a request may use the cache and whether an answer may be stored;
``entry`` (pure) is the stored form (canonical answer or recorded stream) and
its binary encoding; ``replay`` turns an entry into the caller's bytes;
``exact`` is the Trio shell over Valkey with single flight within and across
processes.

Semantic: ``semantic_key`` (pure) splits a request into the text compared by
meaning and the context matched exactly; ``breaker`` (pure) guards the
embedding endpoint; ``vectors`` (pure, numpy) is the in-memory index;
``embedder`` calls the embedding model through the provider layer;
``semantic_index`` is the backends' interface, ``builtin_index``
(PostgreSQL + memory + NATS) and ``valkey_index`` (valkey-search) implement
it; ``semantic`` ties them together.  Semantic entries point at exact entries.

``request`` is the one seam the gateway calls.
"""
