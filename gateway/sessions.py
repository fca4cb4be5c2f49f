"""Per-session state the pipeline needs: the session's mode, its call positions, its recent calls.

Two things are called a session here. A session *name* (`X-Simgate-Session`, `_meta["simgate/session"]`,
else the MCP session id) names what is recorded and what a replay reads; modes set with
`simgate mode set --session NAME` belong to it. The *state* of a run — sequential replay positions and
the history the simulator is shown — belongs to one client connection (its MCP session) using that
name: a fresh connection that names recorded session S starts at S's first position, and sees none of
the calls earlier connections made under any name. A client without an MCP session (the sessionless
2026-07-28 era) has only the name to go by.

On a cluster (store backend redis) the state a name alone keys is shared (`SharedRunState`): any
gateway continues the run. A connection's state stays in its process, since the MCP session that
carries it is pinned to one gateway anyway.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from simgate.gateway.config.execution import Mode
from simgate.gateway.errors import InvalidSessionName

MAX_SESSIONS = 10_000
# Characters of a session name: every name a client gives is kept (up to MAX_SESSIONS of them), so its size
# is what bounds their memory; a name is an id (a trajectory's, a test's), never a payload.
MAX_NAME_CHARS = 512
HISTORY = 20
# A call kept in a session's history is shown to the simulator as context; past this size only the
# start of its answer is kept (memory stays bounded however large the answers are).
HISTORY_ENTRY_CHARS = 16_384


@dataclass
class SessionState:
    mode: Mode | None = None
    positions: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


class SharedRunState(Protocol):
    """Run state kept outside the process (e.g. `gateway.cache.redis_state.RedisRunState`)."""

    async def next_position(self, state_key: str, key: str) -> int: ...

    async def remember(self, state_key: str, entry: dict[str, Any], keep: int) -> None: ...

    async def history(self, state_key: str) -> list[dict[str, Any]]: ...


def state_key(name: str | None, client_session: str | None) -> str | None:
    """Where a call's run state lives: its connection's use of a name (or the name alone, sessionless)."""
    if client_session is None:
        return name
    return f"{client_session}\x00{name or ''}"


def checked_name(value: object, where: str) -> str | None:
    """A session name as a client gave it (`where`: in which field), refused precisely when it is no string or
    over MAX_NAME_CHARS; the name itself is never repeated back (it may be megabytes)."""
    if value is None or isinstance(value, str) and len(value) <= MAX_NAME_CHARS:
        return value
    what = f"{len(value)} characters; at most {MAX_NAME_CHARS} are taken" if isinstance(value, str) \
        else f"a JSON {_json_kind(value)}; it must be a string"
    raise InvalidSessionName(f"the session name in {where} is {what}", data={"field": where})


def _json_kind(value: object) -> str:
    kinds = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}
    return kinds.get(type(value), type(value).__name__)


class Sessions:
    """Bounded (least recently used sessions are forgotten first; a connection's state when it ends).

    `keep_history`: the calls of a session are kept only for a simulator to be shown; a gateway without
    one keeps none (no memory or CPU spent per call on a history nobody reads)."""

    def __init__(self, limit: int = MAX_SESSIONS, keep_history: bool = True,
                 shared: SharedRunState | None = None) -> None:
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self._limit = limit
        self.keep_history = keep_history
        self._shared = shared

    def _is_shared(self, session_id: str | None) -> bool:
        # A connection's state key holds a NUL (see `state_key`); a name alone does not.
        return self._shared is not None and session_id is not None and "\x00" not in session_id

    async def take_position(self, session_id: str | None, key: str) -> int:
        """The call's position in its session's sequence for `key` (then the next one's)."""
        if self._is_shared(session_id):
            assert self._shared is not None and session_id is not None
            return await self._shared.next_position(session_id, key)
        return self.next_position(session_id, key)

    async def add_to_history(self, session_id: str | None, entry: dict[str, Any]) -> None:
        if not self.keep_history:
            return
        if self._is_shared(session_id):
            assert self._shared is not None and session_id is not None
            await self._shared.remember(session_id, bounded_entry(self.prepare(entry)), HISTORY)
            return
        self.remember(session_id, entry)

    async def history(self, session_id: str | None) -> list[dict[str, Any]]:
        if self._is_shared(session_id):
            assert self._shared is not None and session_id is not None
            return await self._shared.history(session_id)
        state = self._states.get(session_id) if session_id is not None else None
        return list(state.history) if state is not None else []

    def prepare(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A history entry as it may be kept (subclasses redact it)."""
        return entry

    def get(self, session_id: str | None) -> SessionState | None:
        if session_id is None:
            return None
        state = self._states.get(session_id)
        if state is None:
            state = self._states[session_id] = SessionState()
            while len(self._states) > self._limit:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(session_id)
        return state

    def next_position(self, session_id: str | None, key: str) -> int:
        state = self.get(session_id)
        if state is None:
            return 0
        position = state.positions.get(key, 0)
        state.positions[key] = position + 1
        return position

    def remember(self, session_id: str | None, entry: dict[str, Any]) -> None:
        if not self.keep_history:
            return
        state = self.get(session_id)
        if state is not None:
            state.history = [*state.history[-(HISTORY - 1):], bounded_entry(entry)]

    def forget_connection(self, client_session: str) -> None:
        """A client connection ended: its run state goes with it (modes set by name stay)."""
        prefix = f"{client_session}\x00"
        for key in [key for key in self._states if key.startswith(prefix)]:
            del self._states[key]

    def modes(self) -> dict[str, Mode]:
        return {session: state.mode for session, state in self._states.items() if state.mode}


def bounded_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry, or, when its answer is larger than HISTORY_ENTRY_CHARS, the entry with only the start
    of the answer's JSON as text (said so)."""
    result = entry.get("result")
    if result is None:
        return entry
    text = json.dumps(result, ensure_ascii=False, default=str)
    if len(text) <= HISTORY_ENTRY_CHARS:
        return entry
    cut = f"{text[:HISTORY_ENTRY_CHARS]}… [answer cut: {len(text) - HISTORY_ENTRY_CHARS} more characters]"
    return {**entry, "result": {"content": [{"type": "text", "text": cut}], "isError": bool(result.get("isError"))}}
