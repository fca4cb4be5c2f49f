"""Typed errors of the gateway, each knowing the JSON-RPC error it becomes on the wire."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from simgate.errors import SimgateError

# simgate's own server-error codes live in JSON-RPC's implementation-defined range.
UPSTREAM_UNAVAILABLE = -32001
UPSTREAM_TIMEOUT = -32002
REPLAY_MISS = -32003
NO_SIMULATOR = -32004
SIMULATION_FAILED = -32005
RATE_LIMITED = -32006
FORBIDDEN = -32007
RESULT_TOO_LARGE = -32008
INVALID_UPSTREAM_RESULT = -32009


class ConfigError(SimgateError):
    """A configuration file that cannot be used; the message names file, server and field."""


class GatewayError(MCPError, SimgateError):
    """An error the gateway itself raises for a request; it is an `MCPError`, so it reaches the client."""

    code_value: int = types.INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(self.code_value, message, data)


class UnknownServer(GatewayError):
    code_value = types.INVALID_PARAMS


class UnknownTool(GatewayError):
    code_value = types.INVALID_PARAMS


class InvalidArguments(GatewayError):
    code_value = types.INVALID_PARAMS


class UpstreamUnavailable(GatewayError):
    """The upstream is not running (starting, restarting, failed or disabled)."""

    code_value = UPSTREAM_UNAVAILABLE


class UpstreamTimeout(GatewayError):
    code_value = UPSTREAM_TIMEOUT


class ResultTooLarge(GatewayError):
    """An upstream's answer was over `max_result_bytes`: dropped as it was read, never held whole."""

    code_value = RESULT_TOO_LARGE


class InvalidUpstreamResult(GatewayError):
    """An upstream answered a tool call with something that is no `CallToolResult`: named here, precisely,
    rather than left to the SDK's generic "invalid result" when the answer is serialized."""

    code_value = INVALID_UPSTREAM_RESULT


class ReplayMiss(GatewayError):
    """Strict replay found no recording; the message names the nearest recorded calls."""

    code_value = REPLAY_MISS


class NoSimulator(GatewayError):
    code_value = NO_SIMULATOR


class SimulatorGated(NoSimulator):
    """The fidelity gate keeps this tool from the simulator (its measured fidelity does not clear the policy)."""


class SimulationFailed(GatewayError):
    code_value = SIMULATION_FAILED


class RateLimited(GatewayError):
    """Over a rate limit or quota; `data.retry_after` says when to try again (seconds)."""

    code_value = RATE_LIMITED


class InvalidMode(GatewayError):
    code_value = types.INVALID_PARAMS


class TooManySubscriptions(GatewayError):
    """A client session holds as many resource subscriptions as the gateway keeps for one session."""

    code_value = types.INVALID_REQUEST


class InvalidHoldout(GatewayError):
    code_value = types.INVALID_PARAMS


class InvalidSessionName(GatewayError):
    """A session name that is no string, or longer than the gateway keeps (`sessions.MAX_NAME_CHARS`)."""

    code_value = types.INVALID_PARAMS



class Forbidden(GatewayError):
    """The client's API key does not allow this server, tool, prompt or resource."""

    code_value = FORBIDDEN


class StoreUnavailable(GatewayError):
    """The shared store (Redis) cannot be reached now; the message names it without its password."""


class CorruptRecording(GatewayError):
    """A value in the recording store that is not a key's list of recordings (truncated, edited, written by
    another program): named by its key and left as it is, never replayed and never overwritten unseen."""
