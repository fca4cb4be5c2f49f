"""`simgate synth`: tasks generated from the gateway's tool catalogue by one or several LLMs.

Each plan (strategies.py) becomes one generation: the servers' tools shown, a question that needs
`num_tools` of them asked for, JSON-schema-constrained, then checked — the targets exist on the
gateway, are as many as asked, span every server of a multi-server task, and the question names no
tool. A bad generation is counted by reason and dropped; a run never stops for one. Task ids are
stable (strategy, seed, index), so a killed run resumes where it stopped without duplicates.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

from simgate.runner.output import JsonlWriter, write_each
from simgate.runner.pipeline.catalogue import Catalogue
from simgate.runner.pipeline.prompts import SYNTH_VERSION, synth_prompt, synth_schema
from simgate.runner.pipeline.strategies import Plan, Strategy
from simgate.runner.structured import Completer, EndpointPool, json_completion


class SynthStats(BaseModel):
    planned: int = 0
    already_done: int = 0
    written: int = 0
    dropped: Counter[str] = Field(default_factory=Counter)


def task_id(plan: Plan, seed: int) -> str:
    return f"{plan.strategy.value.replace(':', '-')}-s{seed}-{plan.index:06d}"


def names_a_tool(question: str, catalogue: Catalogue, servers: list[str]) -> str | None:
    """A tool or server name the question gives away (as a whole word), if any."""
    lowered = question.lower()
    for server in (catalogue.server(name) for name in servers):
        for name in [server.name, *(tool.tool for tool in server.tools), *(tool.name for tool in server.tools)]:
            if len(name) >= 4 and ("_" in name or "-" in name or name == server.name) and \
                    re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", lowered):
                return name
    return None


def check_generation(value: Any, plan: Plan, catalogue: Catalogue) -> tuple[dict[str, Any] | None, str | None]:
    """The generation as a task's fields, or why it is dropped."""
    question = str(value.get("question", "")).strip()
    targets = [str(name) for name in value.get("target_tools") or []]
    known = {tool.name: name for name in plan.servers for tool in catalogue.server(name).tools}
    if not question:
        return None, "empty question"
    if unknown := [name for name in targets if name not in known]:
        return None, f"unknown target tool {unknown[0]}"
    if len(targets) != plan.num_tools or len(set(targets)) != len(targets):
        return None, "wrong number of target tools"
    if plan.num_tools >= len(plan.servers) and {known[t] for t in targets} != set(plan.servers):
        return None, "targets do not span every server"
    if names_a_tool(question, catalogue, plan.servers) is not None:
        return None, "question names a tool or server"
    return {"question": question, "target_tools": targets}, None


async def synthesize(plans: list[Plan], catalogue: Catalogue, generators: EndpointPool, out: Path, *,
                     seed: int = 0, temperature: float = 0.7, concurrency: int = 2,
                     subset_name: str | None = None, complete: Completer = json_completion) -> SynthStats:
    stats = SynthStats(planned=len(plans))
    writer = JsonlWriter(out)
    done = {str(record["id"]) for record in writer.open(key=lambda r: str(r["id"]), what="task")}
    todo = [plan for plan in plans if task_id(plan, seed) not in done]
    stats.already_done = len(plans) - len(todo)
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(_: int, plan: Plan) -> None:
        async with limiter:
            endpoint, client = generators.pick(plan.index)
            servers = [catalogue.server(name) for name in plan.servers]
            shown = [{"name": s.name, "category": s.category, "description": s.description,
                      "tools": [{"name": t.name, "description": t.description} for t in s.tools]} for s in servers]
            names = sorted(t.name for s in servers for t in s.tools)
            value, why = await complete(
                client, endpoint, synth_prompt(shown, plan.num_tools, plan.strategy is Strategy.MULTI_BRAINSTORM),
                synth_schema(names, plan.num_tools), "task", temperature=temperature, seed=seed * 100003 + plan.index)
            if value is None:
                stats.dropped[why.split(":")[0] if why else "no answer"] += 1
                return
            fields, why = check_generation(value, plan, catalogue)
            if fields is None:
                stats.dropped[why or "invalid"] += 1
                return
            category = servers[0].category if len(servers) == 1 else "multi-server"
            await writer.write_record({
                "id": task_id(plan, seed), **fields, "servers": plan.servers,
                "subset_name": subset_name or ("multi-server" if plan.strategy.multi else "single-server"),
                "metadata": {"strategy": plan.strategy.value, "category": category, "generator": endpoint.model,
                             "prompt_version": SYNTH_VERSION, "seed": seed, "temperature": temperature,
                             "num_tools": plan.num_tools}})
            stats.written += 1

    await write_each(writer, todo, one)
    return stats
