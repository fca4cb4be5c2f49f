"""Stage: the call's cache key, and whether it replays by key or in sequence."""

from __future__ import annotations

from simgate.gateway.cache.cache_keys import cache_key, tool_fingerprint
from simgate.gateway.config.execution import Mode, RecordMode
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.sessions import Sessions


def is_cacheable(tool_definition: dict, override: bool | None) -> bool:
    """Replayable by key: declared read-only or idempotent (or configured so)."""
    if override is not None:
        return override
    annotations = tool_definition.get("annotations") or {}
    return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))


class AssignCacheKey:
    def __init__(self, config: GatewayConfig, sessions: Sessions) -> None:
        self._config = config
        self._sessions = sessions
        self._fingerprints: dict[int, tuple[dict, str]] = {}

    def _fingerprint(self, tool_definition: dict) -> str:
        cached = self._fingerprints.get(id(tool_definition))
        if cached is None or cached[0] is not tool_definition:
            cached = (tool_definition, tool_fingerprint(tool_definition))
            self._fingerprints[id(tool_definition)] = cached
        return cached[1]

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        if call.resolved_mode == Mode.LIVE and self._config.record_mode(call.server, call.tool) == RecordMode.NONE:
            return await call_next(call)  # a plain proxied call needs no key: keep the hot path short
        server = self._config.servers.get(call.server)
        settings = server.settings_for(call.tool) if server is not None else None
        call.tool_fingerprint = self._fingerprint(call.tool_definition)
        input_schema = call.tool_definition.get("inputSchema")
        call.cache_key = cache_key(call.server, call.tool, call.tool_fingerprint, call.arguments,
                                   settings.ignore_args if settings else (),
                                   input_schema if isinstance(input_schema, dict) else None)
        call.sequential = not is_cacheable(call.tool_definition, settings.cacheable if settings else None)
        # A replayed session sees the same sequence of answers it recorded (pop on use). Counted for
        # every key, since replay follows how a tool was recorded, not how it is configured now; counted
        # per client connection, so a fresh connection naming a recorded session starts at its start.
        call.position = await self._sessions.take_position(call.state_key, call.cache_key)
        return await call_next(call)
