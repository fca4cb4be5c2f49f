"""`simgate sandbox install CONFIG [--server S]`: install ahead of time what `simgate serve` would install
at start, and print the resolved versions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from sandboxes.install.installer import InstallError, ensure_installed, tools_dir
from sandboxes.install.spec import InstallRequest, install_request
from sandboxes.workdir import prepare_server_dirs


def install_command(config_path: str, only: list[str] | None) -> int:
    # The config models belong to the gateway, which composes this command line; sandboxes code below
    # this function never sees them.
    from gateway.config.loader import load_config
    from gateway.errors import ConfigError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"simgate: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(only or []) - set(config.servers))
    if unknown:
        print(f"simgate: no server {', '.join(map(repr, unknown))} in {config_path}", file=sys.stderr)
        return 2
    requests: dict[str, InstallRequest | None] = {}
    for name, server in config.servers.items():
        if only and name not in only:
            continue
        if server.transport != "stdio" or server.install != "auto":
            requests[name] = None
            continue
        requests[name] = install_request(command=server.command, args=server.args, package=server.package,
                                         constraints=server.constraints, entry=server.entry)
    return anyio.run(_install_all, Path(config.gateway.state_dir), requests)


async def _install_all(state_dir: Path, requests: dict[str, InstallRequest | None]) -> int:
    failed = 0
    for name, request in requests.items():
        if request is None:
            print(f"{name}: nothing to install (runs its command or URL as it is)")
            continue
        dirs = prepare_server_dirs(state_dir, name)
        started = time.monotonic()
        try:
            done = await ensure_installed(tools_dir(dirs.root), name, request.spec)
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
