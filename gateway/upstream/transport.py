"""Open the byte-level connection to one upstream: a child process over stdio, or streamable HTTP."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

import anyio
import httpx2
import mcp_types as types
from anyio.abc import AsyncResource
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from gateway.config.models import DEFAULT_MAX_RESULT_BYTES, ServerConfig
from gateway.errors import RESULT_TOO_LARGE
from gateway.upstream.correlation import RELATED_META_KEY, Callers
from gateway.upstream.http_limit import BoundedTransport
from gateway.upstream.install import server_command
from gateway.upstream.raw_calls import RawCalls
from gateway.upstream.stdio import stdio_streams
from sandboxes.docker.container import gateway_instance
from sandboxes.docker.stdio import docker_stdio_client
from sandboxes.egress.runtime import egress_for
from sandboxes.exposure import Exposure
from sandboxes.framing import OversizedMessage
from sandboxes.launch import prepare_launch
from sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.upstream")

_SSE_SLACK = 64 * 1024  # an event's `event:`/`id:` lines around its data
Streams = tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]


class UpstreamReader(AsyncResource):
    """The upstream's message stream, minus the lines that are not JSON-RPC, plus an event for its end.

    Non-JSON lines (banners, logs printed on stdout) arrive as exceptions: they are logged and
    skipped in place, without another stream and task between the upstream and the session. Answers to
    `raw_calls` are taken off here too. Log lines and server-to-client requests are marked with the
    caller whose request's stream they came on, when the transport says (see `correlation`).
    """

    def __init__(self, name: str, inner: ReadStream[SessionMessage | Exception], raw_calls: RawCalls,
                 callers: Callers | None = None) -> None:
        self._name = name
        self._inner = inner
        self.raw_calls = raw_calls
        self._callers = callers
        self.closed = anyio.Event()
        self.skipped = 0

    async def receive(self) -> SessionMessage:
        while True:
            try:
                item = await self._inner.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._end()
                raise anyio.EndOfStream from None
            if isinstance(item, OversizedMessage):
                answer = self._refusal(item)
                if answer is None:
                    continue
                item = answer
            if self.raw_calls.take(item):
                continue
            if not isinstance(item, Exception):
                return self._mark(item)
            self.skipped += 1
            # A flood of garbage must not become a flood of logs: the first few, then every 1000th.
            if self.skipped <= 5 or self.skipped % 1000 == 0:
                logger.warning("upstream %s: skipped a line that is not JSON-RPC (%d so far): %s",
                               self._name, self.skipped, _offending_line(item))

    def _refusal(self, oversized: OversizedMessage) -> SessionMessage | None:
        """The error that answers the request an oversized message answered, in its place."""
        if oversized.kind == "request":
            logger.warning("upstream %s: %s (a request or notification of its own)", self._name, oversized)
            return None
        request_id = oversized.request_id
        if request_id is None:  # its id could not be read from either end: only a call alone in flight is surely its
            request_id = self.raw_calls.only_waiting()
        if request_id is None:
            logger.warning("upstream %s: %s (which request it answered could not be told)", self._name, oversized)
            return None
        logger.warning("upstream %s: %s; request %r fails", self._name, oversized, request_id)
        error = too_large(self._name, oversized.limit, oversized.size)
        return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))

    def _mark(self, item: SessionMessage) -> SessionMessage:
        """A log line or server-to-client request, with the caller noted whose request's stream it came on."""
        message = item.message
        if not (isinstance(message, types.JSONRPCRequest)
                or (isinstance(message, types.JSONRPCNotification) and message.method == "notifications/message")):
            return item
        caller = self._callers.caller_of(getattr(self._inner, "last_context", None)) if self._callers else None
        params = dict(message.params or {})
        meta = dict(params["_meta"]) if isinstance(params.get("_meta"), dict) else {}
        if caller is None and RELATED_META_KEY not in meta:
            return item
        meta.pop(RELATED_META_KEY, None)  # only the gateway notes callers; an upstream cannot name one
        if caller is not None:
            meta[RELATED_META_KEY] = caller
        if meta:
            params["_meta"] = meta
        else:
            params.pop("_meta", None)
        return SessionMessage(message.model_copy(update={"params": params or None}), metadata=item.metadata)

    def __aiter__(self) -> UpstreamReader:
        return self

    async def __anext__(self) -> SessionMessage:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def _end(self) -> None:
        self.raw_calls.close("Connection closed")
        self.closed.set()

    async def aclose(self) -> None:
        self._end()
        await self._inner.aclose()


