#!/usr/bin/env python
"""Tasks and trajectories per minute for the whole data pipeline with the tiny real LLM, live vs
simulated, and the share of the time spent waiting on the LLM endpoint.

The pipeline is the declared one (`simgate pipeline run`): synth → dedup → judge tasks → run → judge
trajectories → filter → export, on three real servers (calculator, everything, time) behind one gateway
that records live answers and simulates with the `schema` backend (or, with --simulator openai, the
tiny LLM itself). The two runs differ only in the run stage's mode. Each repeat runs both modes (in
alternating order) into fresh directories; figures are medians over the repeats of this one run.

The LLM's share: every role (generator, judges, agent, simulated user, and the openai simulator) talks
to the LLM through a pass-through HTTP proxy here that notes when each request starts and ends; the
share is the time at least one request was in flight, over the pipeline's wall time (per stage too).

    .venv/bin/python benchmarks/pipeline.py --repeats 3 --out benchmarks/results/pipeline.json

Without --llm-base-url the tiny Gemma 3 270M (tests/llm_server.py, test extra) is started and stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import llm_server  # tests/: the tiny LLM, the real-server catalog, the gateway harness
import real_servers as rs
from harness import running_gateway
from trajectories import EVERYTHING_TOOLS  # benchmarks/: the same servers

from simgate.runner.pipeline.declared import STAGES, PipelineConfig, run_pipeline


class TimingProxy:
    """A pass-through proxy to the LLM that records (start, end) of every request, thread-safe."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.intervals: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=600, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                started = time.monotonic()
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                answer = proxy.client.request(self.command, proxy.upstream + self.path.removeprefix("/v1"),
                                              content=body, headers=headers)
                with proxy.lock:
                    proxy.intervals.append((started, time.monotonic()))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def busy(self, start: float, end: float) -> tuple[float, int]:
        """Seconds within [start, end] with at least one request in flight, and the requests begun in it."""
        with self.lock:
            spans = sorted((max(a, start), min(b, end)) for a, b in self.intervals if b > start and a < end)
        total, current_start, current_end = 0.0, None, None
        for a, b in spans:
            if current_end is None or a > current_end:
                if current_end is not None:
                    total += current_end - current_start
                current_start, current_end = a, b
            else:
                current_end = max(current_end, b)
        if current_end is not None:
            total += current_end - current_start
        return total, sum(1 for a, _ in self.intervals if start <= a < end)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


def _stages(args: argparse.Namespace, mode: str) -> dict[str, dict[str, Any]]:
    run: dict[str, Any] = {"mode": mode, "agent": "prompted", "max_turns": args.max_turns, "max_tokens": 80,
                           "max_string_length": 32, "max_array_items": 3, "concurrency": args.concurrency}
    if args.user_turns > 1:
        run["user"] = {"turns": args.user_turns, "min_turns": args.user_turns, "temperature": 0, "max_tokens": 300}
    # single:uniform, 2 per server, 160 tokens: the settings under which the tiny model writes usable tasks
    # in tests/test_pipeline.py (most of its generations are cut off or name a tool, and are dropped)
    return {"synth": {"strategy": "single:uniform", "per_server": args.per_server, "temperature": 0,
                      "max_tokens": 160, "concurrency": args.concurrency},
            "dedup": {"threshold": 0.9},
            "judge_tasks": {"max_tokens": 400, "concurrency": args.concurrency},
            "run": run,
            "judge_trajectories": {"max_tokens": 200, "tool_output_budget": 300, "concurrency": args.concurrency},
            "filter": {"where": "has_final_answer or not has_final_answer"},  # keep all: the export is timed too
            "export": {"format": "toucan", "file": "dataset.parquet"}}


