"""What a run-time mode setting may name (`PUT`/`DELETE /admin/modes`, `simgate mode set|clear`).

A setting is keyed by exactly one of: nothing (the gateway default), a server, a server and one of its tools, or
a session. A server or tool name the gateway does not know would be stored and never apply (a call to an
unlisted tool is refused before its mode matters), so such a name is refused, with the nearest known names.
Session names are not checked: a session's mode is set before its first call (`X-Simgate-Session`), so no
list of them exists to check against.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from typing import Literal

from pydantic import BaseModel

from simgate.gateway.errors import InvalidMode
from simgate.gateway.naming import exposed_names

SUGGESTIONS = 3

# A server's tool names as the gateway serves calls from them now; None: not known at the moment.
ToolNames = Callable[[str], list[str] | None]


class UnknownName(BaseModel):
    kind: Literal["server", "tool"]
    name: str
    server: str | None  # the tool's server
    suggestions: list[str]


class UnknownTarget(InvalidMode):
    """A mode setting names a server or tool the gateway does not know (`data["unknown"]` lists each)."""

    def __init__(self, message: str, unknown: list[UnknownName]) -> None:
        super().__init__(message, data={"unknown": [name.model_dump() for name in unknown]})


class ModeNotSet(InvalidMode):
    """`DELETE` of a run-time setting that is not there."""


def nearest(name: str, known: Collection[str]) -> list[str]:
    return difflib.get_close_matches(name, list(known), n=SUGGESTIONS, cutoff=0.6)


def did_you_mean(suggestions: list[str]) -> str:
    return f" (did you mean {' or '.join(map(repr, suggestions))}?)" if suggestions else ""


def check_shape(*, server: str | None, tool: str | None, session: str | None, servers: Collection[str],
                tool_names: ToolNames) -> None:
    """The setting names one level: a session alone, or a tool with its server."""
    if session is not None and (server is not None or tool is not None):
        # Stored under the session alone, the server and tool would be silently dropped.
        raise InvalidMode("a session's mode applies to all of its calls: give the session alone, without a "
                          "server or tool", data={"session": session})
    if tool is not None and server is None:
        listing = [name for name in servers if tool in (tool_names(name) or ())]
        hint = f" (listed by {', '.join(map(repr, listing))})" if listing else ""
        raise InvalidMode(f"a tool's mode needs its server{hint}", data={"tool": tool, "servers": listing})


def check_target(*, server: str | None, tool: str | None, servers: Collection[str], disabled: Collection[str],
                 tool_names: ToolNames, state_of: Callable[[str], str]) -> list[str]:
    """Refuse a setting naming a server or tool the gateway does not know; return what the client should be told
    about one that is accepted all the same (warnings)."""
    if server is None:
        return []
    if server not in servers:
        why = " (disabled in the config)" if server in disabled else did_you_mean(nearest(server, servers))
        raise UnknownTarget(f"unknown server {server!r}{why}",
                            [UnknownName(kind="server", name=server, server=None, suggestions=nearest(server, servers))])
    if tool is None:
        return []
    listed = tool_names(server)
    if listed is None:
        # Down with no tool list recorded: the tool may well be listed once the server is up, and refusing
        # would keep a mode from being set ahead of the server's start (e.g. replay of a server not started
        # yet). Accepted, and said so, since nothing could check the name.
        return [f"tool {tool!r} was not checked: the tool list of server {server!r} is not known "
                f"({state_of(server)}, none recorded)"]
    if tool in listed:
        return []
    suggestions = _suggest_tool(server, tool, listed)
    state = state_of(server)
    where = "" if state == "ready" else f"; the server is {state}: its recorded tool list was checked"
    raise UnknownTarget(f"unknown tool {tool!r} on server {server!r}{did_you_mean(suggestions)}{where}",
                        [UnknownName(kind="tool", name=tool, server=server, suggestions=suggestions)])


def _suggest_tool(server: str, tool: str, listed: list[str]) -> list[str]:
    # The likeliest slip is the name an agent sees on the aggregate `/mcp` endpoint (`fx__echo`).
    exposed = exposed_names(server, listed).get(tool)
    return [exposed] if exposed is not None else nearest(tool, listed)


def not_set(*, server: str | None, tool: str | None, session: str | None, set_here: Collection[str],
            configured: str) -> ModeNotSet:
    """The error of a `DELETE` that would drop nothing; `set_here`: the names set at run time at that level."""
    if session is not None:
        what = f"session {session!r}"
        name = session
    elif tool is not None:
        what = f"tool {tool!r} of server {server!r}"
        name = tool
    elif server is not None:
        what = f"server {server!r}"
        name = server
    else:
        return ModeNotSet(f"no run-time default mode is set (the config's {configured!r} applies)")
    return ModeNotSet(f"no run-time mode is set for {what}{did_you_mean(nearest(name, set_here))}")
