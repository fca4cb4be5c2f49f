"""Requests sent on an upstream's transport beside the SDK session, their answers taken off the stream
before the session sees them.

The gateway forwards a `tools/call` as it came and hands the client the result as it comes back, so
the session's per-request machinery (a memory stream, tracing, typed models per request) is pure cost
on the hot path: about a third of the gateway's own CPU per call (benchmarks/gateway_latency.py).
Everything else -- the handshake, lists, pings, progress, server-to-client requests, notifications --
stays with the SDK's `ClientSession` on the same transport. Ids are integers from 2**40 up, a range
the session (which counts from 0) never reaches, so an answer can only be taken by whoever asked.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:  # the SDK's stream protocols live in a private module: typing only (see simgate.private_apis)
    from mcp.shared._stream_protocols import WriteStream

logger = logging.getLogger("simgate.upstream")

FIRST_ID = 1 << 40
_CANCEL_WRITE_TIMEOUT = 1.0


class _Waiter:
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: dict[str, Any] | types.ErrorData | None = None


class RawCalls:
    """The raw requests in flight on one transport."""

    def __init__(self, write: WriteStream[SessionMessage]) -> None:
        self._write = write
        self._ids = itertools.count(FIRST_ID)
        self._waiting: dict[int, _Waiter] = {}
        self._closed: str | None = None

    async def request(self, method: str, params: Mapping[str, Any] | None, timeout: float) -> dict[str, Any]:
        """The upstream's result; its error as `MCPError` (code unchanged); `REQUEST_TIMEOUT` after `timeout`
        seconds and `CONNECTION_CLOSED` when the transport ends first -- as the SDK session raises them."""
        if self._closed is not None:
            raise MCPError(code=types.CONNECTION_CLOSED, message=self._closed)
        request_id = next(self._ids)
        waiter = self._waiting[request_id] = _Waiter()
        message = types.JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method,
                                       **({"params": dict(params)} if params else {}))
        try:
            try:
                await self._write.send(SessionMessage(message))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed") from None
            with anyio.move_on_after(timeout) as clock:
                await waiter.done.wait()
            if clock.cancelled_caught:
                await self._cancel_upstream(request_id, f"timed out after {timeout:g}s")
                raise MCPError(code=types.REQUEST_TIMEOUT, message=f"Request {method!r} timed out")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._cancel_upstream(request_id, "caller cancelled")
            raise
        finally:
            self._waiting.pop(request_id, None)
        outcome = waiter.outcome
        if isinstance(outcome, types.ErrorData):
            raise MCPError.from_error_data(outcome)
        assert outcome is not None
        return outcome

    def take(self, item: SessionMessage | Exception) -> bool:
        """Whether `item` answers a raw request (then it is delivered here, not to the session)."""
        if isinstance(item, Exception):
            return False
        message = item.message
        if not isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            return False
        request_id = message.id
        if isinstance(request_id, str) and request_id.isdigit():  # a server that echoes ids as strings
            request_id = int(request_id)
        if not isinstance(request_id, int) or request_id < FIRST_ID:
            return False
        waiter = self._waiting.get(request_id)
        if waiter is not None:  # else a late answer to a request given up on: dropped
            waiter.outcome = message.result if isinstance(message, types.JSONRPCResponse) else message.error
            waiter.done.set()
        return True

    def only_waiting(self) -> int | None:
        """The id of the one request in flight, if exactly one is."""
        return next(iter(self._waiting)) if len(self._waiting) == 1 else None

    @property
    def closed(self) -> bool:
        """The transport has ended: a request now would fail unsent."""
        return self._closed is not None

    def close(self, reason: str) -> None:
        """The transport ended: every request in flight fails now, and later ones at once."""
        self._closed = reason
        for waiter in self._waiting.values():
            waiter.outcome = types.ErrorData(code=types.CONNECTION_CLOSED, message=reason)
            waiter.done.set()

    async def _cancel_upstream(self, request_id: int, reason: str) -> None:
        """The spec's courtesy `notifications/cancelled`, so the server stops working on it."""
        notification = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled",
                                                  params={"requestId": request_id, "reason": reason})
        with anyio.move_on_after(_CANCEL_WRITE_TIMEOUT):
            try:
                await self._write.send(SessionMessage(notification))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
