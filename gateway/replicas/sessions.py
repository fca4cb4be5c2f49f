"""Session ids that say which replica holds the session."""

from __future__ import annotations

from typing import Any

from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from simgate.private_apis import session_owners, session_transports


class TaggedSessionManager(StreamableHTTPSessionManager):
    """The SDK's manager, but a new session's id starts with `prefix` (`r1-…`), so that any replica that
    receives a request of the session knows where to send it, with no shared table to keep."""

    def __init__(self, *args: Any, prefix: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefix = prefix

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        # Called under the manager's creation lock, before the session's first answer names its id.
        transport = super()._admit_session(requestor)
        if transport is None or transport.mcp_session_id is None:
            return transport
        old = transport.mcp_session_id
        new = transport.mcp_session_id = f"{self._prefix}{old}"
        sessions, owners = session_transports(self), session_owners(self)
        sessions[new] = sessions.pop(old)
        if old in owners:
            owners[new] = owners.pop(old)
        return transport
