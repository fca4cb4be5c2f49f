"""The `simgate` command. Each package defines its sub-commands next to its own code; `COMMANDS` lists
them (as import paths, so this module imports none of them, and `runner` stays above `gateway`).
Third-party plugins add theirs through the `simgate.commands` entry-point group."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

Handler = Callable[[argparse.Namespace], int]

# The project's own commands, in the order `simgate --help` lists them.
COMMANDS = (
    "gateway.commands:register",
    "gateway.cache.commands:register",
    "gateway.vault.commands:register",
    "gateway.auth.commands:register",
    "sandboxes.commands:register",
    "gateway.upstream.install_commands:register",
    "gateway.fidelity.commands:register",
    "gateway.export.commands:register",
    "runner.commands:register",
    "runner.fidelity.commands:register",
    "runner.export.commands:register",
    "runner.onboard.commands:register",
    "runner.pipeline.commands:register",
)
PLUGIN_GROUP = "simgate.commands"


def guarded(handler: Handler, *expected: type[BaseException], prefix: str = "simgate",
            describe: Callable[[BaseException], str] = str) -> Handler:
    """The sub-command with the errors it expects turned into one line on stderr and exit code 2 (no
    traceback); Ctrl-C says so and exits 130."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except expected as exc:
            print(f"{prefix}: {describe(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130

    return run


def command_group(commands: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """The sub-commands of `simgate NAME`, shared by every package that contributes to the group
    (`fidelity calls` comes from gateway, `fidelity trajectories` from runner)."""
    existing = commands.choices.get(name)
    if existing is not None:  # made by another package, with command_group or plain argparse
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        raise ValueError(f"`simgate {name}` exists and takes no sub-commands")
    parser = commands.add_parser(name, help=help)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simgate", description="simgate: a simulation-capable MCP gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for path in COMMANDS:
        module, _, function = path.partition(":")
        getattr(importlib.import_module(module), function)(commands)
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        if entry.value not in COMMANDS:  # an older install of this project still lists its own commands
            entry.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args) or 0
    except BrokenPipeError:
        # The reader went away (`simgate call ... | head`); as the Python docs advise, point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # what a shell reports for a command killed by SIGPIPE
    sys.exit(code)
