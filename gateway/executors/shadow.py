"""Executor: return the live answer; run the simulator beside it and keep both for fidelity."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.shadow import ShadowLog, ShadowPair
from simgate.gateway.executors.simulated import SimulatedExecutor
from simgate.gateway.fidelity.evidence import ShadowEstimate
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall

logger = logging.getLogger("simgate.shadow")


class ShadowExecutor:
    def __init__(self, live: CallNext, simulated: SimulatedExecutor, log: ShadowLog,
                 background: TaskGroup | None = None, estimate: ShadowEstimate | None = None) -> None:
        self._live = live
        self._simulated = simulated
        self._log = log
        self.background = background  # where simulations run beside the live call (see `running`)
        self._estimate = estimate  # the fidelity gate's running evidence, when a gate is configured

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Simulate beside live calls for the length of the block (the gateway's life); the block's exit
        waits for the simulations still running."""
        async with anyio.create_task_group() as background:
            self.background = background
            try:
                yield
            finally:
                self.background = None

    async def __call__(self, call: ToolCall) -> CallResult:
        try:
            live: dict[str, Any] = await self._live(call)
        except MCPError as exc:
            self._beside(call, {"error": {"code": exc.code, "message": exc.message, "data": exc.data}})
            raise
        self._beside(call, live)
        return live

    def _beside(self, call: ToolCall, live: dict[str, Any]) -> None:
        # The live answer may already be recorded under this key: the simulator must not peek at it.
        shadow = call.model_copy(update={"provenance": {}, "origin": None, "holdout": call.holdout or "call"})
        if self.background is None:
            return
        self.background.start_soon(self._simulate, shadow, live)

    async def _simulate(self, call: ToolCall, live: dict[str, Any]) -> None:
        try:
            # A failure is logged under the simulator that failed (it counts against its fidelity).
            simulated: dict[str, Any] = await self._simulated.answer(call, hold_out=call.cache_key)
        except MCPError as exc:
            simulated = {"error": {"code": exc.code, "message": exc.message, "data": exc.data}}
        except Exception:
            logger.exception("shadow simulation of %s failed", call.exposed_name)
            return
        assert call.cache_key is not None
        pair = ShadowPair(cache_key=call.cache_key, server=call.server, tool=call.tool, arguments=call.arguments,
                          live=live, simulated=simulated, simulator=str(call.provenance.get("simulator", self._simulated.backend)),
                          model=call.provenance.get("model"),
                          created_at=datetime.now(UTC).isoformat(timespec="microseconds"))
        await anyio.to_thread.run_sync(self._log.append, pair)
        if self._estimate is not None:
            self._estimate.add(pair)
