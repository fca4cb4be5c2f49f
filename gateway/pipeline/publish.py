"""A finished call as the page's live table shows it (`gateway.ui.feed`), built only when a page watches.

`ObserveCalls`, the outermost stage, calls `call_event` after a call when (and only when) its feed is
watched; it sees the result as the client gets it (redacted, with its provenance), and the event
redacts the arguments too. The event is made (and bounded) at once, so queued events hold no large result.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.pipeline.call import CallResult, ToolCall
from simgate.gateway.pipeline.provenance import PROVENANCE_KEY
from simgate.gateway.ui.feed import CallEvent, CallFeed


def call_event(feed: CallFeed, call: ToolCall, elapsed: float, outcome: str, result: CallResult | None,
               error: MCPError | None, redactor: Any = None) -> CallEvent:
    """The event of a finished call. Its result and error have passed `RedactSecrets` already (this runs
    outside it); its arguments are redacted here."""
    provenance = _provenance(call, result, error)
    fields = {
        "id": feed.next_id(), "time": time.time() - elapsed, "server": call.server, "tool": call.tool,
        "client": call.api_key.name if call.api_key is not None else call.client,
        "session": call.session_id, "mode": call.resolved_mode or call.mode,
        "source": provenance.get("source"), "latency_ms": round(elapsed * 1000, 3), "outcome": outcome,
        "cache_key": call.cache_key,
    }
    payloads = {
        "arguments": redactor.redact(call.arguments) if redactor else call.arguments, "result": result,
        "error": {"code": error.code, "message": error.error.message, "data": error.error.data} if error else None,
    }
    return CallEvent.build(fields, payloads)


def _provenance(call: ToolCall, result: CallResult | None, error: MCPError | None) -> dict[str, Any]:
    meta = result.get("_meta") if result is not None else None
    if isinstance(meta, dict) and isinstance(meta.get(PROVENANCE_KEY), dict):
        return meta[PROVENANCE_KEY]
    data = error.error.data if error is not None else None
    if isinstance(data, dict) and isinstance(data.get(PROVENANCE_KEY), dict):
        return data[PROVENANCE_KEY]
    return call.provenance
