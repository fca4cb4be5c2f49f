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
from typing import IO, Any

import anyio
import mcp_types as types
from anyio.abc import AsyncResource, ByteReceiveStream, ByteSendStream, Process
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

logger = logging.getLogger("simgate.upstream")

_EXIT_GRACE = 2.0  # seconds between closing stdin and signalling the group
_KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL, and then for the kill to be seen
_EXIT_POLL = 0.01
# A message larger than this is dropped (and reported) rather than held in memory: results with images
# run to megabytes, not to hundreds of them.
MAX_LINE_BYTES = 256 * 1024 * 1024
_PIPE_ERRORS = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError)


class PipeReader(AsyncResource):
    """Messages from the server's stdout; a line that is not JSON-RPC arrives as its parse error."""

    def __init__(self, stdout: ByteReceiveStream, max_line: int = MAX_LINE_BYTES) -> None:
        self._stdout = stdout
        self._max_line = max_line
        self._lines: deque[bytes | Exception] = deque()
        self._pieces: list[bytes] = []  # the line being read, in pieces: joined once, when it ends
        self._size = 0
        self._oversized = False  # the line being read is over the limit: dropped up to its newline

    async def receive(self) -> SessionMessage | Exception:
        while True:
            while not self._lines:
                try:
                    chunk = await self._stdout.receive()
                except _PIPE_ERRORS:
                    self._end_line(b"")  # a last line without its newline
                    if self._lines:
                        break
                    raise anyio.EndOfStream from None
                self._take(chunk)
            line = self._lines.popleft()
            if isinstance(line, Exception):
                return line
            if line.strip():  # blank lines carry nothing
                return _parse(line)

    def _take(self, chunk: bytes) -> None:
        *ends, rest = chunk.split(b"\n")
        for end in ends:
            self._end_line(end)
        if rest:
            self._add(rest)

    def _add(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._max_line and not self._oversized:
            self._oversized = True
            self._pieces.clear()
        if not self._oversized:
            self._pieces.append(piece)

    def _end_line(self, piece: bytes) -> None:
        self._add(piece)
        if self._oversized:
            self._lines.append(ValueError(f"a line of {self._size} bytes (more than {self._max_line}) was skipped"))
        elif self._size:
            self._lines.append(b"".join(self._pieces))
        self._pieces.clear()
        self._size = 0
        self._oversized = False

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
async def stdio_streams(command: str, args: list[str], env: dict[str, str], cwd: str,
                        errlog: IO[str]) -> AsyncIterator[tuple[PipeReader, PipeWriter]]:
    """Start the server and yield (read, write) on its pipes; stop it, and everything it started, on exit."""
    process = await anyio.open_process([command, *args], env=get_default_environment() | env, stderr=errlog,
                                       cwd=cwd, start_new_session=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        yield PipeReader(process.stdout), PipeWriter(process.stdin)
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
    transport: Any = getattr(getattr(process, "_process", None), "_transport", None)
    if transport is not None:
        with suppress(PermissionError):
            transport.close()


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


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        text = line.decode("utf-8", errors="replace")  # as text, so a skipped line is logged readably
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError included
        return exc