def _one(args: argparse.Namespace, gateway: str, llm: str, proxy: TimingProxy, mode: str, directory: Path) -> dict[
        str, Any]:
    """The whole pipeline once, stage by stage (a finished stage is skipped by the next call, so each call
    runs exactly one more stage and can be timed alone)."""
    stages = _stages(args, mode)
    names = [name for name in STAGES if name in stages]
    per_stage: dict[str, Any] = {}
    manifests: list[dict[str, Any]] = []
    started = time.monotonic()
    for count in range(1, len(names) + 1):
        config = PipelineConfig(dir=directory, gateway=gateway,
                                llm={"base_url": llm, "model": args.model, "max_tokens": 256},
                                stages={name: stages[name] for name in names[:count]})
        stage_started = time.monotonic()
        manifests = anyio.run(run_pipeline, config)
        stage_ended = time.monotonic()
        busy, requests = proxy.busy(stage_started, stage_ended)
        seconds = stage_ended - stage_started
        per_stage[names[count - 1]] = {"seconds": round(seconds, 3), "llm_busy_s": round(busy, 3),
                                       "llm_share": round(busy / seconds, 3) if seconds else None,
                                       "llm_requests": requests}
    elapsed = time.monotonic() - started
    busy, requests = proxy.busy(started, started + elapsed)
    counts = {manifest["stage"]: manifest["counts"] for manifest in manifests}
    tasks = counts["synth"]["written"] + counts["synth"]["already_done"]
    trajectories = counts["run"]["trajectories"]
    return {"mode": mode, "seconds": round(elapsed, 3), "tasks": tasks, "trajectories": trajectories,
            "tasks_per_minute": round(tasks / elapsed * 60, 3), "trajectories_per_minute":
                round(trajectories / elapsed * 60, 3), "llm_busy_s": round(busy, 3),
            "llm_share": round(busy / elapsed, 3), "llm_requests": requests, "stages": per_stage, "counts": counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-server", type=int, default=2, help="tasks planned per server (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="pipelines per mode (default 3)")
    parser.add_argument("--max-turns", type=int, default=2, help="agent model calls per user turn (default 2)")
    parser.add_argument("--user-turns", type=int, default=1,
                        help="user turns per trajectory; >1 adds a simulated user to the run stage (default 1)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible endpoint; default: start the tiny Gemma")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--simulator", choices=("schema", "openai"), default="schema",
                        help="the simulated mode's backend (openai: the same LLM, through the timing proxy)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the LLM, the gateway and its servers stop

    with tempfile.TemporaryDirectory(prefix="simgate-bench-pipeline-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        upstream = args.llm_base_url
        if upstream is None:
            server = llm_server.start(base / "llm.log")
            stack.callback(server.stop)
            upstream = server.base_url
        proxy = TimingProxy(upstream)
        stack.callback(proxy.close)
        simulator: dict[str, Any] = {"backend": args.simulator}
        if args.simulator == "openai":
            simulator["openai"] = {"base_url": proxy.base_url, "model": args.model, "max_tokens": 256,
                                   "max_string_length": 48, "max_array_items": 3, "timeout_s": 240}
        servers = {"calculator": rs.gateway_server("calculator", base / "calculator", skip=False),
                   "everything": {**rs.gateway_server("everything", base / "everything", skip=False), "tools": EVERYTHING_TOOLS},
                   "time": rs.gateway_server("time", base / "time", skip=False)}
        gateway = stack.enter_context(running_gateway(
            {"gateway": {"record": "all", "cache_dir": str(base / "cache"), "simulator": simulator},
             "mcpServers": servers}, base / "gw"))
        runs: dict[str, list[dict[str, Any]]] = {"live": [], "simulated": []}
        for repeat in range(args.repeats):
            order = ("live", "simulated") if repeat % 2 == 0 else ("simulated", "live")
            for mode in order:
                result = _one(args, gateway.mcp_url(), proxy.base_url, proxy, mode, base / f"{mode}-{repeat}")
                runs[mode].append(result)
                print(f"repeat {repeat} {mode:9s} {result['seconds']:6.1f}s  {result['tasks_per_minute']:6.2f} "
                      f"tasks/min  {result['trajectories_per_minute']:6.2f} trajectories/min  LLM "
                      f"{result['llm_share']:.0%} of the time ({result['llm_requests']} requests); synth "
                      f"{json.dumps(result['counts']['synth'], sort_keys=True)}", flush=True)

    medians = {mode: {key: statistics.median(r[key] for r in results) for key in
                      ("seconds", "tasks_per_minute", "trajectories_per_minute", "llm_share")} |
               {"stages": {name: {key: statistics.median(r["stages"][name][key] or 0 for r in results)
                                  for key in ("seconds", "llm_share")} for name in results[0]["stages"]}}
               for mode, results in runs.items()}
    print("\nmedian over repeats:")
    for mode, median in medians.items():
        print(f"  {mode:9s} {median['tasks_per_minute']:6.2f} tasks/min  {median['trajectories_per_minute']:6.2f} "
              f"trajectories/min  LLM {median['llm_share']:.0%} of {median['seconds']:.1f}s")
        print("            " + "  ".join(f"{name} {stage['seconds']:.1f}s ({stage['llm_share']:.0%} LLM)"
                                       for name, stage in median["stages"].items()))
    report = {"per_server": args.per_server, "repeats": args.repeats, "max_turns": args.max_turns,
              "user_turns": args.user_turns, "concurrency": args.concurrency, "model": args.model,
              "simulator": args.simulator,
              "llm": "given" if args.llm_base_url else "gemma3-270m q4_k_m (xllamacpp)",
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average": os.getloadavg()},
              "runs": runs, "medians": medians}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
