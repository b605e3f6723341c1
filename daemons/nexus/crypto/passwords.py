"""Password hashing with scrypt (memory-hard, in the standard library, no extra dependency).

Format: ``$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt b64>$<hash b64>`` so parameters can
be raised later and old hashes still verify (``needs_rehash`` says when to upgrade).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

LOG2_N, R, P = 15, 8, 1  # 32 MiB per hash: slow for attackers, ~50 ms here
_DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=256 * 1024 * 1024,
                          dklen=_DKLEN)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    return f"$scrypt$ln={LOG2_N},r={R},p={P}${_b64(salt)}${_b64(_derive(password, salt, LOG2_N, R, P))}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "scrypt":
        return None
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        return int(params["ln"]), int(params["r"]), int(params["p"]), _unb64(parts[3]), _unb64(parts[4])
    except (KeyError, ValueError):
        return None


def verify_password(password: str, stored: str) -> bool:
    parsed = _parse(stored)
    if parsed is None:
        return False
    log2_n, r, p, salt, expected = parsed
    return hmac.compare_digest(_derive(password, salt, log2_n, r, p), expected)


def needs_rehash(stored: str) -> bool:
    parsed = _parse(stored)
    return parsed is None or parsed[:3] != (LOG2_N, R, P)


def generate_password() -> str:
    return secrets.token_urlsafe(15)
