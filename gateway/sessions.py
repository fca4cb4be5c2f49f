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

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_SESSIONS = 10_000
HISTORY = 20


@dataclass
class SessionState:
    mode: str | None = None
    positions: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def state_key(name: str | None, client_session: str | None) -> str | None:
    """Where a call's run state lives: its connection's use of a name (or the name alone, sessionless)."""
    if client_session is None:
        return name
    return f"{client_session}\x00{name or ''}"


class Sessions:
    """Bounded (least recently used sessions are forgotten first)."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self._limit = limit

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
        state = self.get(session_id)
        if state is not None:
            state.history = [*state.history[-(HISTORY - 1):], entry]

    def modes(self) -> dict[str, str]:
        return {session: state.mode for session, state in self._states.items() if state.mode}
