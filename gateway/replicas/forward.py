"""Requests that belong to another replica are passed to it; everything else is answered here.

Why this design (SO_REUSEPORT plus forwarding by session id, not a front process): the kernel spreads
connections over the replicas' listeners (no balancer of our own, no extra hop for the many requests
without session state, no single process that all traffic crosses), and only a request of a
handshake-era session that landed on a replica other than its owner takes one extra loopback hop. The
owner is read from the session id itself (`r1-…`; for a message of the legacy HTTP+SSE transport, from
its path: `/messages/r1/`), so there is no shared table to keep consistent; the owner's private port
comes from the parent, never from the client, so a crafted id can reach only a sibling replica. The parent
keeps every listener (see `sockets`), so a replica's death resets only the connections it had accepted.

A request of the page (`/ui`) with its session cookie goes to the replica that made the cookie (named in
it the same way): only that replica's secret accepts it, and only that replica knows of its logout.

Also passed on: `GET /metrics?replica=N` (and `/healthz`, `/readyz`, `/admin/servers`, `/admin/modes`),
so each replica can be scraped and checked through the one address, and run-time changes of the admin
API or the page (modes set and dropped, servers restarted, started, stopped), which every replica applies:
the replica the client reached (for the page, the one that made its cookie) checks and applies the change
first, and passes it on (`APPLY_PREFIX`) only once it has taken it, so a refused change is answered once
and stored nowhere.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simgate.gateway.auth.middleware import TRUSTED_SIBLING, is_ui_path
from simgate.gateway.pipeline.modes import ModeResolver, ModeSettings
from simgate.gateway.replicas.plan import FORWARDED_HEADER, REPLICA_HEADER, VIA_HEADER, ReplicaPlan
from simgate.gateway.ui.auth import cookie_session

logger = logging.getLogger("simgate.replicas")

MCP_SESSION_ID = "mcp-session-id"
# A replica started again asks a sibling for the run-time modes there (`simgate mode set`), with the token
# the parent gave them all; without it the path does not exist.
MODES_PATH = "/_simgate/replica/modes"
TOKEN_HEADER = "x-simgate-replica-token"
# Set in the ASGI scope of a request a sibling passed on (with the token): a run-time change the replica the
# client reached has already checked and applied, which this one applies as it is.
FROM_SIBLING = "simgate.from_sibling"
# Where a replica passes a run-time change on to its siblings, as the admin API's path under this prefix, with
# the parent's token in place of the client's credential: a change made from the page carries a cookie that
# only its own replica can check, so the siblings take the word of the replica that checked it.
APPLY_PREFIX = "/_simgate/replica/apply"
_SERVER_ACTION = re.compile(r"/servers/[^/]+/(restart|start|stop)")
# A message of the legacy HTTP+SSE transport names the replica that holds its stream (see `legacy_sse`).
_LEGACY_MESSAGE = re.compile(r"(?:/servers/[^/]+)?/messages/r([0-9]{1,4})/")
# Per-replica views, answered by the replica named in `?replica=N`.
_PER_REPLICA = frozenset({"/metrics", "/healthz", "/readyz", "/admin/servers", "/admin/modes"})
_REPLICA_NUMBER = re.compile(r"[0-9]{1,4}")
# Not passed on by a proxy (RFC 9110 §7.6.1); the rest of a request or response is passed unchanged.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                         b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
_NOT_PASSED_ON = _HOP_BY_HOP | {FORWARDED_HEADER.encode(), TOKEN_HEADER.encode()}


class _ClientGone(Exception):
    """The client disconnected while its request body was being passed on."""


class ReplicaLinks:
    """This replica's connections to its siblings' private listeners (closed with the gateway)."""

    def __init__(self, plan: ReplicaPlan) -> None:
        self.plan = plan
        # No read timeout: an SSE stream of a session may stay open as long as the client wants it.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10), trust_env=False,
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32))

    async def adopt_modes(self, modes: ModeResolver) -> None:
        """Take the run-time modes of the first sibling that answers (this replica was started again)."""
        for replica in range(self.plan.count):
            if replica == self.plan.index:
                continue
            try:
                answer = await self.client.get(self.url(replica, MODES_PATH, b""), timeout=5,
                                               headers={TOKEN_HEADER: self.plan.token})
                if answer.status_code == 200:
                    modes.overrides = ModeSettings.model_validate_json(answer.content)
                    logger.info("run-time modes taken from replica %d", replica)
                    return
            except httpx.HTTPError as exc:
                logger.info("replica %d did not give its run-time modes: %s", replica, exc)
        logger.warning("no sibling gave its run-time modes: this replica starts with the config's")

    def url(self, replica: int, path: str, query: bytes) -> str:
        return f"http://127.0.0.1:{self.plan.private_ports[replica]}{path}" + (f"?{query.decode()}" if query else "")

    async def aclose(self) -> None:
        await self.client.aclose()


class ReplicaFront:
    """Outermost ASGI middleware of a replica: every answer names the replica that made it, and a sibling
    started again gets the run-time modes here (before the key check: it has the parent's token, no key)."""

    def __init__(self, app: ASGIApp, plan: ReplicaPlan, modes: ModeResolver) -> None:
        self.app = app
        self.plan = plan
        self.modes = modes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._labelled(send)
        path: str = scope["path"]
        if path == MODES_PATH or path.startswith(APPLY_PREFIX + "/"):
            if not hmac.compare_digest(Headers(scope=scope).get(TOKEN_HEADER, "").encode(), self.plan.token.encode()):
                await self.app(scope, receive, send)  # without the token these paths do not exist (404)
                return
            if path == MODES_PATH and scope["method"] == "GET":
                await JSONResponse(self.modes.overrides.model_dump())(scope, receive, send)
                return
            change = path.removeprefix(APPLY_PREFIX)
            if admin_change(change, scope["method"]) == change:
                scope = {**scope, "path": change, "raw_path": change.encode(), TRUSTED_SIBLING: True}
        await self.app(scope, receive, send)

    def _labelled(self, send: Send) -> Send:
        """Every answer names the replica that made it (`X-Simgate-Replica`); one passed on from a sibling
        keeps the sibling's name and also says where it came in (`X-Simgate-Via`)."""
        replica = str(self.plan.index).encode()
        name, via = REPLICA_HEADER.encode(), VIA_HEADER.encode()

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                answered = [v for k, v in headers if k.lower() == name]
                headers = [(k, v) for k, v in headers if k.lower() not in (name, via)]
                headers.append((name, answered[0] if answered else replica))
                if answered and answered[0] != replica:
                    headers.append((via, replica))
                message = {**message, "headers": headers}
            await send(message)

        return labelled


class ReplicaRouting:
    """Innermost ASGI middleware of a replica: passes on what another replica must answer. Inside the
    host, key and body checks, so a request is passed on only once it is allowed and its body is whole
    (within `max_body_bytes` and `body_timeout`); its owner checks it again."""

    def __init__(self, app: ASGIApp, links: ReplicaLinks, max_body_bytes: int) -> None:
        self.app = app
        self.links = links
        self.plan = links.plan
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if FORWARDED_HEADER in headers and self._from_sibling(headers):
            if is_ui_path(scope["path"]) and admin_change(scope["path"], scope["method"]) is not None:
                # A change from the page, passed here because this replica made its cookie: checked and
                # applied here, then passed on to every sibling.
                await self._everywhere(scope, receive, send)
                return
            # Passed on by a sibling: answered here, never passed on again. A client's own copy of the header
            # (no token) is ignored: it would make an admin change apply on this replica alone.
            scope[FROM_SIBLING] = True
            await self.app(scope, receive, send)
            return
        target = self._owner(scope, headers)
        if isinstance(target, JSONResponse):
            await target(scope, receive, send)
        elif target is not None:
            await self._forward(target, scope, receive, send)
        elif admin_change(scope["path"], scope["method"]) is not None:
            await self._everywhere(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _from_sibling(self, headers: Headers) -> bool:
        return hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.plan.token.encode())

    def _sibling_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The request's headers as passed to a sibling: what says "from a sibling" is this replica's own."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _NOT_PASSED_ON]
        headers.append((FORWARDED_HEADER.encode(), str(self.plan.index).encode()))
        headers.append((TOKEN_HEADER.encode(), self.plan.token.encode()))
        return headers

    def _owner(self, scope: Scope, headers: Headers) -> int | JSONResponse | None:
        """The sibling that must answer this request (None: this replica)."""
        asked = QueryParams(scope["query_string"]).get("replica") if scope["path"] in _PER_REPLICA else None
        if asked is not None and scope["method"] in ("GET", "HEAD"):
            if _REPLICA_NUMBER.fullmatch(asked) is None or int(asked) >= self.plan.count:
                return JSONResponse({"error": f"no replica {asked!r}: this gateway has replicas 0 to "
                                              f"{self.plan.count - 1}"}, status_code=400)
            return None if int(asked) == self.plan.index else int(asked)
        session_id = headers.get(MCP_SESSION_ID)
        if session_id is None and is_ui_path(scope["path"]) and "authorization" not in headers:
            # The page's cookie is signed with its replica's own secret and its logout is remembered there:
            # its session id names that replica, as an MCP session id does.
            session_id = cookie_session(scope)
        if session_id is None:
            legacy = _LEGACY_MESSAGE.fullmatch(scope["path"]) if scope["method"] == "POST" else None
            if legacy is None:
                return None
            tagged = int(legacy.group(1))
            return None if tagged == self.plan.index or tagged >= self.plan.count else tagged
        owner = self.plan.owner_of(session_id)
        return None if owner == self.plan.index else owner

    async def _forward(self, replica: int, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request to `replica` and its answer back, both streamed (an SSE stream included)."""
        headers = self._sibling_headers(scope)
        request = self.links.client.build_request(
            scope["method"], self.links.url(replica, scope["path"], scope["query_string"]), headers=headers,
            content=_body(receive) if scope["method"] in ("POST", "PUT", "PATCH") else None)
        try:
            response = await self.links.client.send(request, stream=True)
        except _ClientGone:
            return
        except httpx.HTTPError as exc:
            logger.warning("replica %d did not answer a request passed on to it: %s", replica, exc)
            await JSONResponse({"error": f"replica {replica}, which holds this session, did not answer"},
                               status_code=502)(scope, receive, send)
            return
        try:
            # `Connection: close`: the client's next request comes on a new connection, which the kernel may
            # give to the owner; kept alive, this connection would make the session's every request take the
            # extra hop (clients keep their connection to wherever their first request after the handshake went).
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [*((k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP),
                                    (b"connection", b"close")]})
            async with anyio.create_task_group() as tg:
                # The body is all read by now: the next message is the client going away, which ends the stream.
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                await _relay(response, send, replica)
                tg.cancel_scope.cancel()
        finally:
            await response.aclose()

    async def _everywhere(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A run-time change (a mode, a restart): applied here, then by every sibling, and only then
        answered (with this replica's answer), so the gateway, not one replica of it, has changed when the
        client hears back."""
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except _ClientGone:
            return
        if body is None:
            await JSONResponse({"error": f"request body over {self.max_body_bytes} bytes"},
                               status_code=413)(scope, receive, send)
            return
        answer: list[Message] = []  # an admin answer is small: held until the siblings have applied it

        async def hold(message: Message) -> None:
            answer.append(message)

        await self.app(scope, _replay(body), hold)
        status = answer[0].get("status", 0) if answer else 0
        if 200 <= status < 300:
            await self._apply_on_siblings(scope, body)
        for message in answer:
            await send(message)

    async def _apply_on_siblings(self, scope: Scope, body: bytes) -> None:
        """Pass the change on as the admin API's, under `APPLY_PREFIX`: the siblings apply it unchecked."""
        path = APPLY_PREFIX + (admin_change(scope["path"], scope["method"]) or scope["path"])
        headers = {FORWARDED_HEADER: str(self.plan.index), TOKEN_HEADER: self.plan.token}
        if (content_type := Headers(scope=scope).get("content-type")) is not None:
            headers["content-type"] = content_type

        async def apply(replica: int) -> None:
            try:
                answer = await self.links.client.request(
                    scope["method"], self.links.url(replica, path, scope["query_string"]),
                    headers=headers, content=body, timeout=30)
                if not 200 <= answer.status_code < 300:
                    logger.warning("replica %d refused %s %s: HTTP %d", replica, scope["method"], scope["path"],
                                   answer.status_code)
            except httpx.HTTPError as exc:
                logger.warning("replica %d did not apply %s %s: %s", replica, scope["method"], scope["path"], exc)

        async with anyio.create_task_group() as tg:
            for replica in range(self.plan.count):
                if replica != self.plan.index:
                    tg.start_soon(apply, replica)


def admin_change(path: str, method: str) -> str | None:
    """The admin API's path of a run-time change that every replica applies (a mode set or dropped, a server
    restarted, started or stopped), for that path or the page's form of it (`/ui/api/…`); None otherwise."""
    if path.startswith("/ui/api/"):
        path = "/admin/" + path.removeprefix("/ui/api/")
    rest = path.removeprefix("/admin")
    if rest == path:
        return None
    if (rest == "/modes" and method in ("PUT", "DELETE")) or (method == "POST" and _SERVER_ACTION.fullmatch(rest)):
        return path
    return None


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in _body(receive):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


async def _relay(response: httpx.Response, send: Send, replica: int) -> None:
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError as exc:
        # The owner went away mid-answer (it died, or was stopped): the answer is left incomplete, which
        # ends the client's connection, as the owner's own would have ended.
        logger.warning("replica %d ended an answer early: %s", replica, exc)
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
