"""Executor: answer from recordings only. Strict: a miss is an error naming the nearest recorded calls."""

from __future__ import annotations

import time
from typing import Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.store import CacheStore, episode_for, last_of_episode
from simgate.gateway.config.execution import Source
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import ReplayMiss
from simgate.gateway.pipeline.call import CallResult, ToolCall
from simgate.simulators.similarity import nearest

NEAREST = 3


class ReplayExecutor:
    def __init__(self, store: CacheStore, config: GatewayConfig | None = None) -> None:
        self._store = store
        self._config = config

    def _deterministic(self, call: ToolCall) -> bool:
        server = self._config.servers.get(call.server) if self._config is not None else None
        return server is not None and server.settings_for(call.tool).deterministic

    def lookup(self, call: ToolCall) -> Recording | None:
        assert call.cache_key is not None
        recordings = self._store.get(call.cache_key)
        # Replay as it was recorded: a tool recorded in sequence replays in sequence, whatever the
        # replaying gateway's own settings say.
        if recordings and recordings[0].sequential:
            recording = episode_for(recordings, call.session_id or "", call.position)
            if recording is None and call.position > 0 and self._deterministic(call):
                # The same call again, past the end of the recorded sequence: a tool configured as
                # deterministic answers it as it answered the last time (provenance says so).
                recording = last_of_episode(recordings, call.session_id or "")
                if recording is not None:
                    call.provenance["deterministic_repeat"] = {"recorded_position": recording.position,
                                                               "position": call.position}
        else:
            recording = recordings[0] if recordings else None
        if recording is None:
            return None
        if recording.expires_at is not None and recording.expires_at < time.time():
            call.provenance.pop("deterministic_repeat", None)
            return None
        return recording

    async def __call__(self, call: ToolCall) -> CallResult:
        started = time.perf_counter()
        recording = self.lookup(call)
        if recording is None:
            raise self.miss(call)
        call.provenance.update(source=Source.CACHE, latency_ms=round((time.perf_counter() - started) * 1000, 3),
                               recorded_at=recording.recorded_at)
        if recording.error is not None:
            raise MCPError(recording.error.code, recording.error.message, recording.error.data)
        assert recording.result is not None
        return recording.result

    def miss(self, call: ToolCall) -> ReplayMiss:
        recorded: list[Recording] = []
        for key in self._store.tool_keys(call.server, call.tool):
            shown = next((recording for recording in self._store.get(key) if shown_to(recording, call)), None)
            if shown is not None:
                recorded.append(shown)
        near = [recorded[i] for i in nearest(call.arguments, [r.arguments for r in recorded], NEAREST)]
        described: list[dict[str, Any]] = [{"arguments": r.arguments, "cache_key": r.key,
                                            "same_schema": r.tool_fingerprint == call.tool_fingerprint}
                                           for r in near]
        where = f" (call #{call.position + 1} of this session)" if call.sequential else ""
        repeated = ""
        if call.sequential and call.position > 0 and not self._deterministic(call):
            repeated = (f" (the same call was made {call.position} time(s) before in this session, more than "
                        f"recorded; a tool that always answers the same arguments alike can be marked so: "
                        f"tool_settings {call.tool}: {{deterministic: true}})")
        if described:
            nearest_text = "; ".join(str(d["arguments"]) + ("" if d["same_schema"] else " [older schema]")
                                     for d in described)
            hint = f"nearest recorded: {nearest_text}"
        else:
            hint = "nothing of this tool is recorded that this client may see"
        return ReplayMiss(f"replay miss for tool {call.exposed_name!r}{where} with arguments {call.arguments}: "
                          f"{hint}{repeated}",
                          data={"tool": call.exposed_name, "server": call.server, "cache_key": call.cache_key,
                                "position": call.position, "nearest": described})


def shown_to(recording: Recording, call: ToolCall) -> bool:
    """Whether a miss may name this recording's arguments to the caller. A sequence is its session's own;
    a key sees what it recorded and what no key recorded (before keys, or imported); no key (keys not
    in use) or an admin key sees the rest too."""
    if recording.sequential and recording.episode != (call.session_id or ""):
        return False
    key = call.api_key
    return key is None or key.admin or recording.recorded_by in (None, key.id)
