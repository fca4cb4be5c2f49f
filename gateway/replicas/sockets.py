"""The listening sockets of a replicated gateway.

Every replica listens on the public address with SO_REUSEPORT, so the kernel spreads new connections
over the replicas that are listening. The parent holds the same address bound but not listening: it
reserves the port (a port 0 is resolved once, for all) while no connection is ever queued on it.
Each replica also has a private listener on 127.0.0.1 that the parent makes and keeps, so its port
does not change when the replica is restarted (its siblings forward to it by that port).
"""

from __future__ import annotations

import socket

BACKLOG = 2048


def _bound(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """The parent's hold on the public address (raises OSError when it is taken)."""
    return _bound(host, port)


def public_listener(host: str, port: int) -> socket.socket:
    """A replica's socket on the public address; the server starts listening on it once the app is up,
    which is when the kernel starts giving this replica connections."""
    sock = _bound(host, port)
    sock.setblocking(False)
    return sock


def private_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    return sock


def inherited(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
