"""TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps, ±1 step of clock drift) and how its secret is sealed.

The secret is stored as vault ciphertext on ``app_user.totp_*`` with the user id
as associated data (``seal_secret``/``open_secret``), so a ciphertext copied to
another user does not open.  Replay protection (a step is accepted once) needs
shared state and lives with the caller (``local.py``).  Pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
import uuid
from urllib.parse import quote, urlencode

from nexus.crypto.rotation import SEALED_COLUMNS, row_aad
from nexus.crypto.vault import Sealed, Vault

DIGITS = 6
PERIOD = 30
WINDOW = 1


def generate_secret() -> str:
    """A new 160-bit secret, base32 without padding (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def _key(secret_b32: str) -> bytes:
    text = secret_b32.strip().replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def code_at(secret_b32: str, step: int) -> str:
    digest = hmac.new(_key(secret_b32), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset: offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // PERIOD)


def matching_step(secret_b32: str, code: str, now: float | None = None, window: int = WINDOW) -> int | None:
    """The time step ``code`` belongs to within ±``window`` steps, or None.  Every candidate is compared."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    step = current_step(now)
    found: int | None = None
    for candidate in range(step - window, step + window + 1):
        if hmac.compare_digest(code_at(secret_b32, candidate), code):
            found = candidate
    return found


def provisioning_uri(secret_b32: str, account: str, issuer: str = "Nexus") -> str:
    """The ``otpauth://`` URI an authenticator app scans."""
    query = urlencode({"secret": secret_b32, "issuer": issuer, "digits": DIGITS, "period": PERIOD})
    return f"otpauth://totp/{quote(issuer)}:{quote(account)}?{query}"


def _aad(user_id: uuid.UUID) -> bytes:
    return row_aad(user_id, _SEALED.aad_prefix)


_SEALED = next(c for c in SEALED_COLUMNS if c.table == "app_user")


def seal_secret(vault: Vault, user_id: uuid.UUID, secret_b32: str) -> Sealed:
    """Vault ciphertext for ``app_user.totp_ciphertext/totp_nonce/totp_key_id``."""
    return vault.seal(secret_b32.encode(), _aad(user_id))


def open_secret(vault: Vault, user_id: uuid.UUID, sealed: Sealed) -> str:
    return vault.open(sealed, _aad(user_id)).decode()
