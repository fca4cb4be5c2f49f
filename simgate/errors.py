"""The one base of every error simgate raises on purpose for a user to read.

Here, in the base layer, because the errors it is the base of live in every layer (a sandbox that cannot
run, a simulator that failed, a config that cannot be used, a runner's bad tasks file) and imports only
point down. The `simgate` command turns any `SimgateError` into one line on stderr and exit code 2
(`gateway.cli.guarded`); the gateway turns its own (`gateway.errors.GatewayError`, also an `MCPError`)
into JSON-RPC errors. Exceptions used for control flow inside one module stay private and do not derive
from it.
"""

from __future__ import annotations


class SimgateError(Exception):
    """An expected failure, with a message meant to be shown as it is: what is wrong and where."""


class UsageError(SimgateError):
    """Bad input to a command (an argument, a file it names), found before or while it runs."""


class Unreachable(SimgateError):
    """A service the command needs (the gateway, an LLM endpoint, an engine) could not be reached."""
