"""Run state shared by the gateways of a cluster (redis.asyncio): what a session name alone keys.

A client without an MCP session (the sessionless 2026-07-28 era, or a gateway run stateless) may
send each call of one run to another gateway; its sequential replay positions and the history its
simulator is shown live here, so every gateway continues the same run. (A handshake-era connection
is pinned to the gateway that holds it, so its state stays in that process: see `gateway.sessions`.)

- `P s:pos:NAME`  hash cache key -> the next position (HINCRBY: two gateways never hand out one position);
- `P s:hist:NAME` list of the last HISTORY calls (JSON).

Both expire after STATE_TTL_S without use (memory stays bounded without a process to forget them).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from simgate.gateway.cache.redis_errors import async_unavailable

STATE_TTL_S = 24 * 3600


class RedisRunState:
    def __init__(self, client: aioredis.Redis, prefix: str, url: str) -> None:
        self._client = client
        self._prefix = prefix
        self.url = url

    @async_unavailable
    async def next_position(self, state_key: str, key: str) -> int:
        name = f"{self._prefix}s:pos:{state_key}"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hincrby(name, key, 1)
            pipe.expire(name, STATE_TTL_S)
            taken, _ = await pipe.execute()
        return int(taken) - 1

    @async_unavailable
    async def remember(self, state_key: str, entry: dict[str, Any], keep: int) -> None:
        name = f"{self._prefix}s:hist:{state_key}"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.rpush(name, json.dumps(entry, ensure_ascii=False, default=str))
            pipe.ltrim(name, -keep, -1)
            pipe.expire(name, STATE_TTL_S)
            await pipe.execute()

    @async_unavailable
    async def history(self, state_key: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in await self._client.lrange(f"{self._prefix}s:hist:{state_key}", 0, -1)]
