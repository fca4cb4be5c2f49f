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

from simgate.errors import SimgateError

Handler = Callable[[argparse.Namespace], int]

# The project's own commands, in the order `simgate --help` lists them.
COMMANDS = (
    "simgate.gateway.commands:register",
    "simgate.gateway.cache.commands:register",
    "simgate.gateway.vault.commands:register",
    "simgate.gateway.auth.commands:register",
    "simgate.sandboxes.commands:register",
    "simgate.gateway.upstream.install_commands:register",
    "simgate.gateway.fidelity.commands:register",
    "simgate.gateway.export.commands:register",
    "simgate.runner.commands:register",
    "simgate.runner.fidelity.commands:register",
    "simgate.runner.export.commands:register",
    "simgate.runner.onboard.commands:register",
    "simgate.runner.pipeline.commands:register",
)
PLUGIN_GROUP = "simgate.commands"


def guarded(handler: Handler, *expected: type[BaseException], prefix: str = "simgate",
            describe: Callable[[BaseException], str] = str, interrupted: str = "interrupted") -> Handler:
    """The sub-command with its expected errors turned into one line on stderr and exit code 2 (no
    traceback): every `SimgateError`, and the `expected` others (a store's `OSError`, a settings
    `ValidationError`...) shown through `describe`. An error a task group wrapped alone is unwrapped
    first. Ctrl-C prints `interrupted` and exits 130.

    `build_parser` guards every sub-command (plugins' too) with its own name as prefix; a package calls
    this itself only to add `expected` types or a `describe`."""
    caught: tuple[type[BaseException], ...] = (SimgateError, *expected)

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except caught as exc:
            error: BaseException = exc
        except BaseExceptionGroup as group:  # anyio wraps what a task group raised
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if not isinstance(leaf, caught):
                raise
            error = leaf
        except KeyboardInterrupt:
            print(f"{prefix}: {interrupted}", file=sys.stderr)
            return 130
        print(f"{prefix}: {one_line(describe(error))}", file=sys.stderr)
        return 2

    run.guarded = True  # type: ignore[attr-defined]
    return run


def one_line(message: str) -> str:
    """A message as one line: its lines joined with "; " (a config error may list several problems)."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip()) or message


def _guard_all(parser: argparse.ArgumentParser) -> None:
    """Guard the handler of every leaf sub-command not guarded yet, named by its own `prog`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _guard_all(sub)
    handler = parser.get_default("handler")
    if handler is not None and not getattr(handler, "guarded", False):
        parser.set_defaults(handler=guarded(handler, prefix=parser.prog))


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
    _guard_all(parser)
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
