"""Executor: answer a call from the upstream server itself; recording is orthogonal (see `record`)."""

from __future__ import annotations

import time

from simgate.gateway.config.execution import Source
from simgate.gateway.pipeline.call import CallResult, ToolCall
from simgate.gateway.upstream.pool import UpstreamPool


class LiveExecutor:
    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool

    async def __call__(self, call: ToolCall) -> CallResult:
        upstream = self._pool.get(call.server)
        started = time.perf_counter()
        try:
            return await upstream.request("tools/call", call.upstream_params(),
                                          timeout=upstream.config.call_timeout, origin=call.origin)
        finally:
            call.provenance.update(source=Source.LIVE, latency_ms=round((time.perf_counter() - started) * 1000, 3))
