"""Cryptocurrency keys and addresses with Base58Check checksums (Bitcoin WIF keys, P2PKH/P2SH addresses)."""

from __future__ import annotations

import hashlib

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {ch: i for i, ch in enumerate(_ALPHABET)}


def base58_decode(text: str) -> bytes | None:
    number = 0
    for ch in text:
        value = _INDEX.get(ch)
        if value is None:
            return None
        number = number * 58 + value
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + raw


def base58check(text: str) -> bool:
    """The last four bytes are the double-SHA-256 checksum of the rest."""
    value = text.strip()
    if not 25 <= len(value) <= 60:
        return False
    raw = base58_decode(value)
    if raw is None or len(raw) < 5:
        return False
    body, checksum = raw[:-4], raw[-4:]
    return hashlib.sha256(hashlib.sha256(body).digest()).digest()[:4] == checksum
