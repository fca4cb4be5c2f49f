"""`simgate vault set|list|rm|rotate-key`: the encrypted secrets a config refers to as `vault:NAME`.

A value is read from stdin, or from a hidden prompt when stdin is a terminal; never from the
command line, where other users and the shell history would see it. The vault is `--vault FILE`,
else the one of `--config FILE` (`gateway.vault_path`, else STATE_DIR/vault.json), else
`.simgate/vault.json`; its key comes from `SIMGATE_VAULT_KEY`, else `--key-file FILE` (default
`vault.key` beside the vault), else the OS keyring. Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from simgate.gateway.vault.store import DEFAULT_VAULT, ENV_KEY, Vault, VaultError, check_name

_SHORT = 8


def register(commands: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--vault", metavar="FILE", help=f"the vault file (default {DEFAULT_VAULT})")
    where.add_argument("--key-file", metavar="FILE", help="the key file (default vault.key beside the vault); "
                                                          f"{ENV_KEY} takes precedence")
    where.add_argument("--config", metavar="FILE", help="a gateway config; its vault and key file are used")

    vault = commands.add_parser("vault", help="store secrets encrypted; configs refer to them as vault:NAME")
    sub = vault.add_subparsers(dest="vault_command", required=True, metavar="COMMAND")

    set_ = sub.add_parser("set", parents=[where],
                          help="store a secret; the value is read from stdin (or a hidden prompt), never argv")
    set_.add_argument("name", help="the secret's name (letters, digits, '_', '-', '.')")
    set_.set_defaults(handler=_set)

    list_ = sub.add_parser("list", parents=[where], help="the names of the stored secrets (never their values)")
    list_.set_defaults(handler=_list)

    rm = sub.add_parser("rm", parents=[where], help="remove a secret")
    rm.add_argument("name")
    rm.set_defaults(handler=_rm)

    rotate = sub.add_parser("rotate-key", parents=[where], help="re-encrypt every secret under a new key")
    rotate.set_defaults(handler=_rotate)


def _vault(args: argparse.Namespace) -> Vault:
    path, key_file = args.vault, args.key_file
    if args.config and (path is None or key_file is None):
        from simgate.gateway.config.loader import load_config
        from simgate.gateway.errors import ConfigError

        try:
            settings = load_config(args.config).gateway
        except ConfigError as exc:
            raise VaultError(str(exc)) from None
        path = path or settings.vault_file
        key_file = key_file or settings.vault_key_file
    return Vault(path or DEFAULT_VAULT, key_file)


def _read_value(name: str) -> str:
    if sys.stdin is None:
        raise VaultError("no stdin to read the value from")
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (hidden): ")
        if getpass.getpass("again: ") != value:
            raise VaultError("the two values differ; nothing was stored")
        return value
    value = sys.stdin.read()
    # `echo VALUE | simgate vault set NAME` ends the value with a newline that is not part of it.
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    return value


def _set(args: argparse.Namespace) -> int:
    check_name(args.name)
    vault = _vault(args)
    value = _read_value(args.name)
    if not value:
        raise VaultError("empty value; nothing was stored")
    created = vault.set(args.name, value)
    if created is not None:
        print(f"created a new vault key in {created} (mode 0600); without it the vault cannot be read: "
              "back it up, and never commit it", file=sys.stderr)
    if len(value) < _SHORT:
        print(f"warning: the value is {len(value)} characters long; a short secret is redacted wherever those "
              "characters appear, even where they mean something else", file=sys.stderr)
    print(f"stored {args.name} in {vault.path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    vault = _vault(args)
    if not vault.exists():
        print(f"simgate: no vault at {vault.path} (create it with `simgate vault set NAME`)", file=sys.stderr)
        return 0
    for name in vault.names():
        print(name)
    return 0


def _rm(args: argparse.Namespace) -> int:
    vault = _vault(args)
    if not vault.exists():
        raise VaultError(f"no vault at {vault.path}")
    vault.remove(args.name)
    print(f"removed {args.name} from {vault.path}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    vault = _vault(args)
    if not vault.exists():
        raise VaultError(f"no vault at {vault.path}: nothing to rotate")
    where = vault.rotate_key()
    print(f"re-encrypted {vault.path} under a new key; the new key is in {where}")
    return 0
