"""The `simgate` command. Each package contributes its sub-commands through the `simgate.commands`
entry-point group, so the command line grows without this module importing any of them."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simgate", description="simgate: a simulation-capable MCP gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registered = sorted(entry_points(group="simgate.commands"), key=lambda ep: ep.name)
    if not registered:  # running from a source tree that was never installed
        from gateway.commands import register

        register(commands)
    for entry in registered:
        entry.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args) or 0)
