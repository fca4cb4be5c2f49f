"""`simgate cache stats|ls|show|export|import|prune`: inspect and move recordings.

Every sub-command finds the store with `--config FILE` (the config's `gateway.store`: Redis, or
diskcache in `gateway.cache_dir`, else `STATE_DIR/cache`, relative to the current directory as for
the gateway), `--cache-dir DIR` or `--redis-url URL`; with none, the gateway's default
`.simgate/cache`. The store may be in use by running gateways: diskcache is safe across processes,
Redis across machines. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from simgate.errors import UsageError
from simgate.gateway.cache.errors import STORE_ERRORS, describe_store_error
from simgate.gateway.cache.listing import ls_row, per_tool, recording_groups, show
from simgate.gateway.cli import Handler, guarded

DEFAULT_CACHE_DIR = ".simgate/cache"
_PREVIEW = 60


class CommandError(UsageError):
    """Bad input to a cache command: printed as one line, exit code 2."""


def register(commands: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    source = where.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="a gateway config; its store is used")
    source.add_argument("--cache-dir", metavar="DIR", help=f"the store directory (default {DEFAULT_CACHE_DIR})")
    source.add_argument("--redis-url", metavar="URL", help="a Redis store (redis://host:6379/0; key prefix simgate:)")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--server", help="only this server's recordings")
    filters.add_argument("--tool", help="only this tool's recordings")

    cache = commands.add_parser("cache", help="inspect, export, import and prune recorded calls")
    sub = cache.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")

    stats = sub.add_parser("stats", parents=[where, filters], help="recordings per server and tool, errors, size")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=_guarded(_stats, "stats"))

    ls = sub.add_parser("ls", parents=[where, filters], help="one line per cache key")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=_guarded(_ls, "ls"))

    show = sub.add_parser("show", parents=[where], help="the recordings of one key, as JSON")
    show.add_argument("key", help="a cache key, or a prefix of one that is unique")
    show.set_defaults(handler=_guarded(_show, "show"))

    export = sub.add_parser("export", parents=[where, filters], help="write recordings to a JSONL cassette")
    export.add_argument("file", help="the cassette to write (replaced atomically)")
    export.set_defaults(handler=_guarded(_export, "export"))

    imp = sub.add_parser("import", parents=[where], help="load a JSONL cassette (checked whole first)")
    imp.add_argument("file", help="the cassette to read")
    imp.add_argument("--replace", action="store_true",
                     help="overwrite recordings the store holds at the same key and position (default: keep them)")
    imp.set_defaults(handler=_guarded(_import, "import"))

    prune = sub.add_parser("prune", parents=[where, filters], help="delete expired recordings (or all, with --all)")
    prune.add_argument("--all", action="store_true", help="delete every matching recording, expired or not")
    prune.set_defaults(handler=_guarded(_prune, "prune"))


# ---------------------------------------------------------------------------------------------- plumbing


def _guarded(handler: Handler, command: str) -> Handler:
    return guarded(handler, *STORE_ERRORS,
                   prefix=f"simgate cache {command}", describe=describe_store_error)


def _settings(args: argparse.Namespace) -> Any:
    """The gateway settings that name the store: the config's, or ones made of --redis-url / --cache-dir."""
    from simgate.gateway.config.models import GatewaySettings

    if args.config:
        from simgate.gateway.config.loader import load_config

        return load_config(args.config).gateway
    if getattr(args, "redis_url", None):
        try:
            return GatewaySettings.model_validate({"store": {"backend": "redis", "url": args.redis_url}})
        except ValueError as exc:
            raise CommandError(f"--redis-url: {_first_message(exc)}") from None
    return GatewaySettings.model_validate({"cache_dir": args.cache_dir or DEFAULT_CACHE_DIR})


def _first_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return str(errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
    return str(exc)


def _open_store(args: argparse.Namespace, *, create: bool = False) -> Any:
    from simgate.gateway.cache.backends import open_store
    from simgate.gateway.cache.store import DiskStore

    settings = _settings(args)
    if settings.store.backend != "diskcache":
        return open_store(settings)
    directory = Path(settings.cache_path)
    if not create and not (directory / "cache.db").is_file():
        how = "" if args.config or args.cache_dir else " (give --config FILE or --cache-dir DIR)"
        raise CommandError(f"no recording store at {directory}{how}")
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"{directory} is not a directory")
    return DiskStore(directory)


