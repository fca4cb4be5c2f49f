"""Images for sandboxed servers, built without any registry and cached by content.

`base` is `docker import`ed from a tarball made here: an empty skeleton (`/tmp`, `/etc/passwd` with
nobody) plus a shell and `env` with their libraries. The Python and Node images are `docker build
--network none` of `docker/python.Dockerfile` and `docker/node.Dockerfile` over a context streamed
from the host (the runtime's files, see `runtime`). Each tag is a hash of what went in (the
Dockerfile and every file's path, size, mtime and mode), so an existing tag is never rebuilt and a
changed runtime gets a new image. Builds run on first use; `simgate sandbox build-images` runs them
ahead of time. A file lock keeps concurrent gateways from building the same image twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from simgate.sandboxes.docker.host_runtime import (
    BASE_TOOLS,
    FileSet,
    Runtime,
    base_files,
    forwarder_python,
    node_files,
    python_files,
)
from simgate.sandboxes.launch import SandboxUnavailable

logger = logging.getLogger("simgate.sandbox")

DOCKERFILES = Path(__file__).resolve().parents[2] / "docker"
LABEL = "simgate.image"
_BUILD_TIMEOUT = 900
_SKELETON_DIRS = {"/tmp": 0o1777, "/etc": 0o755, "/proc": 0o755, "/sys": 0o755, "/dev": 0o755, "/home": 0o755,
                  "/root": 0o755, "/var": 0o755, "/var/tmp": 0o1777, "/run": 0o755}
_SKELETON_FILES = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "/etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}


def ensure_image(client: docker.DockerClient, runtime: Runtime) -> str:
    """The tag of the image for `runtime`, built now if no image with that content exists yet."""
    # Listing a runtime's files costs ~0.5 s (a tree walk, `ldd`): a cheap key is tried first. It
    # changes when the interpreter or its standard library is reinstalled, and with /etc/ld.so.cache,
    # which `ldconfig` rewrites whenever a package adds or upgrades a shared library.
    quick = _tag(runtime.kind, ["quick", _dockerfile(runtime.kind), runtime.model_dump(), forwarder_python(),
                                _stats(runtime.interpreter, Path(runtime.interpreter).parent.parent / "lib",
                                       "/etc/ld.so.cache", *BASE_TOOLS)])
    if _exists(client, quick):
        return quick
    with _build_lock():
        tag = _ensure_image(client, runtime)
        client.images.get(tag).tag(*quick.split(":"))
    return quick


def _stats(*paths: str | Path) -> list[tuple[str, int, int]]:
    out = []
    for path in paths:
        try:
            info = os.stat(path)
            out.append((str(path), info.st_size, info.st_mtime_ns))
        except OSError:
            out.append((str(path), -1, -1))
    return out


def _ensure_image(client: docker.DockerClient, runtime: Runtime) -> str:
    base = ensure_base(client)
    if runtime.kind == "python":
        files = python_files(runtime.interpreter)
    else:
        files = node_files(runtime.interpreter)
        # A Python for the egress forwarder, which runs in front of servers with a network allowlist.
        files.entries.update(python_files(forwarder_python()).entries)
    dockerfile = _dockerfile(runtime.kind)
    tag = _tag(runtime.kind, [dockerfile, base, runtime.interpreter, files.fingerprint()])
    if _exists(client, tag):
        return tag
    logger.info("building the %s sandbox image %s for %s", runtime.kind, tag, runtime.interpreter)
    with tempfile.TemporaryFile() as context:
        _write_context(context, dockerfile, files)
        context.seek(0)
        try:
            client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True,
                                forcerm=True, pull=False, buildargs={"BASE": base,
                                                                     "INTERPRETER": runtime.interpreter},
                                labels={LABEL: runtime.kind}, timeout=_BUILD_TIMEOUT, use_config_proxy=False)
        except BuildError as exc:
            log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
            raise SandboxUnavailable(f"docker: building the {runtime.kind} image failed: {exc.msg}\n"
                                     f"{log[-2000:]}") from None
        except APIError as exc:
            raise SandboxUnavailable(f"docker: building the {runtime.kind} image failed: {exc}") from None
    return tag


def ensure_base(client: docker.DockerClient) -> str:
    files = base_files()
    tag = _tag("base", [_SKELETON_DIRS, _SKELETON_FILES, files.fingerprint()])
    if _exists(client, tag):
        return tag
    logger.info("importing the sandbox base image %s", tag)
    repository, version = tag.split(":")
    with tempfile.NamedTemporaryFile(suffix=".tar") as rootfs:
        with tarfile.open(fileobj=rootfs, mode="w") as tar:
            for path, mode in _SKELETON_DIRS.items():
                tar.addfile(_info(path, tarfile.DIRTYPE, mode))
            for path, text in _SKELETON_FILES.items():
                data = text.encode()
                info = _info(path, tarfile.REGTYPE, 0o644)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            _add_files(tar, files, prefix="")
        rootfs.flush()
        try:
            client.api.import_image_from_file(rootfs.name, repository=repository, tag=version,
                                              changes=[f"LABEL {LABEL}=base"])
        except APIError as exc:
            raise SandboxUnavailable(f"docker: importing the base image failed: {exc}") from None
    return tag


def missing_images(client: docker.DockerClient) -> list[str]:
    """Which of base/python/node have no image on this engine yet (any runtime's)."""
    present = {image.labels.get(LABEL) for image in client.images.list(filters={"label": LABEL})}
    return [kind for kind in ("base", "python", "node") if kind not in present]


def _dockerfile(kind: str) -> str:
    path = DOCKERFILES / f"{kind}.Dockerfile"
    if not path.is_file():
        raise SandboxUnavailable(f"docker: {path} is missing (the Dockerfiles ship with the source tree)")
    return path.read_text()


def _tag(kind: str, parts: list[object]) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"simgate-{kind}:{digest[:16]}"


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _write_context(out: IO[bytes], dockerfile: str, files: FileSet) -> None:
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
        tar.addfile(_info("/rootfs", tarfile.DIRTYPE, 0o755))
        _add_files(tar, files, prefix="/rootfs")


def _add_files(tar: tarfile.TarFile, files: FileSet, prefix: str) -> None:
    for path, entry in sorted(files.entries.items()):
        name = prefix + path
        if entry.type == "dir":
            # 0755 on every directory: the container's user (nobody) must reach the runtime, even
            # where the host keeps the path private (/root).
            tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
        elif entry.type == "symlink":
            info = _info(name, tarfile.SYMTYPE, 0o777)
            info.linkname = entry.target
            tar.addfile(info)
        else:
            mode = os.stat(path).st_mode & 0o777
            info = _info(name, tarfile.REGTYPE, mode | 0o444 | (0o111 if mode & 0o100 else 0))
            info.size = os.path.getsize(path)
            with open(path, "rb") as handle:
                tar.addfile(info, handle)


def _info(path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.mtime = 0  # the same files give the same layer
    return info


@contextmanager
def _build_lock() -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / "simgate-docker-images.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
