"""The Ed25519 key ring that signs our access tokens, kept as files next to the box's other secrets.

Layout (see ``nexus.crypto.secretfiles`` for the conventions): one PKCS#8 PEM
file per key, ``jwt-signing-<kid>.key`` (mode 0600), and ``jwt-signing-active``
naming the key that signs.  Under systemd ``LoadCredential=`` the same files
appear in ``$CREDENTIALS_DIRECTORY`` with the ``nexus_`` prefix and are only
read.  Key ids start with their UTC creation time (``20250101T120000Z-a1b2c3``),
so their order is their age and no extra state is needed:

- ``ensure`` creates the first key (first boot, development);
- ``rotate`` adds a key and points ``jwt-signing-active`` at it; the old keys
  stay and keep verifying, and the JWKS keeps publishing them;
- ``retire_expired`` deletes each old key once its successor is older than the
  longest access-token lifetime (plus leeway): every token it signed has expired.

A running daemon notices a rotation by itself: ``KeyRing`` re-reads the
directory when the pointer or the key list changed, checked at most every
``reload_interval`` seconds, and at once (rate-limited) when a token names a
kid it does not know.

Errors: a missing or unreadable file, a pointer to a missing key, or a file
that is not an Ed25519 key raises ``SecretsError`` naming the file, never its
content.
"""

from __future__ import annotations

import calendar
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from nexus.crypto.secretfiles import CREDENTIAL_PREFIX, SecretsError

__all__ = ["ACTIVE_FILE", "KeyRing", "SigningKey", "ensure", "load", "retire_expired", "rotate"]

logger = logging.getLogger(__name__)

KEY_PREFIX = "jwt-signing-"
KEY_SUFFIX = ".key"
ACTIVE_FILE = "jwt-signing-active"
_KID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


@attrs.frozen(repr=False)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def __repr__(self) -> str:  # never show key material
        return f"SigningKey(kid={self.kid!r})"


