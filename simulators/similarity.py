"""How alike two argument sets are: a plain function, used to pick examples and to name near misses."""

from __future__ import annotations

import json
from typing import Any


def _flatten(value: Any, prefix: str = "$") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}"))
        return out or {prefix: "{}"}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out or {prefix: "[]"}
    return {prefix: json.dumps(value, sort_keys=True)}


def argument_similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    """1.0 for equal arguments; the share of (path, value) pairs in common otherwise (paths count half)."""
    fa, fb = _flatten(a), _flatten(b)
    if fa == fb:
        return 1.0
    paths = set(fa) | set(fb)
    if not paths:
        return 1.0
    same_paths = set(fa) & set(fb)
    same_values = sum(1 for path in same_paths if fa[path] == fb[path])
    return (same_values + 0.5 * (len(same_paths) - same_values)) / len(paths)


def nearest(arguments: dict[str, Any], candidates: list[dict[str, Any]], k: int) -> list[int]:
    """Indexes of the k candidates most similar to `arguments`, best first (stable on ties)."""
    scored = sorted(range(len(candidates)), key=lambda i: -argument_similarity(arguments, candidates[i]))
    return scored[:k]
