"""`limits.disk_mb` for the directories a sandboxed server keeps: its work dir and `read_write` paths.

Its /tmp, TMPDIR and HOME are capped tmpfs (see `launch.py`, `docker/container.py`); what persists is
capped here. Where the kernel can enforce it (the gateway runs as root and can attach loop devices),
the work dir is an ext4 image of `disk_mb` mounted over it: a server that fills it gets ENOSPC, like on
a full disk, and its files survive restarts in `servers/NAME/work.img`. Everything else it can write
(`read_write` paths, which are the user's own directories, and the work dir where no loop device is
available) is watched: past `disk_mb`, the server is stopped with `DiskCapExceeded`, which the gateway
reports as its last error and restarts it after the usual backoff.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from simgate.sandboxes.errors import DiskCapExceeded, SandboxUnavailable
from simgate.sandboxes.policy import SandboxPolicy
from simgate.sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.sandbox")

WATCH_INTERVAL = 2.0  # seconds between two measurements of a watched directory
_MB = 1024 * 1024
_MIN_IMAGE_MB = 2  # ext4 needs a little room for its own metadata


@asynccontextmanager
async def disk_cap(name: str, policy: SandboxPolicy | None, dirs: ServerDirs,
                   interval: float = WATCH_INTERVAL) -> AsyncIterator[None]:
    """Hold the caps for one run of a server; raise `DiskCapExceeded` out of the body when one is passed."""
    cap = policy.limits.disk_mb if policy is not None and policy.backend != "none" else None
    if cap is None:
        yield
        return
    watched = [Path(p).resolve() for p in policy.read_write]  # type: ignore[union-attr]
    mounted = await anyio.to_thread.run_sync(mount_work_image, dirs, cap) if loop_mount_possible() else False
    if not mounted:
        watched.insert(0, dirs.work)
    try:
        async with anyio.create_task_group() as group:
            if watched:
                group.start_soon(_watch, name, watched, cap, interval)
            yield
            group.cancel_scope.cancel()
    finally:
        if mounted:
            with anyio.CancelScope(shield=True):  # also when the gateway is shutting down (its scope cancelled)
                await anyio.to_thread.run_sync(unmount, dirs.work)


async def _watch(name: str, paths: list[Path], cap_mb: int, interval: float) -> None:
    while True:
        for path in paths:
            used = await anyio.to_thread.run_sync(disk_usage, path, cap_mb * _MB)
            if used > cap_mb * _MB:
                raise DiskCapExceeded(f"server {name!r} has more than limits.disk_mb={cap_mb} MB in {path} "
                                      f"(over {used // _MB} MB): stopped; free space there or raise the limit")
        await anyio.sleep(interval)


def disk_usage(path: Path, stop_above: int) -> int:
    """Bytes the tree under `path` occupies on disk (sparse files count what they use); the walk stops as
    soon as it passes `stop_above`, so a huge tree costs no more than the cap to measure."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:  # vanished or unreadable meanwhile: nothing of it to count
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += info.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                if total > stop_above:
                    return total
    return total


def loop_mount_possible() -> bool:
    """Root, loop devices and the tools to make and mount an ext4 image."""
    return (os.geteuid() == 0 and Path("/dev/loop-control").exists()
            and all(shutil.which(tool) for tool in ("mkfs.ext4", "mount", "umount", "resize2fs")))


def image_path(dirs: ServerDirs) -> Path:
    return dirs.root / "work.img"


def mount_work_image(dirs: ServerDirs, cap_mb: int) -> bool:
    """Mount the server's work image (made, or grown, to `cap_mb`) over its work dir; False where the kernel
    refuses (e.g. no free loop device in a container), so the caller falls back to watching the directory."""
    if os.path.ismount(dirs.work):
        return True  # left mounted by a gateway that was killed: the same image, reused
    image = image_path(dirs)
    size = max(cap_mb, _MIN_IMAGE_MB) * _MB
    try:
        if not image.exists():
            _make_image(image, size, seed=dirs.work)
        elif image.stat().st_size < size:
            os.truncate(image, size)
            _run(["resize2fs", "-f", str(image)])
        elif image.stat().st_size > size:
            raise SandboxUnavailable(
                f"the work dir image {image} is {image.stat().st_size // _MB} MB and limits.disk_mb is {cap_mb}: "
                "shrinking it could lose the server's files; move them out and delete the image to start smaller")
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(dirs.work)])
    except OSError as exc:
        logger.warning("work dir of %s not capped by an image (%s): watching its size instead", dirs.root, exc)
        return False
    return True


def unmount(work: Path) -> None:
    try:
        _run(["umount", str(work)])
    except OSError:
        try:  # still busy (a process of the server not yet reaped): detach now, freed when unused
            _run(["umount", "-l", str(work)])
        except OSError as exc:
            logger.warning("could not unmount %s: %s", work, exc)


def _make_image(image: Path, size: int, seed: Path) -> None:
    """A new ext4 image holding what the work dir held so far (written atomically: a half-made image
    is never left under the final name)."""
    fd, partial = tempfile.mkstemp(dir=image.parent, prefix=".work.img.")
    os.close(fd)
    try:
        os.truncate(partial, size)
        populate = ["-d", str(seed)] if any(seed.iterdir()) else []
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", *populate, partial])
        os.replace(partial, image)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise OSError(f"{argv[0]} failed: {message[-1] if message else f'exit {result.returncode}'}")
