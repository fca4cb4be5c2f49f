"""Executor: answer a call from the upstream server itself."""

from __future__ import annotations

from gateway.pipeline.call import CallResult, ToolCall
from gateway.upstream.pool import UpstreamPool


class LiveExecutor:
    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool

    async def __call__(self, call: ToolCall) -> CallResult:
        upstream = self._pool.get(call.server)
        return await upstream.request("tools/call", call.upstream_params(), timeout=upstream.config.call_timeout,
                                      origin=call.origin)
