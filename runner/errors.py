"""Typed errors of the runner. Each message is meant to be shown to a user as it is (one line, no traceback)."""

from __future__ import annotations

from simgate.errors import SimgateError


class RunnerError(SimgateError):
    """Base of every error the runner raises on purpose."""


class TaskFileError(RunnerError):
    """A tasks file that cannot be used; the message names the file and the line."""


class OutputFileError(RunnerError):
    """An output file that cannot be resumed or written."""


class GatewayUnreachable(RunnerError):
    """The gateway's MCP endpoint could not be reached or did not speak MCP."""


class LLMUnreachable(RunnerError):
    """The OpenAI-compatible endpoint could not be reached, or refused the request for good."""


class AgentError(RunnerError):
    """The agent could not go on (an unusable model answer, a framework failure)."""


class LLMRequestRejected(AgentError):
    """The LLM endpoint answered a request with an HTTP error status (e.g. a schema its grammar
    compiler cannot take, or a malformed tool call it could not parse)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the LLM answered HTTP {status}: {message}")
        self.status = status


class DependencyMissing(RunnerError):
    """An optional dependency (e.g. the OpenAI Agents SDK) is not installed."""
