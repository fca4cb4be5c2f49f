"""Run inside the sandbox, before the server: `python -I forwarder.py SOCKET -- COMMAND ARGS...`.

Listens on 127.0.0.1 (the sandbox's own loopback), relays each connection to the gateway's egress proxy
on the Unix socket SOCKET, then execs COMMAND with HTTP_PROXY/HTTPS_PROXY/ALL_PROXY pointing at it.
The listening socket exists before the server starts, so its first request cannot race the forwarder;
the relay runs in a forked child that exits when the server does. Standard library only: it runs on the
bare interpreter, without the gateway's packages.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


async def _serve_one(proxy_socket: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(proxy_socket)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    up_writer.close()
    writer.close()


async def _relay(listener: socket.socket, proxy_socket: str, parent: int) -> None:
    server = await asyncio.start_server(lambda r, w: _serve_one(proxy_socket, r, w), sock=listener)
    async with server:
        while os.getppid() == parent:  # the server exited (we were re-parented): stop
            await asyncio.sleep(0.5)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: forwarder.py SOCKET -- COMMAND [ARGS...]")
    proxy_socket, command = argv[0], argv[2:]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    parent = os.getpid()
    if os.fork() == 0:
        # The relay: off the server's stdio (it must not hold the protocol pipes open).
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        try:
            asyncio.run(_relay(listener, proxy_socket, parent))
        finally:
            os._exit(0)
    listener.close()
    url = f"http://127.0.0.1:{port}"
    for name in _PROXY_VARIABLES:
        os.environ[name] = url
    for name in ("NO_PROXY", "no_proxy"):  # nothing bypasses the proxy (there is no other way out anyway)
        os.environ.pop(name, None)
    os.environ["NODE_USE_ENV_PROXY"] = "1"  # Node's fetch honours the variables only when asked to
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
