"""The Lua scripts that reserve and reconcile quota counters, and their argument encoding.

Pure: builds ``KEYS`` / ``ARGV`` lists and reads replies; the engine runs them
with EVALSHA.  A script runs atomically on the server, which is what makes the
budget global: however many gateway processes reserve at once, each check sees
every increment before it, so the last unit of a budget is granted once.

RESERVE: KEYS = sentinel, then per counter its key and its soft-limit alert
key.  ARGV = now (ms), then eight values per counter: kind (``c`` calendar /
``s`` sliding), amount, hard limit, soft limit (-1: none), expiry (ms), and
three layout values — calendar: ms until the window ends, alert TTL, unused;
sliding: current bucket, bucket count, bucket width (ms).  The script first
reads every counter and checks ``used + amount <= hard`` for *all* of them;
the first that fails ends the script with nothing incremented.  Only then does
it increment them all.  Reply:

- ``{0}``: the sentinel is missing (Valkey lost its data): nothing done;
- ``{1, i, used, retry_ms}``: counter i (1-based) is exhausted; ``retry_ms`` is
  when enough of it frees up for this amount (calendar: the window's end;
  sliding: when the oldest buckets that must go have left the window);
- ``{2, epoch, used_1, flag_1, ...}``: granted; ``used`` after the increment;
  flag 0 = under the soft limit, 1 = at or over it, 2 = this request crossed it
  first in this window (it won the alert key's ``SET NX``: emit one alert).

Old sliding buckets are deleted as the script meets them, so a hash never
holds more than ``buckets + 1`` fields.

RECONCILE: KEYS = sentinel, counters; ARGV = epoch, then (field, delta) per
counter (field empty for calendar counters).  Applies each delta only if the
sentinel still holds ``epoch`` (the counters were not lost and rebuilt since
the reservation) and the counter (or bucket) still exists (an expired window
or an aged-out bucket no longer matters); never leaves a counter below 0.
Reply: the number of counters changed, or -1 for a stale epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from nexus.gateway.quota.policy import Applied, Estimate, Location, Unit, locate, sentinel_key
from nexus.net.resp.codec import Script

RESERVE: Final = Script("""
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {0} end
local now = tonumber(ARGV[1])
local n = (#KEYS - 1) / 2
local used, existed = {}, {}
for i = 1, n do
  local a = 1 + (i - 1) * 8
  local key = KEYS[2 * i]
  local amount = tonumber(ARGV[a + 2])
  local hard = tonumber(ARGV[a + 3])
  local cur = 0
  if ARGV[a + 1] == 'c' then
    local v = redis.call('GET', key)
    if v then cur = tonumber(v); existed[i] = true end
    if hard >= 0 and cur + amount > hard then return {1, i, cur, tonumber(ARGV[a + 6])} end
  else
    local b, nb, width = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8])
    local oldest = b - nb + 1
    local flat = redis.call('HGETALL', key)
    local vals, stale = {}, {}
    for j = 1, #flat, 2 do
      local idx = tonumber(flat[j])
      if idx < oldest then
        stale[#stale + 1] = flat[j]
      else
        local v = tonumber(flat[j + 1])
        vals[idx] = v
        cur = cur + v
      end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    if hard >= 0 and cur + amount > hard then
      local retry = nb * width
      local left = cur
      for idx = oldest, b do
        local v = vals[idx]
        if v then
          left = left - v
          if left + amount <= hard then
            retry = (idx + nb) * width - now
            break
          end
        end
      end
      return {1, i, cur, retry}
    end
  end
  used[i] = cur
end
local out = {2, epoch}
for i = 1, n do
  local a = 1 + (i - 1) * 8
  local key = KEYS[2 * i]
  local amount = tonumber(ARGV[a + 2])
  local soft = tonumber(ARGV[a + 4])
  local alert_ttl
  if ARGV[a + 1] == 'c' then
    redis.call('INCRBY', key, amount)
    if not existed[i] then redis.call('PEXPIRE', key, ARGV[a + 5]) end
    alert_ttl = ARGV[a + 7]
  else
    redis.call('HINCRBY', key, ARGV[a + 6], amount)
    redis.call('PEXPIRE', key, ARGV[a + 5])
    alert_ttl = tonumber(ARGV[a + 7]) * tonumber(ARGV[a + 8])
  end
  local new = used[i] + amount
  local flag = 0
  if soft >= 0 and new >= soft then
    flag = 1
    if redis.call('SET', KEYS[2 * i + 1], '1', 'NX', 'PX', alert_ttl) then flag = 2 end
  end
  out[#out + 1] = new
  out[#out + 1] = flag
end
return out
""")

RECONCILE: Final = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local changed = 0
for i = 2, #KEYS do
  local field = ARGV[2 * i - 2]
  local delta = tonumber(ARGV[2 * i - 1])
  local key = KEYS[i]
  if field == '' then
    if redis.call('EXISTS', key) == 1 then
      if redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
      changed = changed + 1
    end
  elseif redis.call('HEXISTS', key, field) == 1 then
    if redis.call('HINCRBY', key, field, delta) < 0 then redis.call('HSET', key, field, 0) end
    changed = changed + 1
  end
end
return changed
""")

# Compare-and-delete: release a lock only if it is still ours.
RELEASE: Final = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

GRANTED: Final = 2
EXHAUSTED: Final = 1


@attrs.frozen(slots=True)
class Charge:
    """What one reservation added to one counter, for its reconciliation."""

    key: str
    field: str
    unit: Unit
    amount: int


@attrs.frozen(slots=True)
class ReservePlan:
    applied: tuple[Applied, ...]
    locations: tuple[Location, ...]
    charges: tuple[Charge, ...]
    keys: list[str]
    args: list[str | int]


def plan_reserve(applied: Sequence[Applied], estimate: Estimate, now: float, prefix: str) -> ReservePlan:
    keys: list[str] = [sentinel_key(prefix)]
    args: list[str | int] = [int(now * 1000)]
    locations: list[Location] = []
    charges: list[Charge] = []
    for a in applied:
        loc = locate(a, now, prefix)
        unit = a.policy.unit
        amount = estimate.amount(unit)
        keys.append(loc.key)
        keys.append(loc.alert_key)
        hard = -1 if a.hard is None else a.hard
        soft = -1 if a.soft is None else a.soft
        if loc.field:
            args.extend(("s", amount, hard, soft, loc.expire_ms, loc.field, loc.buckets, loc.width_ms))
        else:
            args.extend(("c", amount, hard, soft, loc.expire_ms, loc.reset_in_ms, loc.alert_ttl_ms, 0))
        locations.append(loc)
        charges.append(Charge(loc.key, loc.field, unit, amount))
    return ReservePlan(tuple(applied), tuple(locations), tuple(charges), keys, args)


@attrs.frozen(slots=True)
class Granted:
    epoch: bytes
    used: tuple[int, ...]
    flags: tuple[int, ...]


@attrs.frozen(slots=True)
class Exhausted:
    index: int  # 0-based, into the plan's counters
    used: int
    retry_after: float  # seconds


def parse_reserve(reply: Any) -> Granted | Exhausted | None:
    """The script's reply as a record; None when the counters were lost (no sentinel)."""
    status = reply[0]
    if status == GRANTED:
        rest = reply[2:]
        return Granted(reply[1], tuple(rest[0::2]), tuple(rest[1::2]))
    if status == EXHAUSTED:
        return Exhausted(reply[1] - 1, reply[2], max(reply[3], 0) / 1000)
    return None


def reconcile_call(prefix: str, epoch: bytes, deltas: Sequence[tuple[str, str, int]]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one RECONCILE for ``(key, field, delta)`` triples of one epoch."""
    keys: list[str] = [sentinel_key(prefix)]
    args: list[Any] = [epoch]
    for key, field, delta in deltas:
        keys.append(key)
        args.append(field)
        args.append(delta)
    return keys, args
