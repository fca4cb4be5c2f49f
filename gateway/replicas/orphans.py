"""No process outlives the replicated gateway: the parent adopts what a dead replica leaves behind.

A replica runs its upstream servers in sessions of their own; if the replica is killed (kill -9, OOM),
they are orphaned. The parent is a child subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux), so they
become its children, and it ends them. A replica in turn is sent SIGTERM if its parent dies
(PR_SET_PDEATHSIG), so killing the parent does not leave replicas serving.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Container
from pathlib import Path

import anyio

logger = logging.getLogger("simgate.replicas")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def become_subreaper() -> bool:
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(parent_pid: int) -> None:
    """This replica gets SIGTERM when its parent dies; if the parent is already gone, it stops now."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def children() -> list[int]:
    """This process's children (living or zombies), from /proc."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


async def end_orphans(replicas: Container[int], grace: float = 3.0) -> list[int]:
    """SIGTERM (then SIGKILL) every child that is not a replica, with its process group, and reap it."""
    orphans = [pid for pid in children() if pid not in replicas]
    if not orphans:
        return []
    own_group = os.getpgrp()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in orphans:
            _signal(pid, sig, own_group)
        with anyio.move_on_after(grace if sig == signal.SIGTERM else 5.0):
            while any(_alive(pid) for pid in orphans):
                await anyio.sleep(0.05)
        if not any(_alive(pid) for pid in orphans):
            break
    logger.info("ended %d process(es) a replica left behind: %s", len(orphans), orphans)
    return orphans


def _signal(pid: int, sig: int, own_group: int) -> None:
    try:
        group = os.getpgid(pid)
        if group != own_group:
            os.killpg(group, sig)  # an upstream's session: its own children go with it
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    """False once `pid` has exited (reaped here: it is this process's child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0
