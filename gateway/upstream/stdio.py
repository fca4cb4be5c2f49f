"""The stdio transport of an upstream: the server as a child process, newline-delimited JSON-RPC on its pipes.

The SDK's `stdio_client` bridges the pipes to the session with two tasks and two memory streams: two
extra hops per message, which on the gateway's hot path cost about a sixth of its CPU per call
(benchmarks/gateway_latency.py). Here the session's `receive` reads the pipe and `send` writes it, in
the caller's task. Everything else is as the SDK does it: the server in its own process group,
the SDK's default environment under the given one, stderr to `errlog`, and the spec's shutdown
(close stdin, wait, then SIGTERM and SIGKILL to the whole group), with stdout drained meanwhile so
a server flushing output can exit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import IO

import anyio
from anyio.abc import AsyncResource, ByteReceiveStream, ByteSendStream, Process
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from simgate.private_apis import subprocess_transport
from simgate.sandboxes.framing import LineFramer

logger = logging.getLogger("simgate.upstream")

_EXIT_GRACE = 2.0  # seconds between closing stdin and signalling the group
_KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL, and then for the kill to be seen
_EXIT_POLL = 0.01
_PIPE_ERRORS = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError)


class PipeReader(AsyncResource):
    """Messages from the server's stdout; a line that is not JSON-RPC arrives as its parse error, and one
    over the limit as `OversizedMessage` (see `sandboxes.framing`)."""

    def __init__(self, stdout: ByteReceiveStream, max_line: int) -> None:
        self._stdout = stdout
        self._framer = LineFramer(max_line)
        self._ready: deque[SessionMessage | Exception] = deque()

    async def receive(self) -> SessionMessage | Exception:
        while not self._ready:
            try:
                chunk = await self._stdout.receive()
            except _PIPE_ERRORS:
                self._ready.extend(self._framer.end())  # a last line without its newline
                if self._ready:
                    break
                raise anyio.EndOfStream from None
            self._ready.extend(self._framer.feed(chunk))
        return self._ready.popleft()

    def __aiter__(self) -> PipeReader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        with suppress(*_PIPE_ERRORS):
            await self._stdout.aclose()


class PipeWriter(AsyncResource):
    """Messages to the server's stdin, one JSON line each; a write is whole even when sends overlap."""

    def __init__(self, stdin: ByteSendStream) -> None:
        self._stdin = stdin

    async def send(self, item: SessionMessage, /) -> None:
        data = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        try:
            await self._stdin.send(data)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise anyio.BrokenResourceError(f"the server's stdin is closed: {exc}") from None

    async def aclose(self) -> None:
        with suppress(*_PIPE_ERRORS):
            await self._stdin.aclose()


@asynccontextmanager
async def stdio_streams(command: str, args: list[str], env: dict[str, str], cwd: str, errlog: IO[str],
                        max_line: int) -> AsyncIterator[tuple[PipeReader, PipeWriter]]:
    """Start the server and yield (read, write) on its pipes; stop it, and everything it started, on exit.
    A message over `max_line` bytes is dropped as it is read (and reported)."""
    process = await anyio.open_process([command, *args], env=get_default_environment() | env, stderr=errlog,
                                       cwd=cwd, start_new_session=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        yield PipeReader(process.stdout, max_line), PipeWriter(process.stdin)
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: Process) -> None:
    assert process.stdin is not None and process.stdout is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, process.stdout)
        with suppress(*_PIPE_ERRORS):
            await process.stdin.aclose()
        if not await _exited(process, _EXIT_GRACE):
            await terminate_posix_process_tree(process, _KILL_GRACE)
            if not await _exited(process, _KILL_GRACE):
                logger.warning("upstream process %d is still alive after SIGKILL; abandoning it", process.pid)
        tg.cancel_scope.cancel()
    with suppress(*_PIPE_ERRORS):
        await process.stdout.aclose()
    # A survivor holding a pipe end would keep the subprocess transport open (and warn at GC).
    with suppress(PermissionError):
        subprocess_transport(process).close()


async def _drain(stdout: ByteReceiveStream) -> None:
    with suppress(*_PIPE_ERRORS):
        while True:
            await stdout.receive()


async def _exited(process: Process, timeout: float) -> bool:
    """Whether the process ended within `timeout`, polled: `wait()` would also wait for the pipes to close,
    which a surviving grandchild can keep open."""
    deadline = anyio.current_time() + timeout
    while process.returncode is None:
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(_EXIT_POLL)
    return True

