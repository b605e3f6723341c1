"""Loading the quota snapshot from PostgreSQL: rows of every axis, overrides, the org tree, provider names."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import psycopg
import pytest
import trio

from nexus.gateway.quota.policy import QuotaSubject
from nexus.gateway.quota.store import load_snapshot
from nexus.storage.pgpool import PgPool


@attrs.define
class World:
    root: str = ""
    child: str = ""
    leaf: str = ""
    paths: dict[str, str] = attrs.Factory(dict)
    project: str = ""
    user: str = ""
    key: str = ""
    provider: str = ""
    provider_name: str = ""
    model: str = ""
    policies: dict[str, str] = attrs.Factory(dict)
    overrides: dict[str, str] = attrs.Factory(dict)


def _one(conn: psycopg.Connection[Any], sql: str, *params: Any) -> str:
    row = conn.execute(sql + " RETURNING id::text", params).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = World()
    tag = uuid.uuid4().hex[:10]
    with psycopg.connect(db_url, autocommit=True) as conn:
        w.root = _one(conn, "INSERT INTO organization (slug, name) VALUES (%s, 'Root')", f"q-{tag}")
        w.child = _one(conn, "INSERT INTO organization (parent_id, slug, name) VALUES (%s, 'emea', 'Emea')", w.root)
        w.leaf = _one(conn, "INSERT INTO organization (parent_id, slug, name) VALUES (%s, 'sales', 'S')", w.child)
        w.paths = {w.root: f"q-{tag}", w.child: f"q-{tag}/emea", w.leaf: f"q-{tag}/emea/sales"}
        w.project = _one(conn, "INSERT INTO project (org_id, slug, name) VALUES (%s, 'app', 'App')", w.leaf)
        w.user = _one(conn, "INSERT INTO app_user (org_id, email) VALUES (%s, %s)", w.leaf, f"{tag}@example.com")
        w.key = _one(conn, "INSERT INTO virtual_key (key_hash, key_prefix, name, kind, org_id, project_id)"
                     " VALUES (%s, 'nvk_test', 'k', 'application', %s, %s)", os.urandom(32), w.leaf, w.project)
        w.provider_name = f"q-{tag}"
        w.provider = _one(conn, "INSERT INTO provider (name, adapter, base_url) VALUES (%s, 'openai', 'http://x')",
                          w.provider_name)
        w.model = f"model-{tag}"

        def policy(name: str, axis: str, column: str | None, subject: str | None, **extra: Any) -> None:
            fields = {"name": name, "axis": axis, "unit": "requests", "window_kind": "calendar",
                      "calendar_period": "day", "hard_limit": 10, **extra}
            if column is not None:
                fields[column] = subject
            cols, marks = ", ".join(fields), ", ".join(["%s"] * len(fields))
            w.policies[name] = _one(conn, f"INSERT INTO quota_policy ({cols}) VALUES ({marks})", *fields.values())

        policy("root", "organization", "org_id", w.root, fail_mode="open")
        policy("per key in emea", "virtual_key", None, None, scope_org_id=w.child, unit="total_tokens",
               window_kind="sliding", calendar_period=None, window_seconds=3600, soft_limit=5)
        policy("project", "project", "project_id", w.project, unit="cost_micro_usd", calendar_period="month")
        policy("user", "user", "user_id", w.user)
        policy("key", "virtual_key", "virtual_key_id", w.key, hard_action="downgrade")
        policy("provider", "provider", "provider_id", w.provider)
        policy("model", "model", "model_code", w.model)
        policy("disabled", "virtual_key", "virtual_key_id", w.key, enabled=False)
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        w.overrides["live"] = _one(
            conn, "INSERT INTO quota_override (quota_policy_id, virtual_key_id, hard_limit, reason, expires_at)"
            " VALUES (%s, %s, 99, 'pilot', %s)", w.policies["per key in emea"], w.key, soon)
        w.overrides["expired"] = _one(
            conn, "INSERT INTO quota_override (quota_policy_id, user_id, hard_limit, reason, expires_at)"
            " VALUES (%s, %s, 1, 'old', %s)", w.policies["user"], w.user, past)
    yield w
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM quota_policy WHERE id = ANY(%s::uuid[])", (list(w.policies.values()),))
        conn.execute("DELETE FROM virtual_key WHERE id = %s", (w.key,))
        conn.execute("DELETE FROM app_user WHERE id = %s", (w.user,))
        conn.execute("DELETE FROM project WHERE id = %s", (w.project,))
        conn.execute("DELETE FROM provider WHERE id = %s", (w.provider,))
        for org in (w.leaf, w.child, w.root):
            conn.execute("DELETE FROM organization WHERE id = %s", (org,))


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[PgPool]:
    async with trio.open_nursery() as nursery:
        p = PgPool(db_url, max_size=2, name="quota-store-test")
        await nursery.start(p.run)
        yield p
        nursery.cancel_scope.cancel()


async def test_snapshot_from_the_database(world: World, pool: PgPool) -> None:
    snap = await load_snapshot(pool)
    mine = {p.name: p for p in snap.policies if p.id in world.policies.values()}
    assert set(mine) == set(world.policies) - {"disabled"}
    assert (mine["root"].subject, mine["root"].fail_mode) == (world.root, "open")
    assert (mine["per key in emea"].subject, mine["per key in emea"].scope_org_id,
            mine["per key in emea"].window_seconds, mine["per key in emea"].soft_limit) == (None, world.child, 3600, 5)
    assert (mine["project"].unit, mine["project"].calendar_period) == ("cost_micro_usd", "month")
    assert mine["key"].hard_action == "downgrade" and mine["model"].subject == world.model
    overrides = {o.id for o in snap.overrides}
    assert world.overrides["live"] in overrides and world.overrides["expired"] not in overrides
    assert {k: snap.org_paths[k] for k in world.paths} == world.paths
    assert snap.provider_names[world.provider] == world.provider_name
    assert snap.org_chain(world.leaf) == (world.leaf, world.child, world.root)

    subject = QuotaSubject(world.key, world.leaf, world.project, world.user, world.provider, world.model)
    applied = {(a.policy.name, a.subject, a.hard) for a in snap.applicable(subject, dt.datetime.now(dt.UTC).timestamp())
               if a.policy.id in world.policies.values()}
    assert applied == {("root", world.root, 10), ("per key in emea", world.key, 99), ("project", world.project, 10),
                       ("user", world.user, 10), ("key", world.key, 10), ("provider", world.provider, 10),
                       ("model", world.model, 10)}
