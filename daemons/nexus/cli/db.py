"""``nexus db migrate | status | seed-demo``."""

from __future__ import annotations

import argparse
import json
import sys

import attrs
import psycopg

from nexus.config import NexusConfig
from nexus.runtime.logs import redact_url
from nexus.storage import migrate as migrations
from nexus.storage import partitions


def _fail(message: str) -> int:
    # One line: libpq adds a hint on a second line ("Is the server running…") that journald would split.
    print(" ".join(message.split()), file=sys.stderr)
    return 1


def migrate(_args: argparse.Namespace, config: NexusConfig) -> int:
    dsn = config.storage.database_url
    try:
        if migrations.ensure_database(dsn):
            print(f"created database at {redact_url(dsn)}")
        applied = migrations.migrate(dsn)
        created = prepare_partitions(dsn)
        packs = seed_rules(dsn)
        seed_iam_groups(dsn)
    except (migrations.MigrationError, partitions.PartitionError) as exc:
        return _fail(f"migration failed: {exc}")
    print(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    if created:
        print(f"created {len(created)} traffic partition(s)")
    if packs:
        print(f"seeded rule packs: {', '.join(packs)}")
    return 0


def seed_rules(dsn: str) -> list[str]:
    """The packaged rule packs, into ``rule_pack`` / ``rule``."""
    from nexus.storage.rulepacks import seed_rule_packs

    try:
        with psycopg.connect(dsn) as conn:
            return seed_rule_packs(conn)
    except psycopg.Error as exc:
        raise migrations.MigrationError(f"seeding rule packs failed: {exc}") from None


def seed_iam_groups(dsn: str) -> None:
    """The managed IAM groups and policies (``iam_group`` / ``iam_policy`` with org_id NULL)."""
    from nexus.controlplane.iam.seed import seed_iam

    try:
        with psycopg.connect(dsn) as conn:
            seed_iam(conn)
    except psycopg.Error as exc:
        raise migrations.MigrationError(f"seeding IAM groups failed: {exc}") from None


def prepare_partitions(dsn: str) -> list[str]:
    """Daily traffic partitions for today and the days ahead (the hub's job keeps them coming)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return partitions.ensure_partitions(conn)
    except psycopg.OperationalError as exc:
        raise partitions.PartitionError(f"cannot reach PostgreSQL at {redact_url(dsn)}: {exc}") from None


def status(_args: argparse.Namespace, config: NexusConfig) -> int:
    dsn = config.storage.database_url
    try:
        rows = migrations.status(dsn)
    except migrations.MigrationError as exc:
        return _fail(str(exc))
    for migration, applied in rows:
        when = f"applied {applied.applied_at:%Y-%m-%d %H:%M:%S}" if applied else "pending"
        print(f"{migration.version:04d}  {migration.name:<40} {when}")
    return 0


def seed_demo(args: argparse.Namespace, config: NexusConfig) -> int:
    from nexus.crypto import secretfiles
    from nexus.devstack.seed import seed_demo as run_seed

    try:
        seeded = run_seed(config.storage.database_url, secretfiles.directory(config.secrets.dir), args.mock_url,
                          hooks=args.with_hooks, public_url=config.control_plane.public_url)
    except secretfiles.SecretsError as exc:
        return _fail(str(exc))
    except psycopg.Error as exc:
        return _fail(f"seeding failed: {str(exc).strip().splitlines()[0]} (run `nexus db migrate` first?)")
    if args.json:
        print(json.dumps(attrs.asdict(seeded)))
    else:
        print(f"org {seeded.org_id}, project {seeded.project_id}")
        print(f"admin {seeded.admin_email} / {seeded.admin_password}")
        print(f"virtual key {seeded.virtual_key}  (shown once)")
        print(f"models: {', '.join(seeded.models)}")
    return 0


__all__ = ["migrate", "seed_demo", "status"]
