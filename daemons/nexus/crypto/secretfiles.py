"""The box's secret files: the virtual-key HMAC secret and the vault master key ring.

On the appliance the first-boot unit writes them under ``/etc/nexus/secrets``
(mode 0600) and systemd hands them to each daemon with
``LoadCredential=nexus:/etc/nexus/secrets``, which shows up as
``$CREDENTIALS_DIRECTORY`` holding each file as ``nexus_<name>``; that directory
wins when present.  For
development, ``ensure`` creates them.  Vault key files are named
``vault-<key id>.key`` holding 32 random bytes (hex); the active id is in
``vault-active``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from nexus.crypto.vault import Vault, VaultError

KEY_HMAC = "key-hmac"
SERVICE_TOKEN = "service-token"  # noqa: S105 - a file name. Daemon-to-daemon calls (e.g. the control plane asking a gateway to simulate)
VAULT_ACTIVE = "vault-active"
CREDENTIAL_PREFIX = "nexus_"  # systemd names directory credentials <id>_<file name>


class SecretsError(Exception):
    pass


def directory(configured: str) -> Path:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(creds) if creds else Path(configured)


def _write(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


def ensure(root: Path) -> None:
    """Create missing secrets (development and first boot). Existing files are never replaced."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (root / KEY_HMAC).exists():
        _write(root / KEY_HMAC, secrets.token_hex(32) + "\n")
    if not (root / SERVICE_TOKEN).exists():
        _write(root / SERVICE_TOKEN, secrets.token_urlsafe(32) + "\n")
    if not (root / VAULT_ACTIVE).exists():
        key_id = "k1"
        _write(root / f"vault-{key_id}.key", secrets.token_hex(32) + "\n")
        _write(root / VAULT_ACTIVE, key_id + "\n")


def _path(root: Path, name: str) -> Path:
    direct = root / name
    if direct.exists():
        return direct
    prefixed = root / (CREDENTIAL_PREFIX + name)
    return prefixed if prefixed.exists() else direct


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SecretsError(f"secret file {path} is missing (first boot or `nexus dev up` creates it)") from None
    except OSError as exc:
        raise SecretsError(f"cannot read secret file {path}: {exc.strerror}") from None


def key_hmac_secret(root: Path) -> bytes:
    raw = _read(_path(root, KEY_HMAC))
    try:
        secret = bytes.fromhex(raw)
    except ValueError:
        raise SecretsError(f"{root / KEY_HMAC} must hold hex") from None
    if len(secret) < 32:
        raise SecretsError(f"{root / KEY_HMAC} must hold at least 32 bytes")
    return secret


def service_token(root: Path) -> bytes:
    """The shared service token, or empty (internal endpoints then refuse every call) when not provisioned."""
    path = _path(root, SERVICE_TOKEN)
    return _read(path).encode() if path.exists() else b""


def vault(root: Path) -> Vault:
    active = _read(_path(root, VAULT_ACTIVE))
    keys: dict[str, bytes] = {}
    for path in sorted([*root.glob("vault-*.key"), *root.glob(f"{CREDENTIAL_PREFIX}vault-*.key")]):
        key_id = path.name.removeprefix(CREDENTIAL_PREFIX)[len("vault-"): -len(".key")]
        try:
            keys[key_id] = bytes.fromhex(_read(path))
        except ValueError:
            raise SecretsError(f"{path} must hold 32 bytes as hex") from None
    try:
        return Vault(keys, active)
    except VaultError as exc:
        raise SecretsError(f"vault key ring in {root}: {exc}") from None
