"""Demo data for a developer box or a trial appliance: one org and project, an admin, the mock
provider in its three dialects with priced models, and one application virtual key.

Idempotent: rows are matched by their natural keys; running it again changes
nothing except where the caller no longer knows a secret (the admin password or
the virtual key), in which case a new one is issued, since neither can be read
back from the database.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import attrs
import orjson
import psycopg

from nexus.controlplane.auth.seed import seed_oauth_clients
from nexus.controlplane.iam.seed import seed_iam
from nexus.crypto import passwords, secretfiles, vkeys

ADMIN_EMAIL = "admin@nexus.local"

# (provider name, adapter, base path on the mock, models: code, upstream id, modality, $/Mtok in, out, cached in)
PROVIDERS: tuple[tuple[str, str, str, tuple[tuple[str, str, str, int, int, int], ...]], ...] = (
    ("mock-openai", "openai", "/v1", (
        ("mock-gpt", "gpt-4o-mini", "chat", 150_000, 600_000, 75_000),
        ("mock-o-reasoning", "o4-mini", "chat", 1_100_000, 4_400_000, 275_000),
        ("mock-embedding", "text-embedding-3-small", "embedding", 20_000, 0, 0),
    )),
    ("mock-anthropic", "anthropic", "", (
        ("mock-claude", "claude-sonnet-4-5", "chat", 3_000_000, 15_000_000, 300_000),
    )),
    ("mock-gemini", "gemini", "", (
        ("mock-gemini", "gemini-2.5-flash", "chat", 300_000, 2_500_000, 75_000),
    )),
)


# Secure defaults for a trial box: secrets never leave in prompts, PII is masked before the provider sees it,
# injection and jailbreak attempts are stopped, and answers leaking secrets or PII are masked as they stream.
DEFAULT_HOOKS: tuple[tuple[str, str, str, int, str, dict[str, object]], ...] = (
    ("block-secrets-in-prompts", "rulepack-engine", "request", 10, "observe",
     {"categories": ["secret-leak"], "onMatch": {"hard": "block", "soft": "redact"}}),
    ("redact-pii-in-prompts", "pii-detector", "request", 20, "observe", {"onMatch": "redact"}),
    ("stop-prompt-injection", "rulepack-engine", "request", 30, "observe",
     {"categories": ["prompt-injection", "jailbreak"], "onMatch": {"hard": "block", "soft": "approve"}}),
    ("mask-secrets-in-answers", "rulepack-engine", "response", 10, "incremental",
     {"categories": ["secret-leak"], "onMatch": "redact", "holdBackChars": 256}),
)


def seed_default_hooks(conn: psycopg.Connection[Any]) -> None:
    for name, implementation, stage, priority, stream_mode, config in DEFAULT_HOOKS:
        conn.execute(
            "INSERT INTO hook_config (name, implementation, stage, priority, stream_mode, config) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT ON CONSTRAINT hook_config_name_key DO NOTHING",
            (name, implementation, stage, priority, stream_mode, orjson.dumps(config).decode()),
        )


@attrs.frozen
class DemoSeed:
    org_id: str
    project_id: str
    admin_email: str
    admin_password: str
    virtual_key: str
    models: list[str]


def seed_demo(
    dsn: str, secrets_dir: Path, mock_url: str, *, known_key: str | None = None, known_password: str | None = None,
    hooks: bool = False, public_url: str = "http://127.0.0.1:3001",
) -> DemoSeed:
    vault = secretfiles.vault(secrets_dir)
    key_secret = secretfiles.key_hmac_secret(secrets_dir)
    models: list[str] = []
    with psycopg.connect(dsn) as conn, conn.transaction():
        org_id = conn.execute(
            "INSERT INTO organization (slug, name) VALUES ('demo', 'Demo Org') "
            "ON CONFLICT (path) DO UPDATE SET name = organization.name RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        project_id = conn.execute(
            "INSERT INTO project (org_id, slug, name, description) VALUES (%s, 'default', 'Default project', "
            "'Created by nexus db seed-demo') ON CONFLICT (org_id, slug) DO UPDATE SET name = project.name "
            "RETURNING id", (org_id,),
        ).fetchone()[0]  # type: ignore[index]

        row = conn.execute("SELECT password_hash FROM app_user WHERE email = %s", (ADMIN_EMAIL,)).fetchone()
        password = known_password
        if row is None or password is None or not passwords.verify_password(password, row[0] or ""):
            password = passwords.generate_password()
            conn.execute(
                "INSERT INTO app_user (org_id, email, display_name, status, can_access_console, password_hash, "
                "password_changed_at) VALUES (%s, %s, 'Demo administrator', 'active', true, %s, now()) "
                "ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, "
                "password_changed_at = now(), failed_login_count = 0, locked_until = NULL",
                (org_id, ADMIN_EMAIL, passwords.hash_password(password)),
            )

        # The demo administrator signs in to the console as a super-admin.
        seed_iam(conn)
        seed_oauth_clients(conn, public_url)
        conn.execute(
            "INSERT INTO iam_group_member (group_id, user_id) SELECT g.id, u.id FROM iam_group g, app_user u "
            "WHERE g.org_id IS NULL AND g.name = 'super-admins' AND u.email = %s ON CONFLICT DO NOTHING",
            (ADMIN_EMAIL,),
        )

        base = mock_url.rstrip("/")
        for name, adapter, path, model_rows in PROVIDERS:
            provider_id = conn.execute(
                "INSERT INTO provider (name, display_name, adapter, base_url) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET base_url = EXCLUDED.base_url RETURNING id",
                (name, f"Mock provider ({adapter} dialect)", adapter, base + path),
            ).fetchone()[0]  # type: ignore[index]
            if conn.execute("SELECT 1 FROM credential WHERE provider_id = %s AND name = 'default'",
                            (provider_id,)).fetchone() is None:
                credential_id = uuid.uuid4()
                secret = f"mock-{adapter}-key"
                sealed = vault.seal(secret.encode(), credential_id.bytes)
                conn.execute(
                    "INSERT INTO credential (id, provider_id, name, ciphertext, nonce, key_id, secret_hint) "
                    "VALUES (%s, %s, 'default', %s, %s, %s, %s)",
                    (credential_id, provider_id, sealed.ciphertext, sealed.nonce, sealed.key_id, secret[-4:]),
                )
            for code, upstream, modality, price_in, price_out, price_cached in model_rows:
                conn.execute(
                    "INSERT INTO model (provider_id, code, provider_model_id, display_name, modality, "
                    "input_micro_usd_per_mtok, output_micro_usd_per_mtok, cached_input_micro_usd_per_mtok, "
                    "reasoning_micro_usd_per_mtok, context_window, default_max_tokens) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 128000, 4096) "
                    "ON CONFLICT (provider_id, code) DO NOTHING",
                    (provider_id, code, upstream, code, modality, price_in, price_out, price_cached, price_out),
                )
                models.append(code)

        if hooks:
            seed_default_hooks(conn)
        key = known_key
        if key is None or conn.execute("SELECT 1 FROM virtual_key WHERE key_hash = %s AND revoked_at IS NULL",
                                       (vkeys.hash_key(key_secret, key),)).fetchone() is None:
            key = vkeys.generate()
            conn.execute(
                "INSERT INTO virtual_key (key_hash, key_prefix, name, description, kind, org_id, project_id) "
                "VALUES (%s, %s, 'demo', 'Demo application key from nexus db seed-demo', 'application', %s, %s)",
                (vkeys.hash_key(key_secret, key), vkeys.display_prefix(key), org_id, project_id),
            )
    return DemoSeed(str(org_id), str(project_id), ADMIN_EMAIL, password, key, models)
