"""`examples` backend: answer with the recorded result of the most similar recorded call (no LLM), with
the new call's arguments put where that answer echoed its own (see `simulators.substitute`).

`examples-schema` is the same where the tool has a recorded answer to start from, and the `schema`
backend (the outputSchema, or the shape of a recorded answer) where it has none, so it always answers.
"""

from __future__ import annotations

from typing import Any

from simgate.results import schema_error
from simgate.simulators.base import Example, SimulationError, SimulationRequest, SimulationResult
from simgate.simulators.similarity import nearest
from simgate.simulators.substitute import substitute


def carried_over(request: SimulationRequest, example: Example) -> dict[str, Any]:
    """The example's answer with the request's arguments substituted; the verbatim answer when the
    substitution would break the tool's outputSchema."""
    assert example.result is not None
    changed = substitute(example.result, example.arguments, request.arguments)
    schema = request.tool.output_schema
    structured = changed.get("structuredContent")
    if changed is not example.result and schema is not None and structured is not None \
            and not changed.get("isError"):
        try:
            if schema_error(schema, structured) is not None:
                return example.result
        except ValueError:
            return example.result
    return changed


class ExamplesSimulator:
    backend = "examples"

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        usable = [example for example in request.examples if example.result is not None]
        if not usable:
            raise SimulationError(f"no recorded answer of tool {request.tool.name!r} to imitate")
        best = usable[nearest(request.arguments, [example.arguments for example in usable], 1)[0]]
        return SimulationResult(result=carried_over(request, best), backend=self.backend, model=None)


class ExamplesSchemaSimulator:
    """The nearest recorded answer carried over to the new arguments; schema synthesis without one."""

    backend = "examples-schema"

    def __init__(self) -> None:
        from simgate.simulators.schema import SchemaSimulator

        self._examples = ExamplesSimulator()
        self._schema = SchemaSimulator()

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        if any(example.result is not None for example in request.examples):
            answer = await self._examples.simulate(request)
        else:
            answer = await self._schema.simulate(request)
        return answer.model_copy(update={"backend": self.backend})
