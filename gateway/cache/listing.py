"""Reading a store the way `simgate cache ls|show` shows it: one function per view, shared by the CLI
and the page (`/ui`), so both always show the same recordings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from simgate.gateway.cache.records import Recording
from simgate.gateway.errors import CorruptRecording, GatewayError

logger = logging.getLogger("simgate.cache")

if TYPE_CHECKING:  # the CLI imports this module at start; the store (diskcache) only when a command runs
    from simgate.gateway.cache.store import CacheStore


class KeyLookupError(GatewayError):
    """A key (or prefix) that names no recording, or more than one key."""


def iter_groups(store: CacheStore, server: str | None = None, tool: str | None = None) -> Iterator[list[Recording]]:
    """Each key's recordings, filtered, in the store's order (one key in memory at a time)."""
    for key in list(store.keys()):
        try:
            group = store.get(key)
        except CorruptRecording as exc:  # one bad value hides no other key; named, so it can be deleted
            logger.warning(exc.message)
            continue
        if not group:
            continue
        if (server is not None and group[0].server != server) or (tool is not None and group[0].tool != tool):
            continue
        yield group


def order(server: str, tool: str, recorded_at: str, key: str) -> tuple[str, str, str, str]:
    """How keys are listed: by server, tool, first recording time and key."""
    return server, tool, recorded_at, key


def recording_groups(store: CacheStore, server: str | None = None, tool: str | None = None) -> list[list[Recording]]:
    """Each key's recordings, filtered, ordered by server, tool and first recording time."""
    return sorted(iter_groups(store, server, tool), key=lambda g: order(g[0].server, g[0].tool, g[0].recorded_at,
                                                                         g[0].key))


def ls_row(group: list[Recording]) -> dict[str, Any]:
    """One key as `simgate cache ls --json` lists it."""
    first = group[0]
    return {"server": first.server, "tool": first.tool, "key": first.key, "recordings": len(group),
            "errors": sum(1 for r in group if r.is_error), "recorded_at": first.recorded_at,
            "arguments": first.arguments}


def per_tool(groups: Iterable[list[Recording]], now: float) -> list[dict[str, Any]]:
    """Counts per (server, tool), as `simgate cache stats --json` gives them under `per_tool`."""
    tools: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups:
        row = tools.setdefault((group[0].server, group[0].tool),
                               {"server": group[0].server, "tool": group[0].tool, "keys": 0, "recordings": 0,
                                "errors": 0, "expired": 0, "sequential_keys": 0, "last_recorded_at": ""})
        row["keys"] += 1
        row["recordings"] += len(group)
        row["errors"] += sum(1 for r in group if r.is_error)
        row["expired"] += sum(1 for r in group if r.expires_at is not None and r.expires_at < now)
        row["sequential_keys"] += len(group) > 1
        row["last_recorded_at"] = max(row["last_recorded_at"], *(r.recorded_at for r in group))
    return sorted(tools.values(), key=lambda row: (row["server"], row["tool"]))


def find_key(store: CacheStore, prefix: str) -> str:
    """The one recorded key starting with `prefix` (hex digits)."""
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise KeyLookupError(f"{prefix!r} is not a cache key (hex digits)")
    matches = [key for key in store.keys() if key.startswith(prefix)]
    if not matches:
        raise KeyLookupError(f"no recorded key starts with {prefix!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(m[:12] for m in matches)[:5])
        raise KeyLookupError(f"{prefix!r} is ambiguous: {len(matches)} keys start with it ({shown}...); "
                             "give more digits")
    return matches[0]


def show(store: CacheStore, prefix: str) -> dict[str, Any]:
    """The recordings of one key as `simgate cache show` prints them."""
    key = find_key(store, prefix)
    return {"key": key, "recordings": [r.model_dump(mode="json") for r in store.get(key)]}
