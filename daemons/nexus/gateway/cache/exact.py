"""The exact cache over Valkey, with single flight within and across gateway processes.

Use (one flight per cacheable request; ``finish`` always, hit or not)::

    flight = await cache.begin(key.cache_key(provider, upstream_model, chat, scope))
    try:
        if flight.entry is not None:                       # X-Nexus-Cache: hit
            return replay.response_body(flight.entry, caller, parsed)
        ... call upstream (X-Nexus-Cache: miss, or bypass when flight.status says so) ...
        entry = CacheEntry(response=chat_resp, created=time.time())  # if policy.poison_reason(...) is None
    finally:
        await cache.finish(flight, entry)                  # None: nothing storable

For a stream, ``finish`` runs when the relay ends (``Call.on_finish``) with
the recorded entry (``StreamRecorder.entry``) or None; it wakes local
followers without awaiting and stores the entry shielded from cancellation,
so a client that disconnects cannot leave followers waiting.

Single flight.  ``begin`` registers the first miss for a key in this process
as the local leader; identical requests arriving meanwhile wait on its
``trio.Event`` and get its entry from memory (one upstream call per process).
Across processes the local leader runs one script (``CLAIM``): the entry if
it exists, else a short lock (``SET NX PX``, ``lock_ttl``); a process that does
not get the lock polls the same script with backoff for up to
``follower_wait`` seconds — until the entry appears (a hit), or the lock frees
(the other leader failed: this one leads), or time runs out (it calls upstream
itself, unlocked).  Followers therefore wait for a whole answer: a streamed
hit starts when the leader's stream ended.  A leader that stores nothing (an
error, a poisoned or oversized answer) wakes its followers empty; they retry
the flight, so one of them leads the next attempt.

Valkey errors never fail a request: the lookup becomes a bypass (``status``
``bypass``, counted in ``bypassed`` and the metric), in-process single flight
still works, and ``finish`` does not try to store.  Entries that do not decode
are misses (counted in ``corrupt``).  Entries larger than the policy's
``max_entry_bytes`` once encoded are not stored.

Resource handling: the cache owns no connection (the ``ValkeyClient`` is the
caller's); every wait is bounded by ``follower_wait`` or the client's
``command_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Final, Literal

import attrs
import trio
from prometheus_client import Counter

from nexus.gateway.cache.entry import CacheEntry, EntryError, decode_entry, encode_entry
from nexus.gateway.cache.policy import DEFAULT, CachePolicy
from nexus.net.resp.client import Script, ValkeyClient, ValkeyConnectionError, ValkeyError
from nexus.runtime.metrics import REGISTRY

log = logging.getLogger("nexus.gateway.cache")

Status = Literal["hit", "miss", "bypass"]

# KEYS: entry, lock.  ARGV: token, lock ttl (ms).  {1, entry} | {2} (lock taken: lead) | {0} (someone else leads).
CLAIM: Final = Script("""
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
""")
RELEASE: Final = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

_LOOKUPS = Counter("nexus_cache_lookups", "Exact-cache lookups by outcome", ["result"], registry=REGISTRY)
_HIT, _MISS, _BYPASS = _LOOKUPS.labels("hit"), _LOOKUPS.labels("miss"), _LOOKUPS.labels("bypass")


class _Local:
    """The in-process leader of one key: followers wait on ``done`` and read ``entry``."""

    __slots__ = ("done", "entry")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.entry: CacheEntry | None = None


@attrs.define(slots=True, eq=False)
class Flight:
    """One request's turn at a key; hand it back to ``ExactCache.finish``."""

    key: str
    status: Status
    entry: CacheEntry | None = None
    _local: _Local | None = None
    _token: str | None = None
    _finished: bool = False


