"""The downstream side of an upstream request, so the upstream can talk back to whoever asked.

An upstream's sampling, elicitation and roots requests, and its progress, are routed to the
client request that caused them; the downstream layer implements this protocol for each request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Origin(Protocol):
    def supports(self, method: str) -> bool:
        """Whether the client behind this request can answer a server-to-client `method`."""
        ...

    def wants_progress(self) -> bool:
        """Whether the client asked for progress of this request (then the upstream is asked for it too)."""
        ...

    async def request(self, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Send a server-to-client request (sampling, elicitation, roots) to the client."""
        ...

    async def notify(self, notification: Any) -> None:
        """Send a notification (a log message) on this request's own stream."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Forward progress of the upstream request to the client, if it asked for progress."""
        ...
