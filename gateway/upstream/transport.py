"""Open the connection to one upstream: a transport class per way of reaching it (a process on stdio, under
bubblewrap, in a container, or streamable HTTP), chosen from the `TRANSPORTS` table by the server's config."""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, TypeAlias

import anyio
import httpx2
import mcp_types as types
from anyio.abc import AsyncResource
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from simgate.gateway.config.models import DEFAULT_MAX_RESULT_BYTES, ServerConfig
from simgate.gateway.errors import INVALID_UPSTREAM_RESULT, RESULT_TOO_LARGE
from simgate.gateway.upstream.correlation import RELATED_META_KEY, Callers
from simgate.gateway.upstream.http_limit import BoundedTransport
from simgate.gateway.upstream.install import server_command
from simgate.gateway.upstream.raw_calls import RawCalls
from simgate.gateway.upstream.stdio import stdio_streams
from simgate.sandboxes.diskcap import disk_cap
from simgate.sandboxes.docker.container import gateway_instance
from simgate.sandboxes.docker.stdio import docker_stdio_client
from simgate.sandboxes.egress.lifecycle import egress_for
from simgate.sandboxes.egress.mount import EgressMount
from simgate.sandboxes.exposure import Exposure
from simgate.sandboxes.framing import MalformedAnswer, OversizedMessage
from simgate.sandboxes.launch import prepare_launch
from simgate.sandboxes.workdir import ServerDirs

if TYPE_CHECKING:  # the SDK's stream protocols live in a private module: typing only (see simgate.private_apis)
    from mcp.shared._stream_protocols import ReadStream, WriteStream

logger = logging.getLogger("simgate.upstream")

_SSE_SLACK = 64 * 1024  # an event's `event:`/`id:` lines around its data
Streams: TypeAlias = "tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]"


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
            if isinstance(item, MalformedAnswer):
                item = self._malformed(item)
            if self.raw_calls.take(item):
                continue
            if not isinstance(item, Exception):
                return self._mark(item)
            self.skipped += 1
            # A flood of garbage must not become a flood of logs: the first few, then every 1000th.
            if self.skipped <= 5 or self.skipped % 1000 == 0:
                logger.warning("upstream %s: skipped a line that is not JSON-RPC (%d so far): %s",
                               self._name, self.skipped, _offending_line(item))

    def _malformed(self, answer: MalformedAnswer) -> SessionMessage:
        """The error that fails the request a malformed answer answered (a late or unknown id is dropped)."""
        logger.warning("upstream %s: %s", self._name, answer)
        message = (f"upstream server {self._name!r} answered with a message that is not valid JSON-RPC: "
                   f"{answer.line}")
        error = types.ErrorData(code=INVALID_UPSTREAM_RESULT, message=message, data={"server": self._name})
        return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=answer.request_id, error=error))

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
    target = Target(name=name, config=config, dirs=dirs, stderr=stderr, egress_decisions=egress_decisions,
                    limit=config.max_result_bytes or max_result_bytes, exposure=exposure)
    async with transport_for(config).open(target) as (read, write):
        reader = UpstreamReader(name, read, RawCalls(write), callers)
        try:
            yield reader, write
        finally:  # however the session ended (restart, wall clock, shutdown): no raw call waits on
            reader.raw_calls.close("Connection closed")


# ------------------------------------------------------------------------------------------------ transports


@dataclass(frozen=True)
class Target:
    """What a transport is given to reach one upstream."""

    name: str
    config: ServerConfig
    dirs: ServerDirs
    stderr: IO[str]  # where a child process's stderr goes (the server's stderr.log)
    egress_decisions: Counter[str] | None  # the egress proxy's allow/deny counts, for a network allowlist
    limit: int  # bytes one message may have (`max_result_bytes`)
    exposure: Exposure | None  # what a sandbox must never show


class Transport(ABC):
    """One way of reaching an upstream's MCP messages: `open()` yields the SDK's (read, write) streams for
    as long as the connection lives, and leaves nothing behind (process, container, client) on exit."""

    @abstractmethod
    def open(self, target: Target) -> AbstractAsyncContextManager[Streams]: ...


class StdioTransport(Transport):
    """A child process on this host speaking MCP over stdin/stdout (sandbox `none`: its own HOME, TMPDIR
    and work directory, nothing more). A package it names is installed once, first."""

    @asynccontextmanager
    async def open(self, target: Target) -> AsyncIterator[Streams]:
        config, dirs = target.config, target.dirs
        command, args, installed_env = await server_command(target.name, config, dirs)
        env = {**config.env, **installed_env}
        # The disk cap outlives the process (a work dir image is unmounted after the server exits).
        async with disk_cap(target.name, config.sandbox, dirs):
            async with egress_for(target.name, config.sandbox, target.egress_decisions) as egress:  # allowlist proxy
                async with self.streams(target, command, args, env, egress) as streams:
                    yield streams

    def streams(self, target: Target, command: str, args: list[str], env: dict[str, str],
                egress: EgressMount | None) -> AbstractAsyncContextManager[Streams]:
        config, dirs = target.config, target.dirs
        # The sandbox's policy turns the command into the one that runs it (`sandboxes.launch`).
        launch = prepare_launch(command, args, env, config.cwd or str(dirs.work), dirs, config.sandbox,
                                target.name, egress=egress, exposure=target.exposure)
        return stdio_streams(launch.command, launch.args, launch.env, launch.cwd, target.stderr, target.limit)


class BwrapTransport(StdioTransport):
    """The child process under bubblewrap (sandbox `bwrap`): `prepare_launch` wraps the command in a bwrap
    command line (namespaces, mounts, limits); the stdio side is the same as a plain process's."""


class DockerTransport(StdioTransport):
    """The server in a container of the gateway's own engine (sandbox `docker`), its stdio attached."""

    def streams(self, target: Target, command: str, args: list[str], env: dict[str, str],
                egress: EgressMount | None) -> AbstractAsyncContextManager[Streams]:
        config, dirs = target.config, target.dirs
        assert config.sandbox is not None
        return docker_stdio_client(target.name, command, args, env, config.cwd or str(dirs.work), dirs,
                                   config.sandbox, gateway_instance(dirs.state_dir, dirs.replica), target.stderr, target.limit,
                                   egress=egress, exposure=target.exposure)


class HttpTransport(Transport):
    """A remote server over streamable HTTP, its bodies and SSE events capped at the message limit."""

    @asynccontextmanager
    async def open(self, target: Target) -> AsyncIterator[Streams]:
        config, name, limit = target.config, target.name, target.limit
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


# How a server is reached, by `transport_kind`: adding a transport is a class above and a line here.
TRANSPORTS: dict[str, Transport] = {
    "stdio": StdioTransport(),
    "bwrap": BwrapTransport(),
    "docker": DockerTransport(),
    "http": HttpTransport(),
}


def transport_kind(config: ServerConfig) -> str:
    """`http` for a URL; for a command, its sandbox backend (`none` is plain `stdio`)."""
    if config.transport == "http":
        return "http"
    backend = config.sandbox.backend if config.sandbox is not None else "none"
    return "stdio" if backend == "none" else backend


def transport_for(config: ServerConfig) -> Transport:
    return TRANSPORTS[transport_kind(config)]


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
