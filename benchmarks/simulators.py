#!/usr/bin/env python
"""Simulated calls per second and latency, per simulator backend, in-process and through the gateway.

Backends: `examples` and `schema` (no LLM), and `openai` against the tiny real LLM of the tests
(base Gemma 3 270M on llama.cpp's server via xllamacpp, started the way tests/llm_server.py does).
The tool is `add` of tests/fixtures/misbehaving_server.py (it declares an outputSchema). First a
gateway records a few live calls of it (the examples the simulators are given); then:

  in-process  `simulator.simulate(request)` in a loop, one request at a time;
  gateway     `simgate serve` in mode `simulated` with that backend, one MCP session, one call at a time
              (for the LLM: a new session per call, so its prompt is the in-process one; and, as
              `gateway_one_session`, one session whose growing history the prompt carries).

Every call has arguments never seen before, so neither the LLM memo nor a recording answers it.

    .venv/bin/python benchmarks/simulators.py --calls 200 --llm-calls 12 --out benchmarks/results/simulators.json

Reports, per backend and place: calls/s (calls ÷ wall time), median and p90 latency (ms), and the
ratios gateway ÷ in-process and LLM ÷ schema. Every process it starts is stopped on exit.

With `--fidelity` it measures fidelity instead, on real servers of tests/real_servers.py: their calls
are recorded through a gateway, then `simgate fidelity calls --second-live` scores every backend
(examples, schema, examples-schema, and the tiny LLM unless `--llm-calls 0`) on the same held-out calls,
few-shot and zero-shot, beside the live-vs-live noise floor; then a gateway in `simulated` mode behind
the fidelity gate (evidence: the examples-schema report) answers the same calls at two thresholds, and
the share simulated vs sent live is counted.

    .venv/bin/python benchmarks/simulators.py --fidelity --out benchmarks/results/simulator-fidelity.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness import fixture_server, mcp_session, running_gateway
from mcp.shared.exceptions import MCPError

from simgate.simulators.base import Example, SimulationRequest, ToolSpec
from simgate.simulators.config import SimulatorConfig, build_simulator

SERVER = "fx"
TOOL = "add"
RECORDED = 8
LLM_SETTINGS = {"model": "gemma", "max_tokens": 256, "max_string_length": 32, "max_array_items": 2,
                "timeout_s": 240, "http_retries": 0}


def arguments(index: int, salt: int) -> dict[str, Any]:
    return {"numbers": [index, salt, (index * 7 + salt) % 13 + 0.5]}


def summarize(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {"calls": len(ordered), "calls_per_s": round(len(ordered) / wall_s, 2) if wall_s else 0.0,
            "median_ms": round(statistics.median(ordered), 3),
            "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
            "mean_ms": round(statistics.fmean(ordered), 3)}


async def record_examples(work: Path) -> tuple[dict[str, Any], list[Example], Path]:
    """A gateway records live calls of the tool; returns its definition, the examples, and the store."""
    store = work / "store"
    config = {"gateway": {"record": "all", "cache_dir": str(store), "state_dir": str(work / "state")},
              "mcpServers": {SERVER: fixture_server("misbehaving_server.py", "--banner", "")}}
    examples = []
    with running_gateway(config, work / "record") as gateway:
        async with mcp_session(gateway.mcp_url(SERVER)) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            definition = tools[TOOL].model_dump(mode="json", by_alias=True, exclude_none=True)
            for i in range(RECORDED):
                args = arguments(i, 1000)
                result = await session.call_tool(TOOL, args)
                dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
                examples.append(Example(arguments=args, result=dumped))
    return definition, examples, store


async def in_process(simulator_config: SimulatorConfig, definition: dict[str, Any], examples: list[Example],
                     calls: int, salt: int) -> dict[str, float]:
    simulator = build_simulator(simulator_config)
    tool = ToolSpec.from_mcp(definition)
    latencies = []
    started = time.perf_counter()
    try:
        for i in range(calls):
            request = SimulationRequest(server=SERVER, tool=tool, arguments=arguments(i, salt),
                                        examples=examples[:simulator_config.examples])
            t0 = time.perf_counter()
            await simulator.simulate(request)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        close = getattr(simulator, "aclose", None)
        if close is not None:
            await close()
    return summarize(latencies, time.perf_counter() - started)


async def through_gateway(simulator_config: SimulatorConfig, store: Path, work: Path, calls: int,
                          salt: int, *, fresh_sessions: bool = False) -> dict[str, float]:
    config = {"gateway": {"mode": "simulated", "cache_dir": str(store), "state_dir": str(work / "state"),
                          "simulator": simulator_config.model_dump(exclude_none=True)},
              "mcpServers": {SERVER: fixture_server("misbehaving_server.py", "--banner", "")}}
    latencies = []
    with running_gateway(config, work / f"gw-{simulator_config.backend}") as gateway:
        if fresh_sessions:
            # In one session the LLM's prompt grows with every earlier call (the session history);
            # a session per call keeps the prompt the in-process loop sends (setup is not timed).
            wall = 0.0
            for i in range(-1, calls):
                async with mcp_session(gateway.mcp_url(SERVER)) as session:
                    t0 = time.perf_counter()
                    result = await session.call_tool(TOOL, arguments(i, salt))
                    elapsed = time.perf_counter() - t0
                if i >= 0:  # the first call warms the gateway up
                    latencies.append(elapsed * 1000)
                    wall += elapsed
                if result.is_error:
                    raise RuntimeError(f"simulated call failed: {result.content}")
            return summarize(latencies, wall)
        async with mcp_session(gateway.mcp_url(SERVER)) as session:
            await session.call_tool(TOOL, arguments(-1, salt))  # warm: the tool list, the first connection
            started = time.perf_counter()
            for i in range(calls):
                t0 = time.perf_counter()
                result = await session.call_tool(TOOL, arguments(i, salt))
                latencies.append((time.perf_counter() - t0) * 1000)
                if result.is_error:
                    raise RuntimeError(f"simulated call failed: {result.content}")
            wall = time.perf_counter() - started
    return summarize(latencies, wall)


@contextmanager
def tiny_llm(work: Path) -> Iterator[str]:
    import llm_server

    server = llm_server.start(work / "llama-server.log")
    try:
        yield server.base_url
    finally:
        server.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="simgate-bench-sim-") as tmp:
        work = Path(tmp)
        definition, examples, store = await record_examples(work)
        backends: list[tuple[str, SimulatorConfig, int]] = [
            ("examples", SimulatorConfig(backend="examples", examples=5), args.calls),
            ("schema", SimulatorConfig(backend="schema", examples=5), args.calls)]
        for name, config, calls in backends:
            results[name] = {"in_process": await in_process(config, definition, examples, calls, salt=1),
                             "gateway": await through_gateway(config, store, work, calls, salt=2)}
            print(f"{name}: {results[name]}", flush=True)
        if args.llm_calls > 0:
            with tiny_llm(work) as base_url:
                config = SimulatorConfig.model_validate({"backend": "openai", "examples": 3, "openai": {
                    "base_url": base_url, **LLM_SETTINGS}})
                results["openai-tiny-llm"] = {
                    "in_process": await in_process(config, definition, examples, args.llm_calls, salt=3),
                    "gateway": await through_gateway(config, store, work, args.llm_calls, salt=4,
                                                     fresh_sessions=True),
                    "gateway_one_session": await through_gateway(config, store, work, args.llm_calls, salt=5)}
                print(f"openai-tiny-llm: {results['openai-tiny-llm']}", flush=True)
    ratios: dict[str, float] = {}
    for name, data in results.items():
        ratios[f"{name}: gateway ÷ in-process median"] = round(
            data["gateway"]["median_ms"] / data["in_process"]["median_ms"], 2)
    if "openai-tiny-llm" in results:
        ratios["openai-tiny-llm ÷ schema, in-process median"] = round(
            results["openai-tiny-llm"]["in_process"]["median_ms"] / results["schema"]["in_process"]["median_ms"], 1)
    return {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": len(__import__("os").sched_getaffinity(0))},
            "tool": f"{SERVER}/{TOOL}", "recorded_examples": RECORDED, "results": results, "ratios": ratios}


# Real servers and the calls scored: each server's catalogued calls (tests/real_servers.py) and more of
# the same tools, so that every tool has recorded neighbours to show in the few-shot setting.
FIDELITY_SERVERS = ("calculator", "time", "units", "everything", "sqlite", "memory", "random")
FIDELITY_EXTRA: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "calculator": [("calculate", {"expression": e}) for e in ("7*6", "2**10 + 1", "1/0", "100 - 58", "3.5*2")],
    "time": [*[("get_current_time", {"timezone": z}) for z in ("Europe/Paris", "Asia/Tokyo", "America/Lima", "UTC")],
             *[("convert_time", {"source_timezone": a, "time": t, "target_timezone": b})
               for a, t, b in (("UTC", "08:30", "Europe/Paris"), ("Asia/Tokyo", "23:15", "America/Lima"),
                               ("Europe/Paris", "12:00", "Asia/Seoul"))]],
    "units": [*[("convert_temperature", {"value": v, "from_unit": f, "to_unit": t})
                for v, f, t in ((0, "C", "F"), (212, "F", "C"), (300, "K", "C"))],
              *[("convert_weight", {"value": v, "from_unit": f, "to_unit": t})
                for v, f, t in ((2, "kg", "lb"), (500, "g", "oz"))]],
    "everything": [*[("echo", {"message": m}) for m in ("good morning", "fidelity", "simgate says hi")],
                   *[("get-sum", {"a": a, "b": b}) for a, b in ((1, 1), (20, 22), (-5, 5))]],
    "sqlite": [("read_query", {"query": "SELECT count(*) AS n FROM sales"}), ("list_tables", {}),
               ("read_query", {"query": "SELECT * FROM sales ORDER BY id"})],
    "memory": [("search_nodes", {"query": "coffee"}), ("read_graph", {}), ("search_nodes", {"query": "tea"})],
    "random": [("generate_random_int", {"min_value": 1, "max_value": 100}),
               ("generate_random_int", {"min_value": 10, "max_value": 20}), ("generate_uuid", {"version": 4})],
}
GATE_THRESHOLDS = {
    "lenient": {"min_outcome_agreement": 0.8, "min_calls": 2, "fallback": ["live"]},
    # No κ threshold: most tools answer one class live (always success), where κ is undefined and a
    # min_kappa gate would keep them all from the simulator.
    "strict": {"min_outcome_agreement": 0.95, "min_value_fidelity_ratio": 0.5, "min_calls": 2, "fallback": ["live"]},
}
_FIGURES = ("schema_validity", "outcome_agreement", "kappa", "path_jaccard", "type_agreement", "value_fidelity",
            "bleu4")


def _figures(metric_set: Any) -> dict[str, Any] | None:
    if metric_set is None:
        return None
    out = {name: (round(v, 3) if isinstance(v := getattr(metric_set, name), float) else v) for name in _FIGURES}
    if metric_set.kappa is None and metric_set.kappa_undefined:
        out["kappa"] = "undefined"
    return out


async def _record_real(work: Path) -> tuple[Path, list[tuple[str, str, dict[str, Any]]]]:
    import real_servers as rs
    from fidelity_support import real_server

    store = work / "store"
    servers = {name: real_server(name, work / "rec" / name) for name in FIDELITY_SERVERS}
    made: list[tuple[str, str, dict[str, Any]]] = []
    config = {"gateway": {"record": "all", "cache_dir": str(store), "state_dir": str(work / "rec-state")},
              "mcpServers": servers}
    with running_gateway(config, work / "gw-record") as gateway:
        async with mcp_session(gateway.mcp_url(), headers={"X-Simgate-Session": "bench"}) as session:
            for name in FIDELITY_SERVERS:
                catalogued = [(c.tool, rs.expand(c.arguments, work / "rec" / name)) for c in rs.get(name).calls]
                for tool, args in catalogued + FIDELITY_EXTRA.get(name, []):
                    try:
                        await session.call_tool(f"{name}__{tool}", args)
                    except MCPError:  # rejected by the gateway (invalid arguments): never reaches a server
                        continue
                    made.append((name, tool, args))
    return store, made


def _score_backend(work: Path, store: Path, name: str, extra: list[str]) -> dict[str, Any]:
    from fidelity_support import fresh_config, simgate

    from simgate.simulators.fidelity.report import CallFidelityReport

    out = work / f"fidelity-{name}"
    started = time.perf_counter()
    run = simgate("fidelity", "calls", "--config", str(fresh_config(work, store, FIDELITY_SERVERS)), "--second-live",
                  "--out", str(out), *extra, cwd=work, timeout=7200)
    if run.returncode != 0:
        raise RuntimeError(f"fidelity calls ({name}) failed: {run.stderr[-2000:]}")
    report = CallFidelityReport.model_validate_json((out / "report.json").read_text())
    figures: dict[str, Any] = {"wall_s": round(time.perf_counter() - started, 1), "model": report.model}
    for setting, data in report.settings.items():
        o = data.overall
        figures[setting] = {"calls": o.calls, "simulator_failures": o.simulator_failures,
                            "simulated": _figures(o.simulated), "live_vs_live": _figures(o.live_vs_live),
                            "ratio": _figures(o.ratio)}
    return figures


async def _gate_share(work: Path, store: Path, made: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """The recorded calls again, through a gateway in `simulated` mode behind the gate: how many the
    simulator answers, how many go live."""
    from fidelity_support import real_server

    shares: dict[str, Any] = {}
    for label, gate in GATE_THRESHOLDS.items():
        again = work / f"gate-{label}"
        config = {"gateway": {"mode": "simulated", "cache_dir": str(store), "state_dir": str(again / "state"),
                              "simulator": {"backend": "examples-schema", "gate": gate}},
                  "mcpServers": {name: real_server(name, again / name) for name in FIDELITY_SERVERS}}
        sources: dict[str, int] = {}
        tools: dict[str, str] = {}
        with running_gateway(config, again / "gw") as gateway:
            async with mcp_session(gateway.mcp_url()) as session:
                for server, tool, args in made:
                    result = await session.call_tool(f"{server}__{tool}", args)
                    prov = (result.meta or {}).get("simgate/provenance", {})
                    source = str(prov.get("source"))
                    sources[source] = sources.get(source, 0) + 1
                    tools[f"{server}/{tool}"] = source
        simulated_tools = sorted(t for t, s in tools.items() if s == "simulator")
        shares[label] = {"gate": gate, "calls": len(made), "by_source": sources,
                         "share_simulated": round(sources.get("simulator", 0) / len(made), 3),
                         "tools_simulated": simulated_tools,
                         "tools_live": sorted(t for t, s in tools.items() if s != "simulator")}
    return shares


async def fidelity(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="simgate-bench-fid-") as tmp:
        work = Path(tmp)
        store, made = await _record_real(work)
        backends = [("examples", ["--backend", "examples"]), ("schema", ["--backend", "schema"]),
                    ("examples-schema", ["--backend", "examples-schema"])]
        for name, extra in backends:
            results[name] = await asyncio.to_thread(_score_backend, work, store, name, extra)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
        gate = await _gate_share(work, store, made)  # evidence: the examples-schema report, the latest
        print(f"gate: {json.dumps(gate)}", flush=True)
        if args.llm_calls > 0:
            with tiny_llm(work) as base_url:
                extra = ["--backend", "openai", "--base-url", base_url, "--model", "gemma", "--max-tokens", "256",
                         "--max-string-length", "32", "--max-array-items", "2", "--timeout", "240", "--examples", "3"]
                results["openai-tiny-llm"] = await asyncio.to_thread(_score_backend, work, store, "openai", extra)
                print(f"openai-tiny-llm: {json.dumps(results['openai-tiny-llm'])}", flush=True)
    return {"machine": {"python": platform.python_version(), "cpus": len(__import__("os").sched_getaffinity(0))},
            "servers": list(FIDELITY_SERVERS), "calls": len(made), "backends": results, "gate": gate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per non-LLM backend and place")
    parser.add_argument("--llm-calls", type=int, default=12, help="timed calls with the tiny LLM (0: skip it)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--fidelity", action="store_true",
                        help="measure fidelity per backend on real servers (and the gate's share) instead of speed")
    args = parser.parse_args()
    report = asyncio.run(fidelity(args) if args.fidelity else run(args))
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
