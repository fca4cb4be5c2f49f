"""The HTTP+SSE transport of protocol 2024-11-05, beside streamable HTTP.

Clients of that era, and current ones configured with an `sse` transport (the `mcp` SDK's `sse_client`, the
TypeScript SDK's `SSEClientTransport`), open `GET .../sse`, are told on that stream where to POST
(`.../messages/?session_id=...`), and hear every answer on the stream. The SDK's `SseServerTransport` speaks
it; the endpoint's own `ProxyServer` answers, so calls take the same pipeline, headers (`X-Simgate-Mode`, ...)
included. A session is named `sse-<id>` to the gateway (run state, notifications), as streamable-HTTP
sessions are by their `mcp-session-id`.

A replica (`serve --workers N`) tells its clients to POST to `.../messages/r<index>/`: the stream is held by
the replica that took the GET, and a POST that comes in to another one is passed to it by that tag (see
`replicas.forward`), as requests of streamable-HTTP sessions are by their tagged session ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from uuid import UUID

from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers, QueryParams
from starlette.types import Message, Receive, Scope, Send

from simgate.gateway.downstream.inbound import Rejected, parse, peek_body, rejection_answer
from simgate.private_apis import sse_sessions

if TYPE_CHECKING:  # the server's module imports this one
    from simgate.gateway.downstream.server import ProxyServer

SESSION_PREFIX = "sse-"
STATE_KEY = "simgate_legacy_session"


class LegacySse:
    """The HTTP+SSE transport of one MCP endpoint: its stream at `.../sse`, its messages at `message_path`."""

    def __init__(self, server: ProxyServer, message_path: str, security: TransportSecuritySettings,
                 max_body_bytes: int, replica_tag: str | None = None) -> None:
        self._server = server
        self._limit = max_body_bytes
        path = f"{message_path}{replica_tag}/" if replica_tag else message_path
        self._transport = SseServerTransport(path, security_settings=security, max_request_body_size=max_body_bytes)

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET .../sse`: one session, for as long as the client keeps the stream open (and held to the API key
        that opened it: see `auth.middleware.key_principal`)."""
        async with AsyncExitStack() as stack:
            try:
                read, write = await stack.enter_async_context(self._transport.connect_sse(scope, receive, send))
            except ValueError:
                return  # refused by the transport's Host/Origin check, which has answered
            await self._server.run(read, write, self._server.create_initialization_options())

    async def message(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST .../messages/?session_id=...`: a client message, answered (202) here and on the stream."""
        session = _query_session(scope)
        if session is not None:
            scope.setdefault("state", {})[STATE_KEY] = SESSION_PREFIX + session
        if scope["method"] == "POST":
            # Checked by the rules of `inbound`, as a streamable-HTTP POST is: the SDK's transport takes NaN and
            # numbers out of range, takes a request with a malformed id for a notification (202, and no answer
            # ever), and logs a traceback (at error level) for every body it cannot parse.
            body, receive = await peek_body(receive, self._limit)
            if body is not None:  # else too large: the transport's limit answers (413)
                try:
                    parse(body, modern=False)
                except Rejected as rejection:
                    await rejection_answer(rejection, None)(scope, receive, send)
                    return
        await self._transport.handle_post_message(scope, receive, _json_errors(send))

    def open_session_ids(self) -> set[str]:
        """The sessions whose stream is open (the transport keeps them privately)."""
        return {SESSION_PREFIX + uid.hex for uid in sse_sessions(self._transport)}


def _json_errors(send: Send) -> Send:
    """The transport refuses in plain text ("Could not find session"); the client is told in JSON, as by every
    other route of the gateway (`{"error": ...}`, same status and headers)."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def relay(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
            if message["status"] >= 400 and not content_type.startswith("application/json"):
                start = message
                return
        elif message["type"] == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = json.dumps({"error": b"".join(chunks).decode(errors="replace")}).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
            await send({**start, "headers": [*headers, (b"content-type", b"application/json"),
                                             (b"content-length", str(len(body)).encode())]})
            message = {"type": "http.response.body", "body": body, "more_body": False}
        await send(message)

    return relay


def _query_session(scope: Scope) -> str | None:
    """The `session_id` query parameter, when it is the hex of a UUID (else the transport refuses it)."""
    value = QueryParams(scope.get("query_string", b"")).get("session_id")
    try:
        return UUID(hex=value).hex if value is not None else None
    except ValueError:
        return None


def legacy_session(scope: Mapping[str, Any] | None) -> str | None:
    """The gateway's name of the legacy session a request belongs to, if it came through this transport."""
    state = scope.get("state") if scope is not None else None
    value = state.get(STATE_KEY) if isinstance(state, dict) else None
    return value if isinstance(value, str) else None
