"""The directories the page may read reports and trajectories from, and nothing outside them.

A file is named to the API by (root number, path relative to that root). The path is resolved and must
stay inside its root: `..`, absolute paths, and symbolic links leading out are refused, so a request can
never read an arbitrary file of the gateway's machine. Finding files is a bounded walk (depth, entries),
so a huge directory costs a bounded amount.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from simgate.gateway.config.models import GatewaySettings
from simgate.gateway.ui.data_http import ApiError

REPORTS_ROOT = 1  # STATE_DIR/reports: where runs started from the page write
_MAX_DEPTH = 5
_MAX_ENTRIES = 20_000  # directory entries looked at per walk of one root


@dataclass(frozen=True)
class Found:
    root: int
    path: str  # relative to the root, with '/'
    file: Path
    size: int
    modified: float


class DataRoots:
    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> DataRoots:
        state = Path(settings.state_dir)
        return cls([state / "runs", state / "reports", *(Path(d) for d in settings.data_dirs)])

    @property
    def reports_dir(self) -> Path:
        """Where runs started from the page write their reports (STATE_DIR/reports)."""
        return self.roots[REPORTS_ROOT]

    def describe(self) -> list[dict[str, object]]:
        return [{"root": i, "directory": str(root), "exists": root.is_dir()} for i, root in enumerate(self.roots)]

    def resolve(self, root: str | int | None, path: str | None, *, suffix: str) -> Path:
        """The file at `path` under root number `root`; `ApiError` unless it is a regular file inside it."""
        try:
            index = int(root) if root is not None else -1
        except ValueError:
            index = -1
        if not 0 <= index < len(self.roots):
            raise ApiError(f"root must be one of 0..{len(self.roots) - 1} (see the list of files)", 400)
        if not path:
            raise ApiError("path is required: a file's path relative to its root", 400)
        if "\x00" in path:
            raise ApiError("path refused: it holds a NUL character", 400)
        relative = Path(path)
        shown = path if len(path) <= 200 else path[:200] + "..."  # a message, not an echo of any length
        if relative.is_absolute() or ".." in relative.parts:
            raise ApiError(f"path {shown!r} refused: give a path relative to the root, without '..'", 403)
        try:
            base = self.roots[index].resolve()
            target = (base / relative).resolve()
            if not target.is_relative_to(base):
                raise ApiError(f"path {shown!r} refused: it leads outside the directory the page may read", 403)
            if target.suffix != suffix:
                raise ApiError(f"path {shown!r} refused: only {suffix} files are opened here", 403)
            if not target.is_file():
                raise ApiError(f"no file {shown!r} under {self.roots[index]}", 404)
        except (OSError, RuntimeError) as exc:  # a name too long; a loop of links (RuntimeError): no file to read
            reason = exc.strerror if isinstance(exc, OSError) else "a loop of symbolic links"
            raise ApiError(f"no file {shown!r} under {self.roots[index]}: {reason}", 404) from None
        return target

    def walk(self, suffix: str, name: str | None = None) -> Iterator[Found]:
        """Files ending in `suffix` (or called `name`) under every root, without following links out."""
        for index, root in enumerate(self.roots):
            if not root.is_dir():
                continue
            base = root.resolve()
            seen = 0
            for directory, subdirs, files in os.walk(base):
                depth = len(Path(directory).relative_to(base).parts)
                if depth >= _MAX_DEPTH:
                    subdirs[:] = []
                subdirs.sort()
                seen += len(subdirs) + len(files)
                for file_name in sorted(files):
                    if (name is not None and file_name != name) or not file_name.endswith(suffix):
                        continue
                    file = Path(directory) / file_name
                    try:
                        if not file.resolve().is_relative_to(base):
                            continue  # a link leading out of the root
                        stat = file.stat()
                    except (OSError, RuntimeError):  # RuntimeError: a loop of links
                        continue
                    if not S_ISREG(stat.st_mode):
                        continue  # a FIFO or a device: opening it to read its first line would wait forever
                    yield Found(index, file.relative_to(base).as_posix(), file, stat.st_size, stat.st_mtime)
                if seen > _MAX_ENTRIES:
                    break
