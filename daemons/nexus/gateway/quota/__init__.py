"""Quotas and budgets: which limits apply to a request, and counting them atomically in Valkey.

``policy`` (pure) turns ``quota_policy`` / ``quota_override`` rows into an
immutable snapshot and answers which counters a request touches and how much it
reserves; ``script`` (pure) holds the Lua scripts and their argument encoding;
``engine`` is the Trio shell the gateway calls (reserve before the upstream
call, reconcile after); ``rebuild`` restores calendar counters from PostgreSQL
rollups after a Valkey loss; ``usage`` answers GET /v1/usage; ``store`` loads
the snapshot; ``settings`` reads ``[gateway.quota]`` and the ``NEXUS_QUOTA_*``
environment; ``request`` is the gateway's one seam (reserve with the soft-limit
alert and the downgrade action, reconcile when the answer is complete).
"""
