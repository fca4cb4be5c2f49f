"""MCP over a container's attach socket, with the shape of `mcp.client.stdio.stdio_client`.

The container is created with stdin open (StdinOnce), attached before it starts (so no output is
lost), its environment is written first on its stdin (never into its stored configuration), and its
multiplexed output is split by the 8-byte frame headers: stdout goes through the same line framer and
limit as a child process's (`sandboxes.framing`), stderr to the server's log. The socket is driven by
the event loop; the blocking docker SDK calls run in worker threads. When the server exits, crashes or
is killed (memory, wall clock), the read stream ends exactly as
when a child process exits. On the way out: stdin is closed, the container gets a short grace
period, then it is removed by force, shielded from cancellation so no container outlives the call.
"""

from __future__ import annotations

import codecs
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import IO, Any

import anyio
import anyio.abc
import docker
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from docker.errors import APIError, DockerException, NotFound
from mcp.shared.message import SessionMessage

from simgate.private_apis import socket_under
from simgate.sandboxes.docker.container import SERVER_LABEL, ContainerSpec, prepare_container
from simgate.sandboxes.docker.engine import connect
from simgate.sandboxes.egress.mount import EgressMount
from simgate.sandboxes.errors import SandboxUnavailable
from simgate.sandboxes.exposure import Exposure
from simgate.sandboxes.framing import LineFramer
from simgate.sandboxes.policy import SandboxPolicy
from simgate.sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.sandbox")

_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_STOP_GRACE = 2.0  # seconds a server gets to exit after its stdin closes


@asynccontextmanager
async def docker_stdio_client(name: str, command: str, args: list[str], env: dict[str, str], cwd: str,
                              dirs: ServerDirs, policy: SandboxPolicy, instance: str, errlog: IO[str],
                              max_line: int, egress: EgressMount | None = None, exposure: Exposure | None = None
                              ) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception],
                                                       MemoryObjectSendStream[SessionMessage]]]:
    client = await anyio.to_thread.run_sync(connect, policy.docker_host)
    try:
        spec = await anyio.to_thread.run_sync(
            partial(prepare_container, client, name, command, args, env, cwd, dirs, policy, instance, egress,
                    exposure))
        async with _running(client, spec, policy, errlog, max_line) as streams:
            yield streams
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(client.close)


@asynccontextmanager
async def _running(client: docker.DockerClient, spec: ContainerSpec, policy: SandboxPolicy, errlog: IO[str],
                   max_line: int) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception],
                                            MemoryObjectSendStream[SessionMessage]]]:
    api = client.api
    try:
        # Shielded: a cancellation must not lose the id of a container that was created.
        with anyio.CancelScope(shield=True):
            created = await anyio.to_thread.run_sync(partial(api.create_container, **spec.create_kwargs(api)))
    except DockerException as exc:
        with anyio.CancelScope(shield=True):  # created, but the answer was lost: no container is left behind
            await anyio.to_thread.run_sync(_remove, api, spec.name)
        raise SandboxUnavailable(f"docker: cannot create the container: {exc}") from None
    container: str = created["Id"]
    try:
        raw = await anyio.to_thread.run_sync(_attach, api, container)
        try:
            stream: anyio.abc.SocketStream = await anyio.abc.SocketStream.from_socket(raw)
        except BaseException:
            raw.close()
            raise
        async with stream:
            try:
                await anyio.to_thread.run_sync(api.start, container)
            except DockerException as exc:
                raise SandboxUnavailable(f"docker: cannot start the container: {exc}") from None
            # Its environment, first on its stdin (see `container`): never stored by the engine.
            await stream.send(spec.preamble())
            logger.info("sandbox %s: container %s started (%s)", spec.labels.get(SERVER_LABEL), spec.name,
                        spec.image)
            async with _bridge(api, container, spec, stream, errlog, max_line) as streams:
                yield streams
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove, api, container)


