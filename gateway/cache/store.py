"""The store interface and its embedded default on diskcache (SQLite, safe across processes and crashes).

A key holds a list of recordings: one for tools that replay by key (read-only or idempotent), or
the sequence a session produced for tools that replay in order (pop on use, per session).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import diskcache

from simgate.gateway.cache.records import Recording, corrupt_pruned, stored_recordings
from simgate.gateway.errors import CorruptRecording

_INDEX = "index\x00"  # prefix of the per-tool index entries, which are not recordings
_TOOLS = "index\x00tools\x00"  # the last tools/list of each server, so replay works with the server gone


class CacheStore(Protocol):
    """What every backend offers (diskcache here, Redis in `gateway.cache.redis_store`), synchronously:
    the gateway calls it off the event loop where a call may wait (writes)."""

    def get(self, key: str) -> list[Recording]: ...

    def tool_keys(self, server: str, tool: str) -> list[str]:
        """Keys recorded for one tool, oldest first."""
        ...

    def put(self, recording: Recording, *, replace: bool) -> bool:
        """Store at `recording.position`; returns False when a recording is there and `replace` is False."""
        ...

    def put_many(self, recordings: Iterable[Recording], *, replace: bool,
                 tools: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """Store recordings (and replace the tool lists of `tools`) atomically: all or nothing."""
        ...

    def put_batches(self, batches: Iterable[list[Recording]], *, replace: bool,
                    tools: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """`put_many` of batches read one at a time (an import's), then the tool lists: all or nothing. When a
        write or the iterable fails (raises), what earlier batches wrote is taken back and the error raised."""
        ...

    def delete(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]: ...

    def all(self) -> Iterator[Recording]: ...

    def prune(self, *, expired_only: bool = True, server: str | None = None, tool: str | None = None) -> int: ...

    def save_tools(self, server: str, tools: list[dict[str, Any]]) -> None: ...

    def load_tools(self, server: str) -> list[dict[str, Any]]: ...

    def decide_once(self, server: str, recorded_before: Callable[[], bool]) -> bool:
        """Record mode `once`: whether `server` was recorded before this run, decided once for every
        gateway on the store (`recorded_before` is asked when no decision is held yet)."""
        ...

    def describe(self) -> str:
        """Where the store is, fit to show (no password)."""
        ...

    def close(self) -> None: ...


class DiskStore:
    """`diskcache.Cache` under `directory`; every write is one SQLite transaction."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # No eviction: a recording is data, not a cache line. WAL keeps completed writes across kill -9.
        self._cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62,
                                      sqlite_synchronous=1)

    def get(self, key: str) -> list[Recording]:
        raw = self._cache.get(key)
        if raw is None or raw == []:
            return []
        return stored_recordings(key, raw)

    def put(self, recording: Recording, *, replace: bool) -> bool:
        counts = self.put_many([recording], replace=replace)
        return bool(counts["added"] or counts["replaced"])

    def put_many(self, recordings: Iterable[Recording], *, replace: bool,
                 tools: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """Store recordings, and the tool lists of `tools`, in ONE transaction (all or nothing).

        A recording's place is (episode, position): each session that records a sequentially
        replayed tool keeps its own sequence, so concurrent sessions never overwrite each other.
        Returns counts: `added`, `replaced` (only with `replace`), `kept` (already there, left as it
        was), `gaps` (past the end of its episode's sequence: an earlier call was never recorded).
        """
        by_key: dict[str, list[Recording]] = {}
        for recording in recordings:
            by_key.setdefault(recording.key, []).append(recording)
        counts = {"added": 0, "replaced": 0, "kept": 0, "gaps": 0}
        indexed: dict[str, list[str]] = {}  # tool index -> keys written: each index is read and written once
        with self._cache.transact():
            for key, group in by_key.items():
                stored = self.get(key)
                changed = False
                for recording in sorted(group, key=lambda r: (r.episode, r.position)):
                    outcome = _place(stored, recording, replace)
                    counts[outcome] += 1
                    changed = changed or outcome in ("added", "replaced")
                if changed:
                    self._cache.set(key, [item.model_dump_json() for item in stored])
                    indexed.setdefault(_index_key(group[0].server, group[0].tool), []).append(key)
            for index_key, written in indexed.items():
                # Not once per key: a cassette of n keys of one tool would rewrite its index n times (quadratic).
                keys: list[str] = list(self._cache.get(index_key) or [])
                known = set(keys)
                added = [key for key in written if key not in known]
                if added:
                    self._cache.set(index_key, keys + added)
            for server, listed in (tools or {}).items():
                self.save_tools(server, listed)
        return counts

    def put_batches(self, batches: Iterable[list[Recording]], *, replace: bool,
                    tools: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """All batches in ONE SQLite transaction: it may grow past memory (SQLite spills it to its WAL), and
        any exception, the iterable's too, rolls every batch back."""
        counts = {"added": 0, "replaced": 0, "kept": 0, "gaps": 0}
        with self._cache.transact():
            for batch in batches:
                for outcome, n in self.put_many(batch, replace=replace).items():
                    counts[outcome] += n
            for server, listed in (tools or {}).items():
                self.save_tools(server, listed)
        return counts

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes (put, put_many, save_tools, delete) into one SQLite transaction; nests."""
        with self._cache.transact():
            yield

    def tool_keys(self, server: str, tool: str) -> list[str]:
        return list(self._cache.get(_index_key(server, tool)) or [])

    def delete(self, key: str) -> bool:
        with self._cache.transact():
            try:
                recordings = self.get(key)
            except CorruptRecording:
                recordings = []  # deleting it is how a corrupt value is repaired; its tool index is unknown
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
        """Remove recordings (only expired ones unless `expired_only` is False); returns how many.

        A sequence cannot replay past a hole, so an expired recording takes the rest of its episode with it.
        """
        removed = 0
        now = time.time()
        for key in list(self.keys()):
            if corrupt_pruned(self, key, expired_only, server, tool):
                continue
            with self._cache.transact():
                recordings = self.get(key)
                if not recordings:
                    continue
                first = recordings[0]
                if (server is not None and first.server != server) or (tool is not None and first.tool != tool):
                    continue
                cut: dict[str, int] = {}  # episode -> first position removed
                for recording in recordings:
                    stale = not expired_only or (recording.expires_at is not None and recording.expires_at < now)
                    if stale:
                        cut[recording.episode] = min(cut.get(recording.episode, recording.position), recording.position)
                kept = [r for r in recordings if r.position < cut.get(r.episode, r.position + 1)]
                if len(kept) == len(recordings):
                    continue
                removed += len(recordings) - len(kept)
                if kept:
                    self._cache.set(key, [r.model_dump_json() for r in kept])
                else:
                    self.delete(key)
        return removed

    def save_tools(self, server: str, tools: list[dict[str, Any]]) -> None:
        self._cache.set(f"{_TOOLS}{server}", json.dumps(tools))

    def load_tools(self, server: str) -> list[dict[str, Any]]:
        raw = self._cache.get(f"{_TOOLS}{server}")
        return json.loads(raw) if raw else []

    def decide_once(self, server: str, recorded_before: Callable[[], bool]) -> bool:
        return recorded_before()  # one gateway per directory: its caller keeps the decision for the run

    def describe(self) -> str:
        return str(self.directory)

    def close(self) -> None:
        self._cache.close()


def _index_key(server: str, tool: str) -> str:
    return f"{_INDEX}{server}\x00{tool}"


def _place(stored: list[Recording], recording: Recording, replace: bool) -> str:
    """Put `recording` into a key's list in place; say what happened."""
    episode = [r for r in stored if r.episode == recording.episode]
    for index, existing in enumerate(stored):
        if existing.episode == recording.episode and existing.position == recording.position:
            if not replace:
                return "kept"
            stored[index] = recording
            return "replaced"
    if recording.position != len(episode):
        return "gaps"
    stored.append(recording)
    return "added"


def episode_for(recordings: list[Recording], episode: str, position: int) -> Recording | None:
    """The recording a replaying session gets: its own episode's, else the first recorded episode's."""
    for recording in recordings:
        if recording.episode == episode and recording.position == position:
            return recording
    if not recordings:
        return None
    first = recordings[0].episode
    if any(r.episode == episode for r in recordings):
        return None  # the session's own sequence is shorter: a miss, not another session's answer
    for recording in recordings:
        if recording.episode == first and recording.position == position:
            return recording
    return None


def last_of_episode(recordings: list[Recording], episode: str) -> Recording | None:
    """The last recording of the episode `episode_for` replays for a session (its own, else the first)."""
    if not recordings:
        return None
    own = [r for r in recordings if r.episode == episode]
    chosen = own or [r for r in recordings if r.episode == recordings[0].episode]
    return max(chosen, key=lambda r: r.position)
