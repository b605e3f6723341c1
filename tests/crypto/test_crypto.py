"""Vault, virtual-key hashing, passwords and secret files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.crypto import passwords, secretfiles, vkeys
from nexus.crypto.vault import Sealed, Vault, VaultError


def test_vault_round_trip_binds_aad_and_key_id() -> None:
    vault = Vault({"k1": b"\x01" * 32}, "k1")
    sealed = vault.seal(b"sk-secret", b"row-1")
    assert sealed.key_id == "k1" and b"sk-secret" not in sealed.ciphertext
    assert vault.open(sealed, b"row-1") == b"sk-secret"
    with pytest.raises(VaultError):
        vault.open(sealed, b"row-2")
    with pytest.raises(VaultError):
        vault.open(Sealed("k1", sealed.nonce, sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])), b"row-1")
    with pytest.raises(VaultError, match="no vault key"):
        vault.open(Sealed("k9", sealed.nonce, sealed.ciphertext), b"row-1")
    assert "\\x01" not in repr(vault)


def test_vault_rotation_keeps_old_ciphertexts_readable() -> None:
    old = Vault({"k1": b"\x01" * 32}, "k1")
    sealed = old.seal(b"secret")
    new = Vault({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")
    assert new.open(sealed) == b"secret"
    assert new.needs_rotation(sealed) and not new.needs_rotation(new.seal(b"x"))


def test_vault_rejects_bad_keys() -> None:
    with pytest.raises(VaultError):
        Vault({"k1": b"short"}, "k1")
    with pytest.raises(VaultError):
        Vault({"k1": b"\x01" * 32}, "k2")


def test_virtual_keys() -> None:
    key = vkeys.generate()
    assert key.startswith("nvk_") and len(key) >= 36 and vkeys.looks_valid(key)
    assert not vkeys.looks_valid("nvk_short") and not vkeys.looks_valid("sk-" + "a" * 40)
    secret = b"s" * 32
    digest = vkeys.hash_key(secret, key)
    assert len(digest) == 32 and digest == vkeys.hash_key(secret, key)
    assert vkeys.hash_key(b"t" * 32, key) != digest
    assert vkeys.display_prefix(key) == key[:12]


def test_passwords() -> None:
    stored = passwords.hash_password("correct horse")
    assert stored.startswith("$scrypt$") and "correct" not in stored
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("wrong", stored)
    assert not passwords.verify_password("x", "$argon2id$garbage")
    assert not passwords.needs_rehash(stored)
    assert passwords.needs_rehash("$scrypt$ln=10,r=8,p=1$AAAA$AAAA")


def test_secret_files_created_once_with_private_modes(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    secretfiles.ensure(root)
    secret, vault = secretfiles.key_hmac_secret(root), secretfiles.vault(root)
    secretfiles.ensure(root)
    assert secretfiles.key_hmac_secret(root) == secret
    assert secretfiles.vault(root).keys == vault.keys
    for path in root.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_secret_files_from_systemd_credentials(tmp_path: Path) -> None:
    source = tmp_path / "secrets"
    secretfiles.ensure(source)
    creds = tmp_path / "creds"
    creds.mkdir()
    for path in source.iterdir():
        (creds / f"nexus_{path.name}").write_bytes(path.read_bytes())
    assert secretfiles.key_hmac_secret(creds) == secretfiles.key_hmac_secret(source)
    assert secretfiles.vault(creds).keys == secretfiles.vault(source).keys


def test_missing_secret_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(secretfiles.SecretsError, match="key-hmac is missing"):
        secretfiles.key_hmac_secret(tmp_path)
