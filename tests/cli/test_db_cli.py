"""``nexus db migrate | status | seed-demo`` against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

MIGRATIONS = len(list((Path(__file__).resolve().parents[2] / "db" / "migrations").glob("[0-9]*.sql")))


def nexus(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")} | env
    return subprocess.run([sys.executable, "-m", "nexus", *args], capture_output=True, text=True, env=full,
                          timeout=120)


def test_migrate_creates_the_database_then_status_and_seed(pg_server_url: str, secrets_dir: Path) -> None:
    name = f"nexus_cli_{uuid.uuid4().hex[:8]}"
    url = pg_server_url.rsplit("/", 1)[0] + "/" + name
    env = {"NEXUS_DATABASE_URL": url, "NEXUS_SECRETS_DIR": str(secrets_dir)}
    try:
        first = nexus("db", "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "created database" in first.stdout and f"applied {MIGRATIONS} migration(s)" in first.stdout
        assert "traffic partition" in first.stdout
        assert "seeded rule packs: " in first.stdout
        with psycopg.connect(url) as conn:
            counts = conn.execute("SELECT (SELECT count(*) FROM rule_pack), (SELECT count(*) FROM rule)").fetchone()
        assert counts is not None
        packs, rules = counts
        assert packs == 12 and rules >= 420
        second = nexus("db", "migrate", env=env)
        assert second.returncode == 0 and "up to date" in second.stdout and "seeded" not in second.stdout
        status = nexus("db", "status", env=env)
        assert status.returncode == 0
        assert len(status.stdout.strip().splitlines()) == MIGRATIONS and "pending" not in status.stdout
        seeded = nexus("db", "seed-demo", "--json", env=env)
        assert seeded.returncode == 0, seeded.stderr
        data = json.loads(seeded.stdout)
        assert data["virtual_key"].startswith("nvk_") and "mock-gpt" in data["models"]
    finally:
        with psycopg.connect(pg_server_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_unreachable_database_is_one_clear_line() -> None:
    out = nexus("db", "migrate", env={"NEXUS_DATABASE_URL": "postgresql://127.0.0.1:1/nexus"})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "127.0.0.1" in out.stderr and "Traceback" not in out.stderr


def test_seed_without_secrets_names_the_file(tmp_path: Path, db_url: str) -> None:
    out = nexus("db", "seed-demo", env={"NEXUS_DATABASE_URL": db_url, "NEXUS_SECRETS_DIR": str(tmp_path)})
    assert out.returncode == 1 and "is missing" in out.stderr and str(tmp_path) in out.stderr
