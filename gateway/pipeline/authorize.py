"""Stage: the client's API key must allow the tool; the key names the client for rate limits."""

from __future__ import annotations

from simgate.gateway.errors import Forbidden
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall


class Authorize:
    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        key = call.api_key
        if key is not None:
            if not key.allows_tool(call.server, call.tool):
                raise Forbidden(f"API key {key.name!r} may not call tool {call.exposed_name!r}",
                                data={"tool": call.exposed_name, "key": key.name})
            call.client = f"key:{key.name}"
        return await call_next(call)
