"""The first-party clients: idempotent seeding, the console callback, the CLI loopback URIs."""

from __future__ import annotations

import psycopg

from nexus.controlplane.auth.seed import seed_oauth_clients


def test_seed_is_idempotent_and_adds_a_new_public_url(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed_oauth_clients(conn, "https://nexus-seed-a.example/")
        first = conn.execute("SELECT client_id, kind, first_party, redirect_uris, updated_at FROM oauth_client "
                             "WHERE client_id IN ('nexus-console', 'nexus-cli') ORDER BY client_id").fetchall()
        seed_oauth_clients(conn, "https://nexus-seed-a.example/")
        second = conn.execute("SELECT client_id, kind, first_party, redirect_uris, updated_at FROM oauth_client "
                              "WHERE client_id IN ('nexus-console', 'nexus-cli') ORDER BY client_id").fetchall()
        assert first == second
        cli, console = first
        assert cli[1:3] == ("public", True) and "http://127.0.0.1/callback" in cli[3]
        assert console[1:3] == ("public", True) and "https://nexus-seed-a.example/console/callback" in console[3]
        seed_oauth_clients(conn, "https://nexus-seed-b.example")
        uris = conn.execute("SELECT redirect_uris FROM oauth_client WHERE client_id = 'nexus-console'").fetchone()
    assert uris is not None
    assert {"https://nexus-seed-a.example/console/callback", "https://nexus-seed-b.example/console/callback"} <= set(
        uris[0])
    assert len(uris[0]) == len(set(uris[0]))
