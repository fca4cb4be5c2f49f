"""Stage: count, time and log every call (outermost, so it sees every outcome), and hand it to the pages
watching live calls (`gateway.ui.feed`) when there are any: with none, that costs one attribute check."""

from __future__ import annotations

import logging
import time
from typing import Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.pipeline.publish import call_event
from simgate.gateway.prometheus import GatewayMetrics
from simgate.gateway.ui.feed import CallFeed

logger = logging.getLogger("simgate.calls")


class ObserveCalls:
    def __init__(self, metrics: GatewayMetrics, feed: CallFeed | None = None, redactor: Any = None) -> None:
        self._metrics = metrics
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[str, Any] = {}
        self._feed = feed
        self._redactor = redactor

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        started = time.perf_counter()
        outcome = "error"
        code: int | None = None
        result: CallResult | None = None
        error: MCPError | None = None
        try:
            result = await call_next(call)
            outcome = "tool_error" if result.get("isError") else "ok"
            return result
        except MCPError as exc:
            code = exc.code
            error = exc
            outcome = f"rpc_error_{-exc.code}" if exc.code < 0 else f"rpc_error_{exc.code}"
            raise
        finally:
            elapsed = time.perf_counter() - started
            # Labelled children are looked up once: `labels()` costs more than the increment itself.
            counter = self._counters.get((call.server, call.tool, outcome))
            if counter is None:
                counter = self._counters[(call.server, call.tool, outcome)] = self._metrics.calls.labels(
                    call.server, call.tool, outcome)
            counter.inc()
            histogram = self._histograms.get(call.server)
            if histogram is None:
                histogram = self._histograms[call.server] = self._metrics.latency.labels(call.server)
            histogram.observe(elapsed)
            logger.info("tools/call", extra={"event": "tool_call", "server": call.server, "tool": call.tool,
                                             "outcome": outcome, "code": code, "session": call.session_id,
                                             "latency_ms": round(elapsed * 1000, 3)})
            if self._feed is not None and self._feed.watched:
                self._feed.publish(call_event(self._feed, call, elapsed, outcome, result, error, self._redactor))
