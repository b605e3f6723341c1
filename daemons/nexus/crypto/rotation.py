"""Vault master key rotation: add a key, switch the active pointer, re-seal every secret, retire the old key.

The key ring is the ``vault-<id>.key`` files plus the ``vault-active`` pointer in the
secrets directory (``nexus.crypto.secretfiles``).  Rotation, in order:

1. ``rotate_master_key(dir)`` writes a new key file and then switches ``vault-active``
   to it, each by writing a temporary file and renaming it, so a daemon starting at any
   moment reads a whole ring.  Old key files stay: old ciphertext stays readable.
2. Every daemon that opens secrets (gateways, the control plane) reloads the ring; they
   read it at start, and systemd copies the directory into ``$CREDENTIALS_DIRECTORY`` at
   start too.  A row re-sealed under a key that a running gateway has not loaded is a
   credential that gateway cannot decrypt, so step 3 waits for this one.
3. ``reencrypt_all(pool, vault)`` re-seals, batch by batch, every sealed column whose
   key id is not the active one (``SEALED_COLUMNS``).  Each batch is a transaction that
   locks its rows ``FOR UPDATE SKIP LOCKED``, so it is safe next to writers and other
   re-encrypters, resumable after a crash or cancellation, and idempotent.
4. ``retire_key(pool, dir, id)`` deletes a key file once no row uses it.

The associated data of every sealed column is the row's id as 16 uuid bytes: the
convention of ``credential`` (sealed by ``nexus.devstack.seed``, opened by
``nexus.gateway.catalog``); code sealing the other columns must use ``row_aad`` too.

Nothing here logs or returns a secret or key material.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from psycopg import sql

from nexus.crypto import secretfiles
from nexus.crypto.secretfiles import CREDENTIAL_PREFIX, VAULT_ACTIVE, SecretsError
from nexus.crypto.vault import Sealed, Vault, VaultError
from nexus.storage.pgpool import PgPool

__all__ = [
    "SEALED_COLUMNS",
    "RotationError",
    "RotationProgress",
    "RotationReport",
    "SealedColumns",
    "activate_key",
    "add_master_key",
    "key_usage",
    "reencrypt_all",
    "retire_key",
    "rotate_master_key",
    "row_aad",
]

logger = logging.getLogger(__name__)

KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_NUMBERED = re.compile(r"k(\d{1,9})")
MAX_FAILED_LISTED = 100


class RotationError(Exception):
    """A rotation step refused (bad key id, key in use, read-only directory)."""


@attrs.frozen
class SealedColumns:
    """One vault-sealed secret: its table and the ciphertext / nonce / key id columns (all NULL or none)."""

    table: str
    ciphertext: str
    nonce: str
    key_id: str
    # Sign-in secrets bind a purpose label too (auth/totp.py, auth/federation.py); credentials are
    # bound to their row id alone, as the gateway opens them (gateway/catalog.py).
    aad_prefix: bytes = b""


SEALED_COLUMNS: tuple[SealedColumns, ...] = (
    SealedColumns("credential", "ciphertext", "nonce", "key_id"),
    SealedColumns("identity_provider", "client_secret_ciphertext", "client_secret_nonce", "client_secret_key_id",
                  b"nexus:identity_provider.client_secret:"),
    SealedColumns("app_user", "totp_ciphertext", "totp_nonce", "totp_key_id", b"nexus:app_user.totp:"),
)


def row_aad(row_id: uuid.UUID | str, prefix: bytes = b"") -> bytes:
    """The associated data binding a sealed column to its row: a purpose label + the row's uuid as 16 bytes."""
    return prefix + (row_id if isinstance(row_id, uuid.UUID) else uuid.UUID(str(row_id))).bytes


# ---------------------------------------------------------------------------------------------
# The key ring on disk (synchronous file operations).


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise RotationError("a vault key id is 1-32 letters, digits, '.', '_' or '-', starting alphanumeric")


def _writable_ring(root: Path) -> None:
    if (root / VAULT_ACTIVE).exists():
        return
    if (root / (CREDENTIAL_PREFIX + VAULT_ACTIVE)).exists():
        raise RotationError(f"{root} is a systemd credentials directory (read-only copy): rotate the keys in "
                            "the configured secrets directory and restart the daemons")
    raise RotationError(f"{root} holds no vault key ring ({VAULT_ACTIVE} is missing)")


def _ring(root: Path) -> Vault:
    _writable_ring(root)
    try:
        return secretfiles.vault(root)
    except SecretsError as exc:
        raise RotationError(str(exc)) from None


