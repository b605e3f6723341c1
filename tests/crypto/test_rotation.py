"""Vault key rotation against a real PostgreSQL: the key ring on disk, the background re-encryption (complete,
gateway-compatible, resumable after cancellation, safe next to locked rows and unreadable ones), and retirement.

Each test gets a database and a secrets directory of its own: re-encryption touches every sealed row there is.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import psycopg
import pytest
import trio

from nexus.crypto import rotation, secretfiles
from nexus.crypto.rotation import (
    SEALED_COLUMNS,
    RotationError,
    RotationProgress,
    reencrypt_all,
    retire_key,
    rotate_master_key,
    row_aad,
)
from nexus.crypto.vault import Sealed, Vault
from nexus.devstack.seed import seed_demo
from nexus.gateway import catalog
from nexus.storage import migrate
from nexus.storage.pgpool import PgPool

PROVIDERS = 15
CREDS_PER_PROVIDER = 3

PREFIX = {c.table: c.aad_prefix for c in SEALED_COLUMNS}


@attrs.frozen
class Box:
    url: str
    secrets: Path
    plaintexts: dict[tuple[str, str], bytes]  # (table, row id) -> the secret sealed there
    gateway_secrets: dict[str, str]  # model code -> the secret the gateway must send upstream


def _seal_rows(url: str, vault: Vault) -> tuple[dict[tuple[str, str], bytes], dict[str, str]]:
    """Sealed rows in every table the rotation covers, the way the real writers seal them (AAD = row id)."""
    plaintexts: dict[tuple[str, str], bytes] = {}
    gateway: dict[str, str] = {}
    with psycopg.connect(url) as conn, conn.transaction():
        org_id = conn.execute("SELECT id FROM organization WHERE slug = 'demo'").fetchone()[0]  # type: ignore[index]
        for p in range(PROVIDERS):
            provider_id = conn.execute(
                "INSERT INTO provider (name, adapter, base_url) VALUES (%s, 'openai', 'http://127.0.0.1:9') "
                "RETURNING id", (f"rot-{p}",)).fetchone()[0]  # type: ignore[index]
            conn.execute("INSERT INTO model (provider_id, code, provider_model_id) VALUES (%s, %s, 'm')",
                         (provider_id, f"rot-model-{p}"))
            for c in range(CREDS_PER_PROVIDER):
                cred_id, secret = uuid.uuid4(), f"sk-rot-{p}-{c}-☃"
                sealed = vault.seal(secret.encode(), row_aad(cred_id))
                conn.execute("INSERT INTO credential (id, provider_id, name, ciphertext, nonce, key_id, weight) "
                             "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                             (cred_id, provider_id, f"c{c}", sealed.ciphertext, sealed.nonce, sealed.key_id,
                              10 if c == 0 else 1))
                plaintexts[("credential", str(cred_id))] = secret.encode()
                if c == 0:
                    gateway[f"rot-model-{p}"] = secret
        idp_id = uuid.uuid4()
        sealed = vault.seal(b"oidc-client-secret", row_aad(idp_id, PREFIX["identity_provider"]))
        conn.execute("INSERT INTO identity_provider (id, org_id, name, kind, issuer, client_id, "
                     "client_secret_ciphertext, client_secret_nonce, client_secret_key_id) "
                     "VALUES (%s, %s, 'sso', 'oidc', 'https://idp.example', 'nexus', %s, %s, %s)",
                     (idp_id, org_id, sealed.ciphertext, sealed.nonce, sealed.key_id))
        plaintexts[("identity_provider", str(idp_id))] = b"oidc-client-secret"
        for u in range(3):
            user_id, seed = uuid.uuid4(), f"JBSWY3DPEHPK3PX{u}".encode()
            sealed = vault.seal(seed, row_aad(user_id, PREFIX["app_user"]))
            conn.execute("INSERT INTO app_user (id, org_id, email, totp_ciphertext, totp_nonce, totp_key_id, "
                         "totp_enabled_at) VALUES (%s, %s, %s, %s, %s, %s, now())",
                         (user_id, org_id, f"totp{u}@rot.example", sealed.ciphertext, sealed.nonce, sealed.key_id))
            plaintexts[("app_user", str(user_id))] = seed
    return plaintexts, gateway


@pytest.fixture
def box(empty_db_url: str, tmp_path: Path) -> Box:
    migrate.migrate(empty_db_url, log=lambda _line: None)
    secrets_dir = tmp_path / "secrets"
    secretfiles.ensure(secrets_dir)
    # The demo seed is the real writer of credentials today: its three are sealed under k1 like ours.
    seed_demo(empty_db_url, secrets_dir, "http://127.0.0.1:9")
    plaintexts, gateway = _seal_rows(empty_db_url, secretfiles.vault(secrets_dir))
    with psycopg.connect(empty_db_url) as conn:
        for cred_id, provider in conn.execute(
                "SELECT c.id, p.name FROM credential c JOIN provider p ON p.id = c.provider_id "
                "WHERE p.name LIKE 'mock-%'").fetchall():
            plaintexts[("credential", str(cred_id))] = f"mock-{provider.removeprefix('mock-')}-key".encode()
    gateway["mock-gpt"] = "mock-openai-key"
    return Box(empty_db_url, secrets_dir, plaintexts, gateway)


@pytest.fixture
async def pool(box: Box) -> AsyncIterator[PgPool]:
    async with trio.open_nursery() as nursery:
        p = PgPool(box.url, max_size=4, name="rotation-test")
        await nursery.start(p.run)
        assert await p.wait_ready(5)
        yield p
        nursery.cancel_scope.cancel()


SELECTS = {
    "credential": "SELECT id::text, ciphertext, nonce, key_id FROM credential",
    "identity_provider": "SELECT id::text, client_secret_ciphertext, client_secret_nonce, client_secret_key_id "
                         "FROM identity_provider WHERE client_secret_key_id IS NOT NULL",
    "app_user": "SELECT id::text, totp_ciphertext, totp_nonce, totp_key_id FROM app_user WHERE totp_key_id IS NOT NULL",
}


def _stored(url: str) -> dict[tuple[str, str], tuple[str, Sealed]]:
    out = {}
    with psycopg.connect(url) as conn:
        for table, query in SELECTS.items():
            for row_id, ct, nonce, key_id in conn.execute(query).fetchall():
                out[(table, row_id)] = (key_id, Sealed(key_id, bytes(nonce), bytes(ct)))
    return out


def _key_ids(url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key_id, _ in _stored(url).values():
        counts[key_id] = counts.get(key_id, 0) + 1
    return counts


def _opens_everything(box: Box, vault: Vault) -> None:
    stored = _stored(box.url)
    assert set(stored) == set(box.plaintexts)
    for (table, row_id), (_, sealed) in stored.items():
        assert vault.open(sealed, row_aad(row_id, PREFIX[table])) == box.plaintexts[(table, row_id)]


async def test_rotation_reseals_every_secret_and_the_gateway_still_reads_them(box: Box, pool: PgPool) -> None:
    total = len(box.plaintexts)
    assert _key_ids(box.url) == {"k1": total}
    new = rotate_master_key(box.secrets)
    assert new == "k2" and (box.secrets / "vault-k1.key").exists()
    vault = secretfiles.vault(box.secrets)
    assert vault.active == "k2" and set(vault.keys) == {"k1", "k2"}

    seen: list[RotationProgress] = []
    report = await reencrypt_all(pool, vault, batch=7, progress=seen.append)
    assert report.done and report.reencrypted == total and report.failed == [] and report.active_key_id == "k2"
    assert report.remaining == {"credential": 0, "identity_provider": 0, "app_user": 0}
    assert [p.reencrypted for p in seen] == sorted(p.reencrypted for p in seen) and seen[-1].reencrypted == total
    assert all(p.total == total for p in seen) and len(seen) >= total // 7
    assert _key_ids(box.url) == {"k2": total}
    _opens_everything(box, vault)

    # The gateway's own loader, with a ring that no longer even holds k1, decrypts every credential it serves.
    only_new = Vault({"k2": vault.keys["k2"]}, "k2")
    loaded = await catalog.load(pool, only_new)
    for code, secret in box.gateway_secrets.items():
        route = loaded.resolve(code)
        assert route is not None and route.provider.secret == secret, code

    again = await reencrypt_all(pool, vault)
    assert again.done and again.reencrypted == 0


async def test_an_interrupted_reencryption_resumes_and_completes(box: Box, pool: PgPool) -> None:
    total = len(box.plaintexts)
    rotate_master_key(box.secrets)
    vault = secretfiles.vault(box.secrets)

    with trio.CancelScope() as scope:
        def stop_after_two_batches(p: RotationProgress) -> None:
            if p.reencrypted >= 10:
                scope.cancel()

        await reencrypt_all(pool, vault, batch=5, progress=stop_after_two_batches)
    assert scope.cancelled_caught
    half = _key_ids(box.url)
    assert half["k2"] == 10 and half["k1"] == total - 10  # committed batches stay, the one in flight rolled back
    _opens_everything(box, vault)  # old and new ciphertexts are both readable meanwhile

    report = await reencrypt_all(pool, vault, batch=5)
    assert report.done and report.reencrypted == total - 10
    assert _key_ids(box.url) == {"k2": total}
    _opens_everything(box, vault)


async def test_locked_and_unreadable_rows_are_passed_over_and_reported(box: Box, pool: PgPool) -> None:
    rotate_master_key(box.secrets)
    vault = secretfiles.vault(box.secrets)
    with psycopg.connect(box.url) as conn:
        # A ciphertext moved onto another row no longer authenticates (AAD), and one under a key nobody has.
        a, b = conn.execute("SELECT id, ciphertext, nonce FROM credential WHERE name = 'c1' ORDER BY id LIMIT 2"
                            ).fetchall()
        conn.execute("UPDATE credential SET ciphertext = %s, nonce = %s WHERE id = %s", (a[1], a[2], b[0]))
        lost = conn.execute("UPDATE credential SET key_id = 'k0' WHERE name = 'c2' AND id = "
                            "(SELECT min(id::text)::uuid FROM credential WHERE name = 'c2') RETURNING id").fetchone()
        conn.commit()
        assert lost is not None
        with psycopg.connect(box.url) as locker, locker.transaction():
            locked = locker.execute("SELECT id FROM credential WHERE name = 'c0' ORDER BY id LIMIT 1 FOR UPDATE"
                                    ).fetchone()
            assert locked is not None
            report = await reencrypt_all(pool, vault, batch=4)
        failed = {(f.table, f.id) for f in report.failed}
        assert failed == {("credential", str(b[0])), ("credential", str(lost[0]))}
        assert all("sk-" not in f.reason for f in report.failed)
        assert not report.done and report.remaining["credential"] == 3 and report.failed_total == 2

    report = await reencrypt_all(pool, vault)
    assert report.reencrypted == 1 and report.remaining["credential"] == 2
    assert _key_ids(box.url) == {"k2": len(box.plaintexts) - 2, "k1": 1, "k0": 1}


async def test_a_key_is_retired_only_once_nothing_uses_it(box: Box, pool: PgPool) -> None:
    with pytest.raises(RotationError, match="active key"):
        await retire_key(pool, box.secrets, "k1")
    rotate_master_key(box.secrets)
    with pytest.raises(RotationError, match=r"still seals \d+ secret"):
        await retire_key(pool, box.secrets, "k1")
    vault = secretfiles.vault(box.secrets)
    assert (await reencrypt_all(pool, vault)).done
    assert await rotation.key_usage(pool) == {"k2": len(box.plaintexts)}
    await retire_key(pool, box.secrets, "k1")
    assert not (box.secrets / "vault-k1.key").exists()
    ring = secretfiles.vault(box.secrets)
    assert set(ring.keys) == {"k2"}
    _opens_everything(box, ring)
    for bad in ("k1", "../k2", ""):
        with pytest.raises(RotationError):
            await retire_key(pool, box.secrets, bad)


def test_the_key_ring_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    secretfiles.ensure(root)
    first = secretfiles.vault(root)
    assert rotate_master_key(root) == "k2" and rotate_master_key(root) == "k3"
    ring = secretfiles.vault(root)
    assert ring.active == "k3" and set(ring.keys) == {"k1", "k2", "k3"} and ring.keys["k1"] == first.keys["k1"]
    assert len({ring.keys[k] for k in ring.keys}) == 3
    for name in ("vault-k2.key", "vault-k3.key", "vault-active"):
        assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o600
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary files left
    rotation.activate_key(root, "k1")
    assert secretfiles.vault(root).active == "k1"
    with pytest.raises(RotationError, match="no vault key"):
        rotation.activate_key(root, "k9")
    with pytest.raises(RotationError, match="key id"):
        rotation.activate_key(root, "../../etc/passwd")
    assert rotation.add_master_key(root) == "k4" and secretfiles.vault(root).active == "k1"


def test_a_systemd_credentials_directory_is_not_rotated_in_place(tmp_path: Path) -> None:
    source, creds = tmp_path / "etc", tmp_path / "creds"
    secretfiles.ensure(source)
    creds.mkdir()
    for path in source.iterdir():
        (creds / f"nexus_{path.name}").write_bytes(path.read_bytes())
    with pytest.raises(RotationError, match="credentials directory"):
        rotate_master_key(creds)
    with pytest.raises(RotationError, match="no vault key ring"):
        rotate_master_key(tmp_path / "nowhere")
