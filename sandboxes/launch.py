"""Turn a server's command into the command that runs it under its sandbox policy.

`none` runs it as it is (with its private HOME/TMPDIR/cwd). `bwrap` runs it under bubblewrap: all
namespaces unshared (so no network but a loopback of its own), every capability dropped, only the
allowed environment, read-only system and tool directories, a private `/tmp`, and read-write only its own
directories; rlimits through `prlimit`, and processes and memory through cgroups where the kernel
lets us write them.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pydantic import BaseModel

from simgate.sandboxes.cgroups import cgroup_prefix
from simgate.sandboxes.egress.mount import SANDBOX_DIR as EGRESS_DIR
from simgate.sandboxes.egress.mount import EgressMount
from simgate.sandboxes.errors import SandboxUnavailable
from simgate.sandboxes.exposure import Exposure, Protected, Wanted, code_root, plan_mounts
from simgate.sandboxes.policy import DEFAULT_ENV_ALLOW, SandboxPolicy
from simgate.sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.sandbox")

_SYSTEM_READ_ONLY = ("/usr", "/etc", "/opt")
_USR_LINKS = ("bin", "sbin", "lib", "lib64", "lib32")
_SDK_DEFAULT_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")


class LaunchSpec(BaseModel):
    command: str
    args: list[str]
    env: dict[str, str]
    cwd: str


def prepare_launch(command: str, args: list[str], env: dict[str, str], cwd: str, dirs: ServerDirs,
                   policy: SandboxPolicy | None, name: str, egress: EgressMount | None = None,
                   exposure: Exposure | None = None) -> LaunchSpec:
    """`egress`: the allowlist proxy's socket, for a policy with `network: {allow: [...]}`. `exposure`: what
    the sandbox must never show (default: the state directory, but for the server's own directories)."""
    base_env = dirs.environment() | env
    if policy is None or policy.backend == "none":
        if egress is not None:
            raise SandboxUnavailable("a network allowlist needs a sandbox that cuts the network off (bwrap)")
        allowed = policy.env_allow if policy is not None else DEFAULT_ENV_ALLOW
        inherited = {key: os.environ[key] for key in allowed if key in os.environ}
        return LaunchSpec(command=command, args=args, env=inherited | base_env, cwd=cwd)
    if policy.backend == "docker":
        raise SandboxUnavailable("a docker-sandboxed server is started by sandboxes.docker, not as a command")
    return _bwrap(command, args, base_env, cwd, dirs, policy, name, egress, exposure or default_exposure(dirs))


def default_exposure(dirs: ServerDirs) -> Exposure:
    """At least the gateway's state directory (vault, keys, store, other servers) stays hidden."""
    return Exposure(protected=[Protected(path=dirs.state_dir, what="the gateway's state directory")],
                    own_root=dirs.root)


def _bwrap(command: str, args: list[str], env: dict[str, str], cwd: str, dirs: ServerDirs,
           policy: SandboxPolicy, name: str, egress: EgressMount | None, exposure: Exposure) -> LaunchSpec:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap is not installed (apt-get install bubblewrap)")
    executable = shutil.which(command, path=env.get("PATH") or os.environ.get("PATH")) or command
    inner_env = {key: os.environ[key] for key in policy.env_allow if key in os.environ} | env
    argv = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if policy.network == "host":
        argv.append("--share-net")
    # (depth, operation): applied outermost first, so a mount inside another (or inside a mask) lands on top.
    ops: list[tuple[int, list[str]]] = []
    if egress is not None:
        # Still no network (--unshare-all): only the proxy's socket, and a forwarder in front of the server.
        ops.append((_depth(EGRESS_DIR), ["--ro-bind", str(egress.host_dir), EGRESS_DIR]))
        executable, args = egress.wrap(executable, args)
    wanted = [Wanted(path=Path(p), read_only=True, why="the system directory") for p in _SYSTEM_READ_ONLY
              if Path(p).exists()]
    for link in _USR_LINKS:
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            wanted.append(Wanted(path=target, read_only=True, why="the system directory"))
    disk_mb = policy.limits.disk_mb
    size = ["--size", str(disk_mb * 1024 * 1024)] if disk_mb is not None else []
    ops += [(1, ["--proc", "/proc"]), (1, ["--dev", "/dev"]), (_depth("/tmp"), [*size, "--tmpfs", "/tmp"])]
    wanted += [Wanted(path=p, read_only=True, why="its command's code") for p in tool_mounts(executable, args)
               if not _under_system(p)]
    wanted += [Wanted(path=Path(p).resolve(), read_only=True, why="sandbox.read_only path") for p in policy.read_only]
    # With a disk cap, HOME and TMPDIR are capped tmpfs of their own (no host quota is needed for them).
    scratch = [dirs.home, dirs.tmp] if disk_mb is not None else []
    own = [Wanted(path=p, read_only=False, why="its own directory") for p in (dirs.home, dirs.tmp, dirs.work)
           if p not in scratch]
    own += [Wanted(path=Path(p).resolve(), read_only=False, why="sandbox.read_write path") for p in policy.read_write]
    wanted += own
    work = Path(cwd).resolve() if cwd else dirs.work
    if not any(work == w or w in work.parents for w in [*(w.path for w in own), *scratch]):
        # Outside its own directories, its cwd is only read: never a way to change the gateway's files.
        wanted.append(Wanted(path=work, read_only=True, why="its cwd"))
    plan = plan_mounts(wanted, exposure)
    for path in [*(w.path for w in own), work, *scratch]:
        path.mkdir(parents=True, exist_ok=True)
    for mount in plan.mounts:
        ops.append((_depth(mount.target), ["--ro-bind" if mount.read_only else "--bind", str(mount.source),
                                           str(mount.target)]))
    ops += [(_depth(path), [*size, "--tmpfs", str(path)]) for path in scratch]
    ops += [(_depth(path), ["--tmpfs", str(path)]) for path in plan.masked_dirs]
    ops += [(_depth(path), ["--ro-bind", "/dev/null", str(path)]) for path in plan.masked_files]
    for _, op in sorted(ops, key=lambda item: item[0]):
        argv += op
    # Nothing but its own directories and /tmp can be written; the masks neither (a remount is not recursive:
    # its own directories inside a masked state directory stay writable).
    argv += ["--remount-ro", "/"]
    for path in plan.masked_dirs:
        argv += ["--remount-ro", str(path)]
    # The environment reaches the sandbox through bwrap's own environment, never its command line,
    # where any local user could read injected secrets in /proc/PID/cmdline. Variables the MCP SDK
    # adds to every child's environment are dropped unless allowed.
    for key in _SDK_DEFAULT_ENV:
        if key not in inner_env:
            argv += ["--unsetenv", key]
    argv += ["--chdir", str(work), "--", executable, *args]
    prefix = _limits_prefix(policy) + cgroup_prefix(name, policy.limits)
    full = [*prefix, bwrap, *argv]
    return LaunchSpec(command=full[0], args=full[1:], env=inner_env, cwd=str(dirs.work))


def _depth(path: str | Path) -> int:
    return len(Path(path).parts)


def _limits_prefix(policy: SandboxPolicy) -> list[str]:
    limits = policy.limits
    options = []
    if limits.memory_mb is not None:
        options.append(f"--as={limits.memory_mb * 1024 * 1024}")
    if limits.cpu_seconds is not None:
        options.append(f"--cpu={limits.cpu_seconds}")
    if limits.open_files is not None:
        options.append(f"--nofile={limits.open_files}")
    if not options:
        return []
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxUnavailable("prlimit (util-linux) is needed for resource limits")
    return [prlimit, *options, "--"]


def tool_mounts(executable: str, args: list[str]) -> set[Path]:
    """What the server's own code needs mounted: the install root (or package root, or the file alone)
    of its executable and of any absolute path among its arguments, and its interpreter's roots
    (shebang, venv base)."""
    found: set[Path] = set()
    for token in [executable, *args]:
        if not token.startswith("/"):
            continue
        path = Path(token)
        if not path.exists():
            continue
        for candidate in {path, path.resolve()}:
            found.add(code_root(candidate))
            found |= _interpreter_roots(candidate)
    return found


def install_root(path: Path) -> Path:
    """`/x/bin/tool` -> `/x`; `/x/node_modules/pkg/dist/a.js` -> `/x`; otherwise the file's directory."""
    parts = path.parts
    if "node_modules" in parts:
        return Path(*parts[: parts.index("node_modules")])
    if path.parent.name == "bin":
        return path.parent.parent
    return path if path.is_dir() else path.parent


def _interpreter_roots(path: Path) -> set[Path]:
    roots: set[Path] = set()
    if path.is_file():
        try:
            with open(path, "rb") as handle:
                first = handle.readline(256)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            interpreter = first[2:].decode(errors="replace").split()
            if interpreter and interpreter[0].startswith("/") and Path(interpreter[0]).exists():
                resolved = Path(interpreter[0]).resolve()
                roots |= {install_root(Path(interpreter[0])), install_root(resolved)}
    venv_config = install_root(path) / "pyvenv.cfg"
    if venv_config.is_file():
        for line in venv_config.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                roots.add(install_root(Path(value.strip()) / "python"))
    return roots


def _under_system(path: Path) -> bool:
    """Mounted already (or, for `/` itself, never: `/bin/sh`'s install root would be the whole host)."""
    roots = [*_SYSTEM_READ_ONLY, *(f"/{link}" for link in _USR_LINKS)]
    return path == Path("/") or any(path == Path(root) or Path(root) in path.parents for root in roots)
