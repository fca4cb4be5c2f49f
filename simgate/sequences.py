"""The tool-call sequence of a trajectory (one JSONL line of `simgate run`, as a dict) and where two
sequences first part: plain functions shared by the trajectory fidelity report (runner) and the page
(gateway), which may not import runner; so they live in the base layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simgate.canonical import canonical_json


def canonical_arguments(arguments: Any) -> str:
    # The cache key's notion of "the same arguments" (1 == 1.0), so a call matches the call it replays.
    return canonical_json(arguments if arguments is not None else {})


def tool_names(trajectory: dict[str, Any]) -> list[str]:
    """The tools called, in order (`name` as the agent saw it, e.g. `server__tool`)."""
    return [str(event.get("name") or f"{event.get('server')}__{event.get('tool')}")
            for event in trajectory.get("tool_events") or []]


def tool_calls(trajectory: dict[str, Any]) -> list[tuple[str, str]]:
    """The calls made, in order, as (name, canonical JSON of the arguments)."""
    return [(name, canonical_arguments(event.get("arguments")))
            for name, event in zip(tool_names(trajectory), trajectory.get("tool_events") or [], strict=True)]


def first_divergence(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """The 0-based step at which two sequences first differ (a shorter one differs where it ends);
    None when they are identical."""
    for step, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return step
    return None if len(a) == len(b) else min(len(a), len(b))