class ExactCache:
    """Get, put and single-flight lookups; see the module docstring.

    Args:
      valkey: the gateway's client.
      policy: TTL and size cap of stored entries.
      lock_ttl: seconds the cross-process lock lives if its leader never comes back.
      follower_wait: longest a request waits for another's answer before calling upstream itself.
      poll_max: ceiling of the followers' polling interval (it starts at 10 ms and doubles).
    """

    def __init__(
        self, valkey: ValkeyClient, *, policy: CachePolicy = DEFAULT, lock_ttl: float = 60.0,
        follower_wait: float = 15.0, poll_max: float = 0.25,
    ) -> None:
        self.valkey = valkey
        self.policy = policy
        self.lock_ms = int(lock_ttl * 1000)
        self.follower_wait = follower_wait
        self.poll_max = poll_max
        self.bypassed = 0
        self.corrupt = 0
        self._inflight: dict[str, _Local] = {}

    # -- plain access ---------------------------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        """The entry, or None (absent, undecodable, or Valkey unreachable: counted as a bypass)."""
        try:
            data = await self.valkey.execute("GET", key)
        except (ValkeyConnectionError, ValkeyError) as exc:
            self._bypass(exc)
            return None
        return self._decode(data) if data is not None else None

    async def put(self, key: str, entry: CacheEntry, ttl: int | None = None) -> bool:
        """Store for ``ttl`` seconds (the policy's by default); False when too large or Valkey failed."""
        data = encode_entry(entry)
        if len(data) > self.policy.max_entry_bytes:
            return False
        try:
            await self.valkey.execute("SET", key, data, "PX", (ttl or self.policy.ttl_seconds) * 1000)
        except (ValkeyConnectionError, ValkeyError) as exc:
            self._bypass(exc)
            return False
        return True

    def _decode(self, data: bytes) -> CacheEntry | None:
        try:
            return decode_entry(data)
        except EntryError as exc:
            self.corrupt += 1
            log.warning("undecodable cache entry ignored: %s", exc)
            return None

    def _bypass(self, exc: BaseException) -> None:
        self.bypassed += 1
        _BYPASS.inc()
        log.warning("cache bypassed: %s", exc)

    # -- single flight ------------------------------------------------------------------------------------

    async def begin(self, key: str) -> Flight:
        """Look ``key`` up, folding identical concurrent misses into one upstream call (see the module docstring)."""
        deadline = trio.current_time() + self.follower_wait
        while True:
            local = self._inflight.get(key)
            if local is None:
                break
            with trio.move_on_at(deadline):
                await local.done.wait()
            if local.entry is not None:
                _HIT.inc()
                return Flight(key, "hit", local.entry)
            if trio.current_time() >= deadline:
                _MISS.inc()
                return Flight(key, "miss")
        local = self._inflight[key] = _Local()
        try:
            flight = await self._claim(key, local, deadline)
        except BaseException:
            self._release_local(key, local, None)
            raise
        if flight.entry is not None:
            self._release_local(key, local, flight.entry)
        return flight

    async def _claim(self, key: str, local: _Local, deadline: float) -> Flight:
        lock, token = key + ":lock", secrets.token_hex(8)
        delay = 0.01
        try:
            while True:
                reply = await self.valkey.evalsha(CLAIM, (key, lock), (token, self.lock_ms))
                if reply[0] == 1:
                    entry = self._decode(reply[1])
                    if entry is not None:
                        _HIT.inc()
                        return Flight(key, "hit", entry, local)
                    await self.valkey.execute("DEL", key)  # corrupt: let the next claim lead
                    continue
                if reply[0] == 2:
                    _MISS.inc()
                    return Flight(key, "miss", None, local, token)
                if trio.current_time() + delay > deadline:
                    _MISS.inc()
                    return Flight(key, "miss", None, local)
                await trio.sleep(delay)
                delay = min(delay * 2, self.poll_max)
        except (ValkeyConnectionError, ValkeyError) as exc:
            self._bypass(exc)
            return Flight(key, "bypass", None, local)

    def _release_local(self, key: str, local: _Local, entry: CacheEntry | None) -> None:
        local.entry = entry
        local.done.set()
        if self._inflight.get(key) is local:
            del self._inflight[key]

    async def finish(self, flight: Flight, entry: CacheEntry | None, ttl: int | None = None, *,
                     store: bool = True) -> bool:
        """End the flight: wake local followers, store ``entry`` (if any, and not a hit or bypass), unlock.

        ``store=False`` hands ``entry`` to local followers without storing it
        (an answer borrowed from the semantic cache: it must not outlive its
        original under this key).  Returns whether the entry was stored.
        Safe under cancellation and twice on the same flight.
        """
        if flight._finished:
            return False
        flight._finished = True
        if flight._local is not None and flight.status != "hit":
            self._release_local(flight.key, flight._local, entry)
        if flight.status != "miss":
            return False
        stored = False
        with trio.CancelScope(shield=True):
            # Store before unlocking, so followers elsewhere find the entry rather than the free lock.
            if entry is not None and store:
                with trio.move_on_after(2 * self.valkey.command_timeout):
                    stored = await self.put(flight.key, entry, ttl)
            if flight._token is not None:
                with (trio.move_on_after(self.valkey.command_timeout),
                      contextlib.suppress(ValkeyConnectionError, ValkeyError)):
                    await self.valkey.evalsha(RELEASE, (flight.key + ":lock",), (flight._token,))
        return stored
