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
from anyio.abc import AsyncResource
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from gateway.config.models import ServerConfig
from gateway.upstream.install import server_command
from gateway.upstream.raw_calls import RawCalls
from gateway.upstream.stdio import stdio_streams
from sandboxes.docker.container import gateway_instance
from sandboxes.docker.stdio import docker_stdio_client
from sandboxes.egress.runtime import egress_for
from sandboxes.exposure import Exposure
from sandboxes.launch import prepare_launch
from sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.upstream")

Streams = tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]


class UpstreamReader(AsyncResource):
    """The upstream's message stream, minus the lines that are not JSON-RPC, plus an event for its end.

    Non-JSON lines (banners, logs printed on stdout) arrive as exceptions: they are logged and
    skipped in place, without another stream and task between the upstream and the session. Answers to
    `raw_calls` are taken off here too.
    """

    def __init__(self, name: str, inner: ReadStream[SessionMessage | Exception], raw_calls: RawCalls) -> None:
        self._name = name
        self._inner = inner
        self.raw_calls = raw_calls
        self.closed = anyio.Event()
        self.skipped = 0

    async def receive(self) -> SessionMessage:
        while True:
            try:
                item = await self._inner.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._end()
                raise anyio.EndOfStream from None
            if self.raw_calls.take(item):
                continue
            if not isinstance(item, Exception):
                return item
            self.skipped += 1
            # A flood of garbage must not become a flood of logs: the first few, then every 1000th.
            if self.skipped <= 5 or self.skipped % 1000 == 0:
                logger.warning("upstream %s: skipped a line that is not JSON-RPC (%d so far): %s",
                               self._name, self.skipped, _offending_line(item))

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
    exposure: Exposure | None = None,
) -> AsyncIterator[tuple[UpstreamReader, WriteStream[SessionMessage]]]:
    """Yield (read, write); `read.closed` is set when the upstream's stream ends. `egress_decisions` counts
    what the egress proxy of a server with a network allowlist allows and denies; `exposure` is what a
    sandboxed server must never see."""
    async with _raw_transport(name, config, dirs, stderr, egress_decisions, exposure) as (read, write):
        reader = UpstreamReader(name, read, RawCalls(write))
        try:
            yield reader, write
        finally:  # however the session ended (restart, wall clock, shutdown): no raw call waits on
            reader.raw_calls.close("Connection closed")


@asynccontextmanager
async def _raw_transport(name: str, config: ServerConfig, dirs: ServerDirs, stderr: IO[str],
                         egress_decisions: Counter[str] | None = None,
                         exposure: Exposure | None = None) -> AsyncIterator[Streams]:
    if config.transport == "stdio":
        command, args = await server_command(name, config, dirs)  # installs once if it names a package
        async with egress_for(name, config.sandbox, egress_decisions) as egress:  # the allowlist proxy, if any
            if config.sandbox is not None and config.sandbox.backend == "docker":
                instance = gateway_instance(dirs.state_dir)
                async with docker_stdio_client(name, command, args, config.env, config.cwd or str(dirs.work),
                                               dirs, config.sandbox, instance, stderr, egress=egress,
                                               exposure=exposure) as streams:
                    yield streams
                return
            launch = prepare_launch(command, args, config.env, config.cwd or str(dirs.work), dirs, config.sandbox,
                                    name, egress=egress, exposure=exposure)
            async with stdio_streams(launch.command, launch.args, launch.env, launch.cwd, stderr) as streams:
                yield streams
    else:
        assert config.url is not None
        timeout = httpx2.Timeout(30.0, read=config.call_timeout + 30.0)
        async with httpx2.AsyncClient(headers=config.headers, timeout=timeout, follow_redirects=True) as client:
            async with streamable_http_client(config.url, http_client=client) as streams:
                yield streams


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
