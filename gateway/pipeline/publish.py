"""Stage: each finished call goes to the live-calls feed (the page's streaming table), when someone watches.

It sits outside `RedactSecrets` and `AttachProvenance`, so what it sees is the result as the client
gets it (redacted, with its provenance); the feed redacts the arguments too before they are sent.
When no page watches, the stage costs one attribute check.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.shared.exceptions import MCPError

from gateway.pipeline.call import CallNext, CallResult, ToolCall
from gateway.pipeline.provenance import PROVENANCE_KEY
from gateway.ui.feed import CallEvent, CallFeed


class PublishCalls:
    def __init__(self, feed: CallFeed, redactor: Any = None) -> None:
        self._feed = feed
        self._redact = redactor.redact if redactor else None

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        if not self._feed.watched:
            return await call_next(call)
        started_at = time.time()
        started = time.perf_counter()
        result: CallResult | None = None
        error: dict[str, Any] | None = None
        outcome = "error"
        try:
            result = await call_next(call)
            outcome = "tool_error" if result.get("isError") else "ok"
            return result
        except MCPError as exc:
            outcome = "rpc_error"
            error = {"code": exc.code, "message": exc.error.message, "data": exc.error.data}
            raise
        finally:
            if self._feed.watched:
                self._feed.publish(CallEvent(self._fields(call, started_at, time.perf_counter() - started,
                                                          outcome, result, error), self._redact))

    def _fields(self, call: ToolCall, started_at: float, elapsed: float, outcome: str,
                result: CallResult | None, error: dict[str, Any] | None) -> dict[str, Any]:
        provenance = (result or {}).get("_meta", {}).get(PROVENANCE_KEY) if result else None
        if provenance is None and error and isinstance(error.get("data"), dict):
            provenance = error["data"].get(PROVENANCE_KEY)
        provenance = provenance or call.provenance
        return {
            "id": self._feed.next_id(), "time": started_at, "server": call.server, "tool": call.tool,
            "client": call.api_key.name if call.api_key is not None else call.client,
            "session": call.session_id, "mode": call.resolved_mode or call.mode,
            "source": provenance.get("source"), "latency_ms": round(elapsed * 1000, 3), "outcome": outcome,
            "cache_key": call.cache_key, "arguments": call.arguments, "result": result, "error": error,
        }
