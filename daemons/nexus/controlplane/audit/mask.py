"""``mask_secrets``: replace secret values in a before/after document with ``"***"`` (pure).

A key is compared in a normalised form (lower case, separators dropped: ``apiKey``,
``api-key`` and ``API_KEY`` are all ``apikey``).  The rules, in order:

1. ``ALLOWED_SUFFIXES``: a key ending like ``_id``, ``_at``, ``_hint``, ``_prefix`` or
   ``_tokens`` names a reference, an instant, a display hint or a count, never the secret
   itself (``credential_id``, ``totp_enabled_at``, ``secret_hint``, ``max_tokens``); it is
   kept, and its value is still searched for nested secrets.
2. ``DENIED_PARTS`` / ``DENIED_KEYS``: a key containing one of these parts (``secret``,
   ``password``, ``token``, ``ciphertext``, ``nonce``, ``private``, ``totp``, ...) or equal
   to one of these short names (``pin``, ``otp``, ``seed``) has its whole value masked,
   objects and lists included (a ``private`` JWK's members have innocent names).
   ``null`` and booleans are kept: "no secret" and "has a secret" are not secrets.
3. ``RESOURCE_PARTS`` (``credential``): the name of a resource that holds a secret.  A
   scalar value is masked; an object or list is searched, so ``"credentials": [{"name":
   ..., "secret": ...}]`` keeps its names and loses its secrets.
4. ``KEY_NAMES`` (``key`` and its bare cousins): masked when the value is a string that
   looks like a whole key (no spaces, ``MIN_KEY_LENGTH`` characters or more), so
   ``{"key": "region"}`` in a tag list stays readable.
5. Any string that is a whole virtual key (``nvk_...``) is masked wherever it appears.

Masking is idempotent and never mutates its input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nexus.crypto import vkeys

MASK = "***"

DENIED_PARTS: tuple[str, ...] = (
    "secret", "password", "passwd", "passphrase", "apikey", "token", "ciphertext", "nonce",
    "private", "totp", "authorization", "cookie", "signingkey", "masterkey", "accesskey",
    "sessionkey",
)
DENIED_KEYS: frozenset[str] = frozenset({"pin", "otp", "seed", "keymaterial"})
RESOURCE_PARTS: tuple[str, ...] = ("credential",)
ALLOWED_SUFFIXES: tuple[str, ...] = (
    "_id", "_ids", "_at", "_hint", "_prefix", "_count", "_tokens", "_name", "_type", "_enabled",
    "_ttl", "_seconds", "_length",
)
ALLOWED_KEYS: frozenset[str] = frozenset({
    "id", "ids", "tokens", "tokenizer",
})
KEY_NAMES: frozenset[str] = frozenset({"key", "fullkey", "rawkey", "virtualkey", "adminkey"})
MIN_KEY_LENGTH = 20

_SEPARATORS = re.compile(r"[^a-z0-9]")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _snake(key: str) -> str:
    """``clientSecretId`` -> ``client_secret_id``; ``api-key`` -> ``api_key``."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", key).lower())


def _looks_like_key(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= MIN_KEY_LENGTH and not any(c.isspace() for c in value)


def _decide(key: str) -> str:
    """'keep', 'mask', 'resource' (mask scalars, search containers) or 'key' (mask a whole key) for one key."""
    snake = _snake(key)
    flat = snake.replace("_", "")
    if flat in ALLOWED_KEYS or snake.endswith(ALLOWED_SUFFIXES):
        return "keep"
    if flat in DENIED_KEYS or any(part in flat for part in DENIED_PARTS):
        return "mask"
    if any(part in flat for part in RESOURCE_PARTS):
        return "resource"
    if flat in KEY_NAMES:
        return "key"
    return "keep"


def _masked(verdict: str, value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if verdict == "mask":
        return True
    if verdict == "resource":
        return not isinstance(value, Mapping | list | tuple)
    return verdict == "key" and _looks_like_key(value)


def mask_secrets(obj: Any) -> Any:
    """A copy of ``obj`` (JSON-like: dicts, lists, scalars) with secret values replaced by ``MASK``."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out[key] = MASK if _masked(_decide(str(key)), value) else mask_secrets(value)
        return out
    if isinstance(obj, list | tuple):
        return [mask_secrets(item) for item in obj]
    if isinstance(obj, str) and vkeys.looks_valid(obj):
        return MASK
    return obj