@asynccontextmanager
async def open_transport(
    name: str, config: ServerConfig, dirs: ServerDirs, stderr: IO[str], egress_decisions: Counter[str] | None = None,
    callers: Callers | None = None, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    exposure: Exposure | None = None,
) -> AsyncIterator[tuple[UpstreamReader, WriteStream[SessionMessage]]]:
    """Yield (read, write); `read.closed` is set when the upstream's stream ends. `egress_decisions` counts
    what the egress proxy of a server with a network allowlist allows and denies; `callers` are the client
    requests in flight, whose messages are marked as they arrive. A message over `max_result_bytes` (the
    server's own setting first) is dropped as it is read, and the request it answered fails with
    `ResultTooLarge`. `exposure` is what a sandboxed server must never see."""
    limit = config.max_result_bytes or max_result_bytes
    async with _raw_transport(name, config, dirs, stderr, egress_decisions, limit, exposure) as (read, write):
        reader = UpstreamReader(name, read, RawCalls(write), callers)
        try:
            yield reader, write
        finally:  # however the session ended (restart, wall clock, shutdown): no raw call waits on
            reader.raw_calls.close("Connection closed")


@asynccontextmanager
async def _raw_transport(name: str, config: ServerConfig, dirs: ServerDirs, stderr: IO[str],
                         egress_decisions: Counter[str] | None, limit: int,
                         exposure: Exposure | None = None) -> AsyncIterator[Streams]:
    if config.transport == "stdio":
        command, args, installed_env = await server_command(name, config, dirs)  # installs once if it names a package
        env = {**config.env, **installed_env}
        async with egress_for(name, config.sandbox, egress_decisions) as egress:  # the allowlist proxy, if any
            if config.sandbox is not None and config.sandbox.backend == "docker":
                instance = gateway_instance(dirs.state_dir, dirs.replica)
                async with docker_stdio_client(name, command, args, env, config.cwd or str(dirs.work),
                                               dirs, config.sandbox, instance, stderr, limit, egress=egress,
                                               exposure=exposure) as streams:
                    yield streams
                return
            launch = prepare_launch(command, args, env, config.cwd or str(dirs.work), dirs, config.sandbox,
                                    name, egress=egress, exposure=exposure)
            async with stdio_streams(launch.command, launch.args, launch.env, launch.cwd, stderr, limit) as streams:
                yield streams
    else:
        assert config.url is not None
        timeout = httpx2.Timeout(30.0, read=config.call_timeout + 30.0)

        def refusal(request_id: int | str) -> bytes:
            error = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=too_large(name, limit, None))
            return error.model_dump_json(by_alias=True, exclude_none=True).encode()

        bounded = BoundedTransport(httpx2.AsyncHTTPTransport(), limit, refusal)
        async with httpx2.AsyncClient(headers=config.headers, timeout=timeout, follow_redirects=True,
                                      transport=bounded) as client:
            # The SDK's own cap on an SSE event (1 MiB) gives way to this one, enforced by `bounded`.
            async with streamable_http_client(config.url, http_client=client,
                                              max_sse_event_size=limit + _SSE_SLACK) as streams:
                yield streams


def too_large(server: str, limit: int, size: int | None) -> types.ErrorData:
    """The error that answers a request whose answer was over `max_result_bytes`."""
    return types.ErrorData(
        code=RESULT_TOO_LARGE,
        message=f"upstream server {server!r} answered with a message over max_result_bytes ({limit} bytes); "
                "it was dropped",
        data={"server": server, "max_result_bytes": limit, "size": size})


def _offending_line(error: Exception) -> str:
    """The skipped line itself (shortened) when the parse error carries it, else the error."""
    if isinstance(error, ValidationError):
        details = error.errors(include_url=False)
        if details and "input" in details[0]:
            value = details[0]["input"]
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            return text[:200]
    text = str(error)
    return text.splitlines()[0][:200] if text else type(error).__name__
