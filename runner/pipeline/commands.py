"""The data pipeline's stages on the command line: `simgate synth`, `dedup`, `judge tasks|trajectories`,
`filter`, `extend` and `pipeline run`. Each reads the previous stage's JSONL and writes its own
(resumable where an LLM is called: a re-run picks up where a kill stopped it). Every `simgate` command,
`serve` included, builds these parsers: heavy libraries are imported by the handlers that use them."""

from __future__ import annotations

import argparse
import json
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import anyio

from simgate.gateway.cli import command_group
from simgate.runner.commands import (
    agent_arguments,
    guarded_run,
    print_summary,
    ray_arguments,
    ray_options,
    settings_from,
)
from simgate.runner.errors import RunnerError
from simgate.runner.export.commands import write_rows
from simgate.runner.output import read_file
from simgate.runner.pipeline.catalogue import fetch_catalogue
from simgate.runner.pipeline.extensions import (
    IRRELEVANCE_FILTER,
    irrelevance_tasks,
    multi_turn_tasks,
    persona_tasks,
    split_tasks,
)
from simgate.runner.pipeline.filters import PRESETS, compile_filter, passes
from simgate.runner.pipeline.judge import judge_tasks, judge_trajectories
from simgate.runner.pipeline.strategies import Strategy, plan_tasks
from simgate.runner.pipeline.synth import synthesize
from simgate.runner.settings import RUN_MODES, UserSettings
from simgate.runner.structured import Completer, Endpoint, EndpointPool, json_completion


