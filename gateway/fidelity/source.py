"""What `fidelity calls` and `export simulator-sft` read from a store: recorded live calls with their tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simgate.errors import SimgateError
from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.store import CacheStore, DiskStore
from simgate.simulators.base import Example, ToolSpec


class FidelityInputError(SimgateError):
    """Bad input (no store, an empty one, an unknown server...): one line on stderr, exit code 2."""


@dataclass
class RecordedWorld:
    """Every recording to score, oldest first, and what the simulator is told about each tool."""

    store: str
    recordings: list[Recording]
    tools: dict[tuple[str, str], ToolSpec]
    by_tool: dict[tuple[str, str], list[Recording]] = field(default_factory=dict)

    def spec(self, recording: Recording) -> ToolSpec:
        return self.tools.get((recording.server, recording.tool)) or ToolSpec(name=recording.tool)

    def examples(self, recording: Recording, k: int) -> list[Example]:
        """The k recorded calls of the same tool most similar to this one, its own key held out
        (as shadow mode does: the simulator must not peek at the answer it is judged against)."""
        from simgate.simulators.similarity import nearest

        others = [r for r in self.by_tool.get((recording.server, recording.tool), []) if r.key != recording.key]
        chosen = nearest(recording.arguments, [r.arguments for r in others], k)
        return [example_of(others[i]) for i in chosen]

    def history(self, recording: Recording, *, hold_out: str | None = None) -> list[Example]:
        """Earlier calls of the same recorded session (only sequentially replayed tools carry one).

        `hold_out="call"` leaves out every earlier answer to the same call (its cache key: the same
        tool with the same arguments), `"tool"` every earlier answer of the tool: what is scored is
        never shown, however often the session made it."""
        if not recording.episode:
            return []
        earlier = [r for r in self.recordings if r.episode == recording.episode and r.recorded_at < recording.recorded_at]
        if hold_out == "call":
            earlier = [r for r in earlier if r.key != recording.key]
        elif hold_out == "tool":
            earlier = [r for r in earlier if (r.server, r.tool) != (recording.server, recording.tool)]
        return [example_of(r, with_tool=True) for r in earlier]


def example_of(recording: Recording, *, with_tool: bool = False) -> Example:
    return Example(arguments=recording.arguments, result=recording.result,
                   error=recording.error.model_dump() if recording.error else None,
                   tool=recording.tool if with_tool else None)


def live_answer(recording: Recording) -> dict[str, Any]:
    """The recorded answer as the metrics take it: a `CallToolResult` dict or `{"error": {...}}`."""
    if recording.error is not None:
        return {"error": recording.error.model_dump()}
    assert recording.result is not None
    return recording.result


def open_store(directory: Path) -> DiskStore:
    if not (directory / "cache.db").is_file():
        raise FidelityInputError(f"no recording store at {directory} (give --store DIR or --config FILE)")
    return DiskStore(directory)


def load_world(directory: Path, server: str | None = None, store: CacheStore | None = None) -> RecordedWorld:
    """Read every recording (of `server`, when given) and the tool lists the store kept: the diskcache store at
    `directory`, or `store` when given (a config's Redis store; the caller closes it)."""
    from simgate.gateway.cache.cassette import collect

    given = store
    store = given if given is not None else open_store(directory)
    where = given.describe() if given is not None else str(directory)
    try:
        everything, _ = collect(store)
        if not everything:
            raise FidelityInputError(f"the store at {where} holds no recorded call; record some first "
                                     "(gateway.record: all, or X-Simgate-Mode with record on)")
        known = sorted({r.server for r in everything})
        if server is not None and server not in known:
            raise FidelityInputError(f"nothing recorded for server {server!r} in {where} "
                                     f"(recorded servers: {', '.join(known)})")
        recordings = [r for r in everything if server is None or r.server == server]
        tools: dict[tuple[str, str], ToolSpec] = {}
        for name in sorted({r.server for r in recordings}):
            for definition in store.load_tools(name):
                tools[(name, definition.get("name", ""))] = ToolSpec.from_mcp(definition)
    finally:
        if given is None:
            store.close()
    recordings.sort(key=lambda r: (r.recorded_at, r.server, r.tool, r.key, r.episode, r.position))
    by_tool: dict[tuple[str, str], list[Recording]] = {}
    for recording in recordings:
        by_tool.setdefault((recording.server, recording.tool), []).append(recording)
    return RecordedWorld(store=str(directory), recordings=recordings, tools=tools, by_tool=by_tool)
