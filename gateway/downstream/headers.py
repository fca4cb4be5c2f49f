"""uvicorn's HTTP protocol with a deadline on a request's headers, which uvicorn itself lacks.

uvicorn closes an idle keep-alive connection, but a connection that sends nothing, or headers that
never end, is held for ever: with `max_connections` in place, a few such clients would lock everyone
else out. Here the headers of each request must be in within `header_timeout` seconds of the
connection's start (for its first request) or of the request's first byte; else the connection is
closed. The body has its own deadline (`BoundedBodies`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("simgate.downstream")


def header_deadline_protocol(timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting."""

    class HeaderDeadline(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
                logger.warning("closed a connection from %s: no complete request headers within %gs", client, timeout)
                self.transport.close()

    return HeaderDeadline