def _models(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument("--llm-base-url", required=True, metavar="URL",
                        help=f"the {role}'s OpenAI-compatible API (vllm serve, llama.cpp, OpenAI)")
    parser.add_argument("--model", required=True, action="append",
                        help=f"the {role} model; repeat for several (with --weights, or round-robin)")
    parser.add_argument("--weights", help="comma-separated weights, one per --model (default: round-robin)")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    parser.add_argument("--max-tokens", type=int, default=1024, help="cap on one answer (default 1024)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests at once (default 2)")


def _pool(args: argparse.Namespace, seed: int = 0) -> EndpointPool:
    key = os.environ.get(args.api_key_env, "") if args.api_key_env else "not-needed"
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * len(args.model)
    if len(weights) != len(args.model):
        raise RunnerError(f"--weights gives {len(weights)} weights for {len(args.model)} models")
    endpoints = [Endpoint(base_url=args.llm_base_url, model=model, api_key=key or "not-needed", weight=weight,
                          max_tokens=args.max_tokens) for model, weight in zip(args.model, weights, strict=True)]
    return EndpointPool(endpoints, weighted=bool(args.weights), seed=seed)


def register(commands: Any) -> None:
    synth = commands.add_parser("synth", help="generate tasks from the gateway's tools with one or more LLMs")
    synth.add_argument("--gateway", required=True, metavar="URL", help="the gateway, e.g. http://127.0.0.1:8808/mcp")
    synth.add_argument("--strategy", choices=[s.value for s in Strategy], default=Strategy.SINGLE_RANDOM.value)
    synth.add_argument("--count", type=int, default=10, help="tasks to plan (default 10)")
    synth.add_argument("--per-server", type=int, default=1, help="with single:uniform: tasks per server")
    synth.add_argument("--featured", help="comma-separated servers for single:featured and multi:brainstorm")
    synth.add_argument("--usage-rank", help="comma-separated servers, most used first (single:power_law)")
    synth.add_argument("--alpha", type=float, default=1.0, help="power-law exponent (default 1)")
    synth.add_argument("--servers", help="only these servers (comma-separated)")
    synth.add_argument("--onboard-report", type=Path, help="onboard.json: categories and descriptions of servers")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--temperature", type=float, default=0.7)
    synth.add_argument("--subset-name", help="the dataset subset the tasks belong to")
    synth.add_argument("--out", required=True, type=Path, help="tasks JSONL (appended; a re-run resumes)")
    _models(synth, "generator")
    ray_arguments(synth)
    synth.set_defaults(handler=_synth)

    dedup = commands.add_parser("dedup", help="drop exact and near-duplicate questions")
    dedup.add_argument("tasks", type=Path)
    dedup.add_argument("--out", required=True, type=Path)
    dedup.add_argument("--threshold", type=float, help="near-duplicate threshold (default 0.7 Jaccard for MinHash, "
                       "0.9 cosine for embeddings)")
    dedup.add_argument("--embeddings-url", metavar="URL", help="an OpenAI-compatible /v1 with /embeddings")
    dedup.add_argument("--embeddings-model", help="the embedding model (with --embeddings-url)")
    dedup.set_defaults(handler=_dedup)

    judge = command_group(commands, "judge", "an LLM judges tasks or trajectories (1-5 per dimension)")
    tasks = judge.add_parser("tasks", help="TOUCAN's six question-quality dimensions")
    tasks.add_argument("tasks", type=Path)
    tasks.add_argument("--gateway", required=True, metavar="URL", help="the gateway (the judge sees the tools)")
    tasks.add_argument("--out", required=True, type=Path)
    tasks.add_argument("--retry-failed", action="store_true", help="judge again the records whose judgement failed")
    _models(tasks, "judge")
    ray_arguments(tasks)
    tasks.set_defaults(handler=_judge_tasks)
    trajectories = judge.add_parser("trajectories", help="completeness and conciseness of trajectories")
    trajectories.add_argument("trajectories", type=Path)
    trajectories.add_argument("--out", required=True, type=Path)
    trajectories.add_argument("--tool-output-budget", type=int, default=1000,
                              help="characters of each tool output the judge reads (default 1000)")
    trajectories.add_argument("--retry-failed", action="store_true")
    _models(trajectories, "judge")
    ray_arguments(trajectories)
    trajectories.set_defaults(handler=_judge_trajectories)

    extend = command_group(commands, "extend", "more tasks from a task set (TOUCAN's extensions)")
    irrelevance = extend.add_parser("irrelevance", help="each question with another server's tools: the right "
                                    "trajectory calls no tool (keep them with --where irrelevance)")
    irrelevance.add_argument("tasks", type=Path)
    irrelevance.add_argument("--gateway", required=True, metavar="URL")
    irrelevance.add_argument("--seed", type=int, default=0)
    irrelevance.add_argument("--out", required=True, type=Path)
    irrelevance.set_defaults(handler=_irrelevance)
    persona = extend.add_parser("persona", help="N rewrites of each question (new persona, or added "
                                "constraints), same target tools")
    persona.add_argument("tasks", type=Path)
    persona.add_argument("--gateway", required=True, metavar="URL")
    persona.add_argument("--count", type=int, default=2, help="rewrites per question (default 2)")
    persona.add_argument("--style", choices=("persona", "constraints"), default="persona")
    persona.add_argument("--seed", type=int, default=0)
    persona.add_argument("--temperature", type=float, default=0.7)
    persona.add_argument("--out", required=True, type=Path, help="appended; a re-run resumes")
    _models(persona, "rewriter")
    persona.set_defaults(handler=_persona)

    split = extend.add_parser("split", help="a multi-tool question split into user turns, each asked after the "
                              "previous answer (tasks with follow_ups)")
    split.add_argument("tasks", type=Path)
    split.add_argument("--gateway", required=True, metavar="URL")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--temperature", type=float, default=0.3)
    split.add_argument("--out", required=True, type=Path, help="appended; a re-run resumes")
    _models(split, "splitter")
    split.set_defaults(handler=_split)
    multi = extend.add_parser("multi-turn", help="run each task as a conversation: a simulated user LLM writes "
                              "follow-ups from a digest of the conversation, up to --turns user turns")
    multi.add_argument("tasks", type=Path)
    multi.add_argument("--gateway", required=True, metavar="URL")
    multi.add_argument("--mode", choices=RUN_MODES, default="live", help="execution mode of every call")
    multi.add_argument("--turns", type=int, default=3, help="user turns at most, the question included (default 3)")
    multi.add_argument("--min-turns", type=int,
                       help="user turns before the simulated user may say its goal is done (default 2, or --turns "
                            "if less)")
    multi.add_argument("--user-llm-base-url", metavar="URL", help="the simulated user's API (default --llm-base-url)")
    multi.add_argument("--user-model", help="the simulated user's model (default --model)")
    multi.add_argument("--user-temperature", type=float, default=0.7)
    multi.add_argument("--user-max-tokens", type=int, default=400)
    multi.add_argument("--digest-budget", type=int, default=200,
                       help="characters of each tool output the simulated user reads (default 200)")
    multi.add_argument("--out", required=True, type=Path, help="trajectories, JSONL (a re-run resumes)")
    agent_arguments(multi)
    multi.set_defaults(handler=guarded_run("extend multi-turn", _multi_turn))

    pipeline = command_group(commands, "pipeline", "the whole data pipeline declared in one file")
    run = pipeline.add_parser("run", help="run (or resume) every stage of PIPELINE.yaml")
    run.add_argument("pipeline", type=Path, metavar="PIPELINE.yaml")
    ray_arguments(run)
    run.set_defaults(handler=_pipeline_run)

    filter_ = commands.add_parser("filter", help="keep tasks or trajectories that pass a preset or an expression")
    filter_.add_argument("records", type=Path)
    filter_.add_argument("--where", required=True,
                         help=f"a preset ({', '.join(PRESETS)}) or an expression, e.g. 'question_quality >= 4'")
    filter_.add_argument("--out", required=True, type=Path)
    filter_.set_defaults(handler=_filter)


def _cluster(args: argparse.Namespace) -> AbstractContextManager[Any]:
    """The Ray cluster of `--ray` for the command (connected in the main thread, as Ray wants), or None."""
    options = ray_options(args)
    if options is None:
        return nullcontext(None)
    from simgate.runner.distributed import RayCluster

    return RayCluster(options, env={args.api_key_env: os.environ[args.api_key_env]}
                      if getattr(args, "api_key_env", None) and args.api_key_env in os.environ else None)


def _completer(cluster: Any, stage: str) -> Completer:
    if cluster is None:
        return json_completion
    from simgate.runner.distributed import RayCompletions

    return RayCompletions(cluster, stage)


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _synth(args: argparse.Namespace) -> int:
    async def run() -> Any:
        catalogue = await fetch_catalogue(args.gateway, onboard_report=args.onboard_report,
                                          servers=_csv(args.servers))
        plans = plan_tasks(catalogue, Strategy(args.strategy), args.count, seed=args.seed,
                           per_server=args.per_server, featured=_csv(args.featured),
                           usage_rank=_csv(args.usage_rank), alpha=args.alpha)
        async with _pool(args, args.seed) as pool:
            return await synthesize(plans, catalogue, pool, args.out, seed=args.seed,
                                    temperature=args.temperature, concurrency=args.concurrency,
                                    subset_name=args.subset_name, complete=_completer(cluster, "synth"))

    with _cluster(args) as cluster:
        stats = anyio.run(run)
    print(json.dumps(stats.model_dump(mode="json"), sort_keys=True))
    return 0


def _dedup(args: argparse.Namespace) -> int:
    from simgate.runner.pipeline.dedup import dedup_embeddings, dedup_minhash  # numpy and scipy: only when used

    tasks = read_file(args.tasks, "task")
    if args.embeddings_url:
        if not args.embeddings_model:
            raise RunnerError("--embeddings-url needs --embeddings-model")
        result = anyio.run(lambda: dedup_embeddings(tasks, args.embeddings_url, args.embeddings_model,
                                                    args.threshold or 0.9))
    else:
        result = dedup_minhash(tasks, args.threshold or 0.7)
    write_rows(args.out, result.kept)
    print(json.dumps({"tasks": len(tasks), "kept": len(result.kept), "exact_duplicates": len(result.exact),
                      "near_duplicates": len(result.near), "method": result.method}, sort_keys=True))
    return 0


def _judge_tasks(args: argparse.Namespace) -> int:
    async def run() -> Any:
        catalogue = await fetch_catalogue(args.gateway)
        tools = {tool.name: {"name": tool.name, "description": tool.description, "server": server.name}
                 for server in catalogue.servers for tool in server.tools}
        async with _pool(args) as pool:
            return await judge_tasks(args.tasks, args.out, pool, tools, concurrency=args.concurrency,
                                     retry_failed=args.retry_failed, complete=_completer(cluster, "judge_tasks"))

    with _cluster(args) as cluster:
        stats = anyio.run(run)
    print(json.dumps(stats.model_dump(), sort_keys=True))
    return 0


def _judge_trajectories(args: argparse.Namespace) -> int:
    async def run(cluster: Any) -> Any:
        async with _pool(args) as pool:
            return await judge_trajectories(args.trajectories, args.out, pool,
                                            tool_output_budget=args.tool_output_budget,
                                            concurrency=args.concurrency, retry_failed=args.retry_failed,
                                            complete=_completer(cluster, "judge_trajectories"))

    with _cluster(args) as cluster:
        stats = anyio.run(run, cluster)
    print(json.dumps(stats.model_dump(), sort_keys=True))
    return 0


def _filter(args: argparse.Namespace) -> int:
    expression = compile_filter(args.where)
    records = read_file(args.records, "record")
    kept: list[dict[str, Any]] = []
    why_not: dict[str, int] = {}
    for record in records:
        ok, why = passes(record, expression)
        if ok:
            kept.append(record)
        elif why:
            why_not[why] = why_not.get(why, 0) + 1
    write_rows(args.out, kept)
    print(json.dumps({"records": len(records), "kept": len(kept), "expression": expression,
                      "not_evaluable": why_not}, sort_keys=True))
    return 0


def _pipeline_run(args: argparse.Namespace) -> int:
    from simgate.runner.pipeline.declared import PipelineRay, load_pipeline, run_pipeline  # only when used

    config = load_pipeline(args.pipeline)
    options = ray_options(args)
    if options is not None:  # --ray: on the command line's cluster, with the file's gateways
        config.ray = PipelineRay(**options.model_dump(), gateways=config.ray.gateways if config.ray else [])
    if config.ray is None:
        manifests = anyio.run(run_pipeline, config)
    else:
        from simgate.runner.distributed import RayCluster

        key = (config.stages.get("run") or {}).get("api_key_env")
        with RayCluster(config.ray, env={key: os.environ[key]} if key and key in os.environ else None) as cluster:
            manifests = anyio.run(run_pipeline, config, cluster)
    for manifest in manifests:
        print(json.dumps({"stage": manifest["stage"], "output": manifest["output"], **manifest["counts"]},
                         sort_keys=True, default=str))
    return 0


def _irrelevance(args: argparse.Namespace) -> int:
    tasks = read_file(args.tasks, "task")
    catalogue = anyio.run(lambda: fetch_catalogue(args.gateway))
    made = irrelevance_tasks(tasks, catalogue, seed=args.seed)
    write_rows(args.out, made)
    print(json.dumps({"tasks": len(tasks), "written": len(made), "filter": IRRELEVANCE_FILTER}, sort_keys=True))
    return 0


def _persona(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise RunnerError("--count must be at least 1")
    tasks = read_file(args.tasks, "task")

    async def run() -> Any:
        catalogue = await fetch_catalogue(args.gateway)
        async with _pool(args, args.seed) as pool:
            return await persona_tasks(tasks, catalogue, pool, args.out, count=args.count,
                                       style=args.style, seed=args.seed, temperature=args.temperature,
                                       concurrency=args.concurrency)

    print(json.dumps(anyio.run(run).model_dump(mode="json"), sort_keys=True))
    return 0


def _split(args: argparse.Namespace) -> int:
    tasks = read_file(args.tasks, "task")

    async def run() -> Any:
        catalogue = await fetch_catalogue(args.gateway)
        async with _pool(args, args.seed) as pool:
            return await split_tasks(tasks, catalogue, pool, args.out, seed=args.seed,
                                     temperature=args.temperature, concurrency=args.concurrency)

    print(json.dumps(anyio.run(run).model_dump(mode="json"), sort_keys=True))
    return 0


def _multi_turn(args: argparse.Namespace) -> int:
    from simgate.runner.preflight import preflight
    from simgate.runner.run import Job, execute
    from simgate.runner.tasks import parse_tasks

    source = read_file(args.tasks, "task")
    tasks = parse_tasks([json.dumps(task) for task in multi_turn_tasks(source)], str(args.tasks))
    user = UserSettings(turns=args.turns, min_turns=args.min_turns or min(2, args.turns),
                        llm_base_url=args.user_llm_base_url, model=args.user_model,
                        temperature=args.user_temperature, max_tokens=args.user_max_tokens,
                        digest_budget=args.digest_budget)
    settings = settings_from(args, args.mode, user=user)

    async def main() -> Any:
        await preflight(settings)
        return await execute([Job(task=task, settings=settings) for task in tasks], args.out,
                             concurrency=settings.concurrency, progress=settings.progress, keep_done=False)

    result = anyio.run(main)
    print_summary(result.summary, args.out)
    print(json.dumps({"tasks": len(tasks), **result.summary.model_dump(include={
        "written", "skipped", "not_written", "outcomes"})}, sort_keys=True))
    return 0 if result.summary.not_written == 0 else 1
