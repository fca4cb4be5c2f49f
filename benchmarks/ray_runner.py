#!/usr/bin/env python
"""Trajectories per minute with the local runner vs `simgate run --ray` on this machine, and the per-task
costs from which to estimate what a second node adds.

The same tasks (calculator and everything, two pure real servers) are recorded live once, then replayed
by the prompted agent (the tiny real LLM, temperature 0) through a gateway whose upstreams cannot start,
round after round: the local runner, then the Ray runner on a local Ray cluster (2 CPUs, loopback), each
at the same number of trajectories in flight. A first untimed Ray round starts the workers (its time is
reported as the cold start). Medians over rounds, and their ratio.

Per-task costs:
  task_s              one trajectory's time, the local runner at one in flight (the LLM dominates)
  ray_roundtrip_ms    a no-op job submitted to the cluster and its result back (scheduling, transfer)
  driver_ms           the driver's own work per trajectory: job out, line parsed, line written
From them: a node with its own gateway and LLM adds in_flight / task_s trajectories/s, until the driver
saturates at 1 / driver cost; the estimate for two nodes is printed beside the measured one-node rate.

    .venv/bin/python benchmarks/ray_runner.py --rounds 3 --tasks 4 --out benchmarks/results/ray_runner.json

Without --llm-base-url the tiny Gemma 3 270M (tests/llm_server.py, test extra) is started and stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# Ray's own traffic on loopback only (read when ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import llm_server  # tests/: the tiny LLM, the real-server catalog, the gateway harness
import real_servers as rs
from harness import running_gateway
from trajectories import EVERYTHING_TOOLS, GONE, sample_tasks  # benchmarks/: the same tasks and servers

from simgate.runner.distributed import RayCluster, RayJobs, RayOptions, worker_versions
from simgate.runner.output import JsonlWriter
from simgate.runner.run import Job, execute, run_tasks
from simgate.runner.settings import RunSettings


def _timed(run: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    written = result.summary.written
    return {"trajectories": written, "seconds": round(seconds, 3), "per_minute": round(written / seconds * 60, 3),
            "outcomes": {k: v for k, v in result.summary.outcomes.items() if v}}


def _driver_ms(jobs: list[Job], lines: list[str], path: Path, repeats: int = 200) -> float:
    """The driver's work per trajectory, without the cluster: the job serialized, the line parsed back
    into a trajectory and written (fsynced) by the JsonlWriter."""
    from simgate.runner.trajectory import Trajectory

    writer = JsonlWriter(path)
    list(writer.open())

    async def work() -> None:
        for n in range(repeats):
            jobs[n % len(jobs)].model_dump_json()
            await writer.write(Trajectory.model_validate_json(lines[n % len(lines)]))

    started = time.perf_counter()
    anyio.run(work)
    writer.close()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4, help="tasks per round (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per runner (default 3)")
    parser.add_argument("--in-flight", type=int, default=2, help="trajectories at once, both runners (default 2)")
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible endpoint; default: start the tiny Gemma")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()

    import ray

    tasks = sample_tasks(args.tasks)
    with tempfile.TemporaryDirectory(prefix="simgate-bench-ray-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        llm_url = args.llm_base_url
        if llm_url is None:
            server = llm_server.start(base / "llm.log")
            stack.callback(server.stop)
            llm_url = server.base_url
        cache = str(base / "cache")
        servers = {"calculator": rs.gateway_server("calculator", base / "calculator", skip=False),
                   "everything": {**rs.gateway_server("everything", base / "everything", skip=False), "tools": EVERYTHING_TOOLS}}
        gone = {"calculator": GONE, "everything": {**GONE, "tools": EVERYTHING_TOOLS}}
        live = stack.enter_context(running_gateway(
            {"gateway": {"record": "all", "cache_dir": cache}, "mcpServers": servers}, base / "live"))

        def settings(url: str, mode: str, concurrency: int) -> RunSettings:
            return RunSettings(gateway=url, mode=mode, llm_base_url=llm_url, model=args.model, agent="prompted",
                               max_turns=args.max_turns, max_tokens=args.max_tokens, max_string_length=24,
                               max_array_items=3, concurrency=concurrency, run_id="bench", progress=False)

        anyio.run(run_tasks, tasks, settings(live.url, "live", 1), base / "recorded.jsonl")  # records, warms the LLM
        replay = stack.enter_context(running_gateway(
            {"gateway": {"cache_dir": cache}, "mcpServers": gone}, base / "replay", wait_ready=False))

        # One trajectory's time: the local runner, one in flight.
        single = _timed(lambda: anyio.run(lambda: execute(
            [Job(task=t, settings=settings(replay.url, "replay", 1)) for t in tasks], base / "single.jsonl",
            concurrency=1, progress=False)))
        task_s = single["seconds"] / max(single["trajectories"], 1)

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        stack.callback(ray.shutdown)
        ray_start_s = time.perf_counter() - started
        cluster = stack.enter_context(RayCluster(RayOptions(retries=1)))
        jobs = [Job(task=t, settings=settings(replay.url, "replay", args.in_flight)) for t in tasks]
        runner = RayJobs(cluster, [replay.url + "/mcp"], args.in_flight)

        def on_ray(out: Path) -> Any:
            return anyio.run(lambda: execute(jobs, out, concurrency=runner.concurrency, progress=False,
                                             runner=runner))

        def locally(out: Path) -> Any:
            return anyio.run(lambda: execute(jobs, out, concurrency=args.in_flight, progress=False))

        cold = _timed(lambda: on_ray(base / "ray-cold.jsonl"))
        rounds: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
        for number in range(args.rounds):
            rounds["local"].append(_timed(lambda n=number: locally(base / f"local-{n}.jsonl")))
            rounds["ray"].append(_timed(lambda n=number: on_ray(base / f"ray-{n}.jsonl")))
            print(f"round {number}: local {rounds['local'][-1]['per_minute']:.2f}/min, "
                  f"ray {rounds['ray'][-1]['per_minute']:.2f}/min", flush=True)

        async def roundtrips(count: int = 30) -> list[float]:
            times = []
            for _ in range(count):
                began = time.perf_counter()
                await cluster.call(worker_versions, name="simgate:bench-noop")
                times.append((time.perf_counter() - began) * 1000)
            return times

        roundtrip_ms = statistics.median(anyio.run(roundtrips))
        lines = (base / "ray-cold.jsonl").read_text().splitlines()
        driver_ms = _driver_ms(jobs, lines, base / "driver.jsonl")

    medians = {name: statistics.median(r["per_minute"] for r in results) for name, results in rounds.items()}
    per_node = medians["ray"]
    driver_ceiling = 60_000 / (driver_ms + 0.0)  # trajectories/min one driver can write
    # A second node with its own gateway and LLM replica doubles the work done at once; the driver adds its
    # own cost per trajectory (the round trip overlaps with the other jobs in flight).
    two_nodes = min(2 * per_node, driver_ceiling)
    report = {
        "tasks": args.tasks, "rounds": args.rounds, "in_flight": args.in_flight, "max_turns": args.max_turns,
        "max_tokens": args.max_tokens, "model": args.model,
        "llm": "given" if args.llm_base_url else "gemma3-270m q4_k_m (xllamacpp), on the same 2 CPUs",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "ray": ray.__version__},
        "rounds_by_runner": rounds, "medians_per_minute": medians,
        "ratio_ray_to_local": round(medians["ray"] / medians["local"], 3) if medians["local"] else None,
        "ray_start_s": round(ray_start_s, 2), "ray_cold_round": cold,
        "per_task": {"task_s": round(task_s, 3), "ray_roundtrip_ms": round(roundtrip_ms, 2),
                     "driver_ms": round(driver_ms, 3)},
        "estimate": {"one_node_per_minute": round(per_node, 2), "two_nodes_per_minute": round(two_nodes, 2),
                     "driver_ceiling_per_minute": round(driver_ceiling)},
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
