"""`ToolCall`, the stage interface, and the pipeline that chains stages in front of an executor.

A stage is `async (call, call_next) -> result`, like Starlette's middleware: it may inspect or
change the call, answer it itself, or pass it on. Results are raw `CallToolResult` dicts so that
every field an upstream sent reaches the client unchanged; errors are raised as `MCPError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from simgate.gateway.auth.api_keys import ApiKey
from simgate.gateway.config.execution import Mode
from simgate.gateway.sessions import state_key
from simgate.gateway.upstream.origin_protocol import Origin

CallResult = dict[str, Any]
CallNext = Callable[["ToolCall"], Awaitable[CallResult]]


class ToolCall(BaseModel):
    """One `tools/call` on its way through the gateway."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    server: str
    tool: str
    exposed_name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] | None = None
    tool_definition: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = Field(None, description="the session's name: what is recorded, what a replay reads")
    client_session: str | None = Field(None, description="the client's MCP session: where run state lives")
    task: str | None = Field(None, description="the task the call serves (runner), kept on recordings")
    holdout: str | None = Field(None, description="what the simulator must not be shown: call or task")
    client: str | None = None
    mode: str | None = None  # as the client asked (checked by ChooseMode)
    origin: SkipValidation[Origin | None] = Field(default=None, exclude=True)
    api_key: SkipValidation[ApiKey | None] = Field(default=None, exclude=True)
    # Filled in on the way through the pipeline:
    resolved_mode: Mode | None = None
    cache_key: str | None = None
    tool_fingerprint: str | None = None
    sequential: bool = False
    position: int = 0
    provenance: dict[str, Any] = Field(default_factory=dict)

    @property
    def state_key(self) -> str | None:
        """Where this call's replay positions and simulator history live (see `gateway.sessions`)."""
        return state_key(self.session_id, self.client_session)

    def upstream_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"name": self.tool, "arguments": self.arguments}
        if self.meta:
            params["_meta"] = self.meta
        return params


class Stage(Protocol):
    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult: ...


class Pipeline:
    """Stages outermost-first, ending in the executor that produces the answer."""

    def __init__(self, stages: Sequence[Stage], executor: CallNext) -> None:
        self.stages = tuple(stages)  # what runs, in order (for inspection; the chain below is what is called)
        self._entry: CallNext = executor
        for stage in reversed(stages):
            self._entry = _bind(stage, self._entry)

    async def __call__(self, call: ToolCall) -> CallResult:
        return await self._entry(call)


def _bind(stage: Stage, call_next: CallNext) -> CallNext:
    async def run(call: ToolCall) -> CallResult:
        return await stage(call, call_next)

    return run
