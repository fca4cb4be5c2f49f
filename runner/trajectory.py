"""A trajectory as written to the output JSONL: exactly these keys, one object per line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simgate.gateway.config.execution import Source

Outcome = Literal["final_answer", "max_turns", "timeout", "error"]
OUTCOMES: tuple[str, ...] = ("final_answer", "max_turns", "timeout", "error")


class ToolEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(..., description="the model turn (0-based) that asked for the call")
    call_id: str
    name: str = Field(..., description="the gateway tool name, {server}__{tool}")
    server: str | None
    tool: str | None
    arguments: dict[str, Any]
    source: Source | None = Field(..., description="from the result's provenance; None if the gateway gave none")
    cache_key: str | None
    latency_ms: float = Field(..., description="round trip through the gateway, as the runner saw it")
    is_error: bool


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    llm_calls: int = 0

    def add(self, prompt: int | None, completion: int | None, total: int | None = None) -> None:
        self.prompt_tokens += prompt or 0
        self.completion_tokens += completion or 0
        self.total_tokens += total if total is not None else (prompt or 0) + (completion or 0)
        self.llm_calls += 1


class AgentInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    model: str
    temperature: float
    seed: int | None
    max_turns: int


TurnSource = Literal["task", "follow_up", "simulated_user"]


class UserTurn(BaseModel):
    """One user message of the conversation and how the agent's answer to it ended."""

    model_config = ConfigDict(extra="forbid")

    question: str
    source: TurnSource = Field(..., description="the task's question, one of the task's follow_ups, or written "
                                                "by the simulated user")
    message: int = Field(..., description="its index in `messages`")
    outcome: Outcome | None = Field(None, description="how the agent's answer to it ended (None: not reached)")
    user_model: str | None = Field(None, description="the simulated user's model, for its turns")


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    mode: str
    repeat: int = 0
    session: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    target_tools: list[str]
    tool_events: list[ToolEvent]
    final_answer: str | None
    outcome: Outcome
    error: str | None
    usage: Usage
    checks: dict[str, Any]
    agent: AgentInfo
    created_at: str
    turns: list[UserTurn] = Field(default_factory=list, description="the user turns, in order (empty in files "
                                                                     "written before multi-turn support)")
    conversation_end: str | None = Field(None, description="why no further user turn followed")
    task_extra: dict[str, Any] = Field(
        default_factory=dict, description="the task's own keys beyond the known ones (subset_name, metadata, ...)")

    def to_line(self) -> str:
        """One JSONL line (no newline), in the key order of the model."""
        return self.model_dump_json()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
