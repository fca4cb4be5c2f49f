"""The fidelity gate in front of the simulator: simulate a tool only while its latest measured fidelity
clears `gateway.simulator.gate`; otherwise pass the call on (in `simulated` mode to the gate's
fallback, cache then live by default; in `hybrid` to the next source of the order). The decision and
its evidence go into the provenance either way."""

from __future__ import annotations

from collections.abc import Mapping

from simgate.gateway.config.execution import Source
from simgate.gateway.errors import SimulatorGated
from simgate.gateway.executors.hybrid import HybridExecutor
from simgate.gateway.executors.simulated import SimulatedExecutor
from simgate.gateway.fidelity.evidence import EvidenceBook
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.simulators.fidelity.gate import FidelityGate, GateDecision, decide


class GatedSimulator:
    def __init__(self, simulated: SimulatedExecutor, gate: FidelityGate, evidence: EvidenceBook,
                 simulator: str) -> None:
        self._simulated = simulated
        self._gate = gate
        self._evidence = evidence
        self._simulator = simulator

    def decision(self, server: str, tool: str) -> GateDecision:
        evidence = self._evidence.latest(server, tool, self._simulator, self._gate.setting, self._gate.min_calls)
        return decide(self._gate, evidence)

    async def __call__(self, call: ToolCall) -> CallResult:
        decision = self.decision(call.server, call.tool)
        call.provenance["gate"] = {
            "simulate": decision.simulate, "reason": decision.reason,
            "evidence": decision.evidence.source if decision.evidence is not None else None}
        if not decision.simulate:
            raise SimulatorGated(f"gated: {decision.reason}", data={"tool": call.exposed_name})
        return await self._simulated(call)


def gated_simulated_mode(gated: GatedSimulator, gate: FidelityGate, sources: Mapping[str, CallNext]) -> HybridExecutor:
    """`simulated` mode under a gate: the simulator when the gate lets it, else the fallback sources."""
    return HybridExecutor([Source.SIMULATOR, *gate.fallback], {Source.SIMULATOR: gated, **sources})
