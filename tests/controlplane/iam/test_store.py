"""Against the real PostgreSQL: ``nexus db migrate`` seeds the managed groups and policies, and the
store loads a principal's policies (direct and through groups, with their org) in one query.

The session database is shared with other tests: rows get unique slugs and names and are removed
afterwards; assertions look only at this test's rows and the seeded ones.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
import psycopg
import pytest
from psycopg.types.json import Jsonb

from nexus.cli import db as db_cli
from nexus.config import NexusConfig
from nexus.config.schema import StorageConfig
from nexus.controlplane.iam.document import document_to_json, parse_document
from nexus.controlplane.iam.errors import StoredPolicyError
from nexus.controlplane.iam.evaluate import AccessRequest, evaluate
from nexus.controlplane.iam.seed import SEEDED_GROUPS, SEEDED_POLICIES, seed_iam
from nexus.controlplane.iam.store import (
    SYSTEM_POLICY,
    policies_for_api_key,
    policies_for_principal,
    policies_for_user,
)
from nexus.controlplane.principal import Principal
from nexus.storage.pgpool import PgPool


def _migrate(url: str) -> None:
    config = NexusConfig(storage=StorageConfig(database_url=url))
    assert db_cli.migrate(argparse.Namespace(), config) == 0


def _seeded_rows(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT g.name, g.managed, p.managed, p.document, p.updated_at, g.description "
        "FROM iam_group g JOIN iam_attachment a ON a.group_id = g.id JOIN iam_policy p ON p.id = a.policy_id "
        "WHERE g.org_id IS NULL AND p.org_id IS NULL AND p.name = g.name").fetchall()
    return {row[0]: row[1:] for row in rows}


def test_migrate_seeds_managed_groups_and_keeps_them_current(db_url: str) -> None:
    _migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = _seeded_rows(conn)
        assert set(rows) == set(SEEDED_GROUPS)
        for name, (group_managed, policy_managed, document, _updated, description) in rows.items():
            assert group_managed and policy_managed
            assert document == document_to_json(SEEDED_POLICIES[name])
            assert description == SEEDED_GROUPS[name].description

        # Running again changes nothing, not even updated_at.
        seed_iam(conn)
        assert _seeded_rows(conn) == rows

        # A stale managed document (an older release's) is rewritten; an admin's extra attachment stays.
        conn.execute("UPDATE iam_policy SET document = %s WHERE org_id IS NULL AND name = 'viewers'",
                     (Jsonb({"Version": "2025-01-01", "Statement": []}),))
        extra = conn.execute("INSERT INTO iam_policy (name, document) VALUES (%s, %s) RETURNING id",
                             (f"extra-{uuid.uuid4().hex[:8]}", Jsonb({"Version": "2025-01-01", "Statement": []}))
                             ).fetchone()
        assert extra is not None
        conn.execute("INSERT INTO iam_attachment (policy_id, group_id) "
                     "SELECT %s, id FROM iam_group WHERE org_id IS NULL AND name = 'viewers'", (extra[0],))
        try:
            _migrate(db_url)
            again = _seeded_rows(conn)
            assert again["viewers"][2] == document_to_json(SEEDED_POLICIES["viewers"])
            assert again["viewers"][3] > rows["viewers"][3]
            assert again["developers"] == rows["developers"]
            attached = conn.execute("SELECT count(*) FROM iam_attachment WHERE policy_id = %s", (extra[0],)).fetchone()
            assert attached == (1,)
        finally:
            conn.execute("DELETE FROM iam_policy WHERE id = %s", (extra[0],))


@attrs.frozen
class World:
    tag: str
    root_path: str
    child_path: str
    user_id: uuid.UUID
    key_id: uuid.UUID
    policy_ids: dict[str, uuid.UUID]


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    _migrate(db_url)
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(db_url, autocommit=True) as conn:
        def one(query: str, *args: Any) -> Any:
            row = conn.execute(query, args).fetchone()
            assert row is not None
            return row[0]

        root_id = one("INSERT INTO organization (slug, name) VALUES (%s, 'IAM test') RETURNING id", f"iam-{tag}")
        child_id = one("INSERT INTO organization (slug, name, parent_id) VALUES ('emea', 'EMEA', %s) RETURNING id",
                       root_id)
        user_id = one("INSERT INTO app_user (org_id, email) VALUES (%s, %s) RETURNING id", child_id,
                      f"dev-{tag}@iam.test")
        key_id = one("INSERT INTO admin_api_key (key_hash, key_prefix, org_id, name) VALUES (%s, 'nak_test', %s, 'ci') "
                     "RETURNING id", uuid.uuid4().bytes * 2, root_id)

        def make_policy(name: str, org: uuid.UUID | None, statements: list[dict[str, Any]]) -> uuid.UUID:
            doc = {"Version": "2025-01-01", "Statement": statements}
            return uuid.UUID(str(one("INSERT INTO iam_policy (org_id, name, document) VALUES (%s, %s, %s) RETURNING id",
                                     org, f"{tag}-{name}", Jsonb(doc))))

        ids = {
            "team": make_policy("team", root_id, [{"Effect": "Allow", "Action": "admin:project.*",
                                                  "Resource": "nrn:nexus:platform:org/${nexus:PrincipalOrgPath}:*"}]),
            "direct": make_policy("direct", child_id, [{"Sid": "NoPayloads", "Effect": "Deny",
                                                        "Action": "admin:traffic.read-payload", "Resource": "*"}]),
            "automation": make_policy("automation", root_id, [{"Effect": "Allow", "Action": "admin:*.read",
                                                               "Resource": "*"}]),
            "unused": make_policy("unused", root_id, [{"Effect": "Allow", "Action": "*", "Resource": "*"}]),
        }
        group_id = one("INSERT INTO iam_group (org_id, name) VALUES (%s, %s) RETURNING id", root_id, f"{tag}-team")
        conn.execute("INSERT INTO iam_attachment (policy_id, group_id) VALUES (%s, %s)", (ids["team"], group_id))
        conn.execute("INSERT INTO iam_attachment (policy_id, user_id) VALUES (%s, %s)", (ids["direct"], user_id))
        conn.execute("INSERT INTO iam_attachment (policy_id, admin_api_key_id) VALUES (%s, %s)",
                     (ids["automation"], key_id))
        conn.execute("INSERT INTO iam_group_member (group_id, user_id) VALUES (%s, %s)", (group_id, user_id))
        conn.execute("INSERT INTO iam_group_member (group_id, user_id, source) "
                     "SELECT id, %s, 'oidc' FROM iam_group WHERE org_id IS NULL AND name IN ('developers', 'viewers')",
                     (user_id,))
        # The same policy reached twice (directly and through a group) is loaded once.
        conn.execute("INSERT INTO iam_attachment (policy_id, user_id) "
                     "SELECT id, %s FROM iam_policy WHERE org_id IS NULL AND name = 'viewers'", (user_id,))
        try:
            yield World(tag, f"iam-{tag}", f"iam-{tag}/emea", uuid.UUID(str(user_id)), uuid.UUID(str(key_id)), ids)
        finally:
            conn.execute("DELETE FROM iam_policy WHERE name LIKE %s", (f"{tag}-%",))
            conn.execute("DELETE FROM iam_group WHERE name LIKE %s", (f"{tag}-%",))
            conn.execute("DELETE FROM admin_api_key WHERE id = %s", (key_id,))
            conn.execute("DELETE FROM app_user WHERE id = %s", (user_id,))
            conn.execute("DELETE FROM organization WHERE id = %s", (child_id,))
            conn.execute("DELETE FROM organization WHERE id = %s", (root_id,))


async def test_policies_for_user_and_api_key(db_url: str, world: World) -> None:
    pool = PgPool(db_url, max_size=2, name="iam-test")
    try:
        loaded = await policies_for_user(pool, world.user_id)
        assert [(p.name, p.org_path) for p in loaded] == [
            ("developers", None), ("viewers", None),
            (f"{world.tag}-team", world.root_path), (f"{world.tag}-direct", world.child_path)]
        assert loaded[0].document == SEEDED_POLICIES["developers"]
        assert loaded[2].id == world.policy_ids["team"]

        keys = await policies_for_api_key(pool, world.key_id)
        assert [(p.id, p.org_path) for p in keys] == [(world.policy_ids["automation"], world.root_path)]

        me = Principal("user", world.user_id, uuid.uuid4(), world.child_path, "dev")
        assert await policies_for_principal(pool, me) == loaded
        robot = Principal("api_key", world.key_id, uuid.uuid4(), world.root_path, "ci")
        assert await policies_for_principal(pool, robot) == keys
        assert await policies_for_user(pool, uuid.uuid4()) == []

        # The loaded set decides as the documents say: group grant, seeded grant, direct deny.
        def decide(action: str, resource: str, tags: dict[str, str] | None = None) -> str:
            request = AccessRequest(me, action, resource, "10.0.0.1", datetime.now(UTC), tags or {})
            return evaluate(loaded, request).effect

        child = f"org/{world.child_path}"
        assert decide("admin:project.create", f"nrn:nexus:platform:{child}:project/*") == "Allow"
        assert decide("admin:project.create", f"nrn:nexus:platform:org/{world.root_path}:project/*") == "DefaultDeny"
        assert decide("admin:traffic.read", f"nrn:nexus:gateway:{child}:traffic/e") == "Allow"
        assert decide("admin:traffic.read-payload", f"nrn:nexus:gateway:{child}:traffic/e") == "Deny"
        assert decide("admin:virtual-key.create", f"nrn:nexus:gateway:{child}:virtual-key/*",
                      {"owner": str(world.user_id)}) == "Allow"
    finally:
        await pool.aclose()


async def test_a_broken_stored_policy_fails_loudly(db_url: str, world: World) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE iam_policy SET document = %s WHERE id = %s",
                     (Jsonb({"Version": "2025-01-01", "Statement": [{"Effect": "Maybe"}]}), world.policy_ids["direct"]))
    pool = PgPool(db_url, max_size=1, name="iam-test-broken")
    try:
        with pytest.raises(StoredPolicyError) as info:
            await policies_for_user(pool, world.user_id)
        message = str(info.value)
        assert f'"{world.tag}-direct"' in message and str(world.policy_ids["direct"]) in message
        assert "Statement[0].Effect" in message
    finally:
        await pool.aclose()


async def test_system_principals_need_no_query() -> None:
    pool = PgPool("postgresql://127.0.0.1:1/nowhere", name="iam-never-used")
    system = Principal("system", uuid.uuid4(), uuid.uuid4(), "", "jobs")
    assert await policies_for_principal(pool, system) == [SYSTEM_POLICY]
    assert pool.size == 0
    await pool.aclose()


def test_document_json_is_what_the_database_stores() -> None:
    # The store parses document::text; jsonb normalises key order, which parsing must not care about.
    for doc in SEEDED_POLICIES.values():
        raw = document_to_json(doc)
        shuffled = {"Statement": [dict(reversed(list(s.items()))) for s in raw["Statement"]], "Version": raw["Version"]}
        assert parse_document(orjson.loads(orjson.dumps(shuffled))) == doc
