"""The fidelity gate: simulate a tool only while its latest measured fidelity clears thresholds.

Plain data: the policy (`FidelityGate`, configured as `gateway.simulator.gate`), the evidence per tool
(`ToolEvidence`: from a `fidelity calls` report, or shadow mode's running estimate) and the decision.
Which evidence is the latest, and where it is kept, is the gateway's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EVIDENCE_VERSION = 1
Setting = Literal["few_shot", "zero_shot"]
Fallback = Literal["cache", "live"]


class FidelityGate(BaseModel):
    """Thresholds a tool's measured fidelity must clear before `simulated`/`hybrid` simulate it."""

    model_config = ConfigDict(extra="forbid")

    min_outcome_agreement: float | None = Field(None, ge=0, le=1, description="share of calls whose outcome class agrees")
    min_kappa: float | None = Field(None, ge=-1, le=1, description="Cohen's κ of the outcome classes (undefined fails)")
    min_value_fidelity_ratio: float | None = Field(
        None, ge=0, description="value fidelity ÷ its live-vs-live value (shadow mode: ÷ 1, having no second live call)")
    min_calls: int = Field(5, ge=1, description="evidence on fewer measured calls is not enough")
    setting: Setting = Field("few_shot", description="which setting of a `fidelity calls` report counts")
    fallback: list[Fallback] = Field(default_factory=lambda: list[Fallback](("cache", "live")),
                                     description="where a call the gate keeps from the simulator goes, in order")

    @model_validator(mode="after")
    def _some_threshold(self) -> FidelityGate:
        if self.min_outcome_agreement is None and self.min_kappa is None and self.min_value_fidelity_ratio is None:
            raise ValueError("a gate needs at least one of min_outcome_agreement, min_kappa, min_value_fidelity_ratio")
        if not self.fallback or len(set(self.fallback)) != len(self.fallback):
            raise ValueError("fallback must list distinct sources among cache, live")
        return self


class ToolEvidence(BaseModel):
    """One tool's measured fidelity for one simulator."""

    server: str
    tool: str
    simulator: str = Field(..., description="backend, with the model for LLM backends (see `simulator_identity`)")
    source: Literal["fidelity calls", "shadow"]
    measured_at: str = Field(..., description="ISO 8601, UTC")
    calls: int
    outcome_agreement: float | None = None
    kappa: float | None = None
    kappa_undefined: str | None = None
    value_fidelity_ratio: float | None = None
    value_basis: str = Field(..., description="what the value fidelity was divided by")


class EvidenceFile(BaseModel):
    """`STORE/fidelity/evidence.json`: the latest evidence per simulator, setting and tool."""

    version: int = EVIDENCE_VERSION
    simulators: dict[str, dict[str, dict[str, ToolEvidence]]] = Field(
        default_factory=dict, description="simulator → setting → 'server/tool' → evidence")

    def merged(self, items: Iterable[tuple[str, ToolEvidence]]) -> EvidenceFile:
        """This file with each (setting, evidence) put in place of the older one of its tool."""
        data = {sim: {setting: dict(tools) for setting, tools in settings.items()}
                for sim, settings in self.simulators.items()}
        for setting, evidence in items:
            data.setdefault(evidence.simulator, {}).setdefault(setting, {})[f"{evidence.server}/{evidence.tool}"] = \
                evidence
        return EvidenceFile(simulators=data)

    def get(self, simulator: str, setting: str, server: str, tool: str) -> ToolEvidence | None:
        return self.simulators.get(simulator, {}).get(setting, {}).get(f"{server}/{tool}")


class GateDecision(BaseModel):
    simulate: bool
    reason: str
    evidence: ToolEvidence | None = None


def simulator_identity(backend: str, model: str | None) -> str:
    """What evidence is about: `examples`, `schema`, or `openai:MODEL@prompt-VERSION`."""
    return backend if not model else f"{backend}:{model}"


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def decide(gate: FidelityGate, evidence: ToolEvidence | None) -> GateDecision:
    """Simulate only when every configured threshold is met by the evidence; otherwise say which is not."""
    if evidence is None:
        return GateDecision(simulate=False, reason="no fidelity evidence for this tool and simulator "
                                                   "(run `simgate fidelity calls`, or shadow mode)")
    where = f"{evidence.source}, {evidence.calls} call(s), {evidence.measured_at}"
    if evidence.calls < gate.min_calls:
        return GateDecision(simulate=False, evidence=evidence,
                            reason=f"only {evidence.calls} measured call(s), fewer than min_calls {gate.min_calls} "
                                   f"({where})")
    passed: list[str] = []
    checks = (("outcome agreement", evidence.outcome_agreement, gate.min_outcome_agreement, None),
              ("κ", evidence.kappa, gate.min_kappa, evidence.kappa_undefined),
              ("value fidelity ratio", evidence.value_fidelity_ratio, gate.min_value_fidelity_ratio,
               f"not measured ({evidence.value_basis})"))
    for name, value, threshold, why_missing in checks:
        if threshold is None:
            continue
        if value is None:
            return GateDecision(simulate=False, evidence=evidence,
                                reason=f"{name} is {why_missing or 'not measured'}: cannot clear {_fmt(threshold)} "
                                       f"({where})")
        if value < threshold:
            return GateDecision(simulate=False, evidence=evidence,
                                reason=f"{name} {_fmt(value)} < {_fmt(threshold)} ({where})")
        passed.append(f"{name} {_fmt(value)} ≥ {_fmt(threshold)}")
    return GateDecision(simulate=True, evidence=evidence, reason=f"{'; '.join(passed)} ({where})")


def evidence_from_report(report: object) -> list[tuple[str, ToolEvidence]]:
    """(setting, evidence) for every tool of a `CallFidelityReport`: outcome agreement and κ of the
    simulated answers, and value fidelity ÷ its live-vs-live value where the report has a second live call."""
    from simgate.simulators.fidelity.report import CallFidelityReport

    assert isinstance(report, CallFidelityReport)
    simulator = simulator_identity(report.backend, report.model)
    out: list[tuple[str, ToolEvidence]] = []
    for setting, data in report.settings.items():
        for name, agg in data.per_tool.items():
            server, _, tool = name.partition("/")
            ratio = agg.ratio.value_fidelity if agg.ratio is not None else None
            basis = "live-vs-live value fidelity (second live call)" if agg.ratio is not None else \
                "no second live call: run `simgate fidelity calls --second-live`"
            out.append((setting, ToolEvidence(
                server=server, tool=tool, simulator=simulator, source="fidelity calls", measured_at=report.created_at,
                calls=agg.calls, outcome_agreement=agg.simulated.outcome_agreement, kappa=agg.simulated.kappa,
                kappa_undefined=agg.simulated.kappa_undefined, value_fidelity_ratio=ratio, value_basis=basis)))
    return out