def new_kid(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


def _kid_time(kid: str) -> float:
    return float(calendar.timegm(time.strptime(kid[:16], "%Y%m%dT%H%M%SZ")))


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _point_at(root: Path, kid: str) -> None:
    # Replace the pointer atomically: a daemon reading it sees the old or the new id, never half.
    tmp = root / f".{ACTIVE_FILE}.{secrets.token_hex(4)}"
    _write_new(tmp, (kid + "\n").encode())
    os.replace(tmp, root / ACTIVE_FILE)


def _create_key(root: Path) -> str:
    kid = new_kid()
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(root / f"{KEY_PREFIX}{kid}{KEY_SUFFIX}", pem)
    return kid


def _pointer_path(root: Path) -> Path | None:
    for name in (ACTIVE_FILE, CREDENTIAL_PREFIX + ACTIVE_FILE):
        if (root / name).exists():
            return root / name
    return None


def _key_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix in (KEY_PREFIX, CREDENTIAL_PREFIX + KEY_PREFIX):
        for path in root.glob(f"{prefix}*{KEY_SUFFIX}"):
            kid = path.name.removeprefix(CREDENTIAL_PREFIX)[len(KEY_PREFIX): -len(KEY_SUFFIX)]
            if _KID.match(kid):
                found.setdefault(kid, path)
    return found


def ensure(root: Path) -> str:
    """Create the first signing key unless a key ring is there; return the active kid."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    pointer = _pointer_path(root)
    if pointer is not None:
        return _read_text(pointer)
    try:
        kid = _create_key(root)
        _point_at(root, kid)
    except OSError as exc:
        raise SecretsError(f"cannot create the JWT signing key in {root}: {exc.strerror}"
                           " (with LoadCredential, provision jwt-signing-* files at first boot)") from None
    logger.info("created JWT signing key", extra={"kid": kid})
    return kid


def rotate(root: Path) -> str:
    """Add a signing key and make it the active one; older keys keep verifying.  Returns the new kid."""
    ensure(root)
    kid = _create_key(root)
    _point_at(root, kid)
    logger.info("rotated JWT signing key", extra={"kid": kid})
    return kid


def retire_expired(root: Path, max_token_age: float, now: float | None = None) -> list[str]:
    """Delete old keys whose successor has signed for longer than ``max_token_age`` seconds."""
    now = time.time() if now is None else now
    pointer = _pointer_path(root)
    if pointer is None:
        return []
    active = _read_text(pointer)
    kids = sorted(_key_files(root))
    retired: list[str] = []
    for older, successor in itertools.pairwise(kids):
        if older < active and _kid_time(successor) + max_token_age < now:
            _key_files(root)[older].unlink(missing_ok=True)
            retired.append(older)
    if retired:
        logger.info("retired JWT signing keys", extra={"kids": retired})
    return retired


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SecretsError(f"cannot read secret file {path}: {exc.strerror}") from None


def _load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SecretsError(f"cannot read secret file {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise SecretsError(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SecretsError(f"{path} must hold an Ed25519 key")
    return key


def _snapshot(root: Path) -> tuple[str, Mapping[str, SigningKey], tuple[Any, ...]]:
    pointer = _pointer_path(root)
    if pointer is None:
        raise SecretsError(f"no {ACTIVE_FILE} in {root} (first start creates it)")
    active = _read_text(pointer)
    files = _key_files(root)
    if active not in files:
        raise SecretsError(f"{pointer} names key {active!r}, but {KEY_PREFIX}{active}{KEY_SUFFIX} is missing")
    keys = {kid: SigningKey(kid, _load_key(path)) for kid, path in files.items()}
    return active, keys, _fingerprint(root)


def _fingerprint(root: Path) -> tuple[Any, ...]:
    pointer = _pointer_path(root)
    stat = pointer.stat() if pointer is not None else None
    return (stat.st_mtime_ns if stat else None, stat.st_ino if stat else None, tuple(sorted(_key_files(root))))


class KeyRing:
    """The keys in a directory: the active one signs, every one present verifies and is published."""

    def __init__(self, root: Path, *, reload_interval: float = 30.0) -> None:
        self.root = root
        self.reload_interval = reload_interval
        self._active, self._keys, self._seen = _snapshot(root)
        self._checked = time.monotonic()

    @property
    def active(self) -> SigningKey:
        self._refresh(force=False)
        return self._keys[self._active]

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        """The verifying key for ``kid``; an unknown kid triggers an early re-read (rotation elsewhere)."""
        key = self._keys.get(kid)
        if key is None and _KID.match(kid):
            self._refresh(force=True)
            key = self._keys.get(kid)
        return key.public_key if key is not None else None

    def jwks(self) -> dict[str, Any]:
        self._refresh(force=False)
        # Newest first: clients that try keys in order hit the active one at once.
        return {"keys": [self._keys[kid].public_jwk() for kid in sorted(self._keys, reverse=True)]}

    def _refresh(self, *, force: bool) -> None:
        now = time.monotonic()
        # A forced re-read still waits a second, so tokens with made-up kids cannot make us hammer the disk.
        if now - self._checked < (1.0 if force else self.reload_interval):
            return
        self._checked = now
        try:
            if _fingerprint(self.root) == self._seen:
                return
            self._active, self._keys, self._seen = _snapshot(self.root)
            logger.info("reloaded JWT signing keys", extra={"active_kid": self._active})
        except (SecretsError, OSError) as exc:
            # Keep signing with what we have: a half-finished rotation must not stop sign-in.
            logger.warning("JWT signing keys not reloaded: %s", exc)


def load(root: Path, *, create: bool = True, reload_interval: float = 30.0) -> KeyRing:
    """The key ring in ``root``; with ``create`` the first key is made when none exists."""
    if create and _pointer_path(root) is None:
        ensure(root)
    return KeyRing(root, reload_interval=reload_interval)
