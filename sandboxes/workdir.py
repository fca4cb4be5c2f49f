"""Each upstream server gets its own HOME, TMPDIR and working directory.

Several servers write to `$HOME` or fixed `/tmp` names; private directories keep them from
seeing or clobbering each other's files. Gateway replicas on one state directory (`serve --workers`)
each run their own copy of every server: a replica's copy lives in `STATE_DIR/servers/NAME/replicas/I/`,
so no two processes share a HOME, TMPDIR, work directory or stderr.log (installs, in `tools/`, are
shared: they are made once, under a lock).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import BaseModel

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ServerDirs(BaseModel):
    root: Path
    home: Path
    tmp: Path
    work: Path
    replica: int | None = None  # which gateway replica runs this copy of the server (None: the only gateway)

    @property
    def run(self) -> Path:
        """The directory of this copy of the server: holds home/tmp/work and its stderr.log."""
        return self.root if self.replica is None else self.root / "replicas" / str(self.replica)

    @property
    def state_dir(self) -> Path:
        """The gateway's state directory (`root` is STATE_DIR/servers/NAME)."""
        return self.root.parent.parent

    def environment(self) -> dict[str, str]:
        return {"HOME": str(self.home), "TMPDIR": str(self.tmp), "TMP": str(self.tmp), "TEMP": str(self.tmp)}


def directory_name(server: str) -> str:
    """A file-system-safe, collision-free directory name for a server name."""
    safe = _UNSAFE.sub("_", server).strip("._") or "server"
    if safe == server:
        return safe
    return f"{safe[:40]}-{hashlib.sha256(server.encode()).hexdigest()[:8]}"


def prepare_server_dirs(state_dir: Path, server: str, replica: int | None = None) -> ServerDirs:
    root = (state_dir / "servers" / directory_name(server)).resolve()
    run = root if replica is None else root / "replicas" / str(replica)
    dirs = ServerDirs(root=root, home=run / "home", tmp=run / "tmp", work=run / "work", replica=replica)
    for path in (dirs.home, dirs.tmp, dirs.work):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return dirs
