"""`simgate sandbox install CONFIG [--server S]`: install the servers a config names as packages or
uvx/npx commands ahead of time. Registered by the gateway because it reads the gateway's config;
the installing itself is `sandboxes.install`'s."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from simgate.gateway.cli import command_group
from simgate.gateway.config.loader import load_config
from simgate.sandboxes.install.cli import install_all
from simgate.sandboxes.install.spec import InstallRequest, install_request


def register(commands: Any) -> None:
    group = command_group(commands, "sandbox", "sandbox backends")
    install = group.add_parser("install", help="install the servers a config names as packages or uvx/npx "
                                               "commands, ahead of time, and print the resolved versions")
    install.add_argument("config", help="YAML or JSON gateway config")
    install.add_argument("--server", action="append", metavar="S", help="only this server (repeatable)")
    install.set_defaults(handler=_install)


def _install(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    only: list[str] | None = args.server
    unknown = sorted(set(only or []) - set(config.servers))
    if unknown:
        print(f"simgate: no server {', '.join(map(repr, unknown))} in {args.config}", file=sys.stderr)
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
    policies = {name: config.servers[name].sandbox for name in requests}
    return anyio.run(install_all, Path(config.gateway.state_dir), requests, policies)
