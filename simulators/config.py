"""Which simulator a gateway uses, and how to build it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simgate.simulators.base import Simulator
from simgate.simulators.fidelity.gate import FidelityGate, simulator_identity

Backend = Literal["examples", "schema", "openai", "examples-schema"]


class OpenAIConfig(BaseModel):
    """An OpenAI-compatible chat completions endpoint: `vllm serve`, llama.cpp's server, OpenAI."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(..., min_length=1, description="e.g. http://127.0.0.1:8000/v1 for `vllm serve`")
    model: str = Field(..., min_length=1, description="the model name the endpoint serves")
    api_key_env: str | None = Field(
        None, description="environment variable holding the API key (none: local servers need no key)")
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int = 0
    max_tokens: int = Field(1024, ge=16, le=65536, description="cap on one answer")
    timeout_s: float = Field(60.0, gt=0, description="per request to the endpoint")
    retries: int = Field(2, ge=0, le=10, description="repair attempts after an invalid answer")
    http_retries: int = Field(2, ge=0, le=10, description="the client's retries on connection errors, 429 and 5xx")
    strict: bool = Field(True, description="`strict` of the json_schema response_format")
    max_string_length: int | None = Field(
        None, ge=1, description="bound every unbounded string of the answer schema (small models ramble; "
                                "OpenAI's strict mode rejects maxLength)")
    max_array_items: int | None = Field(
        None, ge=1, description="bound every unbounded array (and map) of the answer schema")
    prompt: str = Field("v1", description="prompt template version (simulators/prompts)")
    max_example_chars: int = Field(4000, ge=100, description="recorded answers in the prompt are clipped to this")
    cache_size: int = Field(4096, ge=0, description="memoized answers kept (LRU)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request fields for the endpoint")

    @model_validator(mode="after")
    def _known_prompt(self) -> OpenAIConfig:
        from simgate.simulators.prompts import VERSIONS

        if self.prompt not in VERSIONS:
            raise ValueError(f"unknown prompt version {self.prompt!r} (known: {', '.join(VERSIONS)})")
        return self


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Backend = "examples"
    examples: int = Field(5, ge=0, le=50, description="recorded calls of the tool given to the simulator")
    openai: OpenAIConfig | None = Field(None, description="the endpoint of the `openai` backend")
    gate: FidelityGate | None = Field(
        None, description="simulate a tool in `simulated`/`hybrid` only while its measured fidelity clears these "
                          "thresholds; otherwise fall through (none: always simulate)")

    @property
    def identity(self) -> str:
        """What fidelity evidence must be about to count for this simulator (see `simulator_identity`)."""
        if self.backend == "openai" and self.openai is not None:
            return simulator_identity(self.backend, f"{self.openai.model}@prompt-{self.openai.prompt}")
        return simulator_identity(self.backend, None)

    @model_validator(mode="after")
    def _backend_settings(self) -> SimulatorConfig:
        if self.backend == "openai" and self.openai is None:
            raise ValueError("backend 'openai' needs an `openai` section with at least `base_url` and `model`, "
                             'e.g. {"backend": "openai", "openai": {"base_url": "http://127.0.0.1:8000/v1", '
                             '"model": "my-model"}}')
        return self


def build_simulator(config: SimulatorConfig) -> Simulator:
    if config.backend == "schema":
        from simgate.simulators.schema import SchemaSimulator

        return SchemaSimulator()
    if config.backend == "openai":
        from simgate.simulators.openai import OpenAISimulator

        assert config.openai is not None
        return OpenAISimulator(config.openai)
    if config.backend == "examples-schema":
        from simgate.simulators.examples import ExamplesSchemaSimulator

        return ExamplesSchemaSimulator()
    from simgate.simulators.examples import ExamplesSimulator

    return ExamplesSimulator()
