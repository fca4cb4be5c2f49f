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
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from sandboxes.cgroups import cgroup_prefix
from sandboxes.egress.mount import SANDBOX_DIR as EGRESS_DIR
from sandboxes.egress.mount import EgressMount
from sandboxes.policy import DEFAULT_ENV_ALLOW, SandboxPolicy
from sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.sandbox")

_SYSTEM_READ_ONLY = ("/usr", "/etc", "/opt")
_USR_LINKS = ("bin", "sbin", "lib", "lib64", "lib32")
_SDK_DEFAULT_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")


class LaunchSpec(BaseModel):
    command: str
    args: list[str]
    env: dict[str, str]
    cwd: str


class SandboxUnavailable(Exception):
    """The configured backend cannot run on this machine; the message says why."""


def prepare_launch(command: str, args: list[str], env: dict[str, str], cwd: str, dirs: ServerDirs,
                   policy: SandboxPolicy | None, name: str, egress: EgressMount | None = None) -> LaunchSpec:
    """`egress`: the allowlist proxy's socket, for a policy with `network: {allow: [...]}`."""
    base_env = dirs.environment() | env
    if policy is None or policy.backend == "none":
        if egress is not None:
            raise SandboxUnavailable("a network allowlist needs a sandbox that cuts the network off (bwrap)")
        allowed = policy.env_allow if policy is not None else DEFAULT_ENV_ALLOW
        inherited = {key: os.environ[key] for key in allowed if key in os.environ}
        return LaunchSpec(command=command, args=args, env=inherited | base_env, cwd=cwd)
    if policy.backend == "docker":
        raise SandboxUnavailable("a docker-sandboxed server is started by sandboxes.docker, not as a command")
    return _bwrap(command, args, base_env, cwd, dirs, policy, name, egress)


def _bwrap(command: str, args: list[str], env: dict[str, str], cwd: str, dirs: ServerDirs,
           policy: SandboxPolicy, name: str, egress: EgressMount | None = None) -> LaunchSpec:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap is not installed (apt-get install bubblewrap)")
    executable = shutil.which(command, path=env.get("PATH") or os.environ.get("PATH")) or command
    inner_env = {key: os.environ[key] for key in policy.env_allow if key in os.environ} | env
    argv = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if policy.network == "host":
        argv.append("--share-net")
    if egress is not None:
        # Still no network (--unshare-all): only the proxy's socket, and a forwarder in front of the server.
        argv += ["--ro-bind", str(egress.host_dir), EGRESS_DIR]
        executable, args = egress.wrap(executable, args)
    for path in _SYSTEM_READ_ONLY:
        if Path(path).exists():
            argv += ["--ro-bind", path, path]
    for link in _USR_LINKS:
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), str(target)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    read_only = sorted(tool_mounts(executable, args) | {Path(p).resolve() for p in policy.read_only})
    for path in outermost(read_only):
        if not _under_system(path):
            argv += ["--ro-bind", str(path), str(path)]
    own = [dirs.home, dirs.tmp, dirs.work, *(Path(p).resolve() for p in policy.read_write)]
    if cwd and Path(cwd).resolve() not in own:
        own.append(Path(cwd).resolve())
    for path in own:
        path.mkdir(parents=True, exist_ok=True)
        argv += ["--bind", str(path), str(path)]
    argv += ["--remount-ro", "/"]  # nothing but its own directories and /tmp can be written
    # The environment reaches the sandbox through bwrap's own environment, never its command line,
    # where any local user could read injected secrets in /proc/PID/cmdline. Variables the MCP SDK
    # adds to every child's environment are dropped unless allowed.
    for key in _SDK_DEFAULT_ENV:
        if key not in inner_env:
            argv += ["--unsetenv", key]
    argv += ["--chdir", cwd or str(dirs.work), "--", executable, *args]
    prefix = _limits_prefix(policy) + cgroup_prefix(name, policy.limits)
    full = [*prefix, bwrap, *argv]
    return LaunchSpec(command=full[0], args=full[1:], env=inner_env, cwd=str(dirs.work))


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
    """Directories the server's own code lives in: the install roots of its executable, its
    interpreter (shebang, venv base) and any absolute path among its arguments."""
    found: set[Path] = set()
    for token in [executable, *args]:
        if not token.startswith("/"):
            continue
        path = Path(token)
        if not path.exists():
            continue
        for candidate in {path, path.resolve()}:
            found.add(install_root(candidate))
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


def outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another of them (what to mount, without mounting anything twice)."""
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: len(p.parts)):
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def _under_system(path: Path) -> bool:
    return any(path == Path(root) or Path(root) in path.parents for root in _SYSTEM_READ_ONLY)
