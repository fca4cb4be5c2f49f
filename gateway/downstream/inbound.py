"""A POST body is checked here, once, before either way of answering it (the SDK's transport or the
direct path) takes it, so that both give the same, right answer to a malformed one.

The SDK's handshake-era transport parses with `pydantic_core.from_json`, which turns `NaN`, `Infinity`
and a number beyond a double's range (`1e999`) into floats that reach the upstream as `null`, and
takes a message whose `id` is no request id (`1.5`, `null`, `1e999`) for a notification: 202, and no
answer ever. The 2026-era entry parses with `json.loads`, which also takes lone surrogates and nesting
up to the recursion limit, to fail later (HTTP 500, error code 0). So here:

- a body that is not JSON, or has `NaN`/`Infinity`, a lone surrogate, nesting deeper than the SDK's
  parser allows (about 200 levels) or a number out of range is answered -32700 Parse error (400);
- in the handshake era, a message with an `id` that is no request id is answered -32602, as that
  transport answers every message it cannot validate (the 2026-era entry answers -32600 itself);
- in the handshake era, a JSON-RPC batch (an array) is answered -32602 too, saying batches are not taken.

Only a body the SDK would parse is read: one over the size limit, or with headers the SDK refuses
(Host/Origin, Accept, Content-Type, an unknown or ended session), is passed on unread, so the SDK's
own status answers it. The parsed message travels on for the direct path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pydantic_core
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport, check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types import INVALID_PARAMS, PARSE_ERROR, ErrorData, JSONRPCError, JSONRPCNotification, jsonrpc_message_adapter
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from simgate.private_apis import session_owners, session_transports

# A float literal beyond a double's range has a 3-digit exponent or 309+ digits; nothing else can
# parse to infinity, so most bodies are never walked.
_MAYBE_HUGE = re.compile(rb"[0-9][eE][+-]?[0-9]{3}|[0-9]{309}")


@dataclass(frozen=True)
class Inbound:
    """A POST the SDK (or the direct path) is to answer."""

    receive: Receive  # replays what was read here
    message: dict[str, Any] | None = None  # its body, when read here and it is one JSON object
    transport: StreamableHTTPServerTransport | None = None  # its handshake-era session's, when it names one


class Rejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InboundCheck:
    """The check in front of one MCP endpoint's session manager."""

    def __init__(self, manager: StreamableHTTPSessionManager, security: TransportSecuritySettings,
                 max_body_bytes: int) -> None:
        self._manager = manager
        self._security = TransportSecurityMiddleware(security)
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Inbound | None:
        """The POST to pass on; or None when it was answered here."""
        request = Request(scope)
        version = request.headers.get("mcp-protocol-version")
        modern = version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS
        transport = None if modern else self._transport(request)
        if not await self._sdk_parses(request, modern, transport):
            return Inbound(receive)
        body, receive = await peek_body(receive, self._limit)
        if body is None:
            return Inbound(receive)  # too large: the SDK's body limit answers (413)
        try:
            message = parse(body, modern)
        except Rejected as rejection:
            await rejection_answer(rejection, transport)(scope, receive, send)
            return None
        return Inbound(receive, message if isinstance(message, dict) else None, transport)

    def _transport(self, request: Request) -> StreamableHTTPServerTransport | None:
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            return None
        transport = live_transports(self._manager).get(session_id)
        if transport is None or transport.is_terminated:
            return None
        # Another principal (API key) than the session's: the SDK refuses it (404), so neither is it read here
        # nor answered on the direct path.
        user = request.scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if requestor != session_owners(self._manager).get(session_id):
            return None
        idle = transport.idle_scope
        return None if idle is not None and idle.cancel_called else transport

    async def _sdk_parses(self, request: Request, modern: bool, transport: StreamableHTTPServerTransport | None) -> bool:
        """Whether the SDK would get as far as parsing this POST's body (its checks, in any order)."""
        try:  # as the SDK's body limit reads it
            if int(request.headers.get("content-length", "0")) > self._limit:
                return False
        except ValueError:
            pass
        has_json, has_sse = check_accept_headers(request)
        if not has_json or not (has_sse or self._manager.json_response):
            return False
        if not modern:
            if not _sdk_content_type(request):
                return False
            if request.headers.get(MCP_SESSION_ID_HEADER) is None:
                limit = self._manager.max_sessions
                if limit is not None and len(live_transports(self._manager)) >= limit:
                    return False
            elif transport is None:
                return False
        return await self._security.validate_request(request, is_post=True) is None


def parse(body: bytes, modern: bool) -> Any:
    """The body as JSON, by the SDK's parser with the rules above; `Rejected` when it breaks one."""
    try:
        message = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise Rejected(PARSE_ERROR, f"Parse error: {exc}") from None
    if _MAYBE_HUGE.search(body) is not None and (where := _non_finite(message, "$")) is not None:
        raise Rejected(PARSE_ERROR, f"Parse error: number out of range at {where}")
    if not modern and isinstance(message, list):
        # Protocol 2025-03-26 allowed batches; the SDK's transport takes none, and its answer (the same code)
        # is a dump of four validation errors that does not say so.
        raise Rejected(INVALID_PARAMS, "Validation error: JSON-RPC batches are not supported; send one message "
                       "per POST (protocol 2025-06-18 dropped batching)")
    if not modern and isinstance(message, dict) and "id" in message and not _plain_id(message["id"]):
        try:
            parsed = jsonrpc_message_adapter.validate_python(message, by_name=False)
        except ValidationError:
            parsed = None  # the SDK answers it (-32602)
        if isinstance(parsed, JSONRPCNotification):
            raise Rejected(INVALID_PARAMS, "Validation error: a request id must be an integer or a string, "
                           f"not {message['id']!r}")
    return message


def _plain_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _non_finite(value: Any, path: str) -> str | None:
    """The JSON path of the first number in `value` that is not finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items: Any = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for item_path, item in items:
        if (found := _non_finite(item, item_path)) is not None:
            return found
    return None


def _sdk_content_type(request: Request) -> bool:
    """`StreamableHTTPServerTransport._check_content_type`, exactly (case-sensitive, comma-separated)."""
    content_type = request.headers.get("content-type", "")
    return any(part.strip() == "application/json" for part in content_type.split(";")[0].split(","))


def rejection_answer(rejection: Rejected, transport: StreamableHTTPServerTransport | None) -> Response:
    """The error as the SDK's transports write theirs (400 for both codes, in both eras)."""
    error = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=rejection.code, message=rejection.message))
    headers = {}
    if transport is not None and transport.mcp_session_id:
        headers[MCP_SESSION_ID_HEADER] = transport.mcp_session_id
    return Response(error.model_dump_json(by_alias=True, exclude_unset=True), status_code=400,
                    media_type="application/json", headers=headers)


def live_transports(manager: StreamableHTTPSessionManager) -> dict[str, StreamableHTTPServerTransport]:
    """The manager's sessions (it keeps them privately: see `simgate.private_apis`)."""
    return session_transports(manager)


async def peek_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """The request body when it is complete within `limit` bytes (else None), and a `receive` that
    replays what was read before going on with the original."""
    taken: list[Message] = []
    size = 0
    complete = False
    while True:
        message = await receive()
        taken.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit:
            break
        if not message.get("more_body", False):
            complete = True
            break

    async def replay() -> Message:
        return taken.pop(0) if taken else await receive()

    body = b"".join(m.get("body", b"") for m in taken if m["type"] == "http.request") if complete else None
    return body, replay
