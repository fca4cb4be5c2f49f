"""What onboarding saw of a server and its tools: the report's data, and the classifier's input."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class CallOutcome(StrEnum):
    OK = "ok"
    SOFT_ERROR = "soft_error"  # isError, or error text in a success
    RPC_ERROR = "rpc_error"  # a JSON-RPC error
    TIMEOUT = "timeout"


class ToolStatus(StrEnum):
    WORKS = "works"
    SOFT_ERROR = "soft_error"
    RPC_ERROR = "rpc_error"
    TIMEOUT = "timeout"
    NEEDS_CREDENTIALS = "needs_credentials"
    NEEDS_NETWORK = "needs_network"


class ServerStatus(StrEnum):
    USABLE = "usable"  # at least one tool works offline
    NEEDS_CREDENTIALS = "needs_credentials"
    NEEDS_NETWORK = "needs_network"
    NO_WORKING_TOOL = "no_working_tool"
    INSTALL_FAILED = "install_failed"
    CRASHED_ON_START = "crashed_on_start"
    PROTOCOL_ERROR = "protocol_error"
    INVALID_SPEC = "invalid_spec"


class ProbeCall(BaseModel):
    kind: str = Field(description="minimal | full | invalid | llm | vary:ARG")
    arguments: dict[str, Any]
    valid: bool
    attempt: int = Field(description="1 or 2: each set is called twice with the same arguments")
    outcome: CallOutcome
    error_code: int | None = None
    text: str = Field("", description="the answer's text (or the error message), shortened")
    result: dict[str, Any] | None = Field(None, description="the CallToolResult as JSON (None for an error)")
    latency_ms: float
    started_at: float | None = Field(None, description="wall-clock time (Unix seconds) the call was made")
    files_changed: list[str] = Field(default_factory=list, description="paths under the server's own dirs")
    egress: list[str] = Field(default_factory=list, description="host:port the server tried to reach (denied)")


class ToolClassification(BaseModel):
    status: ToolStatus
    deterministic: bool | None = Field(None, description="None: no pair of identical successful calls to compare")
    unstable_paths: list[str] = Field(default_factory=list, description="JSON paths that changed between two "
                                      "identical calls")
    time_dependent: bool = False
    writes_files: bool = False
    needs_env: list[str] = Field(default_factory=list)
    network_hosts: list[str] = Field(default_factory=list)
    invalid_input: CallOutcome | None = Field(None, description="how the server answered the deliberately invalid "
                                              "call (ok: it accepted it); None: no invalid call could be made")
    evidence: list[str] = Field(default_factory=list, description="why, in short sentences")


class ProposedSettings(BaseModel):
    cacheable: bool
    ignore_args: list[str] = Field(default_factory=list)
    ttl: float | None = None


class ToolFidelity(BaseModel):
    """How well a simulator backend imitated this tool's probe calls (few-shot, `simgate fidelity calls`)."""

    calls: int
    outcome_agreement: float | None = None
    value_fidelity: float | None = None
    bleu4: float | None = None
    simulator_failures: int = 0


class ToolReport(BaseModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    annotations: dict[str, Any] | None = None
    calls: list[ProbeCall] = Field(default_factory=list)
    classification: ToolClassification | None = None
    settings: ProposedSettings | None = None
    expected: dict[str, Any] | None = Field(None, description="hand labels, when a corpus gives them")
    fidelity: dict[str, ToolFidelity] = Field(default_factory=dict, description="simulator backend → its "
                                              "fidelity baseline on the probe calls")


class Category(BaseModel):
    primary: str
    secondary: list[str] = Field(default_factory=list)
    method: str = Field(description="llm MODEL, or keywords (a keyword classifier, no model)")


class ServerReport(BaseModel):
    name: str
    spec: str
    spec_hash: str
    status: ServerStatus
    reason: str | None = None
    entry: dict[str, Any] = Field(default_factory=dict, description="the config entry to serve it with")
    fixes: list[str] = Field(default_factory=list, description="known fixes that made it start (e.g. mcp<2)")
    server_info: dict[str, Any] | None = None
    description: str | None = None
    tools: list[ToolReport] = Field(default_factory=list)
    prompts: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)
    needs_env: list[str] = Field(default_factory=list)
    network_hosts: list[str] = Field(default_factory=list)
    category: Category | None = None
    seconds: float = 0.0
    onboarded_at: str | None = None
    notes: list[str] = Field(default_factory=list, description="what could not be done, and why (not fatal)")
