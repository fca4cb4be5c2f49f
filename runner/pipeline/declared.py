"""`simgate pipeline run PIPELINE.yaml`: the stages declared once, each writing a file the next reads.

    dir: out/                              # every stage's output and manifest
    gateway: http://127.0.0.1:8808/mcp
    llm: {base_url: http://127.0.0.1:8000/v1, model: qwen}   # every role's default model
    stages:
      synth: {strategy: single:uniform, per_server: 2, models: [a, b]}
      dedup: {threshold: 0.7}
      judge_tasks: {}
      run: {mode: simulated, agent: prompted, max_turns: 4}     # live, replay or simulated: a setting
      judge_trajectories: {tool_output_budget: 1000}
      filter: {where: sft}
      export: {format: toucan, file: dataset.parquet}
    ray: {address: auto, retries: 2, gateways: [http://node1:8808/mcp, http://node2:8808/mcp]}  # optional

Stages run in that order (those not declared are skipped, their input passed on). A finished stage
leaves `NN-stage.manifest.json` (its settings, the prompt versions, simgate's version, counts) and
is not run again; a stage killed midway resumes (synth, judge and run append and skip what is done;
the others rewrite their file whole). Changing a finished stage's settings is refused, naming the
stage, instead of mixing two settings in one dataset. With `ray` (or `--ray`), synth, judge and run do
their work on a Ray cluster (runner/distributed.py) and write the same files on this machine; where the
work ran is in the manifest, not in the fingerprint (a stage begun here may be finished on a cluster).
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simgate import yamltext
from simgate.files import atomic_write
from simgate.runner.distributed import RayCluster, RayOptions
from simgate.runner.errors import RunnerError
from simgate.runner.export.card import card_facts, write_card
from simgate.runner.export.commands import write_rows
from simgate.runner.export.formats import FORMATS
from simgate.runner.output import read_file
from simgate.runner.pipeline import prompts
from simgate.runner.pipeline.catalogue import fetch_catalogue
from simgate.runner.pipeline.dedup import dedup_minhash
from simgate.runner.pipeline.filters import compile_filter, passes
from simgate.runner.pipeline.judge import judge_tasks, judge_trajectories
from simgate.runner.pipeline.strategies import Strategy, plan_tasks
from simgate.runner.pipeline.synth import synthesize
from simgate.runner.run import Job, execute, run_tasks
from simgate.runner.settings import RunSettings
from simgate.runner.structured import Completer, Endpoint, EndpointPool, json_completion
from simgate.runner.tasks import load_tasks

STAGES = ("synth", "dedup", "judge_tasks", "run", "judge_trajectories", "filter", "export")
RAY_STAGES = ("synth", "judge_tasks", "run", "judge_trajectories")  # the ones whose work is LLM calls


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    api_key: str = "not-needed"
    max_tokens: int = 1024


class PipelineRay(RayOptions):
    """Where synth, judge and run do their work, and the run stage's gateways."""

    gateways: list[str] = Field(default_factory=list, description="the run stage's gateways (default: `gateway`)")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: Path
    gateway: str
    llm: LLMSettings
    ray: PipelineRay | None = Field(None, description="synth, judge and run on a Ray cluster")
    stages: dict[str, dict[str, Any]] = Field(description="stage name → its settings")


