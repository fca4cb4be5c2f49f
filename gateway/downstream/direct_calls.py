"""Answer a `tools/call`, `resources/read` or `prompts/get` POST in the request's own task, with one JSON body.

The SDK's streamable-HTTP transport passes every request through memory streams to a session task,
which spawns a handler task, whose answer travels back to the request the same way; with SSE framing
on top. For a call after which nothing can come back but its result, that machinery is about half of
the gateway's own cost per call (benchmarks/gateway_latency.py). So a POST is answered here, by the
same handler the SDK would run, when the SDK would answer it with exactly one JSON-RPC response:

- the check in front (`inbound`) read it: its headers are what the SDK's transport takes, its body is
  within the endpoint's limit and parsed, and it names a live handshake-era session;
- it is one JSON-RPC `tools/call`, `resources/read` or `prompts/get` request without a progress token;
- its session's client declared neither sampling, elicitation nor roots, so no server-to-client
  request and (see `RequestOrigin.notify`) no request-scoped notification can belong to it.

One JSON body also has no size limit in the SDK's client, which refuses an SSE event over 1 MiB: a
resource or prompt that big (an MCP App's single-file page) is read whole, as it would be over stdio.

Everything else goes to the SDK unchanged (a malformed body is refused in front of both, by
`inbound`), so its answers and errors stay the SDK's; `gateway.fast_paths: false` sends everything
there. A client's `notifications/cancelled` for a call answered here cancels it
(answered with the SDK's 2025-era `Request cancelled`), and such calls keep their session from
expiring as idle, as requests through the SDK do.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.streamable_http import REQUEST_CANCELLED, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data, progress_token_from_params
from mcp_types.methods import serialize_server_result, validate_client_request
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from simgate.gateway.downstream.inbound import Inbound

if TYPE_CHECKING:  # the server's module imports this one (through `origin`)
    from simgate.gateway.downstream.server import ProxyServer

logger = logging.getLogger("simgate.downstream")

STATE_KEY = "simgate_json_response"
_CAPABILITIES_WITH_REQUESTS = ("sampling", "elicitation", "roots")
_DIRECT_METHODS = ("tools/call", "resources/read", "prompts/get")  # requests answered by one result

InFlight = dict[tuple[str, int | str], anyio.CancelScope]


class DirectCalls:
    """The direct path of one MCP endpoint."""

    def __init__(self, manager: StreamableHTTPSessionManager, server: ProxyServer, longest_call: float) -> None:
        self._manager = manager
        self._server = server  # its registered `tools/call` handler answers; `server.clients`: the sessions it met
        self._longest_call = longest_call  # seconds one call may take: its session is kept at least that long
        self._in_flight: InFlight = {}

    async def __call__(self, scope: Scope, send: Send, inbound: Inbound) -> bool:
        """Whether the POST was answered here; if not, the SDK reads it from `inbound.receive` as it came."""
        message, transport = inbound.message, inbound.transport
        if message is None or transport is None or not transport.mcp_session_id:
            return False
        session_id = transport.mcp_session_id
        if message.get("method") == "notifications/cancelled":
            self._cancel(session_id, message)
            return False  # the SDK accepts it (202) as well
        client = self._server.clients.get(session_id)
        session = client.session if client is not None else None
        if session is None or not _direct_call(message, session):
            return False
        await self._answer(scope, inbound.receive, send, message, session, transport, Request(scope))
        return True

    async def _answer(self, scope: Scope, receive: Receive, send: Send, message: dict[str, Any],
                      session: ServerSession, transport: StreamableHTTPServerTransport, request: Request) -> None:
        session_id = transport.mcp_session_id or ""
        request_id = message["id"]
        key = (session_id, request_id)
        scope.setdefault("state", {})[STATE_KEY] = True
        reply: dict[str, Any] = {"error": {"code": REQUEST_CANCELLED, "message": "Request cancelled"}}
        with anyio.CancelScope() as cancel_scope:
            self._in_flight[key] = cancel_scope
            _hold(transport, self._manager.session_idle_timeout, self._longest_call)
            try:
                reply = {"result": await self._run_handler(message, session, request)}
            except Exception as exc:
                error = handler_exception_to_error_data(exc)
                if error is None:  # as the SDK's dispatcher answers an unexpected handler exception
                    logger.exception("handler for %r raised", message["method"])
                    error = types.ErrorData(code=0, message=str(exc))
                reply = {"error": error.model_dump(by_alias=True, mode="json", exclude_none=True)}
            finally:
                if self._in_flight.get(key) is cancel_scope:
                    del self._in_flight[key]
                _hold(transport, self._manager.session_idle_timeout, 0.0)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, **reply}, separators=(",", ":"), ensure_ascii=False)
        response = Response(body.encode(), media_type="application/json", headers={"mcp-session-id": session_id})
        await response(scope, receive, send)

    async def _run_handler(self, message: dict[str, Any], session: ServerSession, request: Request) -> dict[str, Any]:
        """What the SDK's `ServerRunner` does for such a request of a handshake-era session."""
        version = session.protocol_version
        method, params = message["method"], message.get("params")
        validate_client_request(method, version, params)
        entry = self._server.get_request_handler(method)
        if entry is None:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data=method)
        ctx: ServerRequestContext[Any, Any] = ServerRequestContext(
            session=session, lifespan_context=None, protocol_version=version, method=method, params=params,
            request_id=message["id"], request=request)
        result = await entry.handler(ctx, entry.params_type.model_validate(params or {}, by_name=False))
        if isinstance(result, types.ErrorData):
            raise MCPError.from_error_data(result)
        try:
            return serialize_server_result(method, version, result)
        except ValidationError:
            logger.exception("handler for %r returned an invalid result", method)
            raise MCPError(code=types.INTERNAL_ERROR, message="Handler returned an invalid result") from None

    def _cancel(self, session_id: str, message: dict[str, Any]) -> None:
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if isinstance(request_id, int | str) and (scope := self._in_flight.get((session_id, request_id))) is not None:
            scope.cancel()


def _direct_call(message: dict[str, Any], session: ServerSession) -> bool:
    """Whether the message is a `tools/call`, `resources/read` or `prompts/get` request without a progress
    token from a client that takes no server-to-client requests."""
    if not (message.get("jsonrpc") == "2.0" and message.get("method") in _DIRECT_METHODS
            and isinstance(message.get("id"), int | str) and not isinstance(message.get("id"), bool)):
        return False
    params = message.get("params")
    if not isinstance(params, dict) or progress_token_from_params(params) is not None:
        return False
    caps = session.client_capabilities
    return caps is not None and not any(getattr(caps, name, None) is not None for name in _CAPABILITIES_WITH_REQUESTS)


def _hold(transport: StreamableHTTPServerTransport, idle_timeout: float | None, seconds: float) -> None:
    """Keep the session from expiring as idle for `seconds` plus the idle timeout from now (a request
    through the SDK does the same: its session's idle countdown starts when it ends)."""
    idle_scope = transport.idle_scope
    if idle_timeout is None or idle_scope is None or idle_scope.cancel_called or math.isinf(idle_scope.deadline):
        return
    idle_scope.deadline = max(idle_scope.deadline, anyio.current_time() + seconds + idle_timeout)


def answered_directly(scope: Mapping[str, Any] | None) -> bool:
    """Whether the request of `scope` is answered here, with one JSON body (it has no stream of its own)."""
    state = scope.get("state") if scope is not None else None
    return bool(isinstance(state, dict) and state.get(STATE_KEY))
