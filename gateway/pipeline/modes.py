"""Choosing a call's mode, and routing the call to the executor of that mode.

Precedence, most specific first: the request (`_meta["simgate/mode"]` or `X-Simgate-Mode`), the
session, the tool, the server, the gateway default. Run-time settings (admin API, `simgate mode`)
sit above the config at each level.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from simgate.gateway.config.execution import Mode, mode_names
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import InvalidMode
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.sessions import Sessions


class ModeSettings(BaseModel):
    """Run-time mode settings, as the admin API shows and takes them."""

    default: Mode | None = None
    servers: dict[str, Mode] = Field(default_factory=dict)
    tools: dict[str, dict[str, Mode]] = Field(default_factory=dict, description="server -> tool -> mode")
    sessions: dict[str, Mode] = Field(default_factory=dict)


def check_mode(mode: str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise InvalidMode(f"unknown mode {mode!r}; expected one of {mode_names()}", data={"mode": mode}) from None


class ModeResolver:
    def __init__(self, config: GatewayConfig, sessions: Sessions) -> None:
        self._config = config
        self._sessions = sessions
        self.overrides = ModeSettings()

    def resolve(self, call: ToolCall) -> Mode:
        if call.mode:
            return check_mode(call.mode)
        state = self._sessions.get(call.session_id)
        if state is not None and state.mode:
            return state.mode
        server = self._config.servers.get(call.server)
        tool_override = self.overrides.tools.get(call.server, {}).get(call.tool)
        if tool_override:
            return tool_override
        if server is not None and (tool_mode := server.settings_for(call.tool).mode):
            return tool_mode
        if call.server in self.overrides.servers:
            return self.overrides.servers[call.server]
        if server is not None and server.mode:
            return server.mode
        return self.overrides.default or self._config.gateway.mode

    def set(self, mode: str, *, server: str | None = None, tool: str | None = None,
            session: str | None = None) -> None:
        mode = check_mode(mode)
        if session is not None:
            state = self._sessions.get(session)
            assert state is not None
            state.mode = mode
        elif tool is not None:
            if server is None:
                raise InvalidMode("a tool's mode needs its server", data={"tool": tool})
            self.overrides.tools.setdefault(server, {})[tool] = mode
        elif server is not None:
            self.overrides.servers[server] = mode
        else:
            self.overrides.default = mode

    def clear(self, *, server: str | None = None, tool: str | None = None, session: str | None = None) -> None:
        """Drop a run-time setting: that level follows the config (or the next level) again."""
        if session is not None:
            if session in self._sessions.modes():  # looked up without making a state for an unknown name
                state = self._sessions.get(session)
                assert state is not None
                state.mode = None
        elif tool is not None:
            if server is None:
                raise InvalidMode("a tool's mode needs its server", data={"tool": tool})
            tools = self.overrides.tools.get(server, {})
            tools.pop(tool, None)
            if not tools:
                self.overrides.tools.pop(server, None)
        elif server is not None:
            self.overrides.servers.pop(server, None)
        else:
            self.overrides.default = None

    def set_at_level(self, *, server: str | None = None, tool: str | None = None,
                     session: str | None = None) -> list[str]:
        """The names with a run-time setting at the level these name: sessions, the server's tools, servers
        (for the default: `["default"]` when one is set)."""
        if session is not None:
            return list(self._sessions.modes())
        if tool is not None:
            return list(self.overrides.tools.get(server or "", {}))
        if server is not None:
            return list(self.overrides.servers)
        return ["default"] if self.overrides.default is not None else []

    def is_set(self, *, server: str | None = None, tool: str | None = None, session: str | None = None) -> bool:
        """Whether a run-time setting is there to drop at this level."""
        name = session if session is not None else tool if tool is not None else server
        return (name if name is not None else "default") in self.set_at_level(server=server, tool=tool,
                                                                               session=session)

    def show(self) -> dict[str, object]:
        config_servers = {name: s.mode for name, s in self._config.servers.items() if s.mode}
        config_tools = {name: {tool: t.mode for tool, t in s.tool_settings.items() if t.mode}
                        for name, s in self._config.servers.items()}
        return {
            "default": self.overrides.default or self._config.gateway.mode,
            "servers": {**config_servers, **self.overrides.servers},
            "tools": {name: {**config_tools.get(name, {}), **self.overrides.tools.get(name, {})}
                      for name in set(config_tools) | set(self.overrides.tools)
                      if config_tools.get(name) or self.overrides.tools.get(name)},
            "sessions": self._sessions.modes(),
        }


class ChooseMode:
    """Stage: decide the call's mode (before rate limits and faults, which may depend on it)."""

    def __init__(self, resolver: ModeResolver) -> None:
        self._resolver = resolver

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        call.resolved_mode = self._resolver.resolve(call)
        call.provenance["mode"] = call.resolved_mode
        return await call_next(call)


class RouteByMode:
    """The last stage: hand the call to the executor of its mode."""

    def __init__(self, executors: Mapping[Mode, CallNext]) -> None:
        missing = set(Mode) - set(executors)
        if missing:  # a mode added to `Mode` without its executor fails at start, not on its first call
            raise ValueError(f"no executor for mode(s) {', '.join(sorted(missing))}")
        self._executors = dict(executors)

    async def __call__(self, call: ToolCall) -> CallResult:
        return await self._executors[call.resolved_mode or Mode.LIVE](call)
