"""Developer stack: find or start PostgreSQL, Valkey/Redis and NATS, then run every daemon (``make run``)."""
