#!/usr/bin/env python
"""Trajectories per minute through simgate in live, replay and simulated mode, with the tiny real LLM.

The same tasks (calculator and everything, two pure real servers) are run by the prompted agent at
temperature 0 through three gateways at once:

  live       the real servers, recording every answer
  replay     the same recordings, every upstream replaced by a command that cannot start
  simulated  no upstream at all, the `schema` simulator (tool lists from the recordings), or with
             --simulator openai the tiny LLM itself imitating the tools

A first live round records (and warms the LLM); then each round runs live, replay, simulated in
that order (replay needs the round's own recordings: sequential tools replay per session), with
the round's own session ids. Trajectories/min is per round; the medians over rounds are printed.
The LLM dominates: its time is reported beside the gateway's (sum of tool-call round trips).

    .venv/bin/python benchmarks/trajectories.py --rounds 3 --out benchmarks/results/trajectories.json

Without --llm-base-url the tiny Gemma 3 270M (tests/llm_server.py, test extra) is started and stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import llm_server  # tests/: the tiny LLM, the real-server catalog, the gateway harness
import real_servers as rs
from harness import running_gateway

from simgate.runner.run import run_tasks
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task

GONE = {"command": "/bin/false"}
EVERYTHING_TOOLS = {"allow": ["echo", "get-sum"]}
QUESTIONS = [
    ("calculator", "What is 2**10 + 3? Use the calculator."),
    ("everything", "What is 2 plus 40?"),
    ("calculator", "What is 17 * 23?"),
    ("everything", "Echo the word hello."),
    ("calculator", "What is the square root of 144?"),
    ("everything", "Add 7 and 8."),
]


def sample_tasks(count: int) -> list[Task]:
    return [Task(id=f"t{n}", question=QUESTIONS[n % len(QUESTIONS)][1], servers=[QUESTIONS[n % len(QUESTIONS)][0]])
            for n in range(count)]


def _round(tasks: list[Task], settings: RunSettings, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    trajectories = anyio.run(run_tasks, tasks, settings, out)
    elapsed = time.perf_counter() - started
    events = [e for t in trajectories for e in t.tool_events]
    sources = sorted({e.source or "none" for e in events})
    return {"trajectories": len(trajectories), "seconds": round(elapsed, 3),
            "per_minute": round(len(trajectories) / elapsed * 60, 3),
            "tool_calls": len(events), "tool_errors": sum(e.is_error for e in events),
            "tool_ms_total": round(sum(e.latency_ms for e in events), 3),
            "tool_ms_median": round(statistics.median([e.latency_ms for e in events]), 3) if events else None,
            "llm_calls": sum(t.usage.llm_calls for t in trajectories), "sources": sources,
            "outcomes": {o: sum(t.outcome == o for t in trajectories) for o in ("final_answer", "max_turns", "error",
                                                                                "timeout")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=6, help="tasks per round (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per mode (default 3)")
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible endpoint; default: start the tiny Gemma")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--simulator", choices=("schema", "openai"), default="schema",
                        help="the simulated gateway's backend (openai: the same LLM endpoint)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()

    tasks = sample_tasks(args.tasks)
    with tempfile.TemporaryDirectory(prefix="simgate-bench-") as tmp, ExitStack() as stack:
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
        gateways = {
            "live": stack.enter_context(running_gateway(
                {"gateway": {"record": "all", "cache_dir": cache}, "mcpServers": servers}, base / "live")),
        }

        def settings(mode: str, prefix: str) -> RunSettings:
            return RunSettings(gateway=gateways[mode].url, mode=mode, llm_base_url=llm_url, model=args.model,
                               agent="prompted", max_turns=args.max_turns, max_tokens=args.max_tokens,
                               max_string_length=32, max_array_items=3, concurrency=args.concurrency,
                               session_prefix=prefix, progress=False)

        warmup = _round(tasks, settings("live", "warmup/"), base / "warmup.jsonl")  # records the tool lists too
        gateways["replay"] = stack.enter_context(running_gateway(
            {"gateway": {"cache_dir": cache}, "mcpServers": gone}, base / "replay", wait_ready=False))
        simulator: dict[str, Any] = {"backend": args.simulator}
        if args.simulator == "openai":
            simulator["openai"] = {"base_url": llm_url, "model": args.model, "max_tokens": 256,
                                   "max_string_length": 48, "max_array_items": 3, "timeout_s": 240}
        gateways["simulated"] = stack.enter_context(running_gateway(
            {"gateway": {"cache_dir": cache, "simulator": simulator}, "mcpServers": gone},
            base / "simulated", wait_ready=False))
        rounds: dict[str, list[dict[str, Any]]] = {"live": [], "replay": [], "simulated": []}
        for number in range(args.rounds):
            for mode in ("live", "replay", "simulated"):
                result = _round(tasks, settings(mode, f"round{number}/"), base / f"{mode}-{number}.jsonl")
                rounds[mode].append(result)
                print(f"round {number} {mode:9s} {result['per_minute']:7.2f} trajectories/min "
                      f"({result['seconds']:.1f}s; {result['tool_calls']} tool calls, "
                      f"{result['tool_ms_total']:.0f} ms in tools; sources {result['sources']})", flush=True)

    medians = {mode: {"per_minute": statistics.median(r["per_minute"] for r in results),
                      "seconds": statistics.median(r["seconds"] for r in results),
                      "tool_ms_median": statistics.median(r["tool_ms_median"] or 0 for r in results)}
               for mode, results in rounds.items()}
    print("\nmedian over rounds:")
    for mode, median in medians.items():
        print(f"  {mode:9s} {median['per_minute']:7.2f} trajectories/min  (median tool call "
              f"{median['tool_ms_median']:.1f} ms)")
    report = {"tasks": args.tasks, "rounds": args.rounds, "max_turns": args.max_turns, "max_tokens": args.max_tokens,
              "concurrency": args.concurrency, "model": args.model, "simulator": args.simulator, "llm": "given" if args.llm_base_url else
              "gemma3-270m q4_k_m (xllamacpp)", "machine": {"python": platform.python_version(),
                                                           "cpus": __import__("os").cpu_count()},
              "warmup": warmup, "rounds_by_mode": rounds, "medians": medians}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
