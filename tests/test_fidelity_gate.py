"""The fidelity gate: `simulated` and `hybrid` simulate a tool only while its measured fidelity clears
`gateway.simulator.gate`, with evidence from `simgate fidelity calls` (kept in the store) or from shadow
mode's running estimate. Real servers recorded through a real gateway; `simgate` run as a subprocess."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from fidelity_support import fresh_config, real_server, record_real_servers, simgate
from harness import mcp_session, provenance, running_gateway, wait_until

from simgate.simulators.fidelity.gate import FidelityGate, ToolEvidence, decide
from simgate.simulators.fidelity.report import CallFidelityReport

SERVERS = ("calculator", "time")
NEW_CALLS = [("calculator", "calculate", {"expression": "3*3+1"}),
             ("time", "get_current_time", {"timezone": "America/Lima"}),
             ("time", "convert_time", {"source_timezone": "UTC", "time": "10:00", "target_timezone": "Asia/Seoul"})]


def _evidence(**figures: Any) -> ToolEvidence:
    base: dict[str, Any] = {"server": "s", "tool": "t", "simulator": "examples", "source": "fidelity calls",
                            "measured_at": "2026-12-01T00:00:00+00:00", "calls": 10, "outcome_agreement": 0.95,
                            "kappa": 0.8, "value_fidelity_ratio": 0.9, "value_basis": "floor"}
    return ToolEvidence(**{**base, **figures})


def test_the_gate_decides_on_each_threshold_and_says_why() -> None:
    gate = FidelityGate(min_outcome_agreement=0.9, min_kappa=0.6, min_value_fidelity_ratio=0.8, min_calls=5)
    assert decide(gate, _evidence()).simulate
    for figures, why in [({"outcome_agreement": 0.5}, "outcome agreement 0.500 < 0.900"),
                         ({"kappa": 0.1}, "κ 0.100 < 0.600"),
                         ({"kappa": None, "kappa_undefined": "undefined: one class"}, "κ is undefined: one class"),
                         ({"value_fidelity_ratio": None}, "value fidelity ratio is not measured (floor)"),
                         ({"value_fidelity_ratio": 0.2}, "value fidelity ratio 0.200 < 0.800"),
                         ({"calls": 2}, "only 2 measured call(s)")]:
        decision = decide(gate, _evidence(**figures))
        assert not decision.simulate and why in decision.reason, (figures, decision.reason)
    assert not decide(gate, None).simulate and "no fidelity evidence" in decide(gate, None).reason
    with pytest.raises(ValueError, match="at least one of"):
        FidelityGate()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("gate")
    store, _made = anyio.run(record_real_servers, tmp, SERVERS)
    return tmp, store


def _gated_config(tmp: Path, store: Path, gate: dict[str, Any], *, mode: str = "simulated",
                  backend: str = "examples-schema", record: str = "none") -> dict[str, Any]:
    return {"gateway": {"mode": mode, "record": record, "cache_dir": str(store), "state_dir": str(tmp / "gw-state"),
                        "simulator": {"backend": backend, "gate": gate}},
            "mcpServers": {name: real_server(name, tmp / "gw-work" / name) for name in SERVERS}}


async def _call_all(url: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    out = {}
    async with mcp_session(url, headers=headers) as session:
        for server, tool, arguments in NEW_CALLS:
            result = await session.call_tool(f"{server}__{tool}", arguments)
            out[f"{server}/{tool}"] = provenance(result)
    return out


def _status(tmp: Path, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path = tmp / f"status-{hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]}.json"
    path.write_text(json.dumps(config))
    run = simgate("fidelity", "status", "--config", str(path), "--json", cwd=tmp, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return {f"{t['server']}/{t['tool']}": t for t in json.loads(run.stdout)["tools"]}


def test_evidence_from_fidelity_calls_gates_simulated_mode(recorded: tuple[Path, Path]) -> None:
    tmp, store = recorded
    out = tmp / "report"
    run = simgate("fidelity", "calls", "--config", str(fresh_config(tmp, store, SERVERS)), "--backend",
                  "examples-schema", "--second-live", "--out", str(out), cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (store / "fidelity" / "evidence.json").is_file() and "gate evidence in" in run.stdout
    report = CallFidelityReport.model_validate_json((out / "report.json").read_text())
    per_tool = report.settings["few_shot"].per_tool

    lenient = {"min_outcome_agreement": 0.0, "min_calls": 1}
    strict = {"min_outcome_agreement": 1.0, "min_kappa": 1.0, "min_value_fidelity_ratio": 1.0, "min_calls": 1}
    for gate in (lenient, strict):
        policy = FidelityGate.model_validate(gate)
        # What the gate must decide, from the report's own figures for each tool.
        expected = {}
        for name in (f"{s}/{t}" for s, t, _ in NEW_CALLS):
            agg = per_tool[name]
            expected[name] = decide(policy, ToolEvidence(
                server=name.split("/")[0], tool=name.split("/")[1], simulator="examples-schema",
                source="fidelity calls", measured_at=report.created_at, calls=agg.calls,
                outcome_agreement=agg.simulated.outcome_agreement, kappa=agg.simulated.kappa,
                kappa_undefined=agg.simulated.kappa_undefined,
                value_fidelity_ratio=agg.ratio.value_fidelity if agg.ratio else None, value_basis="x")).simulate
        config = _gated_config(tmp, store, gate)
        status = _status(tmp, config)
        assert {name: status[name]["decision"]["simulate"] for name in expected} == expected
        with running_gateway(config, tmp / f"gw-{len(gate)}") as gateway:
            seen = anyio.run(_call_all, gateway.mcp_url())
        for name, simulate in expected.items():
            prov = seen[name]
            assert prov["gate"]["simulate"] is simulate and prov["gate"]["evidence"] == "fidelity calls", prov
            if simulate:
                assert prov["source"] == "simulator", prov
            else:  # the fallback: not recorded with these arguments, so live; the reason is in the provenance
                assert prov["source"] == "live" and any(r.startswith("simulator: gated:") for r in prov["fell_through"])
                assert status[name]["goes_to"] == "cache → live"
    # The lenient gate simulates every measured tool; the strict one (κ 1 and a perfect value ratio) none.
    assert all(_status(tmp, _gated_config(tmp, store, lenient))[n]["decision"]["simulate"] for n in per_tool)


def test_shadow_mode_builds_the_evidence_that_gates_hybrid(tmp_path: Path) -> None:
    """Shadow mode's pairs are the running estimate: a tool whose simulation keeps failing (the examples
    backend with no other recording to imitate) is kept from the simulator; a tool it answers is simulated."""
    store = tmp_path / "store"  # an empty store: only what this gateway records and shadows counts
    gate = {"min_outcome_agreement": 0.6, "min_calls": 3, "fallback": ["live"]}
    config = _gated_config(tmp_path, store, gate, mode="shadow", backend="examples", record="all")
    config["gateway"]["hybrid_order"] = ["simulator", "live"]
    with running_gateway(config, tmp_path / "gw") as gateway:
        async def shadowed() -> None:
            async with mcp_session(gateway.mcp_url()) as session:
                for expression in ("1+1", "2+2", "3+3", "4+4", "5+5"):  # each one imitated from the others
                    await session.call_tool("calculator__calculate", {"expression": expression})
                for _ in range(4):  # the same key each time: held out, nothing left to imitate
                    await session.call_tool("time__get_current_time", {"timezone": "UTC"})

        anyio.run(shadowed)

        def counted() -> bool:
            status = _status(tmp_path, config)
            calc, clock = status.get("calculator/calculate"), status.get("time/get_current_time")
            return bool(calc and clock and calc["decision"]["evidence"] and clock["decision"]["evidence"]
                        and calc["decision"]["evidence"]["calls"] == 5 and clock["decision"]["evidence"]["calls"] == 4)

        assert wait_until(counted, timeout=30, interval=0.5)
        status = _status(tmp_path, config)
        clock = status["time/get_current_time"]["decision"]
        assert not clock["simulate"] and clock["evidence"]["source"] == "shadow"
        assert clock["evidence"]["outcome_agreement"] == 0.0  # a failing simulator never agrees
        calc = status["calculator/calculate"]["decision"]
        assert calc["evidence"]["outcome_agreement"] >= 0.6 and calc["simulate"], calc

        async def hybrid() -> dict[str, dict[str, Any]]:
            headers = {"X-Simgate-Mode": "hybrid"}
            async with mcp_session(gateway.mcp_url(), headers=headers) as session:
                calc_result = await session.call_tool("calculator__calculate", {"expression": "6+6"})
                clock_result = await session.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})
            return {"calc": provenance(calc_result), "clock": provenance(clock_result)}

        seen = anyio.run(hybrid)
    assert seen["calc"]["source"] == "simulator" and seen["calc"]["gate"]["evidence"] == "shadow"
    assert seen["clock"]["source"] == "live" and seen["clock"]["gate"]["simulate"] is False
    assert "outcome agreement 0.000 < 0.600" in seen["clock"]["gate"]["reason"]


def test_unreadable_evidence_counts_as_none(tmp_path: Path) -> None:
    """A damaged evidence file keeps every tool from the simulator (no evidence); nothing crashes."""
    from simgate.gateway.fidelity.evidence import EvidenceBook, ShadowEstimate, read_evidence

    store = tmp_path / "store"
    (store / "fidelity").mkdir(parents=True)
    (store / "fidelity" / "evidence.json").write_text('{"version": 1, "simulators": {"examples": [')
    assert read_evidence(store).simulators == {}
    book = EvidenceBook(store, ShadowEstimate())
    assert book.latest("s", "t", "examples", "few_shot", 1) is None
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gateway": {"cache_dir": str(store), "simulator": {
        "backend": "examples", "gate": {"min_outcome_agreement": 0.5}}}, "mcpServers": {}}))
    run = simgate("fidelity", "status", "--config", str(config), cwd=tmp_path, timeout=120)
    assert run.returncode == 0 and "no tool known" in run.stdout, run.stderr
