"""Virtual-key lookups: HMAC of the presented key → the key's row, cached in process.

The hot path costs one HMAC and one dict lookup.  A miss reads PostgreSQL once
per key however many requests wait for it (single flight).  Entries live
``ttl`` seconds; a change signal (``nexus.config.changed.virtual_key``) drops
one key at once, which is how a revocation reaches every gateway within a
second.  When PostgreSQL is unreachable, known keys keep working from cache for
up to ``stale_ttl`` (availability over freshness; revocations still arrive by
signal) and unknown keys get ``Unavailable``, never a false "invalid key".

Unknown keys are cached too (briefly, in a bounded LRU) so that a client
hammering with a wrong key does not become a database load.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections import OrderedDict
from typing import Any, Literal

import attrs
import psycopg
import trio

from nexus.crypto import vkeys
from nexus.storage.pgpool import PgPool, PoolError

log = logging.getLogger("nexus.gateway.keys")

_QUERY = (
    "SELECT k.id::text, k.name, k.kind, k.org_id::text, k.project_id::text, k.owner_user_id::text, k.allowed_models, "
    # A key dies with its owner's account (disabled) and with its org (suspended), not only when revoked.
    "k.rpm, k.tpm, extract(epoch FROM k.expires_at)::float8, "
    "k.revoked_at IS NOT NULL OR o.status <> 'active' OR coalesce(u.status <> 'active', false), o.path "
    "FROM virtual_key k JOIN organization o ON o.id = k.org_id LEFT JOIN app_user u ON u.id = k.owner_user_id "
    "WHERE k.key_hash = %s"
)


def _compile_globs(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if "*" in globs:
        return None
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@attrs.frozen(slots=True)
class VirtualKey:
    id: str
    name: str
    kind: str
    org_id: str
    project_id: str | None
    owner_user_id: str | None
    allowed_models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    expires_at: float | None
    revoked: bool
    org_path: str = ""
    _models: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_models", _compile_globs(self.allowed_models))

    def allows(self, model: str) -> bool:
        return self._models is None or self._models.fullmatch(model) is not None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> VirtualKey:
        (key_id, name, kind, org_id, project_id, owner, models, rpm, tpm, expires_at, revoked, org_path) = row
        return cls(key_id, name, kind, org_id, project_id, owner, tuple(models or ()), rpm, tpm, expires_at, revoked,
                   org_path)


Verdict = Literal["ok", "unknown", "revoked", "expired", "unavailable"]


@attrs.frozen(slots=True)
class AuthResult:
    verdict: Verdict
    key: VirtualKey | None = None


_UNKNOWN = AuthResult("unknown")
_REVOKED = AuthResult("revoked")
_EXPIRED = AuthResult("expired")
_UNAVAILABLE = AuthResult("unavailable")


class KeyStore:
    def __init__(
        self, pool: PgPool, secret: bytes, *, ttl: float = 30.0, stale_ttl: float = 600.0,
        negative_ttl: float = 5.0, max_negative: int = 10_000,
    ) -> None:
        self.pool = pool
        self.secret = secret
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.negative_ttl = negative_ttl
        self.max_negative = max_negative
        self._known: dict[bytes, tuple[VirtualKey, float]] = {}
        self._by_id: dict[str, bytes] = {}
        self._negative: OrderedDict[bytes, float] = OrderedDict()
        self._inflight: dict[bytes, trio.Event] = {}
        self._used: set[str] = set()

    def _verdict(self, key: VirtualKey) -> AuthResult:
        if key.revoked:
            return _REVOKED
        if key.expires_at is not None and key.expires_at <= time.time():
            return _EXPIRED
        self._used.add(key.id)
        return AuthResult("ok", key)

    async def record_use(self, interval: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        """Write ``last_used_at`` of the keys used since the last round, in one statement every ``interval``.

        Administrators find stale keys by it; the request path only adds an id to a set.  A round that
        cannot reach PostgreSQL keeps its ids for the next one; the last round runs at shutdown.
        """
        task_status.started()
        try:
            while True:
                await trio.sleep(interval)
                await self._flush_use()
        finally:
            with trio.move_on_after(2.0) as scope:
                scope.shield = True
                await self._flush_use()

    async def _flush_use(self) -> None:
        if not self._used:
            return
        ids, self._used = sorted(self._used), set()
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    "UPDATE virtual_key SET last_used_at = now() WHERE id = ANY(%s::uuid[])", (ids,))
        except (psycopg.Error, PoolError) as exc:
            self._used.update(ids)
            log.warning("could not record key use (%d keys, kept for the next round): %s", len(ids), exc)

    async def authenticate(self, presented: str) -> AuthResult:
        if not vkeys.looks_valid(presented):
            return _UNKNOWN
        digest = vkeys.hash_key(self.secret, presented)
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and now - hit[1] < self.ttl:
            return self._verdict(hit[0])
        missed_at = self._negative.get(digest)
        if missed_at is not None and now - missed_at < self.negative_ttl:
            return _UNKNOWN
        return await self._fetch(digest, hit)

    async def _fetch(self, digest: bytes, stale: tuple[VirtualKey, float] | None) -> AuthResult:
        waiting = self._inflight.get(digest)
        if waiting is not None:
            await waiting.wait()
            hit = self._known.get(digest)
            if hit is not None:
                return self._verdict(hit[0])
            return _UNKNOWN if digest in self._negative else _UNAVAILABLE
        done = self._inflight[digest] = trio.Event()
        try:
            try:
                async with self.pool.connection() as conn:
                    row = await (await conn.execute(_QUERY, (digest,))).fetchone()
            except (PoolError, psycopg.Error) as exc:
                if stale is not None and time.monotonic() - stale[1] < self.stale_ttl:
                    return self._verdict(stale[0])
                log.warning("virtual key lookup failed: %s", exc)
                return _UNAVAILABLE
            now = time.monotonic()
            if row is None:
                self._forget(digest)
                self._negative[digest] = now
                if len(self._negative) > self.max_negative:
                    self._negative.popitem(last=False)
                return _UNKNOWN
            key = VirtualKey.from_row(row)
            self._negative.pop(digest, None)
            self._known[digest] = (key, now)
            self._by_id[key.id] = digest
            return self._verdict(key)
        finally:
            del self._inflight[digest]
            done.set()

    def _forget(self, digest: bytes) -> None:
        entry = self._known.pop(digest, None)
        if entry is not None:
            self._by_id.pop(entry[0].id, None)

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop one key (by id) or everything; unknown-key entries always go, since a key may just have been made."""
        self._negative.clear()
        if key_id is None:
            self._known.clear()
            self._by_id.clear()
            return
        digest = self._by_id.pop(key_id, None)
        if digest is not None:
            self._known.pop(digest, None)
