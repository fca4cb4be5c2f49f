"""TOUCAN's extensions of a task set: `irrelevance` (a question paired with another server's tools, so a
correct trajectory calls no tool), `persona` (N rewrites of each question — a new persona or
domain, or added constraints — that keep its target tools), and multi-turn: `split` (a multi-tool
question split into user turns, each asked after the previous answer: the task's `follow_ups`) and
`multi_turn_tasks` (tasks a simulated user continues, run by `simgate extend multi-turn`). New tasks get
new stable ids and say where they came from (`metadata.extension`, `metadata.source_id`)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

from simgate.runner.output import JsonlWriter, write_each
from simgate.runner.pipeline.catalogue import Catalogue
from simgate.runner.pipeline.filters import PRESETS
from simgate.runner.pipeline.prompts import SPLIT_VERSION, split_prompt, split_schema
from simgate.runner.pipeline.synth import names_a_tool
from simgate.runner.structured import EndpointPool, json_completion

PERSONA_VERSION = "persona-v1"
MULTI_TURN_SUBSET = "multi-turn"  # TOUCAN's subset name for conversations of several user turns
IRRELEVANCE_FILTER = PRESETS["irrelevance"]  # what keeps correct irrelevance trajectories


class ExtensionStats(BaseModel):
    source_tasks: int = 0
    written: int = 0
    already_done: int = 0
    dropped: Counter[str] = Field(default_factory=Counter)


def irrelevance_tasks(tasks: list[dict[str, Any]], catalogue: Catalogue, *, seed: int = 0) -> list[dict[str, Any]]:
    """Each task's question with the tools of one server it does not use (of another category when there
    is one); no target tools: the right answer says the tools cannot help."""
    rng = random.Random(f"irrelevance/{seed}")
    categories = {server.name: server.category for server in catalogue.servers}
    made = []
    for task in tasks:
        own = set(task.get("servers") or [])
        others = [name for name in categories if name not in own]
        if not others:
            continue
        own_categories = {categories.get(name) for name in own}
        elsewhere = [name for name in others if categories[name] not in own_categories]
        server = rng.choice(elsewhere or others)
        made.append({"id": f"{task['id']}-irrelevant", "question": task["question"], "servers": [server],
                     "target_tools": [], "subset_name": "irrelevance",
                     "metadata": {**(task.get("metadata") or {}), "extension": "irrelevance",
                                  "source_id": task["id"], "expected": "no tool call",
                                  "filter": IRRELEVANCE_FILTER}})
    return made


def persona_schema(count: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"questions": {
        "type": "array", "minItems": count, "maxItems": count,
        "items": {"type": "string", "minLength": 10, "maxLength": 1500}}},
        "required": ["questions"], "additionalProperties": False}


def persona_prompt(question: str, count: int, style: str) -> str:
    how = ("each asked by a different kind of person, in a different domain or situation" if style == "persona"
           else "each adding realistic constraints or details (limits, formats, conditions)")
    return (f"Rewrite this question {count} times, {how}. Each rewrite must still need exactly the same tools "
            f"to answer, give every detail those tools need, and name no tool.\n\nQuestion: {question}\n\n"
            f"Answer in JSON.")


async def persona_tasks(tasks: list[dict[str, Any]], catalogue: Catalogue, generators: EndpointPool, out: Path, *,
                        count: int = 2, style: str = "persona", seed: int = 0, temperature: float = 0.7,
                        concurrency: int = 2) -> ExtensionStats:
    """N rewrites per task, appended to `out` (resumable by id)."""
    stats = ExtensionStats(source_tasks=len(tasks))
    writer = JsonlWriter(out)
    done = {str(record["id"]) for record in writer.open(key=lambda r: str(r["id"]), what="task")}
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int, task: dict[str, Any]) -> None:
        ids = [f"{task['id']}-{style}-{i}" for i in range(count)]
        missing = [new_id for new_id in ids if new_id not in done]
        stats.already_done += count - len(missing)
        if not missing:
            return
        async with limiter:
            endpoint, client = generators.pick(index)
            value, why = await json_completion(client, endpoint, persona_prompt(str(task["question"]), count, style),
                                               persona_schema(count), "rewrites", temperature=temperature,
                                               seed=seed * 100003 + index)
        if value is None:
            stats.dropped[(why or "no answer").split(":")[0]] += len(missing)
            return
        for new_id, question in zip(ids, value["questions"], strict=True):
            if new_id not in missing:
                continue
            servers = [name for name in task.get("servers") or [] if any(s.name == name for s in catalogue.servers)]
            if names_a_tool(question, catalogue, servers) is not None:
                stats.dropped["question names a tool or server"] += 1
                continue
            await writer.write_record({
                **{k: v for k, v in task.items() if k not in ("id", "question", "metadata")},
                "id": new_id, "question": question.strip(),
                "metadata": {**(task.get("metadata") or {}), "extension": style, "source_id": task["id"],
                             "generator": endpoint.model, "prompt_version": PERSONA_VERSION}})
            stats.written += 1

    await write_each(writer, tasks, one)
    return stats


def _tool_description(catalogue: Catalogue, name: str) -> str:
    for server in catalogue.servers:
        for tool in server.tools:
            if tool.name == name:
                return tool.description or tool.tool
    return name.partition("__")[2] or name


async def split_tasks(tasks: list[dict[str, Any]], catalogue: Catalogue, generators: EndpointPool, out: Path, *,
                      seed: int = 0, temperature: float = 0.3, concurrency: int = 2) -> ExtensionStats:
    """Each task with two or more target tools split into user turns (2 to as many as its tools), appended
    to `out` as a task whose `question` is the first turn and `follow_ups` the rest (resumable by id).
    The split keeps the task's tools and targets; turns that name a tool are dropped."""
    stats = ExtensionStats(source_tasks=len(tasks))
    writer = JsonlWriter(out)
    done = {str(record["id"]) for record in writer.open(key=lambda r: str(r["id"]), what="task")}
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int, task: dict[str, Any]) -> None:
        targets = list(task.get("target_tools") or [])
        new_id = f"{task['id']}-split"
        if len(targets) < 2:
            stats.dropped["fewer than two target tools"] += 1
            return
        if new_id in done:
            stats.already_done += 1
            return
        steps = [_tool_description(catalogue, name) for name in targets]
        async with limiter:
            endpoint, client = generators.pick(index)
            value, why = await json_completion(client, endpoint, split_prompt(str(task["question"]), steps),
                                               split_schema(len(targets)), "turns", temperature=temperature,
                                               seed=seed * 100003 + index)
        if value is None:
            stats.dropped[(why or "no answer").split(":")[0]] += 1
            return
        turns = [turn.strip() for turn in value["turns"]]
        servers = [name for name in task.get("servers") or [] if any(s.name == name for s in catalogue.servers)]
        if any(names_a_tool(turn, catalogue, servers) is not None for turn in turns):
            stats.dropped["a turn names a tool or server"] += 1
            return
        await writer.write_record({
            **{k: v for k, v in task.items() if k not in ("id", "question", "follow_ups", "metadata", "subset_name")},
            "id": new_id, "question": turns[0], "follow_ups": turns[1:], "subset_name": MULTI_TURN_SUBSET,
            "metadata": {**(task.get("metadata") or {}), "extension": "split", "source_id": task["id"],
                         "source_question": task["question"], "generator": endpoint.model,
                         "prompt_version": SPLIT_VERSION}})
        stats.written += 1

    await write_each(writer, tasks, one)
    return stats


def multi_turn_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks a simulated user continues: new ids (so they sit beside the single-turn runs of the same
    tasks in one file), TOUCAN's multi-turn subset, the source named."""
    return [{**{k: v for k, v in task.items() if k not in ("id", "metadata", "subset_name", "follow_ups")},
             "id": f"{task['id']}-multi-turn", "subset_name": MULTI_TURN_SUBSET,
             "metadata": {**(task.get("metadata") or {}), "extension": "multi-turn", "source_id": task["id"]}}
            for task in tasks]
