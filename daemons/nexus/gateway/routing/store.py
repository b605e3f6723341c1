"""Load the routing rules from PostgreSQL into a ``Router`` snapshot (Trio shell).

``load_router`` reads every enabled ``routing_rule`` with its organization's
path (so an organization's rules reach its sub-organizations), parses each with
``rules.parse_rule`` and builds the snapshot.  A rule that does not parse is
skipped with a logged error naming it (and listed in ``Router.skipped``): one
bad row never takes routing, let alone the gateway, down.

``RouterHolder`` is the swap point: readers take ``holder.current`` once per
request; the config watcher replaces it after a successful load on a
``routing_rule`` change signal, a NATS reconnect, or its periodic refresh.

Resource handling: one pooled connection, for the duration of one query.
Errors: database errors propagate (``psycopg.Error``, including the pool's
``PoolError``s): the caller keeps the previous snapshot and retries later.
"""

from __future__ import annotations

import logging

import attrs

from nexus.gateway.routing.planner import EMPTY_ROUTER, Router
from nexus.gateway.routing.rules import RoutingRule, RuleError, parse_rule
from nexus.storage.pgpool import PgPool

log = logging.getLogger("nexus.gateway.routing")

_QUERY = (
    "SELECT r.id::text, r.org_id::text, o.path, r.name, r.description, r.stage, r.priority, r.match_conditions, "
    "r.strategy, r.retry_policy, r.fallback_chain "
    "FROM routing_rule r LEFT JOIN organization o ON o.id = r.org_id WHERE r.enabled"
)
_COLUMNS = ("id", "org_id", "org_path", "name", "description", "stage", "priority", "match_conditions", "strategy",
            "retry_policy", "fallback_chain")


async def load_router(pool: PgPool) -> Router:
    async with pool.connection() as conn:
        rows = await (await conn.execute(_QUERY)).fetchall()
    rules: list[RoutingRule] = []
    skipped: list[str] = []
    for row in rows:
        try:
            rules.append(parse_rule(dict(zip(_COLUMNS, row, strict=True))))
        except RuleError as exc:
            log.error("skipping %s", exc)
            skipped.append(str(exc))
    return Router.build(rules, skipped)


@attrs.define
class RouterHolder:
    """The current snapshot; ``loaded`` stays False until the first successful load."""

    current: Router = EMPTY_ROUTER
    loaded: bool = False
