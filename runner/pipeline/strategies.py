"""Which servers a generated task is about: TOUCAN's sampling strategies, as plain functions of the
catalogue and a seeded random generator (the same seed plans the same tasks).

Single-server: `random` (any server), `uniform` (k per server), `power_law` (probability falling
with a usage rank, 1/rank^alpha), `featured` (only the listed servers). Multi-server: `random`,
`same_category`, `different_categories`, `brainstorm` (among featured servers, the generator
brainstorms a scenario joining them).
"""

from __future__ import annotations

import random
from enum import StrEnum

from pydantic import BaseModel, Field

from simgate.runner.errors import RunnerError
from simgate.runner.pipeline.catalogue import Catalogue


class Strategy(StrEnum):
    SINGLE_RANDOM = "single:random"
    SINGLE_UNIFORM = "single:uniform"
    SINGLE_POWER_LAW = "single:power_law"
    SINGLE_FEATURED = "single:featured"
    MULTI_RANDOM = "multi:random"
    MULTI_SAME_CATEGORY = "multi:same_category"
    MULTI_DIFFERENT_CATEGORIES = "multi:different_categories"
    MULTI_BRAINSTORM = "multi:brainstorm"

    @property
    def multi(self) -> bool:
        return self.value.startswith("multi:")


class Plan(BaseModel):
    """One task to generate: its servers, how many target tools, and where it came from."""

    index: int
    strategy: Strategy
    servers: list[str]
    num_tools: int = Field(ge=1, le=3)


def _rank_weights(names: list[str], usage_rank: list[str] | None, alpha: float) -> list[float]:
    """1/rank^alpha, rank from the usage list (servers not in it rank after it, in catalogue order)."""
    order = [name for name in (usage_rank or []) if name in names] + [n for n in names if n not in (usage_rank or [])]
    rank = {name: position + 1 for position, name in enumerate(order)}
    return [1.0 / rank[name] ** alpha for name in names]


def plan_tasks(catalogue: Catalogue, strategy: Strategy, count: int, *, seed: int = 0, per_server: int = 1,
               featured: list[str] | None = None, usage_rank: list[str] | None = None, alpha: float = 1.0,
               servers_per_task: tuple[int, int] = (2, 3), max_tools: int = 3) -> list[Plan]:
    """`count` plans (for `single:uniform`, `per_server` per server instead)."""
    rng = random.Random(f"{seed}/{strategy.value}")
    names = [server.name for server in catalogue.servers]
    categories = {server.name: server.category for server in catalogue.servers}
    tools = {server.name: len(server.tools) for server in catalogue.servers}
    pool = names
    if strategy in (Strategy.SINGLE_FEATURED, Strategy.MULTI_BRAINSTORM):
        pool = [name for name in (featured or []) if name in names]
        if not pool:
            raise RunnerError(f"{strategy.value} needs --featured servers that the gateway serves "
                              f"(it serves {', '.join(names)})")
    if strategy.multi and len(pool) < 2:
        raise RunnerError(f"{strategy.value} needs at least two servers; the gateway has {len(pool)} with tools")

    def targets(chosen: list[str]) -> int:
        available = sum(tools[name] for name in chosen)
        low = len(chosen) if strategy.multi else 1  # a multi-server task uses a tool of each server
        return rng.randint(min(low, max_tools, available), min(max_tools, available))

    plans: list[Plan] = []
    if strategy is Strategy.SINGLE_UNIFORM:
        for name in names:
            for _ in range(per_server):
                plans.append(Plan(index=len(plans), strategy=strategy, servers=[name], num_tools=targets([name])))
        return plans
    weights = _rank_weights(pool, usage_rank, alpha) if strategy is Strategy.SINGLE_POWER_LAW else None
    by_category: dict[str, list[str]] = {}
    for name in pool:
        by_category.setdefault(categories[name], []).append(name)
    for _ in range(count):
        if not strategy.multi:
            chosen = [rng.choices(pool, weights=weights)[0] if weights else rng.choice(pool)]
        else:
            size = rng.randint(*servers_per_task)
            if strategy is Strategy.MULTI_SAME_CATEGORY:
                groups = [group for group in by_category.values() if len(group) >= 2]
                if not groups:
                    raise RunnerError("multi:same_category needs two servers of one category; the categories are "
                                      + ", ".join(f"{c} ({len(g)})" for c, g in by_category.items()))
                group = rng.choice(groups)
                chosen = rng.sample(group, min(size, len(group)))
            elif strategy is Strategy.MULTI_DIFFERENT_CATEGORIES:
                if len(by_category) < 2:
                    raise RunnerError("multi:different_categories needs servers of two categories at least")
                picked = rng.sample(sorted(by_category), min(size, len(by_category)))
                chosen = [rng.choice(by_category[category]) for category in picked]
            else:
                chosen = rng.sample(pool, min(size, len(pool)))
        plans.append(Plan(index=len(plans), strategy=strategy, servers=chosen, num_tools=targets(chosen)))
    return plans
