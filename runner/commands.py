"""`simgate run`: agents work tasks through the gateway and each trajectory becomes a JSONL line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simgate.gateway.cli import Handler, guarded
from simgate.gateway.config.execution import RUN_MODES, Mode
from simgate.runner.errors import RunnerError
from simgate.runner.settings import AGENT_KINDS, RunSettings


def agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The LLM and agent options, shared with `simgate fidelity trajectories`."""
    parser.add_argument("--llm-base-url", required=True, metavar="URL",
                        help="an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1 (vllm serve, llama.cpp, OpenAI)")
    parser.add_argument("--model", required=True, help="the model name the endpoint serves")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    parser.add_argument("--agent", choices=AGENT_KINDS, default="prompted",
                        help="native tool calls, prompted JSON-constrained tool calls, or the OpenAI Agents SDK "
                             "(default prompted)")
    parser.add_argument("--max-turns", type=int, default=8, help="model calls per trajectory (default 8)")
    parser.add_argument("--max-tokens", type=int, help="cap on one model answer")
    parser.add_argument("--first-tool-choice", choices=("auto", "required"), default="auto",
                        help="required: the first model turn must call a tool (native, agents-sdk)")
    parser.add_argument("--agents-sdk-tool-calls", choices=("native", "prompted"), default="native",
                        help="with --agent agents-sdk: native tool calls, or prompted JSON-constrained ones for "
                             "endpoints without tool-call parsing (default native)")
    parser.add_argument("--parallel-tool-calls", action="store_true",
                        help="let the model ask for several tools in one turn (native and agents-sdk)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--task-timeout", type=float, default=600.0, help="seconds one trajectory may take")
    parser.add_argument("--concurrency", type=int, default=1, help="trajectories run at once (default 1)")
    parser.add_argument("--session-prefix", default="",
                        help="prefix of the per-trajectory gateway session ids")
    parser.add_argument("--run-id", default="",
                        help="names the run in the gateway session ids, {prefix}{run}/{mode}/{task}#{repeat} "
                             "(default none: {prefix}{mode}/{task}#{repeat})")
    parser.add_argument("--max-string-length", type=int, help="bound unbounded strings of the prompted answer schema")
    parser.add_argument("--max-array-items", type=int, help="bound unbounded arrays of the prompted answer schema")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from(args: argparse.Namespace, mode: str, **overrides: Any) -> RunSettings:
    values: dict[str, Any] = {
        "gateway": args.gateway, "mode": mode, "llm_base_url": args.llm_base_url, "model": args.model,
        "api_key_env": args.api_key_env, "agent": args.agent, "max_turns": args.max_turns,
        "max_tokens": args.max_tokens, "parallel_tool_calls": args.parallel_tool_calls,
        "first_tool_choice": args.first_tool_choice, "agents_sdk_tool_calls": args.agents_sdk_tool_calls,
        "temperature": args.temperature, "seed": args.seed, "task_timeout": args.task_timeout,
        "concurrency": args.concurrency, "session_prefix": args.session_prefix, "run_id": args.run_id,
        "max_string_length": args.max_string_length, "max_array_items": args.max_array_items,
        "progress": not args.no_progress}
    return RunSettings(**{**values, **overrides})


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="agents work tasks through the gateway; trajectories to JSONL")
    run.add_argument("--tasks", required=True, metavar="FILE", help="tasks, JSONL: id, question[, servers, "
                                                                     "target_tools, ...]")
    run.add_argument("--gateway", required=True, metavar="URL", action="append",
                     help="the gateway, e.g. http://127.0.0.1:8808/mcp; with --ray, repeat it for several (one per "
                          "node, or a load balancer once): --concurrency trajectories at once on each")
    run.add_argument("--mode", choices=[mode.value for mode in RUN_MODES], default=Mode.LIVE.value, help="execution mode of every call (default live)")
    run.add_argument("--out", required=True, metavar="FILE",
                     help="trajectories, JSONL; trajectories already in it are skipped (resume)")
    run.add_argument("--repeat", type=int, default=0, help="the repeat index written into each trajectory")
    run.add_argument("--replay-of", metavar="RUN",
                     help="--mode replay: the --run-id of the live run to replay (default: this run's --run-id)")
    run.add_argument("--holdout", choices=("none", "call", "task"), default="none",
                     help="simulated/hybrid calls: keep the simulator from seeing recorded answers of the call "
                          "itself, or of every call recorded for the task (for evaluating it; default none)")
    agent_arguments(run)
    ray_arguments(run)
    run.set_defaults(handler=guarded_run("run", _run))


