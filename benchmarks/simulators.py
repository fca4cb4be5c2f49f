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

from simulators.base import Example, SimulationRequest, ToolSpec
from simulators.config import SimulatorConfig, build_simulator

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per non-LLM backend and place")
    parser.add_argument("--llm-calls", type=int, default=12, help="timed calls with the tiny LLM (0: skip it)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
