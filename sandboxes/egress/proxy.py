"""The egress proxy: an HTTP proxy on a Unix socket, run by the gateway, that lets a sandboxed server
reach only the host:port pairs of its allowlist.

It answers `CONNECT host:port` (a tunnel: what HTTPS and most clients use) and plain-HTTP requests in
absolute form (`GET http://host:port/path`), each checked against the allowlist; anything else gets a
403 (not allowed) or 400 (not a proxy request). Every decision is logged and counted. It knows nothing
of bubblewrap: any sandbox that can see the socket (a bind mount, a Docker volume) can use it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import anyio
import h11
from anyio.abc import ByteStream, SocketStream

from simgate.sandboxes.egress.allowlist import NetworkAllow, normalize_host

logger = logging.getLogger("simgate.egress")

_HEAD_TIMEOUT = 30.0
_CONNECT_TIMEOUT = 10.0
_MAX_CONNECTIONS = 64  # per server: a hostile server must not exhaust the gateway's sockets
_HOP_BY_HOP = {b"connection", b"proxy-connection", b"proxy-authorization", b"keep-alive", b"te", b"trailer",
               b"upgrade"}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EgressProxy:
    """Serves one sandboxed server's egress; `decisions` counts allowed/denied/failed/refused requests."""

    def __init__(self, server: str, allow: NetworkAllow, *, decisions: Counter[str] | None = None,
                 max_connections: int = _MAX_CONNECTIONS) -> None:
        self.server = server
        self.allow = allow
        self.decisions: Counter[str] = Counter() if decisions is None else decisions
        self._max_connections = max_connections
        self._open = 0

    @property
    def open_connections(self) -> int:
        return self._open

    async def handle(self, client: SocketStream) -> None:
        async with client:
            if self._open >= self._max_connections:
                self.decisions["refused"] += 1
                if self.decisions["refused"] % 100 == 1:  # a flood of connections must not become a flood of logs
                    logger.warning("egress refused: server %s has %d connections open (%d refused so far)",
                                   self.server, self._open, self.decisions["refused"])
                await _refuse_busy(client)
                return
            self._open += 1
            try:
                await self._handle(client)
            except Exception as exc:  # noqa: BLE001 - one broken client request must not end the proxy
                logger.debug("egress %s: connection ended: %r", self.server, exc)
            finally:
                self._open -= 1

    async def _handle(self, client: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with anyio.fail_after(_HEAD_TIMEOUT):
            request = await _next_event(conn, client)
        if not isinstance(request, h11.Request):
            return
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        shown = _shown(method, target)
        try:
            host, port = _destination(method, target)
            if not self.allow.permits(host, port):
                raise _Refused(403, f"egress to {host}:{port} is not in the allowlist of server {self.server!r}")
        except _Refused as refused:
            self._count("denied", method, shown, str(refused))
            await _refuse(conn, client, refused)
            return
        try:
            with anyio.fail_after(_CONNECT_TIMEOUT):
                upstream = await anyio.connect_tcp(host, port)
        except (OSError, TimeoutError) as exc:
            self._count("failed", method, shown, f"cannot connect: {exc or type(exc).__name__}")
            await _refuse(conn, client, _Refused(502, f"cannot connect to {host}:{port}: {exc or 'timed out'}"))
            return
        self._count("allowed", method, shown, "in the allowlist")
        async with upstream:
            if method == "CONNECT":
                await client.send(conn.send(h11.Response(status_code=200, headers=[],
                                                         reason=b"Connection established")) or b"")
                leftover, _ = conn.trailing_data
                if leftover:
                    await upstream.send(leftover)
            else:
                await _forward_request(conn, client, upstream, request)
            await _relay(client, upstream)

    def _count(self, decision: str, method: str, target: str, why: str) -> None:
        self.decisions[decision] += 1
        level = logging.INFO if decision == "allowed" else logging.WARNING
        logger.log(level, "egress %s: server %s %s %s (%s)", decision, self.server, method, target, why,
                   extra={"server": self.server, "decision": decision, "method": method, "target": target})


def _shown(method: str, target: str) -> str:
    """What a log line shows of a request: never a path or a query string, which may carry credentials."""
    if method == "CONNECT":
        return target[:300]
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"[:300] if parts.scheme else "(origin-form)"


def _destination(method: str, target: str) -> tuple[str, int]:
    """(host, port) a proxy request asks for; `_Refused(400)` when it is not a proxy request."""
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit():
            raise _Refused(400, f"CONNECT needs host:port, got {target!r}")
    else:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise _Refused(400, f"not a proxy request for an http:// URL: {method} {target!r} "
                           "(use CONNECT for https)")
        host, port = parts.hostname, str(parts.port or 80)
    try:
        return normalize_host(host), int(port)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None


async def _next_event(conn: h11.Connection, stream: ByteStream) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return cast("h11.Event | type[h11.PAUSED]", event)
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)


