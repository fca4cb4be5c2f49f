"""ASGI middleware: a request's body is read whole, within bounds, before any handler sees it.

- at most `max_bytes` (declared or sent): 413 at once;
- within `timeout` seconds of its headers: else 408, and the connection is closed, so a client that
  never finishes its body holds nothing for longer than that;
- bodies still arriving (sent in more than one piece) hold at most `max_pending` bytes together: a
  request that would go over is answered 503 at once. A small body (one piece, as every ordinary MCP
  request) never waits for this budget.

The handler then gets the body as one message, and the rest of the connection's messages (a
disconnect) as they come.
"""

from __future__ import annotations

import logging

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("simgate.downstream")


class BoundedBodies:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float, max_pending: int) -> None:
        self.app = app
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_pending = max_pending
        self._pending = 0  # bytes of the bodies being received right now, across requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            await _refuse(scope, receive, send, 413, f"request body over max_body_bytes ({self._max_bytes} bytes)")
            return
        body = await self._read(scope, receive, send)
        if body is None:
            return
        first: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return first.pop() if first else await receive()

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when the client was refused or left."""
        chunks: list[bytes] = []
        size = held = 0
        try:
            with anyio.move_on_after(self._timeout) as clock:
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None  # the client left
                    piece: bytes = message.get("body", b"")
                    more = bool(message.get("more_body", False))
                    size += len(piece)
                    if size > self._max_bytes:
                        await _refuse(scope, receive, send, 413,
                                      f"request body over max_body_bytes ({self._max_bytes} bytes)")
                        return None
                    if more or chunks:  # a body in pieces: it counts against the budget while it arrives
                        self._pending += len(piece)
                        held += len(piece)
                        if self._pending > self._max_pending:
                            logger.warning("refused a request: bodies being received hold %d bytes (limit %d)",
                                           self._pending, self._max_pending)
                            await _refuse(scope, receive, send, 503,
                                          "too many request bodies arriving at once; retry later")
                            return None
                    chunks.append(piece)
                    if not more:
                        break
        finally:
            self._pending -= held
        if clock.cancelled_caught:
            client = scope.get("client")
            logger.warning("closed a connection from %s: its request body did not arrive within %gs",
                           f"{client[0]}:{client[1]}" if client else "?", self._timeout)
            await _refuse(scope, receive, send, 408, f"request body not received within {self._timeout:g}s")
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    """Answer and close the connection: the rest of the body is not read."""
    response = JSONResponse({"error": message}, status_code=status, headers={"connection": "close"})
    await response(scope, receive, send)
