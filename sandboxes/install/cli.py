"""Install ahead of time what `simgate serve` would install at start, and print the resolved versions
(the body of `simgate sandbox install`, which the gateway registers: it reads the config)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

from simgate.sandboxes.install.installer import InstallError, ensure_installed, tools_dir
from simgate.sandboxes.install.isolation import isolation_for
from simgate.sandboxes.install.spec import InstallRequest
from simgate.sandboxes.policy import SandboxPolicy
from simgate.sandboxes.workdir import prepare_server_dirs


async def install_all(state_dir: Path, requests: dict[str, InstallRequest | None],
                      policies: Mapping[str, SandboxPolicy | None]) -> int:
    """`policies`: each server's sandbox; a sandboxed server's install is isolated as at `simgate serve`."""
    failed = 0
    for name, request in requests.items():
        if request is None:
            print(f"{name}: nothing to install (runs its command or URL as it is)")
            continue
        dirs = prepare_server_dirs(state_dir, name)
        started = time.monotonic()
        try:
            done = await ensure_installed(tools_dir(dirs.root), name, request.spec,
                                          isolation=isolation_for(policies.get(name), dirs, name))
        except InstallError as exc:
            print(f"simgate: {exc}", file=sys.stderr)
            failed += 1
            continue
        manifest = done.manifest
        how = "already installed" if done.reused else f"installed in {time.monotonic() - started:.1f}s"
        python = f", python {manifest.python}" if manifest.python else ""
        print(f"{name}: {request.spec.describe()}: {how} ({manifest.installer}{python}) -> {done.directory}")
        for package in manifest.packages:
            print(f"  {package.name}=={package.version}")
    return 1 if failed else 0
