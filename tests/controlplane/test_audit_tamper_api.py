"""Tampering with one admin audit row in SQL makes ``GET /api/admin/audit/verify`` report it.

Runs against its own database: a broken chain must not fail other tests' verification.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from tests.controlplane.conftest import control_plane

from nexus.storage import migrate


def test_verify_reports_a_modified_row(empty_db_url: str, valkey_url: str, nats_url: str, tmp_path: Path) -> None:
    migrate.migrate(empty_db_url, log=lambda _line: None)
    with control_plane(empty_db_url, valkey_url, nats_url, tmp_path) as cp:
        admin = cp.client("super-admins")
        for slug in ("tamper-a", "tamper-b", "tamper-c"):
            assert admin.post("/api/admin/orgs", json={"slug": slug, "name": slug}).status_code == 201
        clean = admin.get("/api/admin/audit/verify")
        assert clean.status_code == 200 and clean.json()["ok"] is True, clean.text

        with psycopg.connect(cp.db_url, autocommit=True) as conn:
            seq = conn.execute("SELECT seq FROM admin_audit_log WHERE action = 'admin:organization.create' "
                               "ORDER BY seq LIMIT 1 OFFSET 1").fetchone()[0]  # type: ignore[index]
            conn.execute("ALTER TABLE admin_audit_log DISABLE TRIGGER admin_audit_log_no_change")
            conn.execute("""UPDATE admin_audit_log SET after = jsonb_set(after, '{name}', '"forged"') WHERE seq = %s""",
                         (seq,))
            conn.execute("ALTER TABLE admin_audit_log ENABLE TRIGGER admin_audit_log_no_change")

        report = admin.get("/api/admin/audit/verify").json()
        assert report["ok"] is False
        assert report["first_bad_seq"] == seq
        assert any(p["seq"] == seq and p["kind"] == "modified" for p in report["problems"]), report
