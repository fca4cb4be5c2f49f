"""`examples` backend: answer with the recorded result of the most similar recorded call (no LLM)."""

from __future__ import annotations

from simulators.base import SimulationError, SimulationRequest, SimulationResult
from simulators.similarity import nearest


class ExamplesSimulator:
    backend = "examples"

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        usable = [example for example in request.examples if example.result is not None]
        if not usable:
            raise SimulationError(f"no recorded answer of tool {request.tool.name!r} to imitate")
        best = usable[nearest(request.arguments, [example.arguments for example in usable], 1)[0]]
        assert best.result is not None
        return SimulationResult(result=best.result, backend=self.backend, model=None)
