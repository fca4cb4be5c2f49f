"""`simgate sandbox check`: which sandbox backends work on this machine, and why not."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from typing import Any

from sandboxes.cgroups import cgroups_writable


def register(commands: Any) -> None:
    sandbox = commands.add_parser("sandbox", help="sandbox backends")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")
    check = sandbox_commands.add_parser("check", help="say which sandbox backends work on this machine")
    check.set_defaults(handler=_check)


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


def _check(args: argparse.Namespace) -> int:
    ok, why = bwrap_status()
    print("none: works (no isolation beyond private HOME/TMPDIR/work directories)")
    print(f"bwrap: {why}")
    cgroups = cgroups_writable()
    print("limits: rlimits (memory, CPU, open files) " + ("work" if shutil.which("prlimit") else "need prlimit"))
    for controller, writable in cgroups.items():
        print(f"cgroup {controller}: {'writable' if writable else 'not writable: that cap is not enforced'}")
    print("docker: not available yet in simgate")
    return 0 if ok else 1