async def _refuse(conn: h11.Connection, client: ByteStream, refused: _Refused) -> None:
    body = f"simgate: {refused}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    with contextlib.suppress(h11.LocalProtocolError):
        reason = HTTPStatus(refused.status).phrase.encode()
        await client.send(conn.send(h11.Response(status_code=refused.status, headers=headers, reason=reason)) or b"")
        await client.send(conn.send(h11.Data(data=body)) or b"")
        await client.send(conn.send(h11.EndOfMessage()) or b"")


async def _refuse_busy(client: SocketStream) -> None:
    """503, after reading the request head (closing on unread data would reset the connection, answer and all)."""
    conn = h11.Connection(h11.SERVER)
    with anyio.move_on_after(5):
        if isinstance(await _next_event(conn, client), h11.Request):
            await _refuse(conn, client, _Refused(503, "too many connections"))


async def _forward_request(conn: h11.Connection, client: ByteStream, upstream: ByteStream,
                           request: h11.Request) -> None:
    """Re-send a plain-HTTP proxy request in origin form, one request per connection (`Connection: close`)."""
    parts = urlsplit(request.target.decode("ascii"))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [(name, value) for name, value in request.headers if name.lower() not in _HOP_BY_HOP]
    if not any(name.lower() == b"host" for name, _ in headers):
        headers.append((b"host", parts.netloc.encode()))
    headers.append((b"connection", b"close"))
    out = h11.Connection(h11.CLIENT)
    await upstream.send(out.send(h11.Request(method=request.method, target=path.encode(), headers=headers)) or b"")
    while True:
        event = await _next_event(conn, client)
        if isinstance(event, h11.Data):
            await upstream.send(out.send(event) or b"")
        elif isinstance(event, h11.EndOfMessage):
            await upstream.send(out.send(event) or b"")
            return
        else:
            raise ConnectionError(f"unexpected {event!r} in a request body")


async def _relay(client: SocketStream, upstream: SocketStream) -> None:
    """Copy both ways until each side has finished sending."""
    async def pipe(source: SocketStream, sink: SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for chunk in source:
                await sink.send(chunk)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await sink.send_eof()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pipe, client, upstream)
        tg.start_soon(pipe, upstream, client)


@asynccontextmanager
async def serving_proxy(server: str, allow: NetworkAllow, *, decisions: Counter[str] | None = None
                        ) -> AsyncIterator[tuple[EgressProxy, Path]]:
    """Run the proxy on a Unix socket in a fresh private directory; yield (proxy, socket path).
    `decisions` (optional) is where it counts, so that counts can outlive one proxy.

    The directory is short-named under the system temp dir (a socket path has ~100 bytes at most)
    and removed, with the socket, when the context ends.
    """
    directory = Path(tempfile.mkdtemp(prefix="simgate-egress-"))
    path = directory / "proxy.sock"
    proxy = EgressProxy(server, allow, decisions=decisions)
    try:
        listener = await anyio.create_unix_listener(path)
        # A docker sandbox runs the server as nobody: it must reach the socket (not list the directory).
        # Local users gain nothing: the allowlisted hosts are reachable from the host anyway.
        directory.chmod(0o711)
        path.chmod(0o666)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, proxy.handle)
            try:
                yield proxy, path
            finally:
                # A moment for connections that are ending to end: cancelling a read on a Unix socket just as
                # it becomes readable trips an anyio race (agronholm/anyio#1267's kin) on the asyncio backend.
                with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
                    while proxy.open_connections:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