def ray_arguments(parser: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]` and its settings (runner/distributed.py), for `run` and the pipeline's stages."""
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run the work on a Ray cluster: no ADDRESS starts a local Ray, 'auto' joins the "
                             "cluster of this machine, host:port or ray://host:10001 a remote one (pip install "
                             "'simgate[ray]'); the output file stays on this machine")
    parser.add_argument("--ray-retries", type=int, default=2,
                        help="with --ray: attempts after the first for a job whose worker died or whose gateway or "
                             "LLM could not be reached (default 2)")
    parser.add_argument("--ray-task-cpus", type=float, default=0.25,
                        help="with --ray: CPUs reserved per job (default 0.25: a job mostly waits on the LLM)")


def ray_options(args: argparse.Namespace) -> Any:
    """The RayOptions of `--ray`, or None without it."""
    if args.ray is None:
        return None
    from simgate.runner.distributed import RayOptions, require_ray

    require_ray()  # a missing Ray is said at once, before any gateway or LLM is checked
    return RayOptions(address=args.ray or None, retries=args.ray_retries, task_cpus=args.ray_task_cpus)


def guarded_run(name: str, handler: Handler) -> Handler:
    """A trajectory command: bad settings are named by their option; Ctrl-C says where the finished work is."""
    return guarded(handler, ValidationError, prefix=f"simgate {name}", describe=_describe,
                   interrupted="interrupted; finished trajectories are in the output file")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]).replace("_", "-")
        return f"--{field}: {error['msg']}"
    return str(exc)


def print_summary(summary: Any, out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table("outcome", "trajectories", title="run summary", title_justify="left")
    for outcome, count in summary.outcomes.items():
        table.add_row(outcome, str(count))
    console.print(table)
    console.print(
        f"{summary.written} written{f' to {out}' if out else ''}, {summary.skipped} already there, "
        f"{summary.not_written} not written (retried by the next run); {summary.tool_calls} tool call(s), "
        f"{summary.tool_errors} tool error(s); {summary.rules_passed} passed the rule checks; "
        f"{summary.elapsed_s:.1f}s, {summary.per_minute:.2f} trajectories/min", highlight=False, soft_wrap=True)
    for failure in summary.failures:
        console.print(f"  not written: {failure}", highlight=False, markup=False, soft_wrap=True)


def _run(args: argparse.Namespace) -> int:
    import anyio

    from simgate.runner.preflight import preflight
    from simgate.runner.run import Job, execute
    from simgate.runner.tasks import load_tasks

    tasks = load_tasks(Path(args.tasks))
    settings = settings_from(args, args.mode, gateway=args.gateway[0], repeat=args.repeat, replay_of=args.replay_of,
                             holdout=args.holdout)
    out = Path(args.out)
    jobs = [Job(task=task, settings=settings) for task in tasks]
    ray = ray_options(args)
    if ray is None:
        if len(args.gateway) > 1:
            raise RunnerError("several --gateway need --ray (one local runner talks to one gateway)")

        async def main() -> Any:
            await preflight(settings)
            return await execute(jobs, out, concurrency=settings.concurrency, progress=settings.progress,
                                 keep_done=False)

        result = anyio.run(main)
    else:
        from simgate.runner.distributed import RayCluster, RayJobs, gateway_urls, job_env

        gateways = gateway_urls(settings, args.gateway)

        async def check() -> None:
            for url in gateways:
                await preflight(settings.model_copy(update={"gateway": url}))

        anyio.run(check)  # before Ray starts: a wrong URL fails in a second, not after the cluster is up
        with RayCluster(ray, env=job_env(settings)) as cluster:
            runner = RayJobs(cluster, gateways, settings.concurrency)
            result = anyio.run(lambda: execute(jobs, out, concurrency=runner.concurrency, progress=settings.progress,
                                               keep_done=False, runner=runner))
        if runner.attempts_failed:
            print(f"simgate run: {runner.attempts_failed} attempt(s) on the Ray cluster did not finish and were "
                  f"retried or given up", file=sys.stderr)
    print_summary(result.summary, out)
    return 0 if result.summary.not_written == 0 else 1
