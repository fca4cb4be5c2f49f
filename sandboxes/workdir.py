"""Each upstream server gets its own HOME, TMPDIR and working directory.

Several servers write to `$HOME` or fixed `/tmp` names; private directories keep them from
seeing or clobbering each other's files.
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


def prepare_server_dirs(state_dir: Path, server: str) -> ServerDirs:
    root = (state_dir / "servers" / directory_name(server)).resolve()
    dirs = ServerDirs(root=root, home=root / "home", tmp=root / "tmp", work=root / "work")
    for path in (dirs.home, dirs.tmp, dirs.work):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return dirs
