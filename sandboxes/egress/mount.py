"""How a sandbox sees the egress proxy: its Unix socket mounted at a fixed path, and the forwarder
wrapped around the server's command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import BaseModel

SANDBOX_DIR = "/run/simgate-egress"
FORWARDER = Path(__file__).with_name("forwarder.py")


class EgressMount(BaseModel):
    host_socket: Path

    @property
    def host_dir(self) -> Path:
        return self.host_socket.parent

    @property
    def sandbox_socket(self) -> str:
        return f"{SANDBOX_DIR}/{self.host_socket.name}"

    def wrap(self, executable: str, args: list[str], *, python: str | None = None,
             forwarder: str | None = None) -> tuple[str, list[str]]:
        """The forwarder starts first, then execs the server. By default the interpreter is the gateway's
        base Python (resolved out of any venv) and the forwarder this package's file, as a bind-mounting
        backend sees them; an image-based backend passes the paths inside its image. `-I`: the forwarder
        needs the standard library only."""
        python = python or os.path.realpath(sys.executable)
        return python, ["-I", forwarder or str(FORWARDER), self.sandbox_socket, "--", executable, *args]
