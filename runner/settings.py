"""How a run is made: which gateway and mode, which LLM, which agent, how many at once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simgate.gateway.config.execution import RUN_MODES, Mode, mode_names

AgentKind = Literal["native", "prompted", "agents-sdk"]
AGENT_KINDS: tuple[str, ...] = ("native", "prompted", "agents-sdk")


class UserSettings(BaseModel):
    """A simulated user: after each final answer an LLM reads a digest of the conversation and either
    says its goal is done or writes the next user message, up to `turns` user turns in all."""

    model_config = ConfigDict(extra="forbid")

    turns: int = Field(2, ge=1, le=20, description="user turns at most, the task's question included")
    min_turns: int = Field(1, ge=1, le=20, description="user turns before the user may say its goal is done")
    llm_base_url: str | None = Field(None, description="the user's OpenAI-compatible API (default: the agent's)")
    model: str | None = Field(None, description="the user model (default: the agent's)")
    api_key_env: str | None = Field(None, description="environment variable holding its API key")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(400, ge=16)
    digest_budget: int = Field(200, ge=0, description="characters of each tool output and answer in the digest")

    @field_validator("llm_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _min_within_max(self) -> UserSettings:
        if self.min_turns > self.turns:
            raise ValueError(f"min_turns ({self.min_turns}) exceeds turns ({self.turns})")
        return self


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: str = Field(..., description="the gateway's aggregated MCP endpoint, e.g. http://127.0.0.1:8808/mcp")
    mode: Mode = Mode.LIVE
    llm_base_url: str = Field(..., description="an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., min_length=1)
    api_key_env: str | None = Field(None, description="environment variable holding the LLM API key")
    agent: AgentKind = "prompted"
    max_turns: int = Field(8, ge=1, le=200, description="model calls per user turn")
    max_tokens: int | None = Field(None, ge=1, description="cap on one model answer")
    first_tool_choice: Literal["auto", "required"] = Field(
        "auto", description="`required`: the first model turn must call a tool (native, agents-sdk; later turns auto)")
    agents_sdk_tool_calls: Literal["native", "prompted"] = Field(
        "native", description="how the Agents SDK's model calls tools: natively, or prompted (JSON-constrained)")
    parallel_tool_calls: bool = Field(False, description="let the model ask for several tools in one turn")
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = 0
    task_timeout: float = Field(600.0, gt=0, description="seconds one trajectory may take")
    concurrency: int = Field(1, ge=1, le=256, description="trajectories run at once")
    session_prefix: str = Field("", description="prepended to each trajectory's gateway session id")
    run_id: str = Field("", description="names the run in its session ids ({prefix}{run}/{mode}/{task}#{repeat})")
    replay_of: str | None = Field(None, description="replay mode: the run whose live sessions are replayed "
                                  "(default: this run's id)")
    holdout: Literal["none", "call", "task"] = Field(
        "none", description="simulated and hybrid calls: what the simulator is not shown (X-Simgate-Holdout)")
    repeat: int = Field(0, ge=0, description="the repeat index written into each trajectory")
    llm_timeout: float = Field(300.0, gt=0, description="seconds one model request may take")
    progress: bool = Field(True, description="show a progress bar on stderr")
    # Small models ramble until max_tokens; bounds in the answer schema (prompted agent) end strings
    # and lists where a constrained decoder can.
    max_string_length: int | None = Field(None, ge=1, description="bound on unbounded strings (prompted agent)")
    max_array_items: int | None = Field(None, ge=1, description="bound on unbounded arrays (prompted agent)")
    user: UserSettings | None = Field(None, description="a simulated user writes follow-up turns (multi-turn)")

    @field_validator("mode")
    @classmethod
    def _run_mode(cls, value: Mode) -> Mode:
        if value not in RUN_MODES:
            raise ValueError(f"a run's mode is one of {mode_names(RUN_MODES)}, got {value.value!r}")
        return value

    @field_validator("gateway", "llm_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("gateway")
    @classmethod
    def _mcp_endpoint(cls, value: str) -> str:
        # `--gateway http://host:port` means its aggregated endpoint.
        return value if value.endswith("/mcp") else value + "/mcp"

    @field_validator("run_id", "replay_of")
    @classmethod
    def _no_slash(cls, value: str | None) -> str | None:
        if value is not None and "/" in value:
            raise ValueError(f"must not contain '/' (it separates the parts of a session id), got {value!r}")
        return value

    def session_id(self, task_id: str, repeat: int) -> str:
        """The trajectory's gateway session: the run, the mode, the task and the repeat.

        Deterministic, so a replay finds what its recording run wrote: a replay names the live session
        it replays (`{prefix}{replay_of or run}/live/{task}#{repeat}`); the gateway starts every fresh
        connection at the first position of the recorded session it names."""
        if self.mode == Mode.REPLAY:
            run, mode = (self.replay_of if self.replay_of is not None else self.run_id), Mode.LIVE
        else:
            run, mode = self.run_id, self.mode
        return f"{self.session_prefix}{run + '/' if run else ''}{mode}/{task_id}#{repeat}"
