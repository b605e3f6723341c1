"""Local sign-in: email + password (+ TOTP) against ``app_user``, with lockout.

The password check costs the same whether or not the account exists (unknown
emails are checked against a dummy hash) and runs scrypt on a worker thread so
the event loop keeps serving.  A locked account is refused before its password
is looked at; a wrong password or TOTP code counts toward the lock; a right
password on a disabled account says so only after the password checked out,
so the refusal tells nothing to someone who does not know it.

Lockout: after ``lockout_threshold`` consecutive failures the account locks
for ``lockout_base`` seconds, doubling with each further failure up to
``lockout_max``; a successful sign-in resets the count.  TOTP codes are
accepted once: the step of the last accepted code is stored
(``app_user.totp_last_step``) and that step or an earlier one is refused.

Errors: ``SignInError`` (see its codes); storage failures propagate.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from nexus.controlplane.auth import totp
from nexus.controlplane.auth.errors import SignInError
from nexus.controlplane.auth.sessions import SessionStore
from nexus.controlplane.auth.settings import AuthSettings
from nexus.crypto import passwords
from nexus.crypto.vault import Sealed, Vault, VaultError
from nexus.storage.pgpool import PgPool

__all__ = ["LocalSignIn", "SignedInUser", "normalise_email"]

logger = logging.getLogger(__name__)

MAX_PASSWORD = 1024
MAX_EMAIL = 320


@attrs.frozen
class SignedInUser:
    """Who just signed in, and how (``amr``: ``pwd``, ``otp``, ``fed``)."""

    id: uuid.UUID
    org_id: uuid.UUID
    org_path: str
    email: str
    amr: tuple[str, ...]
    auth_time: dt.datetime


def normalise_email(email: str) -> str:
    return email.strip().lower()


_USER_QUERY = (
    "SELECT u.id, u.org_id, o.path, u.email, u.password_hash, u.status, o.status, "
    "u.locked_until > now(), ceil(extract(epoch FROM u.locked_until - now())), u.must_change_password, "
    "u.totp_enabled_at IS NOT NULL, u.totp_ciphertext, u.totp_nonce, u.totp_key_id, u.totp_last_step "
    "FROM app_user u JOIN organization o ON o.id = u.org_id WHERE u.email = %s"
)


class LocalSignIn:
    def __init__(self, pool: PgPool, vault: Vault, sessions: SessionStore, settings: AuthSettings) -> None:
        self.pool = pool
        self.vault = vault
        self.sessions = sessions
        self.settings = settings
        self._dummy: str | None = None
        self._dummy_lock = trio.Lock()

    async def _dummy_hash(self) -> str:
        async with self._dummy_lock:
            if self._dummy is None:
                self._dummy = await trio.to_thread.run_sync(passwords.hash_password, "nexus-dummy-password")
            return self._dummy

    async def sign_in(self, email: str, password: str, totp_code: str | None = None, *,
                      new_password: str | None = None, source_ip: str | None = None) -> SignedInUser:
        """Check the credentials; with ``new_password`` also change the password (required when the
        account says ``must_change_password``).  Returns the user or raises ``SignInError``."""
        email = normalise_email(email)
        if len(password) > MAX_PASSWORD or len(email) > MAX_EMAIL:
            raise SignInError("invalid_credentials", "email or password is wrong")
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_USER_QUERY, (email,))).fetchone()
        log: dict[str, Any] = {"event": "auth.sign_in", "email": email, "source_ip": source_ip}
        if row is not None and row[7]:
            retry = max(1, int(row[8] or 1))
            logger.warning("sign-in refused: account locked", extra={**log, "user_id": str(row[0])})
            raise SignInError("account_locked", f"too many failed sign-ins; try again in {retry} s",
                              status=429, retry_after=retry)
        stored = row[4] if row is not None and row[4] else await self._dummy_hash()
        ok = await trio.to_thread.run_sync(passwords.verify_password, password, stored)
        if row is None or not row[4] or not ok:
            if row is not None and row[4]:
                await self._failed(row[0])
                log["user_id"] = str(row[0])
            logger.warning("sign-in refused: invalid credentials", extra=log)
            raise SignInError("invalid_credentials", "email or password is wrong")
        user_id: uuid.UUID = row[0]
        log["user_id"] = str(user_id)
        if row[5] != "active" or row[6] != "active":
            logger.warning("sign-in refused: account not active", extra=log)
            what = "account" if row[5] != "active" else "organization"
            raise SignInError("account_disabled", f"this {what} is not active", status=403)
        amr = ["pwd"]
        if row[10]:
            if not totp_code:
                raise SignInError("mfa_required", "enter the code from your authenticator app")
            await self._check_totp(user_id, row, totp_code, log)
            amr.append("otp")
        if row[9] and new_password is None:
            logger.info("sign-in held: password change required", extra=log)
            raise SignInError("password_change_required", "this password must be changed before signing in",
                              status=403)
        if new_password is not None:
            await self._change_password(user_id, password, new_password, log)
        elif passwords.needs_rehash(stored):
            rehashed = await trio.to_thread.run_sync(passwords.hash_password, password)
            async with self.pool.connection() as conn:
                await conn.execute("UPDATE app_user SET password_hash = %s WHERE id = %s", (rehashed, user_id))
        async with self.pool.connection() as conn:
            done = await (await conn.execute(
                "UPDATE app_user SET failed_login_count = 0, locked_until = NULL, last_login_at = now() "
                "WHERE id = %s RETURNING last_login_at", (user_id,))).fetchone()
        assert done is not None
        logger.info("signed in", extra={**log, "amr": amr})
        return SignedInUser(id=user_id, org_id=row[1], org_path=row[2], email=row[3], amr=tuple(amr),
                            auth_time=done[0])

    async def _failed(self, user_id: uuid.UUID) -> None:
        s = self.settings
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE app_user SET failed_login_count = failed_login_count + 1, locked_until = CASE "
                "WHEN failed_login_count + 1 >= %(t)s THEN now() + make_interval(secs => least(%(max)s, "
                "%(base)s * power(2, least(20, failed_login_count + 1 - %(t)s)))) ELSE locked_until END "
                "WHERE id = %(id)s",
                {"t": s.lockout_threshold, "base": s.lockout_base, "max": s.lockout_max, "id": user_id},
            )

    async def _check_totp(self, user_id: uuid.UUID, row: Any, code: str, log: Mapping[str, Any]) -> None:
        try:
            secret = totp.open_secret(self.vault, user_id, Sealed(row[13], bytes(row[12]), bytes(row[11])))
        except (VaultError, TypeError, UnicodeDecodeError):
            logger.error("TOTP secret does not open; refusing sign-in", extra=dict(log))
            raise SignInError("invalid_mfa", "the authenticator code cannot be checked; ask an administrator",
                              status=403) from None
        step = totp.matching_step(secret, code)
        if step is None:
            await self._failed(user_id)
            logger.warning("sign-in refused: wrong TOTP code", extra=dict(log))
            raise SignInError("invalid_mfa", "the authenticator code is wrong")
        async with self.pool.connection() as conn:
            claimed = await (await conn.execute(
                "UPDATE app_user SET totp_last_step = %s WHERE id = %s "
                "AND (totp_last_step IS NULL OR totp_last_step < %s) RETURNING 1", (step, user_id, step))).fetchone()
        if claimed is None:
            await self._failed(user_id)
            logger.warning("sign-in refused: TOTP code replayed", extra=dict(log))
            raise SignInError("invalid_mfa", "this authenticator code was already used; wait for the next one")

    async def _change_password(self, user_id: uuid.UUID, current: str, new: str, log: Mapping[str, Any]) -> None:
        problem = password_problem(new, current, self.settings.password_min_length)
        if problem is not None:
            raise SignInError("weak_password", problem, status=400)
        hashed = await trio.to_thread.run_sync(passwords.hash_password, new)
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE app_user SET password_hash = %s, password_changed_at = now(), must_change_password = false "
                "WHERE id = %s", (hashed, user_id))
        revoked = await self.sessions.revoke_user(user_id, "password_changed")
        logger.info("password changed; other sessions revoked", extra={**log, "tokens_revoked": revoked})


def password_problem(new: str, current: str, min_length: int) -> str | None:
    """Why ``new`` is not acceptable as a password, or None."""
    if len(new) < min_length:
        return f"the new password needs at least {min_length} characters"
    if len(new) > MAX_PASSWORD:
        return f"the new password may have at most {MAX_PASSWORD} characters"
    if new == current:
        return "the new password must differ from the current one"
    if len(set(new)) < 4:
        return "the new password is too repetitive"
    return None
