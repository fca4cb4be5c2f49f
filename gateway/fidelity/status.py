"""`simgate fidelity status`: per tool, whether the fidelity gate lets the simulator answer it, and on
what evidence — the same decision a gateway on this config and store makes."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from simgate.gateway.cache.shadow import ShadowLog
from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.fidelity.evidence import EvidenceBook, ShadowEstimate, read_evidence
from simgate.gateway.fidelity.source import FidelityInputError
from simgate.simulators.fidelity.gate import GateDecision, decide


class ToolStatus(BaseModel):
    server: str
    tool: str
    goes_to: str  # "simulator", or the fallback sources in order
    decision: GateDecision


class GateStatus(BaseModel):
    simulator: str
    gate: dict | None
    store: str
    tools: list[ToolStatus]


def gate_status(config: GatewayConfig, store: Path, recordings: CacheStore | None = None) -> GateStatus:
    """`store`: the cache directory (evidence, shadow log); `recordings`: the config's store when not a diskcache
    directory there (Redis), for the tool lists."""
    settings = config.gateway.simulator
    if settings is None:
        raise FidelityInputError("the config has no gateway.simulator: nothing is simulated, there is no gate")
    shadow_dir = store / "shadow"
    pairs = []
    if shadow_dir.is_dir():
        log = ShadowLog(shadow_dir)
        try:
            pairs = list(log.pairs())
        finally:
            log.close()
    book = EvidenceBook(store, ShadowEstimate.from_pairs(pairs))
    tools = _known_tools(config, store, book, settings.identity, recordings)
    rows: list[ToolStatus] = []
    for server, tool in tools:
        if settings.gate is None:
            found = book.candidates(server, tool, settings.identity, "few_shot")
            evidence = max(found, key=lambda e: e.measured_at) if found else None
            decision = GateDecision(simulate=True, evidence=evidence,
                                    reason="no gate (gateway.simulator.gate): simulated and hybrid always simulate")
        else:
            gate = settings.gate
            decision = decide(gate, book.latest(server, tool, settings.identity, gate.setting, gate.min_calls))
        goes = "simulator" if decision.simulate else " → ".join(settings.gate.fallback if settings.gate else [])
        rows.append(ToolStatus(server=server, tool=tool, goes_to=goes, decision=decision))
    return GateStatus(simulator=settings.identity, gate=settings.gate.model_dump() if settings.gate else None,
                      store=str(store), tools=rows)


def _known_tools(config: GatewayConfig, store: Path, book: EvidenceBook, simulator: str,
                 recordings: CacheStore | None = None) -> list[tuple[str, str]]:
    """Every tool of the config's servers whose tool list the store kept, and every tool with evidence."""
    found: set[tuple[str, str]] = set()
    if recordings is not None:
        for name in config.servers:
            found.update((name, t.get("name", "")) for t in recordings.load_tools(name))
    elif (store / "cache.db").is_file():
        from simgate.gateway.cache.store import DiskStore

        disk = DiskStore(store)
        try:
            for name in config.servers:
                found.update((name, t.get("name", "")) for t in disk.load_tools(name))
        finally:
            disk.close()
    for settings in read_evidence(store).simulators.get(simulator, {}).values():
        found.update((e.server, e.tool) for e in settings.values())
    found.update(book.shadow.tools())
    return sorted(found)
