"""JSON Web Tokens: three base64url segments whose header is a JSON object naming an ``alg``."""

from __future__ import annotations

import base64
import binascii
import json


def _b64json(segment: str) -> object:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError, RecursionError):
        return None


def jwt(text: str) -> bool:
    parts = text.strip().split(".")
    if len(parts) not in (3, 5) or not all(parts[:2]):
        return False
    header = _b64json(parts[0])
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        return False
    if len(parts) == 5:
        return "enc" in header
    payload = _b64json(parts[1])
    return isinstance(payload, dict)
