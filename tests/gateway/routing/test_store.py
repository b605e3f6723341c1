"""Loading rules from the real PostgreSQL: valid rules become the snapshot, invalid ones are skipped by name,
organization rules carry their path, and an unreachable database is the caller's error to handle.

The session database is shared: rows get unique names and are deleted afterwards, and assertions only look at
this test's own rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest
import trio
from psycopg.types.json import Jsonb

from nexus.devstack.services import free_port
from nexus.gateway.routing.health import AllClosed
from nexus.gateway.routing.planner import Plan, Router
from nexus.gateway.routing.predicate import RouteRequest
from nexus.gateway.routing.store import RouterHolder, load_router
from nexus.storage.pgpool import PgPool

from .conftest import allow_all, make_catalog


@attrs.frozen
class Seeded:
    tag: str
    org_id: str
    org_path: str


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    tag = uuid.uuid4().hex[:10]
    with psycopg.connect(db_url, autocommit=True) as conn:
        org_id, org_path = conn.execute(
            "INSERT INTO organization (slug, name) VALUES (%s, %s) RETURNING id::text, path",
            (f"rt-{tag}", f"routing test {tag}")).fetchone() or ("", "")

        def insert(name: str, strategy: dict[str, Any], *, stage: int = 1, priority: int = 0,
                   match: dict[str, Any] | None = None, org: str | None = None, enabled: bool = True,
                   retry: dict[str, Any] | None = None, chain: list[Any] | None = None) -> None:
            conn.execute(
                "INSERT INTO routing_rule (org_id, name, stage, priority, match_conditions, strategy, retry_policy, "
                "fallback_chain, enabled) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (org, f"{tag}-{name}", stage, priority, Jsonb(match or {"metadata.test": tag}), Jsonb(strategy),
                 Jsonb(retry or {}), Jsonb(chain or []), enabled))

        insert("route", {"type": "fallback", "targets": [{"provider": "azure", "model": "gpt-4o"}]}, priority=7,
               retry={"max_retries": 2, "retry_on": [429]}, chain=[{"model": "claude"}])
        insert("policy", {"type": "policy", "denyModels": ["claude"]}, stage=0)
        insert("org-only", {"model": "mini"}, priority=100, org=org_id)
        insert("bad-regex", {"model": "mini"}, priority=50, match={"model": {"$regex": "(unclosed"}})
        insert("bad-node", {"type": "loadbalance", "weightedTargets": []}, priority=40)
        insert("disabled", {"model": "mini"}, priority=90, enabled=False)
        try:
            yield Seeded(tag, org_id, org_path)
        finally:
            conn.execute("DELETE FROM routing_rule WHERE name LIKE %s", (f"{tag}-%",))
            conn.execute("DELETE FROM organization WHERE id = %s", (org_id,))


async def test_load_router(db_url: str, seeded: Seeded, nursery: trio.Nursery) -> None:
    pool = PgPool(db_url, max_size=2, name="routing-test")
    await nursery.start(pool.run)
    holder = RouterHolder()
    holder.current, holder.loaded = await load_router(pool), True
    ours = [r for r in holder.current.rules if r.name.startswith(seeded.tag)]
    assert [(r.name.removeprefix(seeded.tag + "-"), r.stage, r.priority) for r in ours] == [
        ("policy", 0, 0), ("org-only", 1, 100), ("route", 1, 7)]
    org_rule = ours[1]
    assert org_rule.org_id == seeded.org_id and org_rule.org_path == seeded.org_path
    route = ours[2]
    assert route.retry_policy.max_retries == 2 and route.retry_policy.retry_on.statuses == {429}
    skipped = [s for s in holder.current.skipped if seeded.tag in s]
    assert len(skipped) == 2
    assert any(f"'{seeded.tag}-bad-regex'" in s and "invalid regular expression" in s for s in skipped)
    assert any(f"'{seeded.tag}-bad-node'" in s and "weightedTargets must not be empty" in s for s in skipped)

    # Plan with this test's rules only: other tests may add global rules to the shared database.
    mine_only = Router.build(ours)
    catalog = make_catalog(("openai", "gpt-4o"), ("azure", "gpt-4o"), ("anthropic", "claude"), ("openai", "mini"))
    mine = {"test": seeded.tag}
    p = mine_only.plan(RouteRequest("gpt-4o", metadata=mine), catalog, AllClosed(), allow_all)
    assert isinstance(p, Plan)
    assert [t.route.provider.name for t in p.targets] == ["azure"]  # claude in the chain: denied by our policy
    assert p.rule_name == f"{seeded.tag}-route" and p.filtered[0].reason.startswith(f"denied by policy '{seeded.tag}")
    sub = RouteRequest("gpt-4o", org_id="child", org_path=seeded.org_path + "/child", metadata=mine)
    p = mine_only.plan(sub, catalog, AllClosed(), allow_all)
    assert isinstance(p, Plan) and p.rule_name == f"{seeded.tag}-org-only"


async def test_unreachable_database_raises(nursery: trio.Nursery) -> None:
    pool = PgPool(f"postgresql://127.0.0.1:{free_port()}/nexus?sslmode=disable", connect_timeout=1,
                  acquire_timeout=1, name="routing-down")
    await nursery.start(pool.run)
    with trio.fail_after(10), pytest.raises(psycopg.OperationalError):
        await load_router(pool)
