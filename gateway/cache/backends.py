"""The store factory: `gateway.store.backend` picks, from a table, what a gateway keeps its world in.

- `diskcache` (default, nothing to install): recordings under `gateway.cache_dir`; run state and
  rate-limit buckets in the gateway's memory.
- `redis`: recordings, tool lists, `once` decisions, the run state of session names and the
  rate-limit buckets in one Redis, shared by every gateway on it. The Redis client is imported only
  here, on demand: a gateway on diskcache never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from simgate.gateway.cache.store import CacheStore

logger = logging.getLogger("simgate.store")

if TYPE_CHECKING:
    from simgate.gateway.config.models import GatewaySettings
    from simgate.gateway.pipeline.ratelimit import SharedCounters
    from simgate.gateway.sessions import SharedRunState


async def _nothing() -> None:
    return None


@dataclass
class Backend:
    store: CacheStore
    run_state: SharedRunState | None = None  # None: kept in the gateway's memory
    counters: SharedCounters | None = None
    # Runs for the gateway's life (keeps what the store holds for a running gateway alive).
    keepalive: Callable[[], Coroutine[Any, Any, None]] = field(default=_nothing)
    aclose: Callable[[], Awaitable[None]] = field(default=_nothing)


def open_store(settings: GatewaySettings) -> CacheStore:
    """The recording store alone (the `simgate cache` commands)."""
    return _STORES[settings.store.backend](settings)


def shared_store(settings: GatewaySettings) -> CacheStore | None:
    """The store when it is not a diskcache directory (Redis), for commands that otherwise read the cache
    directory (fidelity, export); None for diskcache."""
    return None if settings.store.backend == "diskcache" else open_store(settings)


def open_backend(settings: GatewaySettings) -> Backend:
    """Everything a serving gateway keeps outside its process. Raises ConfigError when it cannot be reached."""
    return _BACKENDS[settings.store.backend](settings)


def _disk_store(settings: GatewaySettings) -> CacheStore:
    from simgate.gateway.cache.store import DiskStore

    return DiskStore(Path(settings.cache_path))


def _redis_store(settings: GatewaySettings) -> CacheStore:
    from simgate.gateway.cache.redis_store import RedisStore

    assert settings.store.url is not None
    return RedisStore.connect(settings.store.url, settings.store.prefix)


def _disk(settings: GatewaySettings) -> Backend:
    return Backend(store=_disk_store(settings))


def _redis(settings: GatewaySettings) -> Backend:
    import redis.asyncio as aioredis

    from simgate.gateway.cache.redis_state import RedisRunState
    from simgate.gateway.cache.redis_store import ONCE_TTL_S, RedisStore
    from simgate.gateway.pipeline.redis_limits import RedisCounters

    url, prefix = settings.store.url, settings.store.prefix
    assert url is not None
    store = RedisStore.connect(url, prefix)
    # The hot path is async: positions, history and buckets go through the asyncio client.
    client: Any = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                          health_check_interval=30)

    async def keepalive() -> None:
        from redis.exceptions import RedisError

        while True:
            await anyio.sleep(ONCE_TTL_S / 5)
            try:
                await anyio.to_thread.run_sync(store.hold_once)
            except RedisError as exc:  # Redis away for a moment: the next round tries again
                logger.warning("could not refresh the record-once decisions: %s", exc)

    async def aclose() -> None:
        await client.aclose()

    assert isinstance(store, RedisStore)
    return Backend(store=store, run_state=RedisRunState(client, prefix, url),
                   counters=RedisCounters(client, prefix, url),
                   keepalive=keepalive, aclose=aclose)


_STORES: dict[str, Callable[[GatewaySettings], CacheStore]] = {"diskcache": _disk_store, "redis": _redis_store}
_BACKENDS: dict[str, Callable[[GatewaySettings], Backend]] = {"diskcache": _disk, "redis": _redis}