def _no_match(server: str | None, tool: str | None) -> str:
    parts = [f"server {server!r}" if server else "", f"tool {tool!r}" if tool else ""]
    return "nothing recorded for " + " and ".join(p for p in parts if p)


def _size_on_disk(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _preview(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= _PREVIEW else text[:_PREVIEW - 1] + "…"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------- commands


def _stats(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        groups = recording_groups(store, args.server, args.tool)
        rows = per_tool(groups, time.time())
        where = store.describe()
        size = _size_on_disk(store.directory) if isinstance(getattr(store, "directory", None), Path) else None
        summary = {"store": where, "servers": len({r["server"] for r in rows}), "tools": len(rows),
                   "keys": sum(r["keys"] for r in rows), "recordings": sum(r["recordings"] for r in rows),
                   "errors": sum(r["errors"] for r in rows), "expired": sum(r["expired"] for r in rows),
                   "size_bytes": size, "per_tool": rows}
    finally:
        store.close()
    if args.json:
        _print_json(summary)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("server", "tool", "keys", "recordings", "errors", "expired", "last recorded",
                  title=where, title_justify="left")
    for row in rows:
        table.add_row(row["server"], row["tool"], str(row["keys"]), str(row["recordings"]), str(row["errors"]),
                      str(row["expired"]), row["last_recorded_at"])
    console = Console()
    console.print(table)
    console.print(f"{summary['recordings']} recording(s) under {summary['keys']} key(s), {summary['servers']} "
                  f"server(s), {summary['tools']} tool(s); {summary['errors']} error(s) recorded, "
                  f"{summary['expired']} expired" + (f"; {_human(size)} on disk" if size is not None else ""),
                  highlight=False)
    return 0


def _ls(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        groups = recording_groups(store, args.server, args.tool)
    finally:
        store.close()
    if not groups and (args.server or args.tool):
        raise CommandError(_no_match(args.server, args.tool))
    if args.json:
        _print_json([ls_row(g) for g in groups])
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("server", "tool", "key", "n", "recorded at", "arguments")
    for group in groups:
        first = group[0]
        n = str(len(group)) + (" !" if any(r.is_error for r in group) else "")
        table.add_row(first.server, first.tool, first.key[:12], n, first.recorded_at, _preview(first.arguments))
    console = Console()
    console.print(table)
    console.print(f"{len(groups)} key(s), {sum(len(g) for g in groups)} recording(s) ('!': errors recorded)",
                  highlight=False)
    return 0


def _show(args: argparse.Namespace) -> int:
    prefix = args.key.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise CommandError(f"{args.key!r} is not a cache key (hex digits)")
    store = _open_store(args)
    try:
        shown = show(store, prefix)
    finally:
        store.close()
    _print_json(shown)
    return 0


def _export(args: argparse.Namespace) -> int:
    from simgate.gateway.cache.cassette import collect, write_cassette

    target = Path(args.file)
    if target.is_dir():
        raise CommandError(f"{target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise CommandError(f"{target.parent} does not exist")
    store = _open_store(args)
    try:
        recordings, tools = collect(store, args.server, args.tool)
    finally:
        store.close()
    if not recordings and (args.server or args.tool):
        raise CommandError(_no_match(args.server, args.tool))
    count = write_cassette(target, recordings, tools, {"server": args.server, "tool": args.tool})
    keys = len({r.key for r in recordings})
    print(f"exported {count} recording(s) under {keys} key(s) to {target}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from simgate.gateway.cache.cassette import apply_cassette, check_cassette

    checked = check_cassette(args.file)  # checked whole before the store is created or opened
    store = _open_store(args, create=True)
    try:
        report = apply_cassette(store, checked, replace=args.replace)
    finally:
        store.close()
    print(report.summary())
    return 0


def _prune(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        removed = store.prune(expired_only=not args.all, server=args.server, tool=args.tool)
    finally:
        store.close()
    what = "recording(s)" if args.all else "expired recording(s)"
    print(f"removed {removed} {what}")
    return 0
