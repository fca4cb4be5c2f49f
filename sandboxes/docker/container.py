"""A server's sandbox policy as a hardened container: what it sees, what it may use, how it is labelled.

The server's environment is not part of the container's configuration (the engine stores that in
clear: `docker inspect`, its config.v2.json on disk): a `sh` prologue reads it as the first line of
the server's stdin, which the gateway writes right after the start, and execs the server with it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import docker
from docker.types import LogConfig, Mount, Ulimit
from pydantic import BaseModel

from simgate.sandboxes.docker.host_runtime import detect_runtime, forwarder_python
from simgate.sandboxes.docker.images import ensure_image
from simgate.sandboxes.egress.allowlist import NetworkAllow
from simgate.sandboxes.egress.mount import SANDBOX_DIR as EGRESS_DIR
from simgate.sandboxes.egress.mount import EgressMount
from simgate.sandboxes.errors import SandboxUnavailable
from simgate.sandboxes.exposure import Exposure, Wanted, plan_mounts
from simgate.sandboxes.launch import default_exposure, install_root, tool_mounts
from simgate.sandboxes.policy import SandboxPolicy
from simgate.sandboxes.workdir import ServerDirs, directory_name

GATEWAY_LABEL = "simgate.gateway"  # one gateway process: its state dir, and its replica index if it is one
STATE_LABEL = "simgate.state"  # every process of a gateway (all replicas): its state dir only
SERVER_LABEL = "simgate.server"
NOBODY = 65534
# Caps that apply when the policy sets none: a container is never left unbounded.
DEFAULT_MEMORY_MB = 2048
DEFAULT_PROCESSES = 256
DEFAULT_CPUS = 1.0
DEFAULT_TMP_MB = 256
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Reads the environment (one line of shell assignments the gateway writes first on stdin; `read` takes
# it byte by byte, so the server's own stdin starts right after it), then runs the server.
_PROLOGUE = 'IFS= read -r simgate_env || exit 125; eval "$simgate_env"; unset simgate_env; '
_SYSTEM = (Path("/usr"), Path("/etc"), Path("/opt"), Path("/bin"), Path("/lib"), Path("/lib64"), Path("/sbin"))


class BindMount(BaseModel):
    path: str
    read_only: bool
    target: str | None = None  # where it appears in the container (default: the same path)


class ContainerSpec(BaseModel):
    """Everything needed to create the container. `env` goes neither into the container's configuration
    nor onto a command line: `preamble()` is written to its stdin once it runs."""

    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    working_dir: str
    user: str
    labels: dict[str, str]
    mounts: list[BindMount]
    network_mode: str
    memory_bytes: int
    address_space_bytes: int | None
    processes: int
    nano_cpus: int
    cpu_seconds: int | None
    open_files: int | None
    tmp_size_mb: int = DEFAULT_TMP_MB
    scratch: list[str] = []  # HOME and TMPDIR as capped tmpfs (limits.disk_mb)
    scratch_mb: int | None = None
    masked_files: list[str] = []  # /dev/null is mounted there

    def preamble(self) -> bytes:
        """The environment as one line of `sh`: every byte an octal escape of `printf`, so any value
        (newlines, quotes) survives; a trailing `x` keeps the command substitution from eating newlines."""
        parts = []
        for key, value in self.env.items():
            escaped = "".join(f"\\{byte:03o}" for byte in value.encode())
            parts.append(f"export {key}=\"$(printf '{escaped}x')\"; {key}=\"${{{key}%x}}\";")
        return (" ".join(parts) + "\n").encode()

    def create_kwargs(self, api: docker.APIClient) -> dict[str, Any]:
        ulimits = []
        if self.cpu_seconds is not None:
            ulimits.append(Ulimit(name="cpu", soft=self.cpu_seconds, hard=self.cpu_seconds))
        if self.open_files is not None:
            ulimits.append(Ulimit(name="nofile", soft=self.open_files, hard=self.open_files))
        host_config = api.create_host_config(
            network_mode=self.network_mode,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=self.processes,
            mem_limit=self.memory_bytes,
            memswap_limit=self.memory_bytes,  # no swap beyond the memory cap
            nano_cpus=self.nano_cpus,
            ulimits=ulimits or None,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.tmp_size_mb}m"},
            mounts=[*(Mount(target=m.target or m.path, source=m.path, type="bind", read_only=m.read_only)
                      for m in self.mounts),
                    # tmpfs as mounts, not `tmpfs=`: those are filled with what lies beneath them first
                    # ("tmpcopyup"), which for a mask is the very directory it hides.
                    *(Mount(target=path, source=None, type="tmpfs", tmpfs_size=self.scratch_mb * 1024 * 1024,
                            tmpfs_mode=0o1777) for path in self.scratch if self.scratch_mb is not None),
                    *(Mount(target=path, source="/dev/null", type="bind", read_only=True)
                      for path in self.masked_files)],
            # The engine keeps no copy of what the server prints (it may carry secrets): we read it live.
            log_config=LogConfig(type="none"),
        )
        # stdin_open without detach sets OpenStdin, AttachStd* and StdinOnce: closing our end of the
        # attach socket closes the server's stdin, as for a child process.
        script = _PROLOGUE
        if self.address_space_bytes is not None:
            # Not a docker ulimit: runc applies those to itself first, and its own start-up then fails
            # ("unable to init seccomp ... cannot allocate memory"). The image's shell sets it instead.
            script += f"ulimit -v {self.address_space_bytes // 1024} && "
        command = ["/bin/sh", "-c", script + 'exec "$@"', "simgate-sandbox", *self.command]
        return {"image": self.image, "command": command, "user": self.user,
                "working_dir": self.working_dir, "labels": self.labels, "name": self.name, "stdin_open": True,
                "detach": False, "tty": False, "host_config": host_config, "network_disabled": False}


def gateway_instance(state_dir: Path, replica: int | None = None) -> str:
    """Identifies one gateway's containers: the hash of its state directory (one gateway per state dir), and
    of its replica index when it is one of several (so a replica sweeps only what its own earlier run left)."""
    key = str(state_dir.resolve()) + ("" if replica is None else f"#replica-{replica}")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def container_user(dirs: ServerDirs, writable: list[Path]) -> str:
    """nobody when the gateway is root (its own directories are handed to nobody first); otherwise the
    gateway's own uid, which is not root either and already owns them."""
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    managed = (dirs.home, dirs.tmp, dirs.work)
    for path in writable:
        if any(path == own or own in path.parents for own in managed):
            _chown_tree(path, NOBODY)
    return f"{NOBODY}:{NOBODY}"


