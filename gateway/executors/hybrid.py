"""Executor: try sources in a configured order (StableToolBench's cache -> live -> simulator).

A source that cannot answer (replay miss, upstream down or silent, no simulator) passes the call
on; a real answer, error answers included, is final.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from simgate.gateway.errors import (
    GatewayError,
    NoSimulator,
    ReplayMiss,
    SimulationFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall

_PASS_ON = (ReplayMiss, UpstreamUnavailable, UpstreamTimeout, NoSimulator, SimulationFailed)


class HybridExecutor:
    def __init__(self, order: Sequence[str], sources: Mapping[str, CallNext]) -> None:
        self._order = list(order)
        self._sources = dict(sources)

    async def __call__(self, call: ToolCall) -> CallResult:
        tried: list[str] = []
        last: GatewayError | None = None
        for source in self._order:
            try:
                result = await self._sources[source](call)
            except _PASS_ON as exc:
                tried.append(f"{source}: {exc.message}")
                last = exc
                continue
            if tried:
                call.provenance["fell_through"] = tried
            return result
        assert last is not None
        last.error.message = "no source could answer: " + " | ".join(tried)
        raise last
