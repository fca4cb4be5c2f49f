"""Which simulator a gateway uses, and how to build it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from simulators.base import Simulator


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["examples"] = "examples"
    examples: int = Field(5, ge=0, le=50, description="recorded calls of the tool given to the simulator")


def build_simulator(config: SimulatorConfig) -> Simulator:
    from simulators.examples import ExamplesSimulator

    return ExamplesSimulator()
