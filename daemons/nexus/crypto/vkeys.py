"""Virtual keys (``nvk_…``): generation, display prefix and the HMAC hash we store.

The clear key is shown once at creation and never stored: the database holds
HMAC-SHA256(server secret, key), so a leaked table cannot be replayed without
the secret file, and lookups stay a single indexed equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "nvk_"
DISPLAY_CHARS = 8


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def looks_valid(key: str) -> bool:
    return key.startswith(PREFIX) and 36 <= len(key) <= 128 and key[4:].replace("-", "").replace("_", "").isalnum()


def hash_key(secret: bytes, key: str) -> bytes:
    return hmac.new(secret, key.encode(), hashlib.sha256).digest()


def display_prefix(key: str) -> str:
    return key[: len(PREFIX) + DISPLAY_CHARS]

