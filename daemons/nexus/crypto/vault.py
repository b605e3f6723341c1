"""AES-256-GCM envelope for provider credentials and other secrets stored in PostgreSQL.

Each ciphertext records the id of the master key that sealed it, so keys can be
rotated: new writes use the active key, old rows stay readable until the
background re-encryption (control plane) rewrites them.  The associated data
binds a ciphertext to its row (e.g. the credential id), so a ciphertext copied
onto another row fails to decrypt.

Plaintext exists only in memory of the process that asked for it; nothing here
logs or formats a secret.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class VaultError(Exception):
    """Unknown key id or a ciphertext that does not authenticate."""


@attrs.frozen
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


@attrs.frozen(repr=False)
class Vault:
    keys: Mapping[str, bytes]
    active: str

    def __attrs_post_init__(self) -> None:
        if self.active not in self.keys:
            raise VaultError(f"active key id {self.active!r} not in the key ring")
        for key_id, key in self.keys.items():
            if len(key) != 32:
                raise VaultError(f"vault key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")

    def __repr__(self) -> str:  # never show key material
        return f"Vault(active={self.active!r}, key_ids={sorted(self.keys)!r})"

    def seal(self, plaintext: bytes, aad: bytes = b"") -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        return Sealed(self.active, nonce, AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, aad))

    def open(self, sealed: Sealed, aad: bytes = b"") -> bytes:
        key = self.keys.get(sealed.key_id)
        if key is None:
            raise VaultError(f"no vault key with id {sealed.key_id!r}")
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)
        except InvalidTag:
            raise VaultError("ciphertext does not authenticate (wrong key, row or tampering)") from None

    def needs_rotation(self, sealed: Sealed) -> bool:
        return not hmac.compare_digest(sealed.key_id, self.active)