def _chown_tree(root: Path, uid: int) -> None:
    # Links are not followed, and a server cannot hard-link a host file in (links fail across mounts),
    # so only the server's own files change owner.
    os.chown(root, uid, uid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def prepare_container(client: docker.DockerClient, name: str, command: str, args: list[str], env: dict[str, str],
                      cwd: str, dirs: ServerDirs, policy: SandboxPolicy, instance: str,
                      egress: EgressMount | None = None, exposure: Exposure | None = None) -> ContainerSpec:
    """The container for one server (building its image if needed). Blocking: run it in a worker thread.
    `egress`: the allowlist proxy's socket, for a policy with `network: {allow: [...]}`. `exposure`: what
    it must never see (default: the state directory, but for the server's own directories)."""
    if isinstance(policy.network, NetworkAllow) and egress is None:
        raise SandboxUnavailable("docker: a network allowlist needs the gateway's egress proxy")
    search_path = env.get("PATH") or os.environ.get("PATH")
    runtime = detect_runtime(command, search_path)
    if policy.image is not None:
        image = policy.image
    elif runtime is None:
        raise SandboxUnavailable(f"docker: cannot tell which runtime {command!r} needs (neither Python nor Node); "
                                 "set sandbox.image to an image that can run it")
    else:
        image = ensure_image(client, runtime)
    executable = command if command.startswith("/") else shutil.which(command, path=search_path) or command
    egress_mounts: list[BindMount] = []
    if egress is not None:
        # Still no network: the proxy's socket, and the forwarder (run by a Python the image has) in front.
        python = runtime.interpreter if runtime is not None and runtime.kind == "python" else forwarder_python()
        executable, args = egress.wrap(executable, args, python=python)
        egress_mounts.append(BindMount(path=str(egress.host_dir), target=EGRESS_DIR, read_only=True))
    inner_env = {key: os.environ[key] for key in policy.env_allow if key in os.environ} | dirs.environment() | env
    for key in inner_env:
        if not _ENV_NAME.match(key):
            raise SandboxUnavailable(f"docker: environment variable {key!r} is not a shell name; the container "
                                     "gets its environment through a shell, never through its stored configuration")
    limits = policy.limits
    scratch = [dirs.home, dirs.tmp] if limits.disk_mb is not None else []
    own = [Wanted(path=p, read_only=False, why="its own directory") for p in (dirs.home, dirs.tmp, dirs.work)
           if p not in scratch]
    own += [Wanted(path=Path(p).resolve(), read_only=False, why="sandbox.read_write path") for p in policy.read_write]
    work = Path(cwd or dirs.work).resolve()
    # The runtime is in the image; mounting its host directory over it would defeat the image.
    provided = {install_root(Path(runtime.interpreter))} if runtime is not None and policy.image is None else set()
    if egress is not None and policy.image is None:
        provided.add(install_root(Path(executable)))  # the forwarder's Python is in the image too
    # Host system directories found through the command are not mounted (the image has its own);
    # paths the policy lists explicitly are, wherever they are.
    wanted = [Wanted(path=p, read_only=True, why="its command's code") for p in tool_mounts(executable, args)
              if p not in provided and not _system(p)]
    wanted += [Wanted(path=Path(p).resolve(), read_only=True, why="sandbox.read_only path") for p in policy.read_only]
    wanted += own
    if not any(work == w or w in work.parents for w in [*(w.path for w in own), *scratch]):
        # Outside its own directories, its cwd is only read: never a way to change the gateway's files.
        wanted.append(Wanted(path=work, read_only=True, why="its cwd"))
    plan = plan_mounts(wanted, exposure or default_exposure(dirs))
    writable = [w.path for w in own]
    for path in [*writable, work, *scratch]:
        path.mkdir(parents=True, exist_ok=True)
    mounts = [BindMount(path=str(m.source), target=str(m.target), read_only=m.read_only) for m in plan.mounts]
    mounts += _masks(dirs, plan.masked_dirs, [*(m.target for m in plan.mounts), *scratch])
    mounts += egress_mounts
    memory_mb = limits.memory_mb or DEFAULT_MEMORY_MB
    return ContainerSpec(
        name=f"simgate-{directory_name(name)[:40]}-{secrets.token_hex(4)}",
        image=image,
        command=[executable, *args],
        env=inner_env,
        working_dir=str(work),
        user=container_user(dirs, [*writable, *scratch]),
        labels={GATEWAY_LABEL: instance, STATE_LABEL: gateway_instance(dirs.state_dir), SERVER_LABEL: name},
        mounts=mounts,
        network_mode="none" if egress is not None else str(policy.network),
        memory_bytes=memory_mb * 1024 * 1024,
        # As under bwrap: an explicit memory cap is also the address space, so a big allocation fails
        # with an error the server can report instead of the kernel's OOM killer ending it.
        address_space_bytes=limits.memory_mb * 1024 * 1024 if limits.memory_mb is not None else None,
        processes=limits.processes or DEFAULT_PROCESSES,
        nano_cpus=int((limits.cpus or DEFAULT_CPUS) * 1e9),
        cpu_seconds=limits.cpu_seconds,
        open_files=limits.open_files,
        tmp_size_mb=limits.disk_mb or DEFAULT_TMP_MB,
        scratch=[str(p) for p in scratch],
        scratch_mb=limits.disk_mb,
        masked_files=[str(p) for p in plan.masked_files],
    )


def _masks(dirs: ServerDirs, masked: list[Path], inside: list[Path]) -> list[BindMount]:
    """Each masked directory gets an empty one mounted read-only over it: a skeleton holding only the
    mount points of the server's own directories within, searchable but not listable by others.

    Not a tmpfs: the engine gives a tmpfs the mode and owner of the directory it covers, and a state
    directory of mode 0700 would then bar the server from its own directories inside it."""
    mounts = []
    for path in masked:
        skeleton = dirs.root / "masks" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
        skeleton.mkdir(parents=True, exist_ok=True)
        for target in inside:
            if path in target.parents:
                point = skeleton
                for part in target.relative_to(path).parts:
                    point = point / part
                    point.mkdir(exist_ok=True)
                    point.chmod(0o711)
        skeleton.chmod(0o711)
        (dirs.root / "masks").chmod(0o711)
        mounts.append(BindMount(path=str(skeleton), target=str(path), read_only=True))
    return mounts


def _system(path: Path) -> bool:
    return path == Path("/") or any(path == root or root in path.parents for root in _SYSTEM)

