"""What a sandboxed server may see of the host, and what it never sees.

A server's mounts come from its command (the code it runs), its policy (`read_only`, `read_write`)
and its `cwd`. Some of those may hold the gateway's own files: its state directory (vault, vault key,
client keys, the recording store, every server's directories), its logs. `plan_mounts` turns the
mounts into a plan that never shows them:

- a mount equal to or inside a protected path is refused (the server's own root excepted);
- a writable mount that holds a protected path is refused (masking inside it would not stop renames
  around the masks);
- every protected path inside a read-only mount is masked (an empty read-only directory, or
  /dev/null for a file), whatever else is mounted. A protected path that does not exist yet is masked
  by its nearest existing ancestor inside the mount, so it stays hidden once it is created.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from simgate.sandboxes.errors import SandboxUnavailable

# Project markers: a script in such a directory (or a few levels below) is part of a package, and
# its package root is mounted; a lone script is mounted alone.
_PACKAGE_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "package.json")
_PACKAGE_DEPTH = 3


class ExposureRefused(SandboxUnavailable):
    """A mount would show or let the server change one of the gateway's own files."""


class Protected(BaseModel):
    path: Path = Field(description="absolute, symlinks resolved")
    what: str = Field(description="what it is, for the error message (e.g. 'the vault key file')")


class Exposure(BaseModel):
    """The paths a server's sandbox must never show, and the server's own root (allowed though inside them)."""

    protected: list[Protected] = Field(default_factory=list)
    own_root: Path | None = None


class Mount(BaseModel):
    source: Path  # on the host
    target: Path  # in the sandbox
    read_only: bool


class MountPlan(BaseModel):
    mounts: list[Mount]
    masked_dirs: list[Path]  # targets: an empty read-only directory is mounted there
    masked_files: list[Path]  # targets: /dev/null is mounted there


class Wanted(BaseModel):
    """One mount the server needs, and why (for the error message)."""

    path: Path
    read_only: bool
    why: str


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check(wanted: Wanted, exposure: Exposure) -> None:
    """Raise `ExposureRefused` when this mount would be, or would let the server change, a protected path."""
    real = wanted.path.resolve()
    if exposure.own_root is not None and _inside(real, exposure.own_root):
        return
    holders = [item for item in exposure.protected if _inside(real, item.path)]
    if holders:
        item = max(holders, key=lambda h: len(h.path.parts))  # the most precise: the store, not the state dir
        where = "is" if real == item.path else "is inside"
        raise ExposureRefused(f"{wanted.why} {wanted.path} {where} {item.what} ({item.path}); a sandboxed "
                              "server may not see it")
    if not wanted.read_only:
        for item in exposure.protected:
            if real in item.path.parents:
                raise ExposureRefused(f"{wanted.why} {wanted.path} would be writable and holds {item.what} "
                                      f"({item.path}); a sandboxed server may not change it")


def plan_mounts(wanted: Iterable[Wanted], exposure: Exposure) -> MountPlan:
    """The mounts (source = target; both the path as given and, when they differ, resolved) and the masks.

    Mounts inside another mount of the same kind are dropped unless a mask lies between them (the
    server's own directories inside a masked state directory); read-only mounts inside writable ones
    are dropped. `ExposureRefused` names the mount and the protected path it would expose."""
    items = list(wanted)
    for item in items:
        check(item, exposure)
    masked_dirs: set[Path] = set()
    masked_files: set[Path] = set()
    for item in items:
        if not item.read_only:
            continue
        real = item.path.resolve()
        for protected in exposure.protected:
            if real not in protected.path.parents:
                continue
            target = _mask_target(protected, real, item)
            inside = item.path / target.relative_to(real)
            if target.is_dir():
                masked_dirs.add(inside)
            else:
                masked_files.add(inside)
    masked_dirs = set(_outermost(masked_dirs))
    masked_files = {f for f in masked_files if not any(d in f.parents for d in masked_dirs)}
    masks = masked_dirs | masked_files
    writable = [item.path for item in items if not item.read_only]
    mounts: list[Mount] = []
    seen: set[tuple[Path, bool]] = set()
    for item in sorted(items, key=lambda i: (len(i.path.parts), i.read_only)):
        key = (item.path, item.read_only)
        if key in seen or (item.read_only and item.path in writable):
            continue
        covering = [m for m in mounts if m.target in item.path.parents and (m.read_only == item.read_only
                                                                             or not m.read_only)]
        if any(not any(m.target in q.parents and _inside(item.path, q) for q in masks) for m in covering):
            continue
        seen.add(key)
        mounts.append(Mount(source=item.path, target=item.path, read_only=item.read_only))
    return MountPlan(mounts=mounts, masked_dirs=sorted(masked_dirs), masked_files=sorted(masked_files))


def _mask_target(protected: Protected, mount: Path, item: Wanted) -> Path:
    """The protected path itself, or (not there yet) its nearest existing ancestor strictly inside the mount."""
    target = protected.path
    while not (target.exists() or target.is_symlink()):
        target = target.parent
        if target == mount:
            raise ExposureRefused(f"{item.why} {item.path} would show {protected.what} ({protected.path}) once it "
                                  "is created; move it out of what the server sees")
    return target


def _outermost(paths: Iterable[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: len(p.parts)):
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return kept


def code_root(path: Path) -> Path:
    """What to mount for a path on the server's command line: a directory as it is; a file in a `bin`
    directory or a `node_modules` tree: its install root; a file of a package (its directory, or one a
    few levels up, has a project file; or its directory is a Python package): the package's root;
    any other file: the file alone (never the whole directory it happens to lie in)."""
    parts = path.parts
    if path.is_dir():
        return path
    if "node_modules" in parts:
        return Path(*parts[: parts.index("node_modules")])
    if path.parent.name == "bin":
        return path.parent.parent
    if (path.parent / "__init__.py").is_file():
        return path.parent
    for depth, directory in enumerate(path.parents):
        if depth >= _PACKAGE_DEPTH or directory == Path("/"):
            break
        if any((directory / marker).is_file() for marker in _PACKAGE_MARKERS):
            return directory
    return path
