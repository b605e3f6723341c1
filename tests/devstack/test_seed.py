"""The demo seed: idempotent, secrets sealed, the key usable."""

from __future__ import annotations

from pathlib import Path

import psycopg

from nexus.crypto import secretfiles, vkeys
from nexus.crypto.vault import Sealed
from nexus.devstack.seed import seed_demo


def test_seed_is_idempotent_and_keeps_known_secrets(empty_db_url: str, secrets_dir: Path) -> None:
    from nexus.storage import migrate

    migrate.migrate(empty_db_url, log=lambda _line: None)
    first = seed_demo(empty_db_url, secrets_dir, "http://127.0.0.1:3062")
    again = seed_demo(empty_db_url, secrets_dir, "http://127.0.0.1:3062", known_key=first.virtual_key,
                      known_password=first.admin_password)
    assert (again.virtual_key, again.admin_password, again.org_id) == (
        first.virtual_key, first.admin_password, first.org_id)
    with psycopg.connect(empty_db_url) as conn:
        counts = conn.execute("SELECT (SELECT count(*) FROM provider), (SELECT count(*) FROM model), "
                              "(SELECT count(*) FROM virtual_key), (SELECT count(*) FROM credential)").fetchone()
        assert counts == (3, 5, 1, 3)
        row = conn.execute("SELECT key_hash FROM virtual_key").fetchone()
        assert row is not None and bytes(row[0]) == vkeys.hash_key(secretfiles.key_hmac_secret(secrets_dir),
                                                                   first.virtual_key)
        cred = conn.execute("SELECT c.id, c.ciphertext, c.nonce, c.key_id FROM credential c JOIN provider p "
                            "ON p.id = c.provider_id WHERE p.name = 'mock-anthropic'").fetchone()
        assert cred is not None and b"mock-anthropic-key" not in bytes(cred[1])
        plain = secretfiles.vault(secrets_dir).open(Sealed(cred[3], bytes(cred[2]), bytes(cred[1])), cred[0].bytes)
        assert plain == b"mock-anthropic-key"
    # An unknown key or password (the state file was lost) gets new ones rather than failing.
    fresh = seed_demo(empty_db_url, secrets_dir, "http://127.0.0.1:3062")
    assert fresh.virtual_key != first.virtual_key and fresh.admin_password != first.admin_password
