"""The simulator interface, on plain data: a tool, its arguments and examples in; a `CallToolResult` out."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from simgate.errors import SimgateError


class ToolSpec(BaseModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None

    @classmethod
    def from_mcp(cls, tool: dict[str, Any]) -> ToolSpec:
        return cls(name=tool.get("name", ""), description=tool.get("description"),
                   input_schema=tool.get("inputSchema") or {}, output_schema=tool.get("outputSchema"),
                   annotations=tool.get("annotations"))


class Example(BaseModel):
    """A call and what answered it: a `CallToolResult` dict, or a JSON-RPC error."""

    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    tool: str | None = Field(None, description="the tool called, when it may differ from the simulated one (history)")


class SimulationRequest(BaseModel):
    server: str
    server_description: str | None = None
    tool: ToolSpec
    arguments: dict[str, Any]
    examples: list[Example] = Field(default_factory=list, description="recorded calls of this tool, nearest first")
    history: list[Example] = Field(default_factory=list, description="this session's earlier calls, in order")
    sample: str | None = Field(
        None, description="which sample this is (the gateway passes the session: one run of one task). At a "
                          "temperature above 0 it seeds the sampling and keys the memo, so repeated runs are real "
                          "samples; at temperature 0 it changes nothing")


class SimulationResult(BaseModel):
    result: dict[str, Any]
    backend: str
    model: str | None = Field(None, description="what answered: the model, with the prompt version for LLM backends")
    prompt_version: str | None = None


class SimulationError(SimgateError):
    """The simulator could not produce an answer."""


class Simulator(Protocol):
    backend: str

    async def simulate(self, request: SimulationRequest) -> SimulationResult: ...
