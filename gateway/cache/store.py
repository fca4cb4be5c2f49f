"""The store interface and its embedded default on diskcache (SQLite, safe across processes and crashes).

A key holds a list of recordings: one for tools that replay by key (read-only or idempotent), or
the sequence a session produced for tools that replay in order (pop on use, per session).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import diskcache

from gateway.cache.records import Recording

_INDEX = "index\x00"  # prefix of the per-tool index entries, which are not recordings
_TOOLS = "index\x00tools\x00"  # the last tools/list of each server, so replay works with the server gone


class CacheStore(Protocol):
    def get(self, key: str) -> list[Recording]: ...

    def tool_keys(self, server: str, tool: str) -> list[str]:
        """Keys recorded for one tool, oldest first."""
        ...

    def put(self, recording: Recording, *, replace: bool) -> bool:
        """Store at `recording.position`; returns False when a recording is there and `replace` is False."""
        ...

    def delete(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class DiskStore:
    """`diskcache.Cache` under `directory`; every write is one SQLite transaction."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # No eviction: a recording is data, not a cache line. WAL keeps completed writes across kill -9.
        self._cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62,
                                      sqlite_synchronous=1)

    def get(self, key: str) -> list[Recording]:
        raw = self._cache.get(key)
        if not raw:
            return []
        return [Recording.model_validate_json(item) for item in raw]

    def put(self, recording: Recording, *, replace: bool) -> bool:
        with self._cache.transact():
            raw: list[str] = list(self._cache.get(recording.key) or [])
            position = recording.position
            if position < len(raw):
                if not replace:
                    return False
                raw[position] = recording.model_dump_json()
            elif position == len(raw):
                raw.append(recording.model_dump_json())
            else:
                return False  # a gap: an earlier call of the sequence was never recorded
            self._cache.set(recording.key, raw)
            index_key = _index_key(recording.server, recording.tool)
            keys: list[str] = list(self._cache.get(index_key) or [])
            if recording.key not in keys:
                keys.append(recording.key)
                self._cache.set(index_key, keys)
            return True

    def tool_keys(self, server: str, tool: str) -> list[str]:
        return list(self._cache.get(_index_key(server, tool)) or [])

    def delete(self, key: str) -> bool:
        with self._cache.transact():
            recordings = self.get(key)
            if recordings:
                index_key = _index_key(recordings[0].server, recordings[0].tool)
                keys = [k for k in self._cache.get(index_key) or [] if k != key]
                self._cache.set(index_key, keys)
            return bool(self._cache.delete(key))

    def keys(self) -> Iterator[str]:
        for key in self._cache.iterkeys():
            if not key.startswith(_INDEX):
                yield key

    def all(self) -> Iterator[Recording]:
        for key in self.keys():
            yield from self.get(key)

    def prune(self, *, expired_only: bool = True, server: str | None = None, tool: str | None = None) -> int:
        removed = 0
        now = time.time()
        for key in list(self.keys()):
            recordings = self.get(key)
            if not recordings:
                continue
            first = recordings[0]
            if server is not None and first.server != server:
                continue
            if tool is not None and first.tool != tool:
                continue
            if expired_only and not (first.expires_at is not None and first.expires_at < now):
                continue
            removed += len(recordings)
            self.delete(key)
        return removed

    def save_tools(self, server: str, tools: list[dict[str, Any]]) -> None:
        self._cache.set(f"{_TOOLS}{server}", json.dumps(tools))

    def load_tools(self, server: str) -> list[dict[str, Any]]:
        raw = self._cache.get(f"{_TOOLS}{server}")
        return json.loads(raw) if raw else []

    def close(self) -> None:
        self._cache.close()


def _index_key(server: str, tool: str) -> str:
    return f"{_INDEX}{server}\x00{tool}"