def _attach(api: docker.APIClient, container: str) -> socket.socket:
    """The attach connection as a socket of our own (a duplicate), so the SDK's wrappers can go."""
    wrapper: Any = api.attach_socket(container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = socket_under(wrapper)
    if isinstance(raw, ssl.SSLSocket) or not isinstance(raw, socket.socket):
        wrapper.close()
        raise SandboxUnavailable("docker: only unix:// and plain tcp:// engines are supported (no TLS or ssh)")
    mine = raw.dup()
    wrapper.close()
    mine.setblocking(False)
    return mine


def _remove(api: docker.APIClient, container: str) -> None:
    try:
        api.remove_container(container, force=True)
    except NotFound:
        pass
    except DockerException as exc:
        logger.warning("sandbox: could not remove container %s: %s (the next gateway start sweeps it)",
                       container[:12], exc)


@asynccontextmanager
async def _bridge(api: docker.APIClient, container: str, spec: ContainerSpec, stream: anyio.abc.SocketStream,
                  errlog: IO[str], max_line: int
                  ) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception],
                                           MemoryObjectSendStream[SessionMessage]]]:
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = anyio.Event()

    async def reader() -> None:
        async with read_writer:
            await _read_frames(stream, read_writer, errlog, max_line)
        await _report_exit(api, container, spec, errlog)

    async def writer() -> None:
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await stream.send(data.encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the container is gone: the session sees its end
        finally:
            writer_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                with anyio.move_on_after(0.5):
                    await writer_done.wait()
                with suppress(OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    await stream.send_eof()  # closes the server's stdin: its cue to exit
                with suppress(DockerException):
                    await anyio.to_thread.run_sync(partial(_wait, api, container, _STOP_GRACE))
            tg.cancel_scope.cancel()


def _wait(api: docker.APIClient, container: str, timeout: float) -> None:
    with suppress(DockerException, OSError):  # a timeout surfaces as a requests error: then it is killed
        api.wait(container, timeout=timeout)


async def _read_frames(stream: anyio.abc.SocketStream, out: MemoryObjectSendStream[SessionMessage | Exception],
                       errlog: IO[str], max_line: int) -> None:
    """Split the attach stream by its frame headers. A payload is passed on as it arrives: a header can
    announce gigabytes, so nothing here waits for a whole frame."""
    framer = LineFramer(max_line)
    stderr = codecs.getincrementaldecoder("utf-8")("replace")
    header = bytearray()
    kind, remaining = 0, 0
    while True:
        try:
            chunk = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await _send_all(framer.end(), out)
            return
        offset = 0
        while offset < len(chunk):
            if remaining == 0:
                need = _HEADER.size - len(header)
                header += chunk[offset:offset + need]
                offset += need
                if len(header) == _HEADER.size:
                    kind, remaining = _HEADER.unpack(header)
                    header.clear()
                continue
            payload = chunk[offset:offset + remaining]
            offset += len(payload)
            remaining -= len(payload)
            if kind == _STDOUT:
                if not await _send_all(framer.feed(payload), out):
                    return
            elif kind == _STDERR:
                text = stderr.decode(payload)
                if text:
                    await anyio.to_thread.run_sync(_write, errlog, text)


async def _send_all(items: list[SessionMessage | Exception], out: MemoryObjectSendStream[SessionMessage | Exception]
                    ) -> bool:
    """False once nobody is listening."""
    for item in items:
        try:
            await out.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
    return True


async def _report_exit(api: docker.APIClient, container: str, spec: ContainerSpec, errlog: IO[str]) -> None:
    """Say in the server's log how its container ended (exit status, out of memory)."""
    def inspect() -> dict[str, Any]:
        _wait(api, container, _STOP_GRACE)
        return api.inspect_container(container).get("State", {})

    with anyio.CancelScope(shield=True):
        try:
            state = await anyio.to_thread.run_sync(inspect)
        except (DockerException, APIError):
            return
    if state.get("Running"):
        return  # it closed its output but lives on; the shutdown removes it
    why = f"exited with status {state.get('ExitCode')}"
    if state.get("OOMKilled"):
        why += f" (killed: out of memory, limit {spec.memory_bytes // (1024 * 1024)} MB)"
    _log(errlog, f"container {spec.name} {why}")
    failed = state.get("OOMKilled") or state.get("ExitCode") not in (0, None)
    logger.log(logging.WARNING if failed else logging.DEBUG, "sandbox %s: container %s",
               spec.labels.get(SERVER_LABEL), why)


def _write(errlog: IO[str], text: str) -> None:
    with suppress(OSError, ValueError):
        errlog.write(text)
        errlog.flush()


def _log(errlog: IO[str], text: str) -> None:
    _write(errlog, f"[simgate] {text}\n")
