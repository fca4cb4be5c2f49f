"""Open the byte-level connection to one upstream: a child process over stdio, or streamable HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

from gateway.config.models import ServerConfig
from sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.upstream")

Streams = tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]


@asynccontextmanager
async def open_transport(
    name: str, config: ServerConfig, dirs: ServerDirs, stderr: IO[str]
) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage], WriteStream[SessionMessage], anyio.Event]]:
    """Yield (read, write, closed): `closed` is set when the upstream's stream ends."""
    async with _raw_transport(config, dirs, stderr) as (read, write):
        clean_send, clean_read = anyio.create_memory_object_stream[SessionMessage](32)
        closed = anyio.Event()

        async def pump() -> None:
            # Non-JSON lines (banners, logs printed on stdout) arrive as exceptions: skip them.
            try:
                async with clean_send:
                    async for item in read:
                        if isinstance(item, Exception):
                            logger.warning("upstream %s: skipped a line that is not JSON-RPC: %s", name,
                                           str(item).splitlines()[0][:200] if str(item) else type(item).__name__)
                            continue
                        await clean_send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass
            finally:
                closed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield clean_read, write, closed
            finally:
                tg.cancel_scope.cancel()


@asynccontextmanager
async def _raw_transport(config: ServerConfig, dirs: ServerDirs, stderr: IO[str]) -> AsyncIterator[Streams]:
    if config.transport == "stdio":
        assert config.command is not None
        params = StdioServerParameters(
            command=config.command,
            args=config.args,
            env=dirs.environment() | config.env,
            cwd=config.cwd or str(dirs.work),
        )
        async with stdio_client(params, errlog=stderr) as streams:
            yield streams
    else:
        assert config.url is not None
        timeout = httpx2.Timeout(30.0, read=config.call_timeout + 30.0)
        async with httpx2.AsyncClient(headers=config.headers, timeout=timeout, follow_redirects=True) as client:
            async with streamable_http_client(config.url, http_client=client) as streams:
                yield streams
