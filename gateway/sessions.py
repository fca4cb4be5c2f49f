"""Per-session state the pipeline needs: the session's mode, its call positions, its recent calls.

Two things are called a session here. A session *name* (`X-Simgate-Session`, `_meta["simgate/session"]`,
else the MCP session id) names what is recorded and what a replay reads; modes set with
`simgate mode set --session NAME` belong to it. The *state* of a run — sequential replay positions and
the history the simulator is shown — belongs to one client connection (its MCP session) using that
name: a fresh connection that names recorded session S starts at S's first position, and sees none of
the calls earlier connections made under any name. A client without an MCP session (the sessionless
2026-07-28 era) has only the name to go by.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.config.execution import Mode

MAX_SESSIONS = 10_000
HISTORY = 20
# A call kept in a session's history is shown to the simulator as context; past this size only the
# start of its answer is kept (memory stays bounded however large the answers are).
HISTORY_ENTRY_CHARS = 16_384


@dataclass
class SessionState:
    mode: Mode | None = None
    positions: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def state_key(name: str | None, client_session: str | None) -> str | None:
    """Where a call's run state lives: its connection's use of a name (or the name alone, sessionless)."""
    if client_session is None:
        return name
    return f"{client_session}\x00{name or ''}"


class Sessions:
    """Bounded (least recently used sessions are forgotten first; a connection's state when it ends).

    `keep_history`: the calls of a session are kept only for a simulator to be shown; a gateway without
    one keeps none (no memory or CPU spent per call on a history nobody reads)."""

    def __init__(self, limit: int = MAX_SESSIONS, keep_history: bool = True) -> None:
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self._limit = limit
        self.keep_history = keep_history

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
