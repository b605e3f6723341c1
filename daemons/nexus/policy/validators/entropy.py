"""Secrets without a checksum: Shannon entropy, placeholder detection and token structure.

Vendor tokens have fixed prefixes and alphabets but no public checksum, so the
checks here only reject what is plainly not a live credential: placeholders
(``AKIAXXXXXXXXXXXXXXXX``, ``sk-...``, ``<your-api-key>``, ``${TOKEN}``), runs of
one character, alphabet walks, and values too uniform to be random.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter

from nexus.policy.validators._common import has_run

_PLACEHOLDER = re.compile(
    r"x{4}|\*{3}|\.{3}|…|#{3}|_{4}|your|placeholder|redacted|insert|replace|changeme|change_me|dummy|"
    r"<|>|\$\{|\$\(|\{\{|%\(|here$",
    re.IGNORECASE,
)
_REFERENCE = re.compile(
    r"(?:^\$[A-Za-z_]|^%[A-Za-z_]+%$|^![A-Za-z]|^(?:os\.|process\.env|env\.|settings\.|config\.|secrets\.|"
    r"vault:|ENV\[|getenv|environ))",
)
_WEAK_PASSWORD_WORDS = frozenset({
    "password", "passwd", "pass", "secret", "changeme", "change_me", "none", "null", "nil", "true", "false",
    "required", "optional", "string", "str", "text", "empty", "hidden", "masked", "redacted", "undefined",
    "example", "sample", "test", "testing", "default", "xxxxxx", "value", "mypassword", "yourpassword",
    "password123", "admin", "root", "user", "username", "postgres", "mysql", "guest", "demo", "foobar",
})


def shannon(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def is_placeholder(text: str) -> bool:
    """Obvious stand-ins: masks, ellipses, template syntax, 'your-…-here', runs of one character."""
    return bool(_PLACEHOLDER.search(text)) or has_run(text, 6)


def token(text: str) -> bool:
    """A vendor token (fixed prefix and alphabet): not a placeholder, not too uniform."""
    if is_placeholder(text):
        return False
    return shannon(text) >= (2.5 if len(text) < 24 else 3.0)


def high_entropy(text: str) -> bool:
    """A generic credential value seen next to a key name: long, random-looking, mixed alphabet."""
    value = text.strip("'\"")
    if len(value) < 12 or is_placeholder(value) or _REFERENCE.search(value):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                   any(c.isdigit() for c in value)))
    if classes < 2:
        return False
    return shannon(value) >= (3.0 if len(value) < 20 else 3.5)


def password(text: str) -> bool:
    """A password written next to its key: not a reference, mask, type name or placeholder word.

    Real passwords in prompts are often weak (``hunter2``, ``Summer2024!``), so
    entropy is not required; but a lone lower-case word must be long to count,
    which keeps prose like ``Password: reset it`` out.
    """
    value = text.strip("'\"`,;")
    if not 4 <= len(value) <= 128 or _REFERENCE.search(value) or is_placeholder(value):
        return False
    if value.lower() in _WEAK_PASSWORD_WORDS or len(set(value)) < 3:
        return False
    mixed = sum((any(c.isalpha() for c in value), any(c.isdigit() for c in value),
                 any(not c.isalnum() for c in value)))
    return mixed >= 2 or len(value) >= 12


_AWS_PREFIXES = frozenset({"AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "APKA", "AROA"})


def aws_access_key_id(text: str) -> bool:
    """AWS key id: known 4-letter prefix, 16 upper-case alphanumerics, not a mask.

    Real ids use base32 (A-Z, 2-7) but pasted look-alikes with 0, 1, 8, 9 are
    still meant as keys, so the alphabet check is the wider one.
    """
    value = text.strip()
    body = value[4:]
    if len(value) != 20 or value[:4] not in _AWS_PREFIXES or not re.fullmatch(r"[A-Z0-9]{16}", body):
        return False
    return not has_run(body, 5) and len(set(body)) >= 6


def url_credentials(text: str) -> bool:
    """``user:password`` from a URL: the password is not a placeholder, a default, or the user name."""
    user, _, secret = text.partition(":")
    if not secret or secret == user or secret.lower() in _WEAK_PASSWORD_WORDS:
        return False
    return not (is_placeholder(secret) or _REFERENCE.search(secret) or secret.startswith("$"))


def b64_userpass(text: str) -> bool:
    """Base64 of ``user:password`` (HTTP Basic, Docker ``auth``) with a real-looking password."""
    value = text.strip()
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    if not decoded.isprintable() or ":" not in decoded:
        return False
    return url_credentials(decoded)
