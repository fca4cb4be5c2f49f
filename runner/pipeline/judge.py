"""`simgate judge tasks|trajectories`: an LLM scores each record, reasoning first, 1–5 per dimension.

Tasks get TOUCAN's six dimensions in `question_quality_assessment`; trajectories get completeness and
conciseness in `response_quality_assessment`, beside the rule checks and target-tool metrics the
runner wrote (`checks`). Every score carries the judge's model and prompt version. A record whose
judgement failed is written with `error` and no ratings (so filters drop it and a re-run with
`--retry-failed` judges it again), never silently scored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from simgate.runner.output import JsonlWriter, done_key, read_file, write_each
from simgate.runner.pipeline.prompts import (
    JUDGE_TASK_VERSION,
    JUDGE_TRAJECTORY_VERSION,
    TASK_DIMENSIONS,
    TRAJECTORY_DIMENSIONS,
    rating_schema,
    task_judge_prompt,
    trajectory_judge_prompt,
    transcript,
)
from simgate.runner.structured import Completer, EndpointPool, json_completion

TASK_FIELD = "question_quality_assessment"
TRAJECTORY_FIELD = "response_quality_assessment"


class JudgeStats(BaseModel):
    records: int = 0
    already_done: int = 0
    judged: int = 0
    failed: int = 0


def ratings(assessment: dict[str, Any] | None) -> dict[str, int]:
    """dimension → rating of an assessment (empty when it failed)."""
    if not isinstance(assessment, dict) or assessment.get("error"):
        return {}
    return {name: int(value["score"]) for name, value in assessment.items()
            if isinstance(value, dict) and isinstance(value.get("score"), int)}


async def _judge_file(source: Path, out: Path, judges: EndpointPool, *, field: str, version: str,
                      dimensions: dict[str, str], prompt: Callable[[dict[str, Any]], str], what: str,
                      concurrency: int, retry_failed: bool, complete: Completer) -> JudgeStats:
    stats = JudgeStats()
    records = read_file(source, what)
    stats.records = len(records)
    writer = JsonlWriter(out)
    earlier = list(writer.open(done_key, f"judged {what}"))
    done = {done_key(r) for r in earlier if not (retry_failed and (r.get(field) or {}).get("error"))}
    if retry_failed and len(done) < len(earlier):  # failed ones are judged again: rewrite the file without them
        writer.close()
        kept = [r for r in earlier if done_key(r) in done]
        out.unlink()
        writer = JsonlWriter(out)
        writer.open(done_key, f"judged {what}")
        for record in kept:
            await writer.write_record(record)
    todo = [record for record in records if done_key(record) not in done]
    stats.already_done = len(records) - len(todo)
    schema = rating_schema(dimensions)
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int, record: dict[str, Any]) -> None:
        async with limiter:
            endpoint, client = judges.pick(index)
            value, why = await complete(client, endpoint, prompt(record), schema, "ratings")
            judge = {"model": endpoint.model, "prompt_version": version}
            if value is None:
                stats.failed += 1
                assessment: dict[str, Any] = {"error": why, "judge": judge}
            else:
                stats.judged += 1
                assessment = {**value, "judge": judge}
            await writer.write_record({**record, field: assessment})

    await write_each(writer, todo, one)
    return stats


async def judge_tasks(source: Path, out: Path, judges: EndpointPool, tools: dict[str, dict[str, Any]], *,
                      concurrency: int = 2, retry_failed: bool = False,
                      complete: Completer = json_completion) -> JudgeStats:
    """`tools`: gateway tool name → {name, description, server} (the catalogue): a task's judge sees the
    tools of the task's servers, as its agent will."""

    def prompt(task: dict[str, Any]) -> str:
        servers = task.get("servers")
        shown = [tool for tool in tools.values() if servers is None or tool.get("server") in servers]
        return task_judge_prompt(str(task["question"]), shown, list(task.get("target_tools") or []))

    return await _judge_file(source, out, judges, field=TASK_FIELD, version=JUDGE_TASK_VERSION,
                             dimensions=TASK_DIMENSIONS, prompt=prompt, what="task", concurrency=concurrency,
                             retry_failed=retry_failed, complete=complete)


async def judge_trajectories(source: Path, out: Path, judges: EndpointPool, *, tool_output_budget: int = 1000,
                             concurrency: int = 2, retry_failed: bool = False,
                             complete: Completer = json_completion) -> JudgeStats:
    def prompt(trajectory: dict[str, Any]) -> str:
        return trajectory_judge_prompt(str(trajectory.get("question", "")),
                                       transcript(trajectory.get("messages") or [], tool_output_budget))

    return await _judge_file(source, out, judges, field=TRAJECTORY_FIELD, version=JUDGE_TRAJECTORY_VERSION,
                             dimensions=TRAJECTORY_DIMENSIONS, prompt=prompt, what="trajectory",
                             concurrency=concurrency, retry_failed=retry_failed, complete=complete)
