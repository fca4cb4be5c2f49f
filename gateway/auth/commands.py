"""`simgate keys create|list|rm`: client API keys. With any key in the file, the gateway admits only
clients that present one (`Authorization: Bearer <key>`), and each sees and calls only what its key allows.

The key file is `--keys-file FILE`, else the one of `--config FILE` (`gateway.keys_path`, else
STATE_DIR/keys.json), else `.simgate/keys.json`. A serving gateway picks up changes at once; once it
has required keys, removing the last one makes it refuse every client (unless served with `--insecure`).
The key itself is printed once, by `create`; only its sha256 is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from simgate.gateway.auth.api_keys import API_KEY_ENV, KeyFileError, KeyStore
from simgate.gateway.config.limits import RateLimit

DEFAULT_KEYS = ".simgate/keys.json"


def register(commands: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--keys-file", metavar="FILE", help=f"the key file (default {DEFAULT_KEYS})")
    where.add_argument("--config", metavar="FILE", help="a gateway config; its key file is used, its servers checked")

    keys = commands.add_parser("keys", help="client API keys: who may reach which servers and tools")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", parents=[where], help="make a key; it is printed once and stored hashed")
    create.add_argument("name", help="a name for the client (unique in the file)")
    create.add_argument("--servers", required=True, help="comma-separated server names or globs ('*': all)")
    create.add_argument("--tools", help="comma-separated tool globs, 'tool' or 'server/tool' (default: all tools "
                                        "of its servers)")
    create.add_argument("--rate", type=float, help="calls per second per (key, server, tool)")
    create.add_argument("--burst", type=int, help="calls allowed at once (default: one second's worth)")
    create.add_argument("--admin", action="store_true", help="may also use the admin API (/admin/*)")
    create.add_argument("--json", action="store_true", help="print the key and its record as JSON")
    create.set_defaults(handler=_create)

    list_ = sub.add_parser("list", parents=[where], help="the keys and what they allow (never the keys themselves)")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_list)

    rm = sub.add_parser("rm", parents=[where], help="revoke a key (by id or name); effective at once")
    rm.add_argument("key", help="the key's id or name")
    rm.set_defaults(handler=_rm)


def _store(args: argparse.Namespace) -> tuple[KeyStore, list[str] | None]:
    """The key file, and the config's server names when a config was given (to check `--servers`)."""
    if args.config is None:
        return KeyStore(args.keys_file or DEFAULT_KEYS), None
    from simgate.gateway.config.loader import load_config
    from simgate.gateway.errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise KeyFileError(str(exc)) from None
    return KeyStore(args.keys_file or config.gateway.keys_file), list(config.servers)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _create(args: argparse.Namespace) -> int:
    store, known = _store(args)
    servers = _split(args.servers) or []
    if known is not None:
        # A plain name must be one of the config's servers (a typo would lock the client out); a glob may
        # match servers added later.
        unmatched = [name for name in servers if not any(c in name for c in "*?[") and name not in known]
        if unmatched:
            raise KeyFileError(f"--servers names {', '.join(map(repr, unmatched))}, which match no server of "
                               f"{args.config} (servers: {', '.join(known) or 'none'})")
    if args.burst is not None and args.rate is None:
        raise KeyFileError("--burst needs --rate")
    try:
        limit = RateLimit(rate=args.rate, burst=args.burst) if args.rate is not None else None
    except ValidationError as exc:
        raise KeyFileError(f"invalid rate limit: {exc.errors()[0]['msg']}") from None
    try:
        key, presented = store.create(args.name, servers=servers, tools=_split(args.tools), rate_limit=limit,
                                      admin=args.admin)
    except ValidationError as exc:  # e.g. no server
        raise KeyFileError(f"invalid key: {exc.errors()[0]['msg']}") from None
    if args.json:
        print(json.dumps({"key": presented, **_public(key.model_dump(exclude_none=True))}, indent=2))
    else:
        print(presented)
    print(f"created key {key.name!r} (id {key.id}) in {store.path}; this is the only time it is shown. "
          f"Clients send it as 'Authorization: Bearer <key>'; the simgate CLI reads it from ${API_KEY_ENV}.",
          file=sys.stderr)
    return 0


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "sha256"}


def _list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    keys = [_public(key.model_dump(exclude_none=True)) for key in store.keys().values()]
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    if not keys:
        print(f"no keys in {store.path}: a gateway that has never required keys admits every client on loopback; "
              "one that has refuses every client (unless served with --insecure)", file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "servers", "tools", "rate limit", "admin", "created")
    for key in keys:
        limit = key.get("rate_limit")
        table.add_row(key["id"], key["name"], ",".join(key["servers"]), ",".join(key.get("tools") or ["*"]),
                      f"{limit['rate']:g}/s burst {limit['burst']}" if limit else "", "yes" if key["admin"] else "",
                      key["created_at"])
    Console().print(table)
    return 0


def _rm(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    key = store.remove(args.key)
    print(f"revoked key {key.name!r} (id {key.id})")
    if not store.keys():
        print(f"that was the last key in {store.path}: a serving gateway that used it now refuses every client "
              "until a key is created (unless it was started with --insecure)", file=sys.stderr)
    return 0