def _fsync_dir(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(root: Path, name: str, data: str) -> Path:
    """A fully written, synced file under a name no reader globs for (leading dot)."""
    tmp = root / f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _next_key_id(existing: set[str]) -> str:
    numbers = [int(m.group(1)) for key_id in existing if (m := _NUMBERED.fullmatch(key_id))]
    n = max(numbers, default=0) + 1
    while f"k{n}" in existing:
        n += 1
    return f"k{n}"


def add_master_key(secrets_dir: Path) -> str:
    """Write a new random key file (not yet active) and return its id (``k<n+1>``)."""
    ring = _ring(secrets_dir)
    key_id = _next_key_id(set(ring.keys))
    final = secrets_dir / f"vault-{key_id}.key"
    tmp = _write_temp(secrets_dir, final.name, secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, final)  # unlike rename, never replaces an existing key file
    except FileExistsError:
        raise RotationError(f"{final} appeared meanwhile; is another rotation running?") from None
    finally:
        tmp.unlink()
    _fsync_dir(secrets_dir)
    return key_id


def activate_key(secrets_dir: Path, key_id: str) -> None:
    """Point ``vault-active`` at ``key_id`` (which must be in the ring), atomically."""
    _check_key_id(key_id)
    ring = _ring(secrets_dir)
    if key_id not in ring.keys:
        raise RotationError(f"no vault key {key_id!r} in {secrets_dir}")
    tmp = _write_temp(secrets_dir, VAULT_ACTIVE, key_id + "\n")
    os.replace(tmp, secrets_dir / VAULT_ACTIVE)
    _fsync_dir(secrets_dir)


def rotate_master_key(secrets_dir: Path) -> str:
    """Add a new master key and make it the active one; old keys stay. Returns the new key id."""
    key_id = add_master_key(secrets_dir)
    activate_key(secrets_dir, key_id)
    logger.info("vault master key %s is now active in %s", key_id, secrets_dir)
    return key_id


# ---------------------------------------------------------------------------------------------
# Re-sealing the database's secrets (Trio, PostgreSQL).


@attrs.frozen
class FailedRow:
    table: str
    id: str
    reason: str  # never the secret: "no vault key 'k0'" or "does not authenticate"


@attrs.frozen
class RotationProgress:
    table: str
    reencrypted: int  # rows re-sealed so far, every table
    total: int  # rows under other keys when the pass began
    failed: int


@attrs.frozen
class RotationReport:
    active_key_id: str
    reencrypted: int
    failed: list[FailedRow]  # the first MAX_FAILED_LISTED
    failed_total: int
    remaining: dict[str, int]  # rows per table still under other keys after the pass

    @property
    def done(self) -> bool:
        return not any(self.remaining.values())


def _select(cols: SealedColumns, after: uuid.UUID | None) -> sql.Composed:
    keyset = sql.SQL(" AND id > %(after)s") if after is not None else sql.SQL("")
    return sql.SQL(
        "SELECT id, {ct}, {nonce}, {kid} FROM {table} WHERE {kid} IS NOT NULL AND {kid} <> %(active)s{keyset} "
        "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    ).format(ct=sql.Identifier(cols.ciphertext), nonce=sql.Identifier(cols.nonce), kid=sql.Identifier(cols.key_id),
             table=sql.Identifier(cols.table), keyset=keyset)


def _update(cols: SealedColumns) -> sql.Composed:
    return sql.SQL(
        "UPDATE {table} t SET {ct} = u.ct, {nonce} = u.nonce, {kid} = %s "
        "FROM unnest(%s::uuid[], %s::bytea[], %s::bytea[]) AS u(id, ct, nonce) WHERE t.id = u.id"
    ).format(table=sql.Identifier(cols.table), ct=sql.Identifier(cols.ciphertext), nonce=sql.Identifier(cols.nonce),
             kid=sql.Identifier(cols.key_id))


async def _count_not(pool: PgPool, cols: SealedColumns, active: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {table} WHERE {kid} IS NOT NULL AND {kid} <> %s").format(
        table=sql.Identifier(cols.table), kid=sql.Identifier(cols.key_id))
    async with pool.connection() as conn:
        row = await (await conn.execute(query, (active,))).fetchone()
    return int(row[0]) if row else 0


@attrs.define
class _Pass:
    vault: Vault
    total: int
    progress: Callable[[RotationProgress], None] | None
    reencrypted: int = 0
    failed: list[FailedRow] = attrs.Factory(list)
    failed_total: int = 0

    def fail(self, table: str, row_id: uuid.UUID, reason: str) -> None:
        self.failed_total += 1
        if len(self.failed) < MAX_FAILED_LISTED:
            self.failed.append(FailedRow(table, str(row_id), reason))
        logger.warning("vault re-encryption: %s row %s cannot be opened: %s", table, row_id, reason)

    def reseal(self, cols: SealedColumns, rows: list[tuple[Any, ...]]
               ) -> tuple[list[uuid.UUID], list[bytes], list[bytes]]:
        table = cols.table
        ids: list[uuid.UUID] = []
        cts: list[bytes] = []
        nonces: list[bytes] = []
        for row_id, ciphertext, nonce, key_id in rows:
            aad = row_aad(row_id, cols.aad_prefix)
            try:
                plaintext = self.vault.open(Sealed(key_id, bytes(nonce), bytes(ciphertext)), aad)
            except VaultError as exc:
                self.fail(table, row_id, str(exc))
                continue
            sealed = self.vault.seal(plaintext, aad)
            ids.append(row_id)
            cts.append(sealed.ciphertext)
            nonces.append(sealed.nonce)
        return ids, cts, nonces

    async def table(self, pool: PgPool, cols: SealedColumns, batch: int) -> None:
        after: uuid.UUID | None = None
        select, update = _select(cols, None), _update(cols)
        while True:
            async with pool.connection() as conn, conn.transaction():
                cur = await conn.execute(select, {"active": self.vault.active, "after": after, "limit": batch})
                rows = await cur.fetchall()
                if not rows:
                    return
                ids, cts, nonces = self.reseal(cols, rows)
                if ids:
                    await conn.execute(update, (self.vault.active, ids, cts, nonces))
            # Keyset on id: rows that failed, or were locked by someone else, are passed over, never retried forever.
            after = rows[-1][0]
            select = _select(cols, after)
            self.reencrypted += len(ids)
            if self.progress is not None:
                self.progress(RotationProgress(cols.table, self.reencrypted, self.total, self.failed_total))


async def reencrypt_all(
    pool: PgPool, vault: Vault, *, batch: int = 500, progress: Callable[[RotationProgress], None] | None = None,
) -> RotationReport:
    """Re-seal every sealed column not under ``vault.active``, ``batch`` rows per transaction.

    ``progress`` is called after each committed batch.  Rows that do not open (a key
    missing from ``vault``, a corrupt ciphertext) are left as they are and listed in
    ``failed``; rows locked by another transaction are skipped.  Both show in
    ``remaining``; run again to pick them up.  Cancellation rolls back the batch in
    flight only.
    """
    if not 1 <= batch <= 10_000:
        raise RotationError("batch must be between 1 and 10000")
    before = {cols.table: await _count_not(pool, cols, vault.active) for cols in SEALED_COLUMNS}
    state = _Pass(vault, sum(before.values()), progress)
    for cols in SEALED_COLUMNS:
        if before[cols.table]:
            await state.table(pool, cols, batch)
    remaining = {cols.table: await _count_not(pool, cols, vault.active) for cols in SEALED_COLUMNS}
    logger.info("vault re-encryption under %s: %d rows re-sealed, %d failed, %d remaining", vault.active,
                state.reencrypted, state.failed_total, sum(remaining.values()))
    return RotationReport(vault.active, state.reencrypted, state.failed, state.failed_total, remaining)


async def key_usage(pool: PgPool) -> dict[str, int]:
    """How many sealed values each key id seals, over every table."""
    usage: dict[str, int] = {}
    async with pool.connection() as conn:
        for cols in SEALED_COLUMNS:
            query = sql.SQL("SELECT {kid}, count(*) FROM {table} WHERE {kid} IS NOT NULL GROUP BY 1").format(
                kid=sql.Identifier(cols.key_id), table=sql.Identifier(cols.table))
            for key_id, count in await (await conn.execute(query)).fetchall():
                usage[key_id] = usage.get(key_id, 0) + int(count)
    return usage


async def retire_key(pool: PgPool, secrets_dir: Path, key_id: str) -> None:
    """Delete the key file of ``key_id``; refused while it is active or any row is still sealed under it."""
    _check_key_id(key_id)
    ring = _ring(secrets_dir)
    if key_id == ring.active:
        raise RotationError(f"vault key {key_id!r} is the active key; rotate first")
    if key_id not in ring.keys:
        raise RotationError(f"no vault key {key_id!r} in {secrets_dir}")
    in_use = (await key_usage(pool)).get(key_id, 0)
    if in_use:
        raise RotationError(f"vault key {key_id!r} still seals {in_use} secret(s); re-encrypt them first")
    (secrets_dir / f"vault-{key_id}.key").unlink()
    _fsync_dir(secrets_dir)
    logger.info("vault key %s retired from %s", key_id, secrets_dir)
