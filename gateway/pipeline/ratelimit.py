"""Stage: rate limits per (client, server, tool), and each upstream server's quota with a bounded queue.

- **Client limits** (the API key's `rate_limit`, else the tool's, else the server's, else the
  gateway's): a token bucket per (client, server, tool). A call that finds its bucket empty fails at once with
  `RateLimited` (-32006), `data.retry_after` = seconds until the bucket holds a token again.
- **Upstream quota** (`quota` of the server): one bucket per server shared by every client, for
  calls that will reach the upstream (modes live, shadow, hybrid; not replay or simulated). A call
  that finds it empty reserves the next free token and sleeps until then, so the queue is served
  first come, first served. At most `max_queue` calls wait at once and none waits longer than
  `max_wait`: a call that would break either bound fails at once with `RateLimited`, carrying
  `retry_after` (seconds until a token is free without waiting) and the queue depth.

Time comes from an injectable `Clock` (anyio's by default) so unit tests run on a fake clock.
All state lives in the stage instance: one gateway, one set of buckets — unless `shared` counters
are given (store backend redis): then every bucket and quota queue is kept there, and a limit holds
for all the gateways on it together instead of once per gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from simgate.gateway.config.execution import UPSTREAM_MODES
from simgate.gateway.config.limits import RateLimit, UpstreamQuota
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import RateLimited
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.prometheus import GatewayMetrics

# Modes whose calls may reach the upstream server, and so count against its quota.
_EPSILON = 1e-9
_SWEEP_EVERY = 1024  # new client buckets between sweeps of idle, full ones


class SharedReservation(Protocol):
    outcome: str  # now, queued, queue_full, max_wait
    wait: float
    waiting: int


class SharedCounters(Protocol):
    """Buckets kept outside the process (e.g. `gateway.pipeline.redis_limits.RedisCounters`)."""

    async def take(self, bucket: tuple[str, ...], rate: float, burst: int) -> float:
        """Take a token if one is free (returns 0), else take none and return the seconds until one is."""
        ...

    async def reserve(self, server: str, rate: float, burst: int, max_queue: int,
                      max_wait: float) -> Any: ...

    async def refund(self, server: str, burst: int, reservation: Any) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class AnyioClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class TokenBucket:
    """`rate` tokens per second up to `burst`. Tokens may go negative: a reservation of a future token."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is free for a new call (0 when one is free now)."""
        self._refill(now)
        if self.tokens >= 1 - _EPSILON:
            return 0.0
        return (1 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Take the next token, now or in the future; return the seconds until it is due."""
        wait = self.wait_time(now)
        self.tokens -= 1
        return wait

    def refund(self) -> None:
        self.tokens = min(float(self.burst), self.tokens + 1)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst - _EPSILON


@dataclass
class _QuotaState:
    bucket: TokenBucket
    waiting: int = 0


def retry_seconds(seconds: float) -> float:
    """Seconds rounded up to the millisecond, never 0: a client that waits this long finds a token."""
    return max(0.001, math.ceil(seconds * 1000 - _EPSILON) / 1000)


def client_of(call: ToolCall) -> str:
    return call.client or call.session_id or "anonymous"


class RateLimits:
    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None,
                 metrics: GatewayMetrics | None = None, shared: SharedCounters | None = None) -> None:
        self._config = config
        self._shared = shared
        self._clock = clock or AnyioClock()
        self._metrics = metrics
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._quotas: dict[str, _QuotaState] = {}
        self._created = 0

    # ------------------------------------------------------------------ config

    def limit_for(self, server: str, tool: str) -> RateLimit | None:
        """The tool's limit, else the server's, else the gateway default."""
        server_config = self._config.servers.get(server)
        if server_config is not None:
            tool_limit = server_config.settings_for(tool).rate_limit
            if tool_limit is not None:
                return tool_limit
            if server_config.rate_limit is not None:
                return server_config.rate_limit
        return self._config.gateway.rate_limit

    def quota_for(self, server: str) -> UpstreamQuota | None:
        server_config = self._config.servers.get(server)
        return server_config.quota if server_config is not None else None

    def queue_depth(self, server: str) -> int:
        state = self._quotas.get(server)
        return state.waiting if state is not None else 0

    # ------------------------------------------------------------------ stage

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        key_limit = call.api_key.rate_limit if call.api_key is not None else None
        limit = key_limit or self.limit_for(call.server, call.tool)
        if limit is not None:
            if self._shared is not None:
                await self._check_client_shared(call, limit, self._shared)
            else:
                self._check_client(call, limit)
        if call.resolved_mode in UPSTREAM_MODES:
            quota = self.quota_for(call.server)
            if quota is not None:
                if self._shared is not None:
                    await self._wait_for_shared_quota(call, quota, self._shared)
                else:
                    await self._wait_for_quota(call, quota)
        return await call_next(call)

    def _check_client(self, call: ToolCall, limit: RateLimit) -> None:
        now = self._clock.now()
        key = (client_of(call), call.server, call.tool)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._sweep(now)
            assert limit.burst is not None
            bucket = self._buckets[key] = TokenBucket(limit.rate, limit.burst, now)
        wait = bucket.wait_time(now)
        if wait > 0:
            self._refuse_client(call, limit, wait)
        bucket.take(now)

    async def _check_client_shared(self, call: ToolCall, limit: RateLimit, shared: SharedCounters) -> None:
        assert limit.burst is not None
        wait = await shared.take((client_of(call), call.server, call.tool), limit.rate, limit.burst)
        if wait > 0:
            self._refuse_client(call, limit, wait)

    def _refuse_client(self, call: ToolCall, limit: RateLimit, wait: float) -> None:
        retry_after = retry_seconds(wait)
        self._count(call.server, "client_limit")
        raise RateLimited(
            f"rate limit for tool {call.exposed_name!r} reached ({limit.rate:g} calls/s, burst {limit.burst}); "
            f"retry after {retry_after:g}s",
            data={"retry_after": retry_after, "scope": "client", "server": call.server, "tool": call.tool,
                  "rate": limit.rate, "burst": limit.burst})

    async def _wait_for_quota(self, call: ToolCall, quota: UpstreamQuota) -> None:
        now = self._clock.now()
        state = self._quotas.get(call.server)
        if state is None:
            assert quota.burst is not None
            state = self._quotas[call.server] = _QuotaState(TokenBucket(quota.rate, quota.burst, now))
        wait = state.bucket.wait_time(now)
        if wait <= 0:
            state.bucket.take(now)
            return
        if state.waiting >= quota.max_queue:
            self._reject_quota(call, quota, state.waiting, wait, "quota_queue_full",
                               f"its queue is full ({state.waiting} of {quota.max_queue} calls waiting)")
        if wait > quota.max_wait + _EPSILON:
            self._reject_quota(call, quota, state.waiting, wait, "quota_max_wait",
                               f"the wait ({wait:.3g}s) would exceed max_wait ({quota.max_wait:g}s)")
        state.bucket.take(now)  # reserve the next token: later arrivals queue behind this call
        state.waiting += 1
        self._gauge(call.server, state)
        done = False
        try:
            await self._clock.sleep(wait)
            done = True
        finally:
            state.waiting -= 1
            self._gauge(call.server, state)
            if not done:
                state.bucket.refund()  # cancelled while waiting: its token goes to the next caller
        if self._metrics is not None:
            self._metrics.quota_waited.labels(call.server).inc()
        call.provenance["quota_wait_ms"] = round(wait * 1000, 3)

    async def _wait_for_shared_quota(self, call: ToolCall, quota: UpstreamQuota, shared: SharedCounters) -> None:
        """As `_wait_for_quota`, with the bucket and the queue (its depth cluster-wide) in the shared counters."""
        assert quota.burst is not None
        reservation = await shared.reserve(call.server, quota.rate, quota.burst, quota.max_queue, quota.max_wait)
        if reservation.outcome == "now":
            return
        if reservation.outcome == "queue_full":
            self._reject_quota(call, quota, reservation.waiting, reservation.wait, "quota_queue_full",
                               f"its queue is full ({reservation.waiting} of {quota.max_queue} calls waiting)")
        if reservation.outcome == "max_wait":
            self._reject_quota(call, quota, reservation.waiting, reservation.wait, "quota_max_wait",
                               f"the wait ({reservation.wait:.3g}s) would exceed max_wait ({quota.max_wait:g}s)")
        state = self._quotas.setdefault(call.server, _QuotaState(TokenBucket(quota.rate, quota.burst, 0.0)))
        state.waiting += 1  # this gateway's share of the queue, for its gauge
        self._gauge(call.server, state)
        done = False
        try:
            await self._clock.sleep(reservation.wait)
            done = True
        finally:
            state.waiting -= 1
            self._gauge(call.server, state)
            if not done:
                with anyio.CancelScope(shield=True):
                    await shared.refund(call.server, quota.burst, reservation)
        if self._metrics is not None:
            self._metrics.quota_waited.labels(call.server).inc()
        call.provenance["quota_wait_ms"] = round(reservation.wait * 1000, 3)

    def _reject_quota(self, call: ToolCall, quota: UpstreamQuota, waiting: int, wait: float,
                      reason: str, why: str) -> None:
        retry_after = retry_seconds(wait)
        self._count(call.server, reason)
        data: dict[str, Any] = {"retry_after": retry_after, "scope": "upstream_quota", "reason": reason,
                                "server": call.server, "queue_depth": waiting, "max_queue": quota.max_queue,
                                "max_wait": quota.max_wait, "rate": quota.rate, "burst": quota.burst}
        raise RateLimited(f"upstream quota of server {call.server!r} exhausted ({quota.rate:g} calls/s): {why}; "
                          f"retry after {retry_after:g}s", data=data)

    # ------------------------------------------------------------------ bookkeeping

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled completely: a new one would be the same."""
        self._created += 1
        if self._created % _SWEEP_EVERY:
            return
        for key in [key for key, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[key]

    def _count(self, server: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rate_limited.labels(server, reason).inc()

    def _gauge(self, server: str, state: _QuotaState) -> None:
        if self._metrics is not None:
            self._metrics.quota_queue_depth.labels(server).set(state.waiting)
