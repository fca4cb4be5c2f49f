"""Rate-limit buckets and upstream quotas in Redis, so a limit holds for a whole cluster of gateways.

The same token bucket as `gateway.pipeline.ratelimit.TokenBucket`, run as a Lua script (atomic: no
two gateways take one token) on Redis's own clock (`TIME`), so the gateways' clocks need not agree.
An upstream quota's queue is a sorted set of reservations scored by their due time: a reservation
whose time has come no longer counts as waiting, also when its gateway died while it waited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from simgate.gateway.cache.redis_errors import async_unavailable

# Returns the seconds until a token is free as a string (Lua numbers become integers on the way out);
# "0": a token was taken.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(held[1]) or burst, tonumber(held[2]) or now
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
local wait = 0
if tokens >= 1 - 1e-9 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'updated', string.format('%.6f', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return string.format('%.6f', wait)
"""

# KEYS: bucket, waiting (sorted set). ARGV: rate, burst, max_queue, max_wait, reservation id.
# Returns {outcome, wait, waiting}: outcome "now" (taken), "queued" (reserved, sleep `wait`),
# "queue_full" or "max_wait" (refused).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_queue, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(held[1]) or burst, tonumber(held[2]) or now
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local waiting = redis.call('ZCARD', KEYS[2])
local outcome, wait = 'now', 0
if tokens >= 1 - 1e-9 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
  if waiting >= max_queue then
    outcome = 'queue_full'
  elseif wait > max_wait + 1e-9 then
    outcome = 'max_wait'
  else
    outcome = 'queued'
    tokens = tokens - 1
    waiting = waiting + 1
    redis.call('ZADD', KEYS[2], now + wait, ARGV[5])
  end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'updated', string.format('%.6f', updated))
local keep = math.ceil((burst / rate + max_wait) * 1000) + 60000
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return {outcome, string.format('%.6f', wait), waiting}
"""

# A reservation given up (its call was cancelled while waiting): its token goes to the next caller.
_REFUND = """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
  if tokens then
    redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', math.min(tonumber(ARGV[1]), tokens + 1)))
  end
end
return 0
"""


@dataclass(frozen=True)
class Reservation:
    outcome: str  # now, queued, queue_full, max_wait
    wait: float
    waiting: int  # calls waiting for this server's quota, cluster-wide (this one included when queued)
    id: str


class RedisCounters:
    """`SharedCounters` on Redis (see `gateway.pipeline.ratelimit`)."""

    def __init__(self, client: aioredis.Redis, prefix: str, url: str) -> None:
        self._prefix = prefix
        self.url = url
        self._take = client.register_script(_TAKE)
        self._reserve = client.register_script(_RESERVE)
        self._refund = client.register_script(_REFUND)

    @async_unavailable
    async def take(self, bucket: tuple[str, ...], rate: float, burst: int) -> float:
        name = f"{self._prefix}rl:" + "\x00".join(bucket)
        return float(await self._take(keys=[name], args=[repr(rate), burst]))

    @async_unavailable
    async def reserve(self, server: str, rate: float, burst: int, max_queue: int, max_wait: float) -> Reservation:
        reservation = uuid.uuid4().hex
        outcome, wait, waiting = await self._reserve(
            keys=self._quota_keys(server), args=[repr(rate), burst, max_queue, repr(max_wait), reservation])
        return Reservation(str(outcome), float(wait), int(waiting), reservation)

    @async_unavailable
    async def refund(self, server: str, burst: int, reservation: Reservation) -> None:
        await self._refund(keys=self._quota_keys(server), args=[burst, reservation.id])

    def _quota_keys(self, server: str) -> list[str]:
        return [f"{self._prefix}quota:{server}", f"{self._prefix}quota_waiting:{server}"]
