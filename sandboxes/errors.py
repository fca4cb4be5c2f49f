"""The sandbox layer's errors (here, below every module that raises them)."""

from __future__ import annotations

from simgate.errors import SimgateError


class SandboxUnavailable(SimgateError):
    """The configured backend cannot run on this machine, or cannot run this server; the message says why."""


class DiskCapExceeded(SimgateError):
    """A sandboxed server holds more than `limits.disk_mb` in a directory it writes to; it is stopped."""
