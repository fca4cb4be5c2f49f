"""Recording, orthogonal to the mode: wraps the live executor and writes its answers (VCR.py's modes).

- `none`: nothing is written.
- `once`: a server is recorded only while the store holds nothing of it from before this run.
- `new_episodes`: what the store lacks is added; what it holds is kept.
- `all`: every answer is written, replacing what was there.

Answers include upstream errors (JSON-RPC errors and `isError` results), so failures replay as
they happened. Errors of the gateway itself (upstream down, timeout) are not answers and are not
recorded.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.records import RecordedError, Recording
from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.execution import RecordMode
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import GatewayError
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.pipeline.redact import Redactor, redact_recording
from simgate.gateway.upstream.pool import UpstreamPool


class RecordingLive:
    def __init__(self, live: CallNext, store: CacheStore, config: GatewayConfig, pool: UpstreamPool,
                 redactor: Redactor | None = None) -> None:
        self._live = live
        self._redactor = redactor  # recordings are written without secrets
        self._store = store
        self._config = config
        self._pool = pool
        self._recorded_before: dict[str, bool] = {}

    async def __call__(self, call: ToolCall) -> CallResult:
        mode = self._config.record_mode(call.server, call.tool)
        if mode == RecordMode.NONE or call.cache_key is None:
            return await self._live(call)
        if mode == RecordMode.ONCE and call.server not in self._recorded_before:
            # "Before this run": decided once, on the server's first call — by the first gateway of a
            # cluster to ask, for all of them (the store holds the decision).
            tools = [tool.get("name", "") for tool in self._pool.get(call.server).tools]
            server = call.server
            decided = await anyio.to_thread.run_sync(lambda: self._store.decide_once(
                server, lambda: any(self._store.tool_keys(server, tool) for tool in tools)))
            self._recorded_before.setdefault(server, decided)  # a concurrent first call's decision stands
        try:
            result = await self._live(call)
        except GatewayError:
            raise
        except MCPError as exc:
            await self._write(call, mode, None, RecordedError(code=exc.code, message=exc.message, data=exc.data))
            raise
        await self._write(call, mode, result, None)
        return result

    async def _write(self, call: ToolCall, mode: RecordMode, result: CallResult | None, error: RecordedError | None) -> None:
        if mode == RecordMode.ONCE and self._recorded_before.get(call.server):
            return
        assert call.cache_key is not None and call.tool_fingerprint is not None
        upstream = self._pool.get(call.server)
        info = upstream.initialize_result.server_info if upstream.initialize_result else None
        server = self._config.servers.get(call.server)
        ttl = (server.settings_for(call.tool).ttl or server.ttl) if server is not None else None
        recording = Recording(
            key=call.cache_key, server=call.server, tool=call.tool, tool_fingerprint=call.tool_fingerprint,
            arguments=call.arguments, result=result, error=error,
            latency_ms=float(call.provenance.get("latency_ms", 0.0)),
            recorded_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            server_name=info.name if info else None, server_version=info.version if info else None,
            sequential=call.sequential, episode=(call.session_id or "") if call.sequential else "",
            position=call.position if call.sequential else 0, expires_at=time.time() + ttl if ttl else None,
            recorded_by=call.api_key.id if call.api_key is not None else None,
            task=call.task,
        )
        recording = redact_recording(self._redactor, recording)
        # SQLite commits off the event loop; the call waits for it so a completed call is a stored call.
        written = await anyio.to_thread.run_sync(lambda: self._store.put(recording, replace=mode == RecordMode.ALL))
        call.provenance["recorded"] = written
