"""The listening sockets of a replicated gateway, all made (and kept) by the parent.

Each replica has its own listener on the public address, with SO_REUSEPORT, so the kernel spreads new
connections over the replicas. The parent holds every listener and hands replica i its pair at each
start: when a replica dies, its listener stays open, and connections the kernel queued on it (or
queues while it restarts) wait for the restarted replica instead of being reset. (A listener owned by
the replica itself would take its queue down with it: a client whose connection had landed there in
the last moments would get a reset.) The private listener on 127.0.0.1 is how the siblings reach
replica i; it keeps its port across restarts for the same reason.
"""

from __future__ import annotations

import socket

BACKLOG = 2048


def public_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listeners on one address (raises OSError when it is taken); a port 0 is resolved by the first."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address if not made[1:] else (address[0], made[0].getsockname()[1], *address[2:]))
            sock.listen(BACKLOG)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


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
