"""Stage: every result says where it came from (`_meta["simgate/provenance"]`), and joins the history of
the client's session (its connection's, see `gateway.sessions`)."""

from __future__ import annotations

from typing import Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.sessions import Sessions

PROVENANCE_KEY = "simgate/provenance"


class AttachProvenance:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def _provenance(self, call: ToolCall) -> dict[str, Any]:
        return {"source": call.provenance.get("source"), "server": call.server, "tool": call.tool,
                "cache_key": call.cache_key, **{k: v for k, v in call.provenance.items() if k != "source"}}

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        try:
            result = await call_next(call)
        except MCPError as exc:
            if call.provenance and (exc.error.data is None or isinstance(exc.error.data, dict)):
                exc.error.data = {**(exc.error.data or {}), PROVENANCE_KEY: self._provenance(call)}
            await self._sessions.add_to_history(call.state_key, {
                "arguments": call.arguments, "error": {"code": exc.code, "message": exc.message}, "tool": call.tool,
                **self._origin(call)})
            raise
        meta = found if isinstance(found := result.get("_meta"), dict) else {}
        result = {**result, "_meta": {**meta, PROVENANCE_KEY: self._provenance(call)}}
        await self._sessions.add_to_history(call.state_key, {"arguments": call.arguments, "result": result,
                                                             "tool": call.tool, **self._origin(call)})
        return result

    @staticmethod
    def _origin(call: ToolCall) -> dict[str, Any]:
        # What a hold-out needs to know of a history entry: which call it was, and who answered it.
        return {"server": call.server, "key": call.cache_key, "source": call.provenance.get("source")}
