"""Pairs of (live, simulated) answers to the same call, written by `shadow` mode for fidelity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
from pydantic import BaseModel


class ShadowPair(BaseModel):
    cache_key: str
    server: str
    tool: str
    arguments: dict[str, Any]
    live: dict[str, Any]
    simulated: dict[str, Any]
    simulator: str
    model: str | None = None
    created_at: str


class ShadowLog:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62)

    def append(self, pair: ShadowPair) -> None:
        self._cache.set(f"{pair.created_at}-{uuid.uuid4().hex}", pair.model_dump_json())

    def pairs(self) -> Iterator[ShadowPair]:
        for key in sorted(self._cache.iterkeys()):
            yield ShadowPair.model_validate_json(self._cache[key])

    def close(self) -> None:
        self._cache.close()
