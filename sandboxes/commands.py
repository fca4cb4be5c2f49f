"""`simgate sandbox check` (which sandbox backends work on this machine, and why not) and
`simgate sandbox build-images` (the docker backend's images, ahead of first use)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import Any

from simgate.sandboxes.cgroups import cgroups_writable
from simgate.sandboxes.launch import SandboxUnavailable


def register(commands: Any) -> None:
    sandbox = commands.add_parser("sandbox", help="sandbox backends")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")
    check = sandbox_commands.add_parser("check", help="say which sandbox backends work on this machine")
    check.add_argument("--docker-host", help="the Docker engine (default: DOCKER_HOST, else the local socket)")
    check.set_defaults(handler=_check)
    build = sandbox_commands.add_parser("build-images", help="build the docker backend's images now (they are "
                                        "otherwise built on first use)")
    build.add_argument("--docker-host", help="the Docker engine (default: DOCKER_HOST, else the local socket)")
    build.add_argument("--python", default=sys.executable, help="the Python the servers' venvs use (default: this one)")
    build.add_argument("--node", default=shutil.which("node"), help="the node binary (default: node on PATH)")
    build.set_defaults(handler=_build_images)


def bwrap_status() -> tuple[bool, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "not installed (apt-get install bubblewrap)"
    try:
        done = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run: {exc}"
    if done.returncode != 0:
        return False, f"cannot create namespaces: {done.stderr.strip() or done.returncode}"
    return True, "works"


def docker_status(docker_host: str | None) -> tuple[bool, str]:
    """Whether the docker backend can run servers: the SDK, an engine that answers, and its images."""
    try:
        from simgate.sandboxes.docker.engine import connected
        from simgate.sandboxes.docker.images import missing_images
    except ImportError as exc:
        return False, f"the docker SDK is not installed ({exc.name}); pip install docker"
    try:
        with connected(docker_host, timeout=10) as client:
            version = client.version().get("Version", "?")
            missing = missing_images(client)
    except SandboxUnavailable as exc:
        return False, str(exc).removeprefix("docker: ")
    if missing:
        return True, (f"works (engine {version}); images not built yet: {', '.join(missing)} — built on first use, "
                      "or now with `simgate sandbox build-images`")
    return True, f"works (engine {version}; images built)"


def _check(args: argparse.Namespace) -> int:
    ok, why = bwrap_status()
    print("none: works (no isolation beyond private HOME/TMPDIR/work directories)")
    print(f"bwrap: {why}")
    cgroups = cgroups_writable()
    print("limits: rlimits (memory, CPU, open files) " + ("work" if shutil.which("prlimit") else "need prlimit"))
    for controller, writable in cgroups.items():
        print(f"cgroup {controller}: {'writable' if writable else 'not writable: that cap is not enforced'}")
    docker_ok, docker_why = docker_status(args.docker_host)
    print(f"docker: {docker_why}")
    return 0 if ok or docker_ok else 1


def _build_images(args: argparse.Namespace) -> int:
    from simgate.sandboxes.docker.engine import connected
    from simgate.sandboxes.docker.host_runtime import Runtime, detect_runtime
    from simgate.sandboxes.docker.images import ensure_base, ensure_image

    with connected(args.docker_host) as client:  # SandboxUnavailable: one line, exit code 2
        print(f"base: {ensure_base(client)}")
        for kind, executable in (("python", args.python), ("node", args.node)):
            runtime = detect_runtime(executable, None) if executable else None
            if runtime is None or runtime.kind != kind:
                print(f"{kind}: skipped (no {kind} interpreter at {executable!r})")
                continue
            print(f"{kind}: {ensure_image(client, Runtime(kind=kind, interpreter=runtime.interpreter))}")
    return 0