def load_pipeline(path: Path) -> PipelineConfig:
    try:
        data = yamltext.safe_load(path.read_text())
        config = PipelineConfig.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise RunnerError(f"{path}: {exc}") from None
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise RunnerError(f"{path}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    unknown = [name for name in config.stages if name not in STAGES]
    if unknown:
        raise RunnerError(f"{path}: unknown stage {unknown[0]!r}; the stages are {', '.join(STAGES)}")
    if not config.stages:
        raise RunnerError(f"{path}: no stages")
    if "synth" not in config.stages:  # every other stage reads the file of the one before it
        first = next(name for name in STAGES if name in config.stages)
        raise RunnerError(f"{path}: stage {first} has no input: a pipeline starts with synth")
    if not config.dir.is_absolute():
        config.dir = path.parent / config.dir
    return config


def _simgate_version() -> str:
    try:
        return version("simgate")
    except PackageNotFoundError:
        return "source"


def _setting(settings: dict[str, Any], name: str, default: float, kind: type[int] | type[float]) -> Any:
    """A stage's numeric setting; `RunnerError` naming it (not a traceback) if it is no number."""
    value = settings.get(name, default)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise RunnerError(f"setting {name!r} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {str(value)[:80]!r}") from None


def _pool(config: PipelineConfig, settings: dict[str, Any]) -> EndpointPool:
    models = settings.get("models") or [settings.get("model") or config.llm.model]
    weights = settings.get("weights")
    max_tokens = _setting(settings, "max_tokens", config.llm.max_tokens, int)
    endpoints = [Endpoint(base_url=settings.get("base_url", config.llm.base_url), model=model,
                          api_key=config.llm.api_key, max_tokens=max_tokens,
                          weight=_setting({"weights": weights[i]}, "weights", 1.0, float) if weights else 1.0)
                 for i, model in enumerate(models)]
    return EndpointPool(endpoints, weighted=bool(weights), seed=_setting(settings, "seed", 0, int))


def _completer(cluster: RayCluster | None, stage: str) -> Completer:
    if cluster is None:
        return json_completion
    from simgate.runner.distributed import RayCompletions

    return RayCompletions(cluster, stage)


async def _run_stage(tasks: Path, run_settings: RunSettings, out: Path, config: PipelineConfig,
                     cluster: RayCluster | None) -> int:
    if cluster is None:
        return len(await run_tasks(load_tasks(tasks), run_settings, out))
    from simgate.runner.distributed import RayJobs, gateway_urls

    assert config.ray is not None
    runner = RayJobs(cluster, gateway_urls(run_settings, config.ray.gateways or [config.gateway]),
                     run_settings.concurrency)
    jobs = [Job(task=task, settings=run_settings) for task in load_tasks(tasks)]
    result = await execute(jobs, out, concurrency=runner.concurrency, progress=False, runner=runner)
    return len(result.trajectories)


async def _stage(name: str, settings: dict[str, Any], config: PipelineConfig, source: Path | None,
                 out: Path, cluster: RayCluster | None = None) -> dict[str, Any]:
    """Run one stage from `source` into `out` (synth, judge and run on `cluster` when given); its counts."""
    if name == "synth":
        catalogue = await fetch_catalogue(config.gateway, servers=settings.get("servers"))
        plans = plan_tasks(catalogue, Strategy(settings.get("strategy", "single:random")),
                           _setting(settings, "count", 10, int),
                           seed=_setting(settings, "seed", 0, int), per_server=_setting(settings, "per_server", 1, int),
                           featured=settings.get("featured"), usage_rank=settings.get("usage_rank"),
                           alpha=_setting(settings, "alpha", 1.0, float))
        async with _pool(config, settings) as pool:
            stats = await synthesize(plans, catalogue, pool, out, seed=_setting(settings, "seed", 0, int),
                                     temperature=_setting(settings, "temperature", 0.7, float),
                                     concurrency=_setting(settings, "concurrency", 2, int),
                                     subset_name=settings.get("subset_name"), complete=_completer(cluster, "synth"))
        return stats.model_dump(mode="json")
    if source is None:  # only synth makes its own input
        raise RunnerError(f"stage {name} has no input: a pipeline starts with synth")
    if name == "dedup":
        tasks = read_file(source, "task")
        result = dedup_minhash(tasks, _setting(settings, "threshold", 0.7, float))
        write_rows(out, result.kept)
        return {"tasks": len(tasks), "kept": len(result.kept), "exact_duplicates": len(result.exact),
                "near_duplicates": len(result.near)}
    if name == "judge_tasks":
        catalogue = await fetch_catalogue(config.gateway)
        tools = {tool.name: {"name": tool.name, "description": tool.description, "server": server.name}
                 for server in catalogue.servers for tool in server.tools}
        async with _pool(config, settings) as pool:
            judged = await judge_tasks(source, out, pool, tools, concurrency=_setting(settings, "concurrency", 2, int),
                                       complete=_completer(cluster, "judge_tasks"))
        return judged.model_dump()
    if name == "run":
        known = set(RunSettings.model_fields) - {"gateway", "llm_base_url", "model", "progress"}
        extra = sorted(set(settings) - known - {"base_url"})
        if extra:
            raise RunnerError(f"stage run: unknown setting {extra[0]!r}")
        try:
            run_settings = RunSettings(gateway=config.gateway, llm_base_url=settings.get("base_url",
                                                                                        config.llm.base_url),
                                       model=settings.get("model", config.llm.model), progress=False,
                                       **{k: v for k, v in settings.items() if k in known})
        except ValidationError as exc:  # e.g. a simulated user's `user: {turns: 0}`: one line, no traceback
            error = exc.errors(include_url=False)[0]
            raise RunnerError(f"stage run: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
        if not read_file(source, "task"):  # an earlier stage kept nothing: an empty run, not an error
            out.touch()
            return {"trajectories": 0, "mode": run_settings.mode}
        return {"trajectories": await _run_stage(source, run_settings, out, config, cluster),
                "mode": run_settings.mode}
    if name == "judge_trajectories":
        async with _pool(config, settings) as pool:
            judged = await judge_trajectories(source, out, pool,
                                             tool_output_budget=_setting(settings, "tool_output_budget", 1000, int),
                                             concurrency=_setting(settings, "concurrency", 2, int),
                                             complete=_completer(cluster, "judge_trajectories"))
        return judged.model_dump()
    if name == "filter":
        expression = compile_filter(str(settings.get("where", "sft")))
        records = read_file(source, "record")
        kept = [record for record in records if passes(record, expression)[0]]
        write_rows(out, kept)
        return {"records": len(records), "kept": len(kept), "expression": expression}
    if name == "export":
        convert = FORMATS[settings.get("format", "toucan")]
        records = read_file(source, "trajectory")
        write_rows(out, [convert(record) for record in records])
        if settings.get("card", True):
            write_card(out.parent, card_facts(records), out.name, settings.get("format", "toucan"))
        return {"rows": len(records), "format": settings.get("format", "toucan")}
    raise RunnerError(f"unknown stage {name!r}")


def _executor(stage: str, config: PipelineConfig, cluster: RayCluster | None) -> dict[str, Any]:
    if cluster is None or config.ray is None or stage not in RAY_STAGES:
        return {"kind": "local"}
    return {"kind": "ray", **config.ray.model_dump(exclude={"gateways"}),
            **({"gateways": config.ray.gateways or [config.gateway]} if stage == "run" else {})}


async def run_pipeline(config: PipelineConfig, cluster: RayCluster | None = None) -> list[dict[str, Any]]:
    """Every declared stage in order; finished ones (same settings) are skipped. Returns the manifests.
    `cluster`: connected to `config.ray` (in the main thread, as Ray wants) by the caller."""
    config.dir.mkdir(parents=True, exist_ok=True)
    manifests = []
    source: Path | None = None
    for number, name in enumerate(STAGES, start=1):
        if name not in config.stages:
            continue
        settings = config.stages[name] or {}
        stem = f"{number:02d}-{name}"
        if name == "export":
            out = config.dir / str(settings.get("file", "dataset.jsonl"))
        else:
            out = config.dir / f"{stem}.jsonl"
        manifest_path = config.dir / f"{stem}.manifest.json"
        fingerprint = hashlib.sha256(json.dumps({"settings": settings, "gateway": config.gateway,
                                                 "llm": config.llm.model_dump(exclude={"api_key"}),
                                                 "input": str(source)}, sort_keys=True, default=str).encode()
                                     ).hexdigest()[:16]
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("fingerprint") != fingerprint:
                raise RunnerError(f"stage {name} already ran with other settings (see {manifest_path}); remove "
                                  f"its output and manifest, or use another dir")
            manifests.append(manifest)
            source = out
            continue
        counts = await _stage(name, settings, config, source, out, cluster)
        manifest = {"stage": name, "fingerprint": fingerprint, "settings": settings, "input": str(source),
                    "output": str(out), "counts": counts, "simgate": _simgate_version(),
                    "prompt_versions": {"synth": prompts.SYNTH_VERSION, "judge_task": prompts.JUDGE_TASK_VERSION,
                                        "judge_trajectory": prompts.JUDGE_TRAJECTORY_VERSION},
                    "executor": _executor(name, config, cluster)}
        atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
        manifests.append(manifest)
        source = out
    return manifests
