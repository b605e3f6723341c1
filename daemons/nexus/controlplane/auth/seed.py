"""The first-party OAuth clients every box has: the web console and the CLI.

Both are public clients (PKCE, no secret).  The console's redirect URI is
``<public_url>/console/callback``; the CLI's are the loopback URIs of RFC 8252
§7.3 (``http://127.0.0.1/callback`` and ``http://[::1]/callback``), which match
any port at authorization time.  Synchronous psycopg, for first boot and the CLI.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["CLI_CLIENT_ID", "CONSOLE_CLIENT_ID", "FIRST_PARTY_SCOPES", "seed_oauth_clients"]

CONSOLE_CLIENT_ID = "nexus-console"
CLI_CLIENT_ID = "nexus-cli"
# admin: the /api/admin API (what it allows is IAM's call); my: the caller's own keys and usage.
FIRST_PARTY_SCOPES = ("openid", "profile", "email", "admin", "my")
CLI_REDIRECT_URIS = ("http://127.0.0.1/callback", "http://[::1]/callback")


def console_redirect_uri(public_url: str) -> str:
    return public_url.rstrip("/") + "/console/callback"


def seed_oauth_clients(conn: psycopg.Connection[Any], public_url: str) -> None:
    """Create the console and CLI clients, or add missing redirect URIs to them; never removes anything.

    Idempotent.  A changed ``public_url`` adds its console callback next to the old one (an
    administrator removes stale ones), so a box renamed mid-session keeps working.
    """
    for client_id, name, uris in (
        (CONSOLE_CLIENT_ID, "Nexus console", [console_redirect_uri(public_url)]),
        (CLI_CLIENT_ID, "Nexus CLI", list(CLI_REDIRECT_URIS)),
    ):
        conn.execute(
            "INSERT INTO oauth_client (client_id, name, kind, redirect_uris, grant_types, scopes, first_party) "
            "VALUES (%s, %s, 'public', %s, '{authorization_code,refresh_token}', %s, true) "
            "ON CONFLICT (client_id) DO UPDATE SET redirect_uris = oauth_client.redirect_uris || ARRAY("
            "SELECT u FROM unnest(EXCLUDED.redirect_uris) AS u WHERE u <> ALL (oauth_client.redirect_uris)) "
            "WHERE NOT (EXCLUDED.redirect_uris <@ oauth_client.redirect_uris)",
            (client_id, name, uris, list(FIRST_PARTY_SCOPES)),
        )
